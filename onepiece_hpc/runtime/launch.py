"""`onepiece run JOB -n N`: start N local ranks with mpiexec and report how the job ended.

The ranks live no longer than the launcher: Ctrl-C, SIGTERM and SIGHUP (a closed terminal) all
stop them as Ctrl-C does, through rank 0, which gives up the units in flight, closes the output in
order and then ends every rank; a launcher that dies outright (kill -9, the out-of-memory killer)
is noticed by the ranks themselves (`lifeline`). Draining on a signal is for Slurm jobs, whose
ranks srun starts and signals.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from onepiece_hpc.errors import UserError
from onepiece_hpc.exit_codes import after_signal
from onepiece_hpc.runtime.lifeline import tie_to_this_process
from onepiece_hpc.runtime.mps import gpu_sharing
from onepiece_hpc.runtime.options import RunOptions
from onepiece_hpc.runtime.status import RankStatus, read_statuses

WATCH_EVERY_S = 0.02
#: how long stopped ranks may take to close the output before mpiexec (and with it every rank) is killed
STOP_GRACE_S = 30.0
#: signals that stop the launcher as Ctrl-C does (SIGINT itself arrives as KeyboardInterrupt)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class LauncherStopped(KeyboardInterrupt):
    """The launcher was asked to stop with SIGTERM, or SIGHUP as a closed terminal sends; the ranks
    were interrupted as on Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stopped_exit_code(stop: KeyboardInterrupt) -> int:
    """128 + the signal's number, as shells report: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return after_signal(stop.signum if isinstance(stop, LauncherStopped) else signal.SIGINT)


@dataclass(frozen=True)
class MpiLauncher:
    path: str
    flavor: str  # "mpich" (hydra) or "openmpi"

    def command(self, ranks: int, program: list[str], as_root: bool) -> list[str]:
        if self.flavor == "openmpi":
            extra = ["--oversubscribe", *(["--allow-run-as-root"] if as_root else [])]
        else:
            # hydra's default: when one rank dies it kills the rest at once, and the launcher
            # (watching every rank's process) names the one that went first
            extra = []
        return [self.path, *extra, "-n", str(ranks), *program]


def find_mpiexec() -> MpiLauncher:
    """The mpiexec next to this Python (a pip-installed MPI) first, else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    path = str(beside) if beside.exists() else shutil.which("mpiexec")
    if path is None:
        raise UserError("no mpiexec found (next to this Python or on PATH); fix: pip install mpich, "
                        "or load your cluster's MPI module, or use --monolithic")
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"{path} --version failed ({err}); fix: check the MPI installation") from None
    return MpiLauncher(path, "openmpi" if "Open MPI" in version or "OpenRTE" in version else "mpich")


def launch(options: RunOptions, as_root: bool, rank_stdout=None, env: dict[str, str] | None = None) -> dict:
    """Run `options.ranks` ranks with these options to the end; returns rank 0's report. Ctrl-C,
    SIGTERM and SIGHUP interrupt the ranks (rank 0 closes the output in order) and then raise
    KeyboardInterrupt here (LauncherStopped for the two signals).

    `rank_stdout` redirects what the ranks print (e.g. to stderr when stdout carries JSON);
    `env` replaces the environment the ranks start with.
    """
    if options.ranks is None:
        raise ValueError("launch needs options.ranks: how many ranks to start")
    launcher = find_mpiexec()
    base = os.environ if env is None else env
    with tempfile.TemporaryDirectory(prefix="onepiece-run-") as scratch, \
            (gpu_sharing(base) if options.mps else nullcontext(dict(base))) as ranks_env:
        report_path = Path(scratch) / "report.json"
        status_dir = Path(scratch) / "status"
        status_dir.mkdir()
        each = replace(options, report=report_path, status_dir=status_dir, expect_ranks=options.ranks)
        program = [sys.executable, "-m", "onepiece_hpc.runtime.rank_main", *each.to_argv()]
        tied = tie_to_this_process(ranks_env)
        proc = subprocess.Popen(launcher.command(options.ranks, program, as_root), start_new_session=True, env=tied,
                                stdout=rank_stdout)
        first_dead: list[list[RankStatus]] = []
        before = _stop_on_signals()
        try:
            code = _watch(proc, status_dir, first_dead)
        except KeyboardInterrupt:
            _ignore(STOP_SIGNALS)  # the stop is under way; a second Ctrl-C still kills at once
            _stop_ranks(proc, status_dir)
            raise
        finally:
            _restore(before)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report.setdefault("status", "failed" if code else "completed")
    report["exit_code"] = code
    if report["status"] == "failed" and "error" not in report and first_dead:
        report["error"] = _death_message(first_dead)
        report["reported_by"] = "launcher"
    return report


def _stop_on_signals() -> dict[int, object]:
    """Turn SIGTERM and SIGHUP into LauncherStopped while the ranks run; returns the handlers they
    replace. Only the main thread can do this: elsewhere the signals keep their handlers, and a
    launcher they end is noticed by the ranks' lifeline instead."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame) -> None:
        raise LauncherStopped(signum)

    return {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}


def _ignore(signums) -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in signums:
            signal.signal(signum, signal.SIG_IGN)


def _restore(handlers: dict[int, object]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def _stop_ranks(proc: subprocess.Popen, status_dir: Path) -> None:
    """Interrupt the run through rank 0, which closes the output in order and then aborts every rank;
    if rank 0 is not serving yet (or not any more), through mpiexec, which passes the interrupt to every
    rank. Whatever has not ended after STOP_GRACE_S is killed."""
    manager = read_statuses(status_dir).get(0)
    if proc.poll() is None and not (manager is not None and _send(manager.pid, signal.SIGINT)):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()


def _send(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _watch(proc: subprocess.Popen, status_dir: Path, dead: list[list[RankStatus]]) -> int:
    """Wait for mpiexec; meanwhile collect the ranks whose processes end, one list per wake-up in
    which any did (the first list holds the first to go).

    Each rank's process is watched through a pidfd, so the kernel wakes this process the moment
    the first rank dies, before the MPI runtime, a few process hops away, tears down the rest.
    """
    poller = select.poll()
    watched: dict[int, RankStatus] = {}
    known: set[int] = set()
    try:
        while (code := proc.poll()) is None:
            gone = []
            for status in read_statuses(status_dir).values():
                if status.rank in known:
                    continue
                known.add(status.rank)
                try:
                    fd = os.pidfd_open(status.pid)
                except ProcessLookupError:
                    gone.append(status)
                    continue
                watched[fd] = status
                poller.register(fd, select.POLLIN)
            events = poller.poll(WATCH_EVERY_S * 1000)
            latest = read_statuses(status_dir) if events else {}
            for fd, _ in events:
                status = watched.pop(fd)
                gone.append(latest.get(status.rank, status))  # its last word: stage, unit, move
                poller.unregister(fd)
                os.close(fd)
            if gone:
                dead.append(gone)
    finally:
        for fd in watched:
            os.close(fd)
    return code


def _death_message(dead: list[list[RankStatus]]) -> str:
    """The first rank seen gone is the cause; the MPI runtime tears down the rest moments later.
    When rank 0 and stage ranks vanish in the same poll, the stage rank is blamed: rank 0 is
    the one that watches, so it is the likelier casualty of the teardown."""
    first = dead[0]
    root = next((s for s in first if s.rank != 0), first[0])
    unit = f"unit {root.unit}" if root.unit >= 0 else "no unit in hand"
    also = ""
    stage = f"{root.stage} (moving to {root.moving_to})" if root.moving_to else root.stage
    return (f"rank {root.rank} on {root.host}, stage {stage}, {unit}: rank died: its process {root.pid} "
            f"ended without a word (killed or crashed){also}")
