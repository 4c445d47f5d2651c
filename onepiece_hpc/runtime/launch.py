"""`onepiece run JOB -n N`: start N local ranks with mpiexec and report how the job ended."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime.status import RankStatus, read_statuses

WATCH_EVERY_S = 0.02


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


def launch(job_file: Path, ranks: int, output: Path | None, rank_flags: list[str], as_root: bool,
           rank_stdout=None, env: dict[str, str] | None = None) -> dict:
    """Run the ranks to the end; returns rank 0's report. Ctrl-C is passed on to the ranks.

    `rank_stdout` redirects what the ranks print (e.g. to stderr when stdout carries JSON);
    `env` replaces the environment the ranks start with.
    """
    launcher = find_mpiexec()
    with tempfile.TemporaryDirectory(prefix="onepiece-run-") as scratch:
        report_path = Path(scratch) / "report.json"
        status_dir = Path(scratch) / "status"
        status_dir.mkdir()
        program = [sys.executable, "-m", "onepiece_hpc.runtime.rank_main", str(job_file),
                   "--report", str(report_path), "--status-dir", str(status_dir),
                   "--expect-ranks", str(ranks), *rank_flags]
        if output is not None:
            program += ["--output", str(output)]
        proc = subprocess.Popen(launcher.command(ranks, program, as_root), start_new_session=True, env=env,
                                stdout=rank_stdout)
        first_dead: list[list[RankStatus]] = []
        try:
            code = _watch(proc, status_dir, first_dead)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        finally:
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
