"""The ranks of `onepiece run -n N` live no longer than the launcher: a kill -9 or a SIGHUP of it ends
mpiexec and every rank within seconds, rank 0 closing the output in order; a resume then completes
it, every item once, bit-identical. Chaos rounds kill a random rank, the launcher or the whole tree
at a random moment (tests/chaos.py runs any number of them)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from chaos import chaos_job, check_resumed, output_of, process_tree, reference_of, run_rounds, wait_ended
from onepiece_hpc.runtime.lifeline import LAUNCHER_VAR, identity_of
from support import done_count, running, runs_of, wait_until

pytestmark = [pytest.mark.mpi, pytest.mark.slow, pytest.mark.timeout(900)]

#: every process of a run ends this soon after its launcher: rank 0 closes in about a second
ENDS_WITHIN_S = 15.0


def small_job(folder):
    """Two quick items, then 22 slow ones: the launcher is cut after the quick ones commit, with
    about five units in flight, so the run is interrupted on any machine (with 24 items of 4 steps,
    a fast machine committed all of them before the ranks had ended)."""
    return chaos_job(folder, items=24, steps=24, quick=2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_of(tmp_path_factory.mktemp("reference"), small_job)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["kill-9", "sighup"])
def test_the_end_of_the_launcher_ends_every_rank_and_the_output_resumes_exactly_once(tmp_path, reference, sig):
    job = small_job(tmp_path)
    output = output_of(job)
    with running("run", job, "-n", "4", "--wait-timeout", "60") as proc:
        wait_until(proc, lambda: done_count(output) >= 2, "two committed items")
        tree = process_tree(proc.pid)
        assert {p.role for p in tree} >= {"launcher", "mpiexec", "rank 0", "rank 1", "rank 2", "rank 3"}, tree
        proc.send_signal(sig)
        took, left = wait_ended(tree, str(job), ENDS_WITHIN_S)
        assert not left, f"still running {took:.0f} s after the launcher's {sig.name}: {left}"
        code = proc.wait(timeout=30)
        _, err = proc.communicate(timeout=30)
    if sig == signal.SIGHUP:  # the launcher itself stopped the ranks, reported and left
        assert code == 128 + signal.SIGHUP, err[-3000:]
        assert "run the same command again to resume" in err
    kept = done_count(output)
    assert 2 <= kept < 24
    first = runs_of(output)[0]
    assert first["status"] == "interrupted" and int(first["items_committed"]) == kept  # closed in order
    assert check_resumed(job, 4, reference) == ""


def chaos_small_job(folder):
    """Random moments need no slow tail: 24 items of 4 steps."""
    return chaos_job(folder, items=24, steps=4)


def test_chaos_rounds_hold(tmp_path):
    """Two rounds at random moments: a kill -9 of a random rank, and of the whole tree (the launcher
    alone is the test above; `python tests/chaos.py` takes turns among all three)."""
    lines = []
    rounds = run_rounds(tmp_path, 2, seed=20261213, make_job=chaos_small_job, say=lines.append,
                        victims=("rank", "tree"))
    assert [r.failure for r in rounds] == ["", ""], "\n".join(lines)
    assert {r.cut.victim for r in rounds} == {"rank", "tree"}


RANK = textwrap.dedent("""
    import atexit, os, signal, sys, time
    from onepiece_hpc.runtime import lifeline
    lifeline.STAGE_GRACE_S = 0.5
    if sys.argv[2] == "serving":  # rank 0 in its orderly stop's reach
        signal.signal(signal.SIGINT, lambda *_: (print("stopping", flush=True), os._exit(130)))
    else:  # rank 0 still starting: an interrupt is not caught, and leaving waits as MPI_Finalize would
        atexit.register(time.sleep, 60)
    print("watching" if lifeline.watch_launcher(os.environ, manager=sys.argv[1] == "0") else "unwatched", flush=True)
    time.sleep(60)
""")


def _first_line(proc: subprocess.Popen, timeout_s: float = 60.0) -> str:
    """The first line `proc` prints, or a failure if none comes in time."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, f"no line from the watcher within {timeout_s:.0f} s"
    return proc.stdout.readline().strip()


def _rank(launcher_var: str | None, rank: int, phase: str = "serving", sigint_ignored: bool = False) -> subprocess.Popen:
    """A process that watches a launcher as a rank of that number does, in that phase of its life
    (`sigint_ignored`: started as a background job of a script is, SIGINT ignored)."""
    env = {k: v for k, v in os.environ.items() if k != LAUNCHER_VAR}
    if launcher_var is not None:
        env[LAUNCHER_VAR] = launcher_var
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen([sys.executable, "-c", RANK, str(rank), phase], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=ignore)


@pytest.mark.parametrize("rank, phase, code", [(0, "serving", 130), (0, "starting", 130), (2, "serving", 1)],
                         ids=["rank-0-stops-as-on-ctrl-c", "rank-0-in-set-up-leaves-at-once", "stage-rank-leaves"])
def test_a_rank_ends_soon_after_its_launcher(rank, phase, code):
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with _rank(identity_of(launcher.pid).render(), rank, phase) as watcher:
            assert _first_line(watcher) == "watching"
            launcher.kill()
            gone_at = time.monotonic()
            out, err = watcher.communicate(timeout=30)
            assert watcher.returncode == code, err
            assert time.monotonic() - gone_at < 5
            if rank == 0:
                assert "the launcher (`onepiece run`" in err and "resume" in err
                assert out.split() == (["stopping"] if phase == "serving" else [])
                assert "Traceback" not in err
    finally:
        launcher.kill()
        launcher.wait(timeout=30)


def test_rank_0_of_a_launcher_started_in_the_background_still_stops_in_order():
    """A script's background job passes SIGINT on ignored; rank 0's orderly stop is an interrupt."""
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with _rank(identity_of(launcher.pid).render(), 0, "starting", sigint_ignored=True) as watcher:
            assert _first_line(watcher) == "watching"
            launcher.kill()
            _, err = watcher.communicate(timeout=30)
            assert watcher.returncode == 130, err
            assert "did not close" not in err
    finally:
        launcher.kill()
        launcher.wait(timeout=30)


def test_a_rank_whose_launcher_is_already_gone_stops_at_once():
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    named = identity_of(launcher.pid).render()
    launcher.kill()
    launcher.wait(timeout=30)
    with _rank(named, 0) as watcher:
        out, _ = watcher.communicate(timeout=30)
    # perhaps before it could say "watching", or while it did: the stop may print between its word and newline
    assert out.replace("watching", " ").split() == ["stopping"] and watcher.returncode == 130


@pytest.mark.parametrize("value", [None, "1:2:a-boot-of-another-host", "not an identity"],
                         ids=["srun-no-launcher", "another-host", "damaged"])
def test_ranks_not_started_by_the_local_launcher_are_not_watched(value):
    with _rank(value, 0) as watcher:
        assert _first_line(watcher) == "unwatched"
        watcher.kill()
        watcher.wait(timeout=30)
