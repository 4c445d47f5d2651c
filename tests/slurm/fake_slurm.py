"""Fake Slurm commands for the batch script's tests: the script rendered as sbatch would run it,
with a fake srun (and squeue, scontrol, scancel, sbatch that note each call) on PATH."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

from onepiece_hpc.jobfile.job import SlurmFields
from onepiece_hpc.slurm.script import render_script

HOSTILE = "it's \"q\" $(touch PWNED) `touch PWNED`; touch PWNED\nline two | & > x"
ONE_LINE = HOSTILE.replace("\n", " ")  # sbatch options are single lines; line breaks are refused there


def fake(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


#: a fake srun: drops its own options (--mpi=..., --kill-on-bad-exit=1), runs the task command
SRUN = 'while [ "${1#--}" != "$1" ]; do shift; done; exec "$@"\n'


def slurm_env(ntasks: int, path: list[Path], system: bool = True) -> dict[str, str]:
    system_dirs = ["/usr/bin", "/bin"] if system else []
    return {"PATH": os.pathsep.join([*map(str, path), *system_dirs]), "SLURM_NTASKS": str(ntasks), "SLURM_JOB_ID": "1"}


def script_file(tmp_path: Path, options: SlurmFields | None = None) -> Path:
    script = tmp_path / "job.sbatch"
    script.write_text(render_script(options or SlurmFields(), "t"))
    return script


def run_script(tmp_path: Path, args: list[str], ntasks: int, path: list[Path],
                system: bool = True) -> subprocess.CompletedProcess:
    """Run the rendered script as sbatch would, with PATH = `path` (+ the system's, without Slurm)."""
    return subprocess.run(["/bin/bash", str(script_file(tmp_path)), *args], capture_output=True, text=True, timeout=30,
                          env=slurm_env(ntasks, path, system), cwd=tmp_path)


class Slurm:
    """Fake Slurm commands that note each call (one line of arguments per call) in `calls`; the
    fake srun runs `srun_body` in place of the ranks."""

    def __init__(self, tmp_path: Path, srun_body: str, state: str = "RUNNING None") -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.calls = tmp_path / "calls"
        note = f'echo "$(basename "$0") $*" >> {shlex.quote(str(self.calls))}\n'
        fake(self.bin, "squeue", note + f"echo {shlex.quote(state)}\n")  # the job's state and reason
        for name in ("scontrol", "scancel"):
            fake(self.bin, name, note)
        dump = f"import json, sys; json.dump(sys.argv[1:], open({str(tmp_path / 'sbatch.json')!r}, 'w'))"
        fake(self.bin, "sbatch", note + f'{sys.executable} -c "{dump}" "$@"; echo 77\n')
        fake(self.bin, "srun", note + srun_body)
        self.python = fake(self.bin, "fakepython", "exit 0\n")

    def called(self, name: str) -> list[str]:
        lines = self.calls.read_text().splitlines() if self.calls.exists() else []
        return [line.split(" ", 1)[1] if " " in line else "" for line in lines if line.split(" ", 1)[0] == name]


def wait_for(path: Path, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while not path.exists():
        assert time.monotonic() < end, f"{path.name} did not appear within {deadline_s:.0f} s"
        time.sleep(0.02)


def drained_run(tmp_path: Path, slurm: Slurm, script_args: list[str], sig: int,
                 options: SlurmFields | None = None) -> subprocess.CompletedProcess:
    """Start the script with a fake step that runs until the drain reaches it; signal the script
    (once the step runs) with `sig`; return how the script ended."""
    proc = subprocess.Popen(["/bin/bash", str(script_file(tmp_path, options)), "--python", str(slurm.python),
                             "--mpi", "pmi2", *script_args, "job.yaml"], env=slurm_env(4, [slurm.bin]), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(tmp_path / "step-started")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


#: a step that starts, then waits until the drain (the fake scancel's call) reaches it and exits with CODE
STEP = 'touch step-started; until grep -q "^scancel" calls 2>/dev/null; do sleep 0.05; done; exit {code}\n'
