"""A model's identity covers the bytes of every file it loads, so a resume never mixes two models;
the per-file digests behind it are cached by (device, inode, size, mtime_ns, ctime_ns)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from onepiece_hpc.models.source import DIGEST_CACHE, SETTLE_NS, resolve_model
from support import builtin_model

UNET = "unet/diffusion_pytorch_model.safetensors"
PROC_IO = Path("/proc/self/io")


def _model(model_cache: Path, folder: Path) -> Path:
    """A private copy of the tiny model whose files are old enough for their digests to be cached."""
    shutil.copytree(builtin_model(model_cache, "tiny-sd"), folder)
    newest = max(p.stat().st_ctime_ns for p in folder.rglob("*"))
    while time.time_ns() - newest <= SETTLE_NS:
        time.sleep(SETTLE_NS / 1e9 / 4)
    return folder


def _identity(folder: Path, cache: Path) -> str:
    problems: list[str] = []
    source = resolve_model(str(folder), cache, "job.yaml:2", problems)
    assert source is not None, problems
    return source.identity


def _flip_last_byte(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)[0]
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last ^ 1]))


def _bytes_read_by(call) -> int:
    """Bytes this process read (Linux's rchar: every read system call) while `call()` ran."""
    def rchar() -> int:
        return int(next(line for line in PROC_IO.read_text().splitlines() if line.startswith("rchar:")).split()[1])

    before = rchar()
    call()
    return rchar() - before


def test_folders_that_differ_in_one_weight_byte_have_different_identities(tmp_path, model_cache):
    first, second = _model(model_cache, tmp_path / "a"), _model(model_cache, tmp_path / "b")
    assert _identity(first, tmp_path / "cache") == _identity(second, tmp_path / "cache")
    _flip_last_byte(second / UNET)
    assert (first / UNET).stat().st_size == (second / UNET).stat().st_size
    assert _identity(first, tmp_path / "cache") != _identity(second, tmp_path / "cache")


@pytest.mark.parametrize("name", ["unet/extra_weights", "unet/adapter.onnx", "vae/notes.txt"])
def test_every_file_a_pipeline_could_load_is_part_of_the_identity(tmp_path, model_cache, name):
    folder = _model(model_cache, tmp_path / "m")
    before = _identity(folder, tmp_path / "cache")
    (folder / name).write_bytes(b"\x00" * 64)
    changed = _identity(folder, tmp_path / "cache")
    assert changed != before
    _flip_last_byte(folder / name)
    assert _identity(folder, tmp_path / "cache") not in (before, changed)


def test_hidden_files_are_not_part_of_the_identity(tmp_path, model_cache):
    folder = _model(model_cache, tmp_path / "m")
    before = _identity(folder, tmp_path / "cache")
    (folder / ".cache/huggingface").mkdir(parents=True)
    (folder / ".cache/huggingface/download.lock").write_text("x")
    (folder / "unet/.DS_Store").write_text("x")
    assert _identity(folder, tmp_path / "cache") == before


def test_a_symlinked_component_folder_is_read_through_the_link(tmp_path, model_cache):
    folder = _model(model_cache, tmp_path / "m")
    before = _identity(folder, tmp_path / "cache")
    shutil.move(folder / "unet", tmp_path / "shared-unet")
    (folder / "unet").symlink_to(tmp_path / "shared-unet", target_is_directory=True)
    (tmp_path / "shared-unet/loop").symlink_to(folder, target_is_directory=True)  # a loop: not followed
    assert _identity(folder, tmp_path / "cache") == before
    _flip_last_byte(tmp_path / "shared-unet/diffusion_pytorch_model.safetensors")
    assert _identity(folder, tmp_path / "cache") != before


def test_a_touched_but_unchanged_file_keeps_the_identity(tmp_path, model_cache):
    folder = _model(model_cache, tmp_path / "m")
    before = _identity(folder, tmp_path / "cache")
    later = time.time_ns() + 10**9
    os.utime(folder / UNET, ns=(later, later))
    assert _identity(folder, tmp_path / "cache") == before


@pytest.mark.skipif(not PROC_IO.exists(), reason="counting bytes read needs Linux's /proc/self/io")
def test_a_second_resolve_reads_no_weight_file(tmp_path, model_cache):
    folder = _model(model_cache, tmp_path / "m")
    weights = [p.stat().st_size for p in folder.rglob("*.safetensors")]
    first = _bytes_read_by(lambda: _identity(folder, tmp_path / "cache"))
    second = _bytes_read_by(lambda: _identity(folder, tmp_path / "cache"))
    assert first >= sum(weights)
    assert second < min(weights), f"the second resolve read {second} bytes"
    assert _identity(folder, tmp_path / "other-cache") == _identity(folder, tmp_path / "cache")


def test_bytes_changed_under_the_same_size_and_mtime_are_caught_by_ctime(tmp_path, model_cache):
    folder = _model(model_cache, tmp_path / "m")
    path = folder / UNET
    before = _identity(folder, tmp_path / "cache")
    old = path.stat()
    _flip_last_byte(path)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # what `cp -p` or `touch -r` would do
    while path.stat().st_ctime_ns == old.st_ctime_ns:  # a write in the same clock tick as the copy
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    now = path.stat()
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (old.st_ino, old.st_size, old.st_mtime_ns)
    changed = _identity(folder, tmp_path / "cache")
    assert changed != before
    assert changed == _identity(folder, tmp_path / "fresh-cache")


@pytest.mark.parametrize("damage", [
    b"\x00\xff not json at all",
    b'{"version": 1, "files": {"/x": [1, 2',
    b"[1, 2, 3]",
    b'{"version": 99, "files": {}}',
    b'{"version": 1, "files": []}',
    b'{"version": 1, "files": {"PATH": "not a list"}}',
    b'{"version": 1, "files": {"PATH": [1, 2, 3, 4, 5, null]}}',
])
def test_a_damaged_or_foreign_cache_file_is_ignored_and_replaced(tmp_path, model_cache, damage):
    folder = _model(model_cache, tmp_path / "m")
    truth = _identity(folder, tmp_path / "fresh-cache")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / DIGEST_CACHE).write_bytes(damage.replace(b"PATH", os.path.realpath(folder / UNET).encode()))
    assert _identity(folder, cache) == truth
    saved = json.loads((cache / DIGEST_CACHE).read_text())
    assert saved["files"][os.path.realpath(folder / UNET)][-1] == hashlib.sha256((folder / UNET).read_bytes()).hexdigest()
    assert [p.name for p in cache.iterdir()] == [DIGEST_CACHE], "a temporary file was left behind"
    assert _identity(folder, cache) == truth


def test_an_unreadable_weight_file_is_a_problem_not_a_traceback(tmp_path, model_cache):
    folder = _model(model_cache, tmp_path / "m")
    (folder / UNET).unlink()
    (folder / UNET).symlink_to(folder / UNET)  # a link to itself: opening it fails
    problems: list[str] = []
    assert resolve_model(str(folder), tmp_path / "cache", "job.yaml:2", problems) is None
    assert "job.yaml:2" in problems[0] and UNET in problems[0] and "fix:" in problems[0]
