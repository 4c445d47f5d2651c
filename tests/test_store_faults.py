"""Invariant 1 under the faults a cluster has: SIGKILL at every write a run makes (opening,
creating files, committing, telemetry, closing), two writers at once with HDF5's locking on and
off, a disk that fills. After each, every command reads the output and a resume completes it
exactly once, bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import store_driver
from support import REPO, invoke, write_job

STRACE = shutil.which("strace")
KILLABLE = "pwrite64,write,fsync,link,unlink,rename"
DRIVER = [sys.executable, str(REPO / "tests/store_driver.py")]
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace injects the kills (scripts/setup.sh installs it "
                                                         "as root: apt-get install strace)")


def _env() -> dict:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def _job(folder: Path, count: int = 6) -> Path:
    return write_job(folder, [f"item {i}" for i in range(count)], output="out/d.h5")


def _writes(job: Path, output: Path, log: Path) -> dict[str, int]:
    """How many calls of each killable syscall an uninterrupted run makes."""
    subprocess.run([STRACE, "-f", "-qq", "-o", str(log), "-e", f"trace={KILLABLE}", *DRIVER, str(job), str(output)],
                   check=True, timeout=120, env=_env(), capture_output=True)
    pattern = re.compile(rf"^(\d+)\s+({KILLABLE.replace(',', '|')})\(")
    calls = [found.groups() for line in log.read_text().splitlines() if (found := pattern.match(line))]
    pids = [pid for pid, _ in calls]
    writer = max(set(pids), key=pids.count)  # the run itself, not a helper child it may start
    counts: dict[str, int] = {}
    for pid, name in calls:
        if pid == writer:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _killed_at(job: Path, output: Path, syscall: str, nth: int) -> subprocess.CompletedProcess:
    """Run, killed on entering the nth call of `syscall` (strace counts each syscall on its own)."""
    return subprocess.run([STRACE, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
                           "-e", f"inject={syscall}:signal=KILL:when={nth}", *DRIVER, str(job), str(output)],
                          timeout=120, env=_env(), capture_output=True, text=True)


def _assert_readable(output: Path, scratch: Path) -> None:
    """Every reading command works on what a kill left (or says plainly that nothing is there)."""
    if not output.exists():
        result = invoke("inspect", output)
        assert result.code == 2 and "no such file" in result.err
        return
    inspected = invoke("inspect", output, "--json")
    assert inspected.code == 0, inspected.err
    verified = invoke("verify", output)
    assert verified.code in (0, 1) and "damaged" not in verified.out and "unreadable" not in verified.out, verified.out
    exported = invoke("export", output, scratch / "png")
    assert exported.code == 0, exported.err
    merged = invoke("merge", output, "-o", scratch / "merged.h5")
    assert merged.code == 0, merged.err


def _assert_complete(output: Path, count: int) -> None:
    with h5py.File(output, "r") as f:
        assert f["done"][...].all()
        images = f["outputs/images"][...]
        keys = [k.decode() for k in f["items"]["key"][...]]
    assert len(set(keys)) == count
    np.testing.assert_array_equal(images, np.stack([store_driver.pixels(i) for i in range(count)]))
    assert invoke("verify", output).code == 0


@needs_strace
@pytest.mark.slow
def test_sigkill_at_every_write_then_resume_completes_exactly_once(tmp_path):
    job = _job(tmp_path / "job")
    counts = _writes(job, tmp_path / "reference/d.h5", tmp_path / "trace.log")
    assert sum(counts.values()) > 40, f"the trace should see the store's writes: {counts}"
    for syscall, count in counts.items():
        for nth in range(1, count + 1):
            case = tmp_path / f"{syscall}-{nth}"
            output = case / "d.h5"
            killed = _killed_at(job, output, syscall, nth)
            where = f"killed at {syscall} #{nth}"
            assert killed.returncode in (-9, 137), f"{where}: the run was not killed ({killed.stderr[-500:]})"
            _assert_readable(output, case)
            store_driver.run(job, output)
            _assert_complete(output, 6)
            leftovers = [p.name for p in output.parent.iterdir() if p.name.startswith(".")]
            assert not leftovers, f"{where}: temporary files beside the output: {leftovers}"
            shutil.rmtree(case)


def _together(job: Path, outputs: list[Path], env: dict) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([*DRIVER, str(job_file), str(out)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for job_file, out in zip(job, outputs)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


@pytest.mark.parametrize("locking", ["TRUE", "FALSE"])
def test_two_runs_of_one_job_at_once_one_writes_the_other_is_refused(tmp_path, locking):
    job = _job(tmp_path, count=40)
    output = tmp_path / "shared/d.h5"
    env = {**_env(), "HDF5_USE_FILE_LOCKING": locking}
    for _ in range(3):  # a race: try it a few times
        results = _together([job, job], [output, output], env)
        codes = sorted(r.returncode for r in results)
        refused = [r for r in results if r.returncode == 2]
        if codes == [0, 2]:
            assert "is being written by pid" in refused[0].stderr, refused[0].stderr
        else:
            assert codes == [0, 0], [r.stderr for r in results]  # one finished before the other began
        committed = sum(int(r.stdout) for r in results if r.returncode == 0)
        assert committed == 40, "every item is generated once"
        _assert_complete(output, 40)
        shutil.rmtree(output.parent)


@pytest.mark.parametrize("locking", ["TRUE", "FALSE"])
def test_two_jobs_on_one_path_at_once_one_writes_the_other_is_refused(tmp_path, locking):
    first, second = _job(tmp_path / "a", count=30), write_job(tmp_path / "b", [f"other {i}" for i in range(30)])
    output = tmp_path / "shared/d.h5"
    env = {**_env(), "HDF5_USE_FILE_LOCKING": locking}
    results = _together([first, second], [output, output], env)
    assert sorted(r.returncode for r in results) == [0, 2], [r.stderr for r in results]
    refused = next(r for r in results if r.returncode == 2)
    assert "holds the output of another job" in refused.stderr or "is being written by" in refused.stderr
    winner = next(i for i, r in enumerate(results) if r.returncode == 0)
    with h5py.File(output, "r") as f:
        prompts = [p.decode() for p in f["items"]["prompt"][...]]
    assert prompts[0] == ("item 0" if winner == 0 else "other 0")
    assert invoke("verify", output).code == 0


def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    folder = tmp_path / "disk"
    _mount_tmpfs(folder, "2m")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], timeout=30)


def _fill(disk: Path, leave: int) -> Path:
    """A file that takes all but `leave` bytes of the disk's free space."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    with open(filler, "wb") as handle:
        handle.write(b"\1" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def test_a_run_that_cannot_fit_is_refused_before_it_starts(small_disk, tmp_path):
    job = _job(tmp_path / "job", count=60)
    filler = _fill(small_disk, leave=200_000)
    refused = subprocess.run([*DRIVER, str(job), str(small_disk / "d.h5")], env=_env(), capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "need" in refused.stderr and str(small_disk) in refused.stderr and "Traceback" not in refused.stderr
    filler.unlink()
    assert int(subprocess.run([*DRIVER, str(job), str(small_disk / "d.h5")], env=_env(), capture_output=True,
                              text=True, timeout=120, check=True).stdout) == 60
    _assert_complete(small_disk / "d.h5", 60)


def test_a_disk_that_fills_mid_run_stops_cleanly_and_a_resume_after_freeing_space_completes(small_disk, tmp_path):
    count = 60
    job = _job(tmp_path / "job", count=count)
    output = small_disk / "d.h5"
    go = tmp_path / "go"
    env = {**_env(), "STORE_DRIVER_PAUSE_AT": "12", "STORE_DRIVER_GO": str(go)}
    proc = subprocess.Popen([*DRIVER, str(job), str(output)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        paused = tmp_path / "go.paused"
        for _ in range(600):
            if paused.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert paused.exists(), "the run should pause after 12 commits"
        filler = _fill(small_disk, leave=4096)  # another job fills the disk while this one runs
        go.touch()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    assert "space" in err and str(small_disk) in err and "Traceback" not in err
    assert "everything committed so far is kept" in err
    kept = invoke("inspect", output, "--json")
    assert kept.code == 0, kept.err
    assert json.loads(kept.out)["items_done"] >= 12
    filler.unlink()
    resumed = subprocess.run([*DRIVER, str(job), str(output)], env=_env(), capture_output=True, text=True,
                             timeout=120, check=True)
    assert int(resumed.stdout) == count - json.loads(kept.out)["items_done"]
    _assert_complete(output, count)


def _driver(job: Path, output: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*DRIVER, str(job), str(output)], env=_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("planted", ["index", "lock", "journal", "data-file", "dangling-data-file"])
def test_a_planted_symlink_never_redirects_a_write(tmp_path, planted):
    job = _job(tmp_path / "job")
    output = tmp_path / "out/d.h5"
    assert _driver(job, output).returncode == 0
    folder = Path(f"{output}.d")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    if planted == "index":
        output.rename(tmp_path / "moved.h5")
        output.symlink_to(victim)
    elif planted == "lock":
        (folder / "lock").symlink_to(victim)
    elif planted == "journal":
        (folder / "journal.jsonl").unlink()
        (folder / "journal.jsonl").symlink_to(victim)
    else:  # a data file the run must create again: the journal no longer lists it
        (folder / "data-00001.h5").unlink()
        lines = (folder / "journal.jsonl").read_text().splitlines()
        (folder / "journal.jsonl").write_text("".join(f"{line}\n" for line in lines if '"file": 1,' not in line))
        store_driver_items = 6
        with h5py.File(folder / "data-00000.h5", "r") as f:
            assert len(f["done"]) < store_driver_items, "the job must span several data files"
        target = victim if planted == "data-file" else tmp_path / "nothing-here"
        (folder / "data-00001.h5").symlink_to(target)
    result = _driver(job, output)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "\nerror: " in f"\n{result.stderr}"
    assert victim.read_text() == "precious"
