"""Merge that can't duplicate or mislabel: merged views never taken as sources, sources of one job
or that share items refused, a replaced or missing source an error naming it whenever the view is
read, sources still running read as progress, thousands of shards under a low file-descriptor
limit, and temp files that a planted symlink can't redirect."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import h5py
import numpy as np
import pytest

from onepiece_hpc.store.index import attrs_digest
from support import REPO, invoke, run_cli, tamper, write_job

SHARDS = {"s0": ["a harbour at noon", "a snowy owl"], "s1": ["a tin robot", "a paper boat", "a red kite"]}
OVERLAP = ["a harbour at noon", "a field of poppies"]  # its item 0 is s0's item 0: same prompt, seed and params
MANY = 5000
FD_LIMIT = 256
MANY_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Real outputs: a sweep folder with shards s0 and s1, and an overlapping job's output outside it."""
    root = tmp_path_factory.mktemp("merge")
    paths = {}
    for name, prompts in {**SHARDS, "overlap": OVERLAP}.items():
        target = root / ("sweep" if name in SHARDS else "other") / f"{name}.h5"
        job = write_job(root / "jobs" / name, prompts, name=name, output=str(target))
        assert invoke("run", job, "--monolithic").code == 0
        paths[name], paths[f"{name}-job"] = target, job
    return paths


def copy_output(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    shutil.copytree(f"{source}.d", f"{target}.d")
    return target


def remove_output(path: Path) -> None:
    path.unlink()
    shutil.rmtree(f"{path}.d")


@pytest.fixture
def sweep(made, tmp_path) -> Path:
    """A private copy of the sweep folder (s0.h5, s1.h5 and their data folders)."""
    for name in SHARDS:
        copy_output(made[name], tmp_path / "sweep" / f"{name}.h5")
    return tmp_path / "sweep"


def summary(path: Path) -> dict:
    result = invoke("inspect", path, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def prompts_of(path: Path) -> list[str]:
    with h5py.File(path, "r") as f:
        return [p.decode() for p in f["items"]["prompt"]]


def assert_named_error(code: int, out: str, err: str, *named: Path, allowed=(2,)) -> None:
    assert code in allowed, f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in err
    for path in named:
        assert str(path) in err + out, f"{path} not named:\n{out}\n{err}"


# -- what a merge takes ------------------------------------------------------------------------------
def test_merging_a_folder_twice_never_takes_the_first_merged_view(sweep):
    first = invoke("merge", sweep)
    assert first.code == 0 and "5 items from 2 outputs" in first.out, first.err
    second = invoke("merge", sweep, "-o", sweep / "again.h5")
    assert second.code == 0 and "5 items from 2 outputs" in second.out, second.err
    info = summary(sweep / "again.h5")
    assert info["items_total"] == info["items_done"] == 5
    assert [source["path"] for source in info["sources"]] == ["s0.h5", "s1.h5"]
    assert prompts_of(sweep / "again.h5") == SHARDS["s0"] + SHARDS["s1"]
    third = invoke("merge", sweep)  # the default target exists: never overwritten
    assert_named_error(third.code, third.out, third.err, sweep / "merged.h5")


def test_a_merged_view_with_one_of_its_own_sources_is_refused(sweep, tmp_path):
    assert invoke("merge", sweep).code == 0
    result = invoke("merge", sweep / "merged.h5", sweep / "s0.h5", "-o", tmp_path / "twice.h5")
    assert_named_error(result.code, result.out, result.err, sweep / "merged.h5")
    assert not (tmp_path / "twice.h5").exists()


def test_two_outputs_of_one_job_are_refused(made, sweep, tmp_path):
    rerun = tmp_path / "rerun/s0.h5"
    assert invoke("run", made["s0-job"], "--monolithic", "-o", rerun).code == 0
    result = invoke("merge", sweep / "s0.h5", rerun, "-o", tmp_path / "m.h5")
    assert_named_error(result.code, result.out, result.err, sweep / "s0.h5", rerun)
    assert "same job" in result.err and not (tmp_path / "m.h5").exists()


def test_two_jobs_sharing_an_item_are_refused_naming_both(made, sweep, tmp_path):
    result = invoke("merge", sweep / "s1.h5", sweep / "s0.h5", made["overlap"], "-o", tmp_path / "m.h5")
    assert_named_error(result.code, result.out, result.err, sweep / "s0.h5", made["overlap"])
    assert "item 0 of" in result.err and "same item" in result.err and str(sweep / "s1.h5") not in result.err
    assert not (tmp_path / "m.h5").exists()


# -- what a merged view checks whenever it is read -------------------------------------------------------
def read_back(merged: Path, export_to: Path) -> list:
    return [invoke("inspect", merged), invoke("export", merged, export_to), invoke("verify", merged)]


def test_a_shard_replaced_after_the_merge_is_named_never_mislabelled(made, sweep, tmp_path):
    assert invoke("merge", sweep).code == 0
    remove_output(sweep / "s0.h5")
    copy_output(made["overlap"], sweep / "s0.h5")  # another job's output, as many items, at s0's path
    for result in read_back(sweep / "merged.h5", tmp_path / "png"):
        assert_named_error(result.code, result.out, result.err, sweep / "s0.h5")
        assert "replaced" in result.err
    assert not (tmp_path / "png").exists() or not any((tmp_path / "png").iterdir())
    proc = run_cli("inspect", sweep / "merged.h5")
    assert_named_error(proc.returncode, proc.stdout, proc.stderr, sweep / "s0.h5")


def test_a_shard_whose_data_folder_was_replaced_is_named(made, sweep, tmp_path):
    assert invoke("merge", sweep).code == 0
    shutil.rmtree(sweep / "s0.h5.d")
    shutil.copytree(f"{made['overlap']}.d", sweep / "s0.h5.d")
    for result in read_back(sweep / "merged.h5", tmp_path / "png"):
        assert_named_error(result.code, result.out, result.err, sweep / "s0.h5.d/data-00000.h5", allowed=(1, 2))
        assert "not done" not in result.out


@pytest.mark.parametrize("missing", ["index", "data file", "whole output"])
def test_a_missing_source_is_named_never_not_done(sweep, tmp_path, missing):
    assert invoke("merge", sweep).code == 0
    source = sweep / "s1.h5"
    if missing == "index":
        source.unlink()
        named = source
    elif missing == "data file":
        named = sweep / "s1.h5.d/data-00000.h5"
        named.unlink()
    else:
        remove_output(source)
        named = source
    for result in read_back(sweep / "merged.h5", tmp_path / "png"):
        assert_named_error(result.code, result.out, result.err, named, allowed=(1, 2))
        assert "not done" not in result.out and "2/5" not in result.out


def test_a_merge_while_a_source_is_incomplete_shows_progress_and_follows_it(made, sweep):
    tamper(sweep / "s1.h5", [2], done=0)  # its last item not committed yet, as in a run still going
    assert invoke("merge", sweep).code == 0
    info = summary(sweep / "merged.h5")
    assert (info["items_done"], info["items_total"], info["complete"]) == (4, 5, False)
    assert "4/5 done" in invoke("inspect", sweep / "merged.h5").out
    assert invoke("run", made["s1-job"], "--monolithic", "-o", sweep / "s1.h5").code == 0
    info = summary(sweep / "merged.h5")  # the same view, not merged again
    assert (info["items_done"], info["complete"]) == (5, True)
    assert invoke("verify", sweep / "merged.h5").code == 0


# -- synthetic outputs, written through the store's own writer ------------------------------------------
def plan_for(folder: Path, count: int, identity: str):
    """A plan of `count` prompts under a fake model identity (so its keys and fingerprint are its own)."""
    from onepiece_hpc.jobfile.loader import load_job
    from onepiece_hpc.planning.plan import plan_job

    problems: list[str] = []
    job = load_job(write_job(folder, [f"prompt {i}" for i in range(count)], name=identity), problems)
    plan = plan_job(job, identity, (8, 8), "cpu/float32/threads=1", problems) if job else None
    assert plan is not None and not problems, problems
    return plan


def open_writer(path: Path, plan, file_bytes: int):
    from onepiece_hpc.store.items import PlanItems
    from onepiece_hpc.store.output import OutputLayout, OutputWriter, StoreSettings
    from onepiece_hpc.store.provenance import Provenance

    provenance = Provenance(**{f.name: "test" for f in fields(Provenance)})
    return OutputWriter.open(path, PlanItems(plan), OutputLayout("image", (8, 8, 3)), provenance, mode="test",
                             settings=StoreSettings(file_bytes=file_bytes, sync_interval_s=3600))


def commit(writer, items: range) -> None:
    for item in items:
        writer.commit(item, np.full((1, 8, 8, 3), item % 251, dtype=np.uint8), np.zeros((1, 3)))
    writer.sync()


def test_a_merge_of_a_source_still_being_written_counts_what_is_done(tmp_path):
    done = open_writer(tmp_path / "sweep/a.h5", plan_for(tmp_path / "a", 3, "model-a"), 2**20)
    commit(done, range(3))
    done.close("completed")
    running = open_writer(tmp_path / "sweep/b.h5", plan_for(tmp_path / "b", 4, "model-b"), 8 * 8 * 3)
    try:  # one item a data file: b's last three files don't exist yet, and b's writer holds its lock
        commit(running, range(1))
        result = invoke("merge", tmp_path / "sweep")
        assert result.code == 0 and "7 items from 2 outputs" in result.out, result.err
        assert "3 items of sources still running were not checked" in result.err
        merged = tmp_path / "sweep/merged.h5"
        assert summary(merged)["items_done"] == 4
        commit(running, range(1, 3))
        assert summary(merged)["items_done"] == 6
        report = invoke("verify", merged)
        assert report.code == 1 and "6 of 7 items done and intact" in report.out and "not done   1" in report.out
    finally:
        running.close("interrupted")
    assert invoke("export", merged, tmp_path / "png").code == 0
    assert len((tmp_path / "png/manifest.jsonl").read_text().splitlines()) == 6


def many_shards(folder: Path, count: int) -> list[Path]:
    """`count` outputs of one item each, every one a distinct job: one written by the store's writer,
    the rest byte copies of it with their own store id, fingerprint and item key (same-length
    strings; HDF5 keeps no checksum of attribute values or raw data). Each lives in a folder of its
    own under the same name, so the index's virtual datasets still point at its own data file."""
    template = folder / "template/shard.h5"
    writer = open_writer(template, plan_for(folder / "job", 1, "model-template"), 2**20)
    commit(writer, range(1))
    writer.close("completed")
    with h5py.File(template, "r") as f:
        store_id, fingerprint = f.attrs["store_id"].encode(), f.attrs["job_fingerprint"].encode()
        key = f["items"]["key"][0]
        template_attrs = dict(f.attrs)
    sealed = template_attrs["attrs_digest"].encode()
    index = template.read_bytes()
    data = Path(f"{template}.d/data-00000.h5").read_bytes()
    journal = Path(f"{template}.d/journal.jsonl")
    assert index.count(store_id) == index.count(fingerprint) == data.count(store_id) == data.count(key) == 1
    paths = []
    for number in range(count):
        seed = hashlib.sha256(b"shard %d" % number).hexdigest().encode()
        new_id, new_fingerprint, new_key = seed[:32], hashlib.sha256(seed).hexdigest().encode(), hashlib.sha256(
            b"key" + seed).hexdigest().encode()
        path = folder / f"{number:05d}/shard.h5"
        Path(f"{path}.d").mkdir(parents=True)
        new_seal = attrs_digest({**template_attrs, "store_id": new_id.decode(),
                                 "job_fingerprint": new_fingerprint.decode()}).encode()
        path.write_bytes(index.replace(store_id, new_id).replace(fingerprint, new_fingerprint).replace(sealed, new_seal))
        Path(f"{path}.d/data-00000.h5").write_bytes(data.replace(store_id, new_id).replace(key, new_key))
        os.link(journal, f"{path}.d/journal.jsonl")
        paths.append(path)
    return paths


def limited(*args, cwd: Path) -> subprocess.Popen:
    """`onepiece ARGS` started in a real process that may hold at most FD_LIMIT open files."""
    script = f"ulimit -n {FD_LIMIT} && exec \"$0\" -m onepiece_hpc.cli.main \"$@\""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(["bash", "-c", script, sys.executable, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=MANY_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode, out, err


def test_thousands_of_shards_merge_and_read_under_a_low_file_descriptor_limit(tmp_path):
    shards = many_shards(tmp_path / "shards", MANY)
    merged = tmp_path / "merged.h5"
    relative = [p.relative_to(tmp_path) for p in shards]  # keeps the command line short
    code, out, err = finish(limited("merge", *relative, "-o", merged, cwd=tmp_path))
    assert code == 0 and f"{MANY} items from {MANY} outputs" in out, err[-3000:]
    readers = [limited("inspect", merged, "--json", cwd=tmp_path), limited("verify", merged, "--json", cwd=tmp_path),
               limited("export", merged, tmp_path / "png", cwd=tmp_path)]  # read side by side, as users do
    (inspected, info, _), (verified, report, _), (exported, listing, err) = [finish(p) for p in readers]
    assert inspected == 0 and verified == 0 and exported == 0, err[-3000:]
    info, report = json.loads(info), json.loads(report)
    assert (info["items_done"], info["items_total"], len(info["sources"])) == (MANY, MANY, MANY)
    assert report["done_ok"] == MANY and report["complete"] and not report["duplicates"]
    assert f"exported {MANY} PNG files" in listing
    assert len((tmp_path / "png/manifest.jsonl").read_text().splitlines()) == MANY
    shutil.rmtree(tmp_path / "shards")
    shutil.rmtree(tmp_path / "png")


# -- temp files and the target ------------------------------------------------------------------------------
GUESSABLE = [".merged.h5.merging", ".merged.h5.partial", "merged.h5.partial", "merged.h5.tmp", ".merged.h5.tmp",
             "merged.h5~"]


def test_symlinks_planted_at_guessable_temp_names_redirect_nothing(sweep, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for name in GUESSABLE:
        (sweep / name).symlink_to(victim)
    result = invoke("merge", sweep)
    assert result.code == 0, result.err
    assert victim.read_text() == "precious\n"
    merged = sweep / "merged.h5"
    assert merged.is_file() and not merged.is_symlink() and summary(merged)["items_done"] == 5
    assert all((sweep / name).is_symlink() and os.readlink(sweep / name) == str(victim) for name in GUESSABLE)
    leftovers = [p.name for p in sweep.iterdir() if p.name.startswith(".merged.h5") and p.name not in GUESSABLE]
    assert not leftovers, f"temporary files left behind: {leftovers}"


@pytest.mark.parametrize("victim_exists", [True, False])
def test_a_target_that_is_a_symlink_is_refused(sweep, tmp_path, victim_exists):
    victim = tmp_path / "victim.h5"
    if victim_exists:
        victim.write_bytes(b"precious")
    target = sweep / "merged.h5"
    target.symlink_to(victim)
    result = invoke("merge", sweep)
    assert_named_error(result.code, result.out, result.err, target)
    assert target.is_symlink()
    assert victim.read_bytes() == b"precious" if victim_exists else not victim.exists()
