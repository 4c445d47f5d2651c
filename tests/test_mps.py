"""`onepiece run --mps`: the run's own MPS control daemon, its life, and the refusals.

There is no GPU here, so no NVIDIA driver and no real `nvidia-cuda-mps-control`: these tests put
a stand-in of that one program on PATH, which behaves as the real one does towards us (in the
foreground it opens `control` in CUDA_MPS_PIPE_DIRECTORY; `quit` on the stdin of a second call
ends it). The real daemon, with ranks sharing an H200 under it, is measured by `onepiece bench
pipeline --mps` (docs/gpus.md, bench/results/).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime.mps import LOG_VAR, PIPE_VAR, gpu_sharing
from onepiece_hpc.runtime.options import RunOptions
from tests.support import REPO, run_cli

STAND_IN = '''\
#!{python}
"""A stand-in for nvidia-cuda-mps-control: -f serves in the foreground, else stdin goes to it."""
import os, sys, time
from pathlib import Path
pipe = Path(os.environ["CUDA_MPS_PIPE_DIRECTORY"])
book = Path(os.environ["STAND_IN_BOOK"])
if os.environ.get("STAND_IN_FAIL"):
    print("An MPS control daemon is already running on this GPU", file=sys.stderr)
    sys.exit(1)
if sys.argv[1:] == ["-f"]:
    with book.open("a") as out:
        out.write(f"started {{os.getpid()}} {{pipe}} {{os.environ['CUDA_MPS_LOG_DIRECTORY']}}\\n")
    os.mkfifo(pipe / "control")
    while True:
        with open(pipe / "control") as fifo:
            if "quit" in fifo.read():
                break
    (pipe / "control").unlink()
    with book.open("a") as out:
        out.write("quit\\n")
else:
    with open(pipe / "control", "w") as fifo:
        fifo.write(sys.stdin.read())
'''


@pytest.fixture()
def stand_in(tmp_path):
    """PATH with the stand-in daemon first, and the file it notes its life in."""
    folder = tmp_path / "bin"
    folder.mkdir()
    program = folder / "nvidia-cuda-mps-control"
    program.write_text(STAND_IN.format(python=sys.executable))
    program.chmod(0o755)
    book = tmp_path / "book.txt"
    env = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "STAND_IN_BOOK": str(book)}
    env.pop(PIPE_VAR, None)
    return env, book


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def _started_pid(book: Path) -> int:
    return int(book.read_text().split()[1])


def test_the_run_starts_a_private_daemon_for_its_ranks_and_quits_it_after_them(stand_in):
    env, book = stand_in
    with gpu_sharing(env) as ranks_env:
        pipe, logs = Path(ranks_env[PIPE_VAR]), Path(ranks_env[LOG_VAR])
        assert (pipe / "control").exists()  # ready before any rank starts
        home = pipe.parent
        assert stat.S_IMODE(home.stat().st_mode) == 0o700 and stat.S_IMODE(pipe.stat().st_mode) == 0o700
        assert logs.parent == home and ranks_env["PATH"] == env["PATH"]
        pid = _started_pid(book)
        assert _alive(pid)
    assert book.read_text().splitlines()[-1] == "quit"
    assert not _alive(pid) and not home.exists()


def test_a_running_daemon_is_used_as_it_is(stand_in, tmp_path):
    env, book = stand_in
    site = tmp_path / "site-mps"
    site.mkdir()
    (site / "control").touch()
    env = {**env, PIPE_VAR: str(site), "PATH": "/nonexistent"}  # nothing to start: none is needed
    with gpu_sharing(env) as ranks_env:
        assert ranks_env == env
    assert not book.exists() and (site / "control").exists()


def test_no_daemon_program_is_a_clear_refusal(stand_in):
    env, _ = stand_in
    with pytest.raises(UserError) as refused, gpu_sharing({**env, "PATH": "/nonexistent"}):
        pass
    assert "nvidia-cuda-mps-control" in str(refused.value) and "fix:" in str(refused.value)


def test_a_daemon_that_ends_at_once_is_said_with_its_own_words(stand_in):
    env, _ = stand_in
    with pytest.raises(UserError) as refused, gpu_sharing({**env, "STAND_IN_FAIL": "1"}):
        pass
    said = str(refused.value)
    assert "exit code 1" in said and "already running on this GPU" in said and "fix:" in said


def test_a_launcher_killed_outright_takes_its_daemon_with_it(stand_in):
    env, book = stand_in
    holder = textwrap.dedent("""\
        import os, sys, time
        from onepiece_hpc.runtime.mps import gpu_sharing
        with gpu_sharing(os.environ):
            print("ready", flush=True)
            time.sleep(120)
        """)
    proc = subprocess.Popen([sys.executable, "-c", holder], env={**env, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        pid = _started_pid(book)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the daemon outlived the launcher that started it"
    finally:
        proc.kill()
        proc.wait()


def test_a_staged_run_under_mps_completes_and_the_daemon_ends_with_it(stand_in, tmp_path):
    from onepiece_hpc.runtime.launch import launch

    env, book = stand_in
    output = tmp_path / "t.h5"
    options = RunOptions(job=REPO / "jobs" / "tiny.yaml", ranks=4, output=output, mps=True)
    report = launch(options, as_root=os.geteuid() == 0, rank_stdout=subprocess.DEVNULL, env=env)
    assert report["status"] == "completed", report
    assert book.read_text().splitlines()[-1] == "quit"
    assert not _alive(_started_pid(book))


@pytest.mark.parametrize("how", [["-n", "4"], ["--monolithic"]])
def test_mps_is_refused_before_anything_starts_where_it_cannot_apply(tmp_path, how):
    output = tmp_path / "x.h5"
    result = run_cli("run", "jobs/tiny.yaml", *how, "--mps", "-o", str(output), cwd=REPO)
    assert result.returncode == 2, result.stderr
    assert "--mps" in result.stderr and "fix:" in result.stderr and "Traceback" not in result.stderr
    assert not output.exists()
