"""`onepiece run -n N --mps`: the stage ranks that share a GPU run their kernels at once, through
NVIDIA's Multi-Process Service, instead of taking turns on the GPU.

Without MPS, the CUDA contexts of the processes on one GPU are time-sliced: a rank's kernels run
only in its slice, so a decode rank can't use what the denoiser leaves idle. Under MPS their
kernels share the GPU as streams of one process do. On one H200 this took a staged Wan2.1-1.3B
run from 1.065x to 0.958x its floor, ahead of data-parallel (docs/gpus.md).

If the environment already names a running MPS control daemon (the site's, or a Slurm prolog's,
through CUDA_MPS_PIPE_DIRECTORY, or the default pipe folder), the ranks use it as it is. Otherwise
the launcher starts one of its own for the run, in a private folder (mode 0700), in the
foreground and tied to the launcher's life (it gets SIGTERM when the launcher dies, kill -9
included), and quits it once every rank has ended.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from onepiece_hpc.errors import UserError

CONTROL = "nvidia-cuda-mps-control"
PIPE_VAR = "CUDA_MPS_PIPE_DIRECTORY"
LOG_VAR = "CUDA_MPS_LOG_DIRECTORY"
#: where CUDA looks for the control daemon when CUDA_MPS_PIPE_DIRECTORY is not set
DEFAULT_PIPE = Path("/tmp/nvidia-mps")
#: how long a daemon of our own may take to open its control pipe
START_TIMEOUT_S = 20.0
#: how long it may take to quit once asked
QUIT_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


def running_daemon(env: Mapping[str, str]) -> Path | None:
    """The pipe folder of the MPS control daemon this environment's CUDA would use, if one runs."""
    folder = Path(env[PIPE_VAR]) if env.get(PIPE_VAR) else DEFAULT_PIPE
    return folder if (folder / "control").exists() else None


@contextmanager
def gpu_sharing(env: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """The environment for ranks that run under MPS, for as long as the block runs: a running
    daemon's as it is, else one of our own, started here and quit at the end."""
    if running_daemon(env) is not None:
        yield dict(env)
        return
    binary = shutil.which(CONTROL, path=env.get("PATH"))
    if binary is None:
        raise UserError(f"--mps needs NVIDIA's MPS control daemon, {CONTROL}, on PATH (it comes with the "
                        "NVIDIA driver); fix: run on a GPU node with the driver's tools, or leave --mps out")
    with tempfile.TemporaryDirectory(prefix="onepiece-mps-") as home:  # mode 0700
        pipe, logs = Path(home) / "pipe", Path(home) / "log"
        pipe.mkdir(mode=0o700)
        logs.mkdir(mode=0o700)
        daemon_env = {**env, PIPE_VAR: str(pipe), LOG_VAR: str(logs)}
        with open(Path(home) / "daemon.err", "wb") as errors:
            daemon = subprocess.Popen([binary, "-f"], env=daemon_env, stdin=subprocess.DEVNULL, stdout=errors,
                                      stderr=errors, start_new_session=True, preexec_fn=_end_with_parent)
        try:
            _wait_ready(daemon, pipe, Path(home) / "daemon.err")
            yield daemon_env
        finally:
            _quit(binary, daemon, daemon_env)


def _end_with_parent() -> None:
    """In the daemon's process, before it runs: SIGTERM when the launcher dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_ready(daemon: subprocess.Popen, pipe: Path, errors: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (pipe / "control").exists():
        if daemon.poll() is not None:
            said = errors.read_text(errors="replace").strip().splitlines()[-3:]
            raise UserError(f"--mps: {CONTROL} ended at once with exit code {daemon.returncode}"
                            f"{': ' + ' / '.join(said) if said else ''}; fix: check that this node's GPUs allow "
                            "MPS (nvidia-smi's compute mode Default or Exclusive_Process), or leave --mps out")
        if time.monotonic() > deadline:
            daemon.kill()
            daemon.wait()
            raise UserError(f"--mps: {CONTROL} did not open its control pipe within {START_TIMEOUT_S:.0f} s; "
                            "fix: leave --mps out, or start MPS for the node yourself and set "
                            f"{PIPE_VAR} (docs/gpus.md)")
        time.sleep(0.05)


def _quit(binary: str, daemon: subprocess.Popen, env: Mapping[str, str]) -> None:
    """Ask the daemon to quit (it takes its MPS server with it); kill it if it does not."""
    if daemon.poll() is None:
        try:
            subprocess.run([binary], input=b"quit\n", env=dict(env), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=QUIT_TIMEOUT_S, check=False)
            daemon.wait(timeout=QUIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            daemon.kill()
    daemon.wait()
