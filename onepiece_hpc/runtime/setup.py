"""A staged run's set-up, every rank together, with a deadline on every step.

The Node Manager (rank 0) alone reads the prompt file and plans; a stage rank checks the job
file, model and device (`prepare(plan=False)`), then reports to rank 0 with what must agree
across ranks (job file, model, execution, layout, software). Rank 0 collects every report, then
answers each rank with the plan's summary (go) or stops the whole job with one message naming
every rank that failed or disagrees, its host and the cause: exit 2 when each cause is a user
error, 1 otherwise. Nothing waits without a deadline, and nothing sleeps to order messages.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from onepiece_hpc.errors import UserError
from onepiece_hpc.exit_codes import ExitCode
from onepiece_hpc.runtime.control import TAG_TO_MANAGER, TAG_TO_WORKER, ControlPlane
from onepiece_hpc.runtime.messages import SetupReport, SetupVerdict
from onepiece_hpc.processes import process_alive
from onepiece_hpc.runtime.peers import ManagerGone, RankInfo, await_abort, manager_gone
from onepiece_hpc.runtime.prepare import Prepared, execution_tag
from onepiece_hpc.planning.plan import PlanSummary

NODE_MANAGER = 0
POLL_S = 0.05


class SetupFailed(RuntimeError):
    """Set-up failed on some rank(s); the message names each one. `exit_code` 2 for user errors."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SetupStopped(RuntimeError):
    """A stage rank was told to stop by rank 0 (which reports why, then aborts the job): leave
    quietly, after rank 0 has had its say (`await_abort`)."""

    def __init__(self, exit_code: int, manager: RankInfo, me: RankInfo) -> None:
        super().__init__("stopped by the Node Manager")
        self.exit_code, self.manager, self.me = exit_code, manager, me

    def await_abort(self) -> None:
        await_abort(self.manager, self.me)


@contextmanager
def deadline(what: str, timeout_s: float, me: RankInfo) -> Iterator[None]:
    """End this process (exit 1, after saying what it waited for) if the block takes longer than
    `timeout_s`: for collectives and other blocking MPI calls, which have no timeout of their own.
    The process ends from the timer thread with os._exit, which needs no MPI thread support; the
    launcher (mpiexec, or srun with --kill-on-bad-exit) then ends the other ranks."""
    done = threading.Event()

    def expire() -> None:
        if not done.wait(timeout_s):
            print(f"error: rank {me.rank} on {me.host}: no progress within {timeout_s:.0f} s while {what} (another "
                  "rank is missing, stuck or died before it); ending the job", file=sys.stderr, flush=True)
            os._exit(ExitCode.FAILED)

    timer = threading.Thread(target=expire, name=f"deadline: {what}", daemon=True)
    timer.start()
    try:
        yield
    finally:
        done.set()


def check_thread_level(mpi) -> None:
    """The heartbeat thread sends while the main thread works: MPI must allow calls from any thread."""
    level = mpi.Query_thread()
    if level < mpi.THREAD_MULTIPLE:
        names = {mpi.THREAD_SINGLE: "SINGLE", mpi.THREAD_FUNNELED: "FUNNELED", mpi.THREAD_SERIALIZED: "SERIALIZED"}
        raise UserError(f"the MPI library gives thread level MPI_THREAD_{names.get(level, level)}, and the staged "
                        "runtime needs MPI_THREAD_MULTIPLE (each rank's heartbeat thread sends while its main "
                        "thread works); fix: use an MPI built with thread support (MPICH has it; for Open MPI "
                        "check `ompi_info | grep -i thread`), and do not set MPI4PY_RC_THREAD_LEVEL below "
                        "'multiple'")


def agreement(prepared: Prepared, layout_text: str, ranks: int) -> dict[str, str]:
    """What every rank must share to run one job: the job file, model, execution, layout, software."""
    from onepiece_hpc.store.provenance import software_versions

    software = software_versions()
    software.pop("python", None)
    return {"job file": hashlib.sha256(prepared.job.source_text.encode()).hexdigest()[:16],
            "model": f"{prepared.model.ref} (configs {prepared.model.config_hash[:12]})",
            "execution": execution_tag(prepared.job, prepared.placement), "layout": layout_text,
            "ranks": str(ranks), "software": ", ".join(f"{k} {v}" for k, v in sorted(software.items()))}


@dataclass(frozen=True)
class _Report:
    rank: int
    host: str
    outcome: str
    error: str
    agreement: dict[str, str]


def stage_setup(control: ControlPlane, peers: list[RankInfo], me: RankInfo, timeout_s: float,
                work: Callable[[], tuple[Prepared, dict[str, str]]]) -> tuple[Prepared, PlanSummary]:
    """A stage rank's side: run `work` (its checks), report the outcome, and wait for rank 0's word.

    Returns the prepared job and the plan's summary; raises SetupStopped when rank 0 stops the job
    (rank 0 says why), and ManagerGone when rank 0 ends first (the rank's caller decides who says
    so). If rank 0 stays silent past the deadline, or ends after this rank's own checks failed,
    this rank says so itself.
    """
    prepared, agreed, outcome, error, code = None, {}, "ok", "", 0
    try:
        prepared, agreed = work()
    except UserError as err:
        outcome, error, code = "user-error", err.render(), UserError.exit_code
    except Exception as err:  # reported to rank 0, which names this rank; nothing is lost
        outcome, error, code = "error", f"{type(err).__name__}: {err}", 1
    control.send(NODE_MANAGER, SetupReport(me.rank, me.host, outcome, error, json.dumps(agreed)), TAG_TO_MANAGER)
    manager = peers[NODE_MANAGER]
    end = time.monotonic() + timeout_s
    while True:
        got = control.poll(TAG_TO_WORKER, NODE_MANAGER)
        if got:
            verdict = got[0][1]
            if not isinstance(verdict, SetupVerdict):
                raise RuntimeError(f"rank {me.rank}: expected the set-up verdict from rank 0, got "
                                   f"{type(verdict).__name__}")
            if not verdict.summary or prepared is None:  # (a failed rank is always told to stop)
                raise SetupStopped(verdict.exit_code or code or 1, manager, me)
            return prepared, PlanSummary.from_json(json.loads(verdict.summary))
        gone = manager_gone(manager, me)
        if gone and not error:
            raise ManagerGone(f"rank {me.rank}: rank 0 (pid {manager.pid}) ended during set-up")
        if gone or time.monotonic() > end:
            why = (f"rank 0 (pid {manager.pid}) ended" if gone
                   else f"no word from rank 0 on {manager.host} within {timeout_s:.0f} s")
            own = f"; this rank's own set-up failed: {error}" if error else ""
            print(f"error: rank {me.rank} on {me.host}: {why} during set-up{own}", file=sys.stderr, flush=True)
            os._exit(code or 1)
        time.sleep(POLL_S)


def manager_setup(control: ControlPlane, peers: list[RankInfo], timeout_s: float,
                  prepared: Prepared, agreed: dict[str, str]) -> PlanSummary:
    """Rank 0's side, after its own set-up (planning) went well: collect every stage rank's report,
    then tell them all to go with the plan's summary, or stop them and raise SetupFailed."""
    reports = _collect(control, peers, timeout_s)
    problems: list[tuple[str, str]] = []  # (who, cause)
    user_errors = True
    for report in reports:
        who = f"rank {report.rank} on {report.host}"
        if report.outcome != "ok":
            problems.append((who, report.error))
            user_errors &= report.outcome == "user-error"
            continue
        differs = [f"{name}: {report.agreement.get(name, '?')} there, {value} on rank 0"
                   for name, value in agreed.items() if report.agreement.get(name) != value]
        if differs:
            problems.append((who, "would run another job than rank 0 (" + "; ".join(differs) + "); fix: give every "
                             "rank the same job file, model, software and settings (one environment on every node)"))
    if problems:
        code = ExitCode.REFUSED if user_errors else ExitCode.FAILED
        _tell(control, peers, SetupVerdict(summary="", reason="set-up failed", exit_code=code))
        raise SetupFailed("set-up failed on " + "; ".join(_merge(problems)), code)
    summary = prepared.plan.summary()
    _tell(control, peers, SetupVerdict(summary=json.dumps(summary.to_json())))
    return summary


def stop_stage_ranks(control: ControlPlane, peers: list[RankInfo], reason: str, exit_code: int) -> None:
    """Rank 0 failed its own set-up: tell every stage rank to stop (rank 0 then reports and aborts)."""
    _tell(control, peers, SetupVerdict(summary="", reason=reason, exit_code=exit_code))


def _tell(control: ControlPlane, peers: list[RankInfo], verdict: SetupVerdict) -> None:
    for peer in peers[1:]:
        control.send(peer.rank, verdict, TAG_TO_WORKER)


def _collect(control: ControlPlane, peers: list[RankInfo], timeout_s: float) -> list[_Report]:
    """Every stage rank's report; a rank that ends or stays silent past the deadline is named."""
    reports: dict[int, _Report] = {}
    me = peers[NODE_MANAGER]
    end = time.monotonic() + timeout_s
    while len(reports) < len(peers) - 1:
        for source, message in control.poll(TAG_TO_MANAGER):
            if isinstance(message, SetupReport):
                reports[source] = _Report(source, message.host, message.outcome, message.error,
                                          json.loads(message.agreement or "{}"))
        missing = [p for p in peers[1:] if p.rank not in reports]
        dead = [p for p in missing if p.host == me.host and not process_alive(p.pid)]
        if dead or (missing and time.monotonic() > end):
            lost = dead or missing
            why = "ended during set-up (killed or crashed)" if dead else f"did not finish set-up within {timeout_s:.0f} s"
            for peer in lost:
                reports[peer.rank] = _Report(peer.rank, peer.host, "error", f"its process {peer.pid} {why}", {})
            break
        if missing:
            time.sleep(POLL_S)
    return [reports[r] for r in sorted(reports)]


def _merge(problems: list[tuple[str, str]]) -> list[str]:
    """One line per distinct cause: 'rank 1 on h, rank 2 on h: X' rather than the same error twice."""
    merged: dict[str, list[str]] = {}
    for who, cause in problems:
        merged.setdefault(cause, []).append(who)
    return [f"{', '.join(who)}: {cause}" for cause, who in merged.items()]
