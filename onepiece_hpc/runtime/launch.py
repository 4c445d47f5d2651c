"""`onepiece run JOB -n N`: start N local ranks with mpiexec and report how the job ended."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime.peers import process_alive
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
           rank_stdout=None) -> dict:
    """Run the ranks to the end; returns rank 0's report. Ctrl-C is passed on to the ranks.

    `rank_stdout` redirects what the ranks print (e.g. to stderr when stdout carries JSON).
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
        proc = subprocess.Popen(launcher.command(ranks, program, as_root), start_new_session=True,
                                stdout=rank_stdout)
        first_dead: list[RankStatus] = []
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


def _watch(proc: subprocess.Popen, status_dir: Path, first_dead: list[RankStatus]) -> int:
    """Wait for mpiexec; meanwhile note the first rank(s) whose process disappears."""
    while (code := proc.poll()) is None:
        if not first_dead:
            statuses = read_statuses(status_dir)
            first_dead.extend(s for s in statuses.values() if not process_alive(s.pid))
        time.sleep(WATCH_EVERY_S)
    return code


def _death_message(dead: list[RankStatus]) -> str:
    root = min(dead, key=lambda s: s.rank == 0)  # a worker's death explains rank 0's, not the reverse
    unit = f"unit {root.unit}" if root.unit >= 0 else "no unit in hand"
    others = [s.rank for s in dead if s is not root]
    also = f" (ranks {others} were gone at the same moment)" if others else ""
    return (f"rank {root.rank} on {root.host}, stage {root.stage}, {unit}: rank died: its process {root.pid} "
            f"ended without a word (killed or crashed){also}")
