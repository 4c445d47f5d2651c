"""What a user reads back: inspect (text and JSON) and export (PNG files and a manifest)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from support import invoke, run_cli, tamper, write_job

PROMPTS = ["a quiet harbour", "a \"quoted\" prompt; with $(shell) `chars`", "ünïcödé 🌸 prompt"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finished")
    job = write_job(folder, PROMPTS, name="my-job")
    assert invoke("run", job, "--monolithic").code == 0
    return folder / "out/t.h5"


def test_inspect_json_reports_counts_shapes_and_name(finished):
    proc = run_cli("inspect", finished, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["items_total"] == info["items_done"] == 3 and info["complete"]
    assert info["job_name"] == "my-job"
    assert info["outputs"]["images"]["shape"] == [3, 64, 64, 3]
    assert info["files"] == {"data_files": 1, "created": 1, "items_per_file": 3}
    assert info["provenance"]["torch_version"] and info["provenance"]["model_ref"] == "builtin:tiny-sd"
    assert info["runs"][0]["status"] == "completed"
    assert set(info["mean_seconds_per_item"]) == {"encode", "denoise", "decode", "write"}


def test_inspect_text_is_readable(finished):
    result = invoke("inspect", finished)
    assert result.code == 0
    assert "3/3 done" in result.out and "my-job" in result.out and "64 x 64 x 3" in result.out


def test_schema_holds_items_provenance_and_timings(finished):
    with h5py.File(finished, "r") as f:
        items = f["items"][...]
        assert [p.decode() for p in items["prompt"]] == PROMPTS
        assert list(items["seed"]) == [7, 8, 9]
        assert "prompts: prompts.txt" in f["provenance"].attrs["job_file"]
        timings = f["timings"][...]
        assert timings.shape == (3, 4) and np.isfinite(timings).all() and (timings >= 0).all()
        assert np.isfinite(f["committed_at"][...]).all()


def test_export_writes_viewable_pngs_and_manifest(finished, tmp_path):
    target = tmp_path / "png"
    result = invoke("export", finished, target)
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in (target / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [m["index"] for m in lines] == [0, 1, 2]
    assert [m["prompt"] for m in lines] == PROMPTS
    with h5py.File(finished, "r") as f:
        for entry in lines:
            image = np.asarray(Image.open(target / entry["file"]))
            np.testing.assert_array_equal(image, f["outputs/images"][entry["index"]])
            assert entry["key"] == f["items"]["key"][entry["index"]].decode()
    again = invoke("export", finished, target)
    assert again.code == 2 and "not empty" in again.err


def test_export_of_partial_output_lists_only_done_items(tmp_path):
    job = write_job(tmp_path, PROMPTS)
    assert invoke("run", job, "--monolithic").code == 0
    tamper(tmp_path / "out/t.h5", [1], done=0)
    assert invoke("export", tmp_path / "out/t.h5", tmp_path / "png").code == 0
    manifest = (tmp_path / "png/manifest.jsonl").read_text().splitlines()
    assert [json.loads(m)["index"] for m in manifest] == [0, 2]
    assert json.loads(invoke("inspect", tmp_path / "out/t.h5", "--json").out)["items_done"] == 2


def test_bench_writer_json(tmp_path):
    job = write_job(tmp_path, PROMPTS)
    result = invoke("bench", "writer", job, "--case", "image-512", "--dir", tmp_path, "--mb", "8", "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    assert record["case"] == "image-512" and record["items"] == 8 * 2**20 // (512 * 512 * 3)
    assert record["commits_per_s"] > 0 and record["headroom"] > 0
    assert not list(tmp_path.glob(".bench-writer-*")), "scratch files left behind"


def test_damaged_output_is_refused_not_crashed_on(finished, tmp_path):
    import shutil

    damaged = tmp_path / "damaged.h5"
    shutil.copy(finished, damaged)
    shutil.copytree(f"{finished}.d", f"{damaged}.d")
    with h5py.File(f"{damaged}.d/data-00000.h5", "r+") as f:
        del f["done"]
    for args in (("inspect", damaged), ("export", damaged, tmp_path / "png"), ("verify", damaged)):
        result = invoke(*args)
        assert result.code in (1, 2) and "damaged" in result.err + result.out and "/done" in result.err + result.out
    alone = tmp_path / "alone.h5"
    shutil.copy(finished, alone)  # an index copied without its data folder
    result = invoke("inspect", alone)
    assert result.code == 2 and "alone.h5.d" in result.err and "missing" in result.err


@pytest.fixture(scope="module")
def video_output(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video")
    job = write_job(folder, PROMPTS, name="clips", model="builtin:tiny-wan-t2v",
                    params="{steps: 2, guidance: 4.0, height: 32, width: 48, frames: 9}")
    assert invoke("run", job, "--monolithic").code == 0
    return folder / "out/t.h5"


def test_inspect_describes_videos(video_output):
    result = invoke("inspect", video_output)
    assert result.code == 0, result.err
    assert "3 x 9 x 32 x 48 x 3" in result.out
    assert "3 videos of 9 frames (0.6 s at 16 fps), 48 x 32 px" in result.out
    info = json.loads(invoke("inspect", video_output, "--json").out)
    assert info["output_kind"] == "video" and info["frame_rate"] == 16


def test_export_videos_as_mp4_by_default_and_as_gif(video_output, tmp_path):
    import av
    from PIL import ImageSequence

    with h5py.File(video_output, "r") as f:
        stored = f["outputs/videos"][...]
    assert invoke("export", video_output, tmp_path / "mp4").code == 0
    assert invoke("export", video_output, tmp_path / "gif", "--format", "gif").code == 0
    for fmt in ("mp4", "gif"):
        manifest = [json.loads(line) for line in (tmp_path / fmt / "manifest.jsonl").read_text().splitlines()]
        assert [m["file"] for m in manifest] == [f"00000{i}.{fmt}" for i in range(3)]
        assert all(m["frames"] == 9 and m["fps"] == 16 for m in manifest)
    for index, video in enumerate(stored):
        with av.open(str(tmp_path / f"mp4/00000{index}.mp4")) as container:  # lossy: count and size only
            assert container.streams.video[0].average_rate == 16
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(decoded) == 9 and decoded[0].shape == (32, 48, 3)
        with Image.open(tmp_path / f"gif/00000{index}.gif") as gif:
            frames = np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)])
        assert frames.shape == video.shape
        assert np.abs(frames.astype(int) - video).mean() < 8  # 256 colours a frame


def test_export_refuses_a_format_of_the_other_kind(video_output, finished, tmp_path):
    for output, fmt, words in ((video_output, "png", "export as mp4 or gif, not png"),
                               (finished, "mp4", "export as png, not mp4"), (finished, "gif", "not gif")):
        result = invoke("export", output, tmp_path / fmt, "--format", fmt)
        assert result.code == 2 and words in result.err, result.err
        assert not (tmp_path / fmt).exists()
    result = invoke("export", finished, tmp_path / "fps", "--fps", "8")
    assert result.code == 2 and "--fps is for videos" in result.err


def test_bench_store_json(tmp_path):
    result = invoke("bench", "store", "--items", "300", "--dir", tmp_path, "--json")
    assert result.code == 0, result.err
    record = json.loads(result.out)
    assert record["items"] == 300 and record["data_files"] == 1
    assert record["fill_s"] > 0 and record["inspect_peak_mb"] > 0 and record["verify_s"] > 0
    assert not list(tmp_path.iterdir()), "scratch files left behind"
