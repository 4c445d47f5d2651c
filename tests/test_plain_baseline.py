"""The plain diffusers loop the GPU bench sets everything against, and the bench's own changes
to what it compares: on CPU, the plain loop, data-parallel with warm-up and writes, and staged
ranks that warm up all write the bits the reference path writes; the decode's uint8 conversion
on the device gives diffusers' bits; the record's ratios are the plain loop's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.video_processor import VideoProcessor

from onepiece_hpc.bench.pipeline_gpu import against_plain, table
from onepiece_hpc.bench.plain_loop import batches_of, choose_batch, slowest
from onepiece_hpc.models.pipeline_adapter import pixels_to_uint8, to_uint8
from support import REPO, invoke, run_cli, write_job

PROMPTS = [f"plain prompt {i}: a {c} boat" for i, c in enumerate(["red", "blue", "green", "white", "black"])]
CASES = {  # model: job fields, output dataset
    "tiny-sdxl": ({"params": "{steps: 2, guidance: 4.0, height: 64, width: 64}"}, "images"),
    "tiny-wan-t2v": ({"params": "{steps: 2, guidance: 4.0, height: 32, width: 32, frames: 9}"}, "videos"),
}


def _reference(tmp_path: Path, model: str, microbatch: int) -> tuple[Path, np.ndarray]:
    fields, dataset = CASES[model]
    job = write_job(tmp_path / "job", PROMPTS, model=f"builtin:{model}", microbatch=str(microbatch), **fields)
    assert invoke("run", job, "--monolithic").code == 0
    with h5py.File(tmp_path / "job" / "out" / "t.h5", "r") as f:
        return job, f[f"outputs/{dataset}"][...]


def _module(name: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"onepiece_hpc.bench.{name}", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy(), cwd=cwd)


def _npy(folder: Path) -> np.ndarray:
    return np.stack([np.load(folder / f"{i}.npy") for i in range(len(PROMPTS))])


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(CASES))
def test_the_plain_loop_writes_what_our_run_writes_and_times_each_stage(tmp_path, model):
    job, expected = _reference(tmp_path, model, microbatch=2)
    reports, written = tmp_path / "reports", tmp_path / "npy"
    reports.mkdir()
    done = _module("plain_loop", job, "--report-dir", reports, "--batches", "2,9", "--write-dir", written,
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(_npy(written), expected)  # one pipeline call per 2 items, as our units
    row = json.loads((reports / "rank-0.json").read_text())
    assert row["batch"] == 2 and row["items"] == len(PROMPTS)
    assert set(row["probe_s_per_item"]) == {"2"}  # 9 is more than the rank's items
    assert set(row["phases_s_per_item"]) == {"encode", "denoise", "decode"}
    assert all(seconds > 0 for seconds in row["phases_s_per_item"].values())


@pytest.mark.slow
def test_data_parallel_warms_up_and_writes_from_its_thread_what_our_run_writes(tmp_path):
    job, expected = _reference(tmp_path, "tiny-sdxl", microbatch=2)
    reports, written = tmp_path / "reports", tmp_path / "npy"
    reports.mkdir()
    done = _module("data_parallel", job, "--report-dir", reports, "--warm-up", "--write-dir", written, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(_npy(written), expected)
    row = json.loads((reports / "rank-0.json").read_text())
    assert row["items"] == len(PROMPTS) and row["warm_up_s"] > 0 and row["write_s"] > 0


@pytest.mark.mpi
@pytest.mark.slow
def test_staged_ranks_that_warm_up_write_the_same_bits(tmp_path):
    from onepiece_hpc.runtime.launch import launch
    from onepiece_hpc.runtime.options import RunOptions

    job, expected = _reference(tmp_path, "tiny-wan-t2v", microbatch=2)
    output = tmp_path / "staged.h5"
    report = launch(RunOptions(job=job, ranks=4, output=output, warm_up=True, wait_timeout=60.0), os.geteuid() == 0)
    assert report["status"] == "completed", report
    with h5py.File(output, "r") as f:
        np.testing.assert_array_equal(f["outputs/videos"][...], expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_uint8_on_the_device_gives_the_bits_of_diffusers_postprocess(dtype):
    generator = torch.Generator().manual_seed(5)
    pixels = (torch.randn(2, 3, 24, 20, generator=generator) * 0.9).to(dtype)
    pixels[0, 0, 0, :6] = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.5, 2 * 127.5 / 255 - 1])  # clamps, exact halves
    images = VaeImageProcessor().postprocess(pixels, output_type="np", do_denormalize=[True, True])
    np.testing.assert_array_equal(pixels_to_uint8(pixels).numpy(), to_uint8(images))
    video = (torch.randn(2, 3, 5, 8, 6, generator=generator) * 0.9).to(dtype)  # N, C, T, H, W
    frames = VideoProcessor().postprocess_video(video, output_type="np")
    assert pixels_to_uint8(video).shape == (2, 5, 8, 6, 3)
    np.testing.assert_array_equal(pixels_to_uint8(video).numpy(), to_uint8(frames))


def test_plain_calls_take_runs_of_items_with_the_same_params():
    class Item:
        def __init__(self, index, params):
            self.index, self.params = index, params

    items = [Item(i, p) for i, p in enumerate("aaabba")]
    assert [[i.index for i in run] for run in batches_of(items, 2)] == [[0, 1], [2], [3, 4], [5]]


def test_the_plain_loop_runs_at_the_batch_fastest_on_its_slowest_rank():
    probes = [{1: 2.0, 2: 1.2, 4: 1.1}, {1: 2.1, 2: 1.3, 4: 1.5}, {1: 2.0, 2: 1.2}]
    assert slowest(probes) == {1: 2.1, 2: 1.3}  # 4: one rank had too few items to try it
    assert choose_batch(slowest(probes)) == 2
    assert choose_batch({1: 1.0, 2: 1.0}) == 1


def _record() -> dict:
    stage = {"s_per_item": {"1": 1.0}, "best_s_per_item": 1.0}
    profile = {"floor_s_per_item": 4.5, "stages": {
        "encode": {**stage, "s_per_item": {"1": 0.1}, "best_s_per_item": 0.1},
        "denoise": {**stage, "s_per_item": {"1": 2.4}, "best_s_per_item": 2.4},
        "decode": {**stage, "s_per_item": {"1": 2.0}, "best_s_per_item": 2.0}}}
    run = {"microbatch": 1, "outputs_per_hour": 1.0, "efficiency": 1.0, "peak_memory_mb_per_rank": 1024.0}
    plain = {**run, "mode": "plain diffusers loop", "gpu_s_per_output": 5.0, "items": 4, "write_s": 0.8,
             "gpu_s_per_output_without_writes": 4.8,
             "phases_s_per_item": {"encode": 0.1, "denoise": 2.5, "decode": 2.4}}
    data_parallel = {**run, "mode": "monolithic data-parallel", "gpu_s_per_output": 4.0}
    staged = {**run, "mode": "staged static", "gpu_s_per_output": 4.6, "shares_gpus": True,
              "stages": [{"stage": "denoise", "units": 4, "mean_service_s": 2.6},
                         {"stage": "decode", "units": 4, "mean_service_s": 1.8}]}
    return {"job": "j.yaml", "device": "1 x GPU", "gpu_memory_gib": None, "floor_gpu_s_per_output": 4.5,
            "profile": profile, "layout": None, "runs": [plain, data_parallel, staged]}


def test_the_record_sets_every_run_the_floor_and_each_stage_against_the_plain_loop():
    record = _record()
    record.update(against_plain(record))
    plain, data_parallel, staged = record["runs"]
    assert plain["gpu_s_per_output_vs_plain"] == 1.0
    assert data_parallel["gpu_s_per_output_vs_plain"] == pytest.approx(0.8)
    assert staged["gpu_s_per_output_vs_data_parallel"] == pytest.approx(1.15)
    assert record["floor_vs_plain"] == pytest.approx(0.9)
    stages = record["stages_vs_plain_share"]
    assert stages["denoise"]["alone_vs_plain_share"] == pytest.approx(0.96)
    assert stages["decode"]["staged static_vs_plain_share"] == pytest.approx(0.75)
    assert "staged static_s_per_item" not in stages["encode"]  # the staged run reported no encode units
    text = table(record)
    assert "0.900x the plain loop" in text and "x plain" in text
    assert "without its writes: 4.800 GPU-s per output (its .npy writes took 0.200 s an output)" in text
    assert text.splitlines()[-2].split()[:4] == ["denoise", "2.500", "2.400", "0.960"]


def test_the_gpu_bench_documents_its_baseline():
    assert "plain diffusers loop" in " ".join(run_cli("bench", "pipeline", "--help", cwd=REPO).stdout.split())


def test_the_trace_counts_overlapping_device_work_once_and_names_the_host_gaps():
    from onepiece_hpc.bench.stage_trace import device_activity

    events = [
        {"cat": "kernel", "name": "gemm", "ts": 0, "dur": 10},
        {"cat": "kernel", "name": "softmax", "ts": 5, "dur": 10},        # overlaps gemm: 0..15 busy
        {"cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pageable)", "ts": 215, "dur": 20},  # a 200 us gap
        {"cat": "gpu_memset", "name": "Memset (Device)", "ts": 240, "dur": 10},                   # a 5 us gap
        {"cat": "cuda_runtime", "name": "cudaStreamSynchronize", "ts": 100, "dur": 150},
        {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 0, "dur": 3},
        {"cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 12},
        {"ph": "M", "name": "process_name"},                              # metadata has no duration
    ]
    activity = device_activity(events, wall_s=500e-6)
    assert activity["device_busy_s"] == pytest.approx(45e-6)
    assert activity["device_idle_s"] == pytest.approx(455e-6)
    assert activity["kernels"] == 2 and activity["kernel_s"] == pytest.approx(20e-6)
    assert activity["gaps_over_100us"] == 1 and activity["gap_s"] == pytest.approx(205e-6)
    assert activity["largest_gaps"][0] == {"us": 200, "before": "Memcpy DtoH (Device -> Pageable)"}
    assert activity["copies"] == {"Memcpy DtoH (Device -> Pageable)": {"count": 1, "s": pytest.approx(20e-6)}}
    assert activity["host_waits"] == {"cudaStreamSynchronize": {"count": 1, "s": pytest.approx(150e-6)}}


def test_the_benches_timed_loop_counts_compute_and_writes_apart_and_waits_for_the_last_write():
    import time

    from onepiece_hpc.bench.harness import timed_loop

    wrote, finished = [], []

    def run(piece: int) -> int:
        time.sleep(0.02)
        return piece * 10

    def write(piece: int, out: int) -> None:
        time.sleep(0.01)
        wrote.append((piece, out))

    def finish() -> None:  # a writer thread's last file
        time.sleep(0.05)
        finished.append(True)

    times = timed_loop([1, 2, 3], run, write, finish)
    assert wrote == [(1, 10), (2, 20), (3, 30)] and finished == [True]
    assert 0.06 <= times.busy_s < 0.56 and 0.03 <= times.write_s < 0.53
    assert times.done_at_s >= times.busy_s + times.write_s + 0.05
