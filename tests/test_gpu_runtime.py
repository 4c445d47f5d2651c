"""What of the GPU path runs without a GPU: device-payload messages through the ring protocol,
GPU placement, the GPU benchmark's arithmetic and its refusals. The CUDA fabrics themselves
(cuda-ipc, pinned shm) need GPUs: tests/gpu/smoke.py and `onepiece bench transport --device
cuda` run them on GPU machines; CI has none."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from onepiece_hpc.bench.gpu_layout import (
    StageCost,
    TIE,
    batch_window,
    candidate_layouts,
    choose_layout,
    evaluate,
    fits,
    parse_offload,
    parse_stage_ranks,
    ranks_per_gpu,
)
from onepiece_hpc.bench.pipeline_gpu import GpuBench, _job_copy, best_batches, gpu_busy
from onepiece_hpc.environment import with_visible_gpus
from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime.gpus import gpu_index
from onepiece_hpc.runtime.tensors import from_wire, to_wire
from onepiece_hpc.topology import CLASSIC, StageDef, Topology
from onepiece_hpc.transport import DType, Integrity, RingLayout, TensorOut
from onepiece_hpc.transport.consumer import Consumer
from onepiece_hpc.transport.errors import PeerInfo
from onepiece_hpc.transport.producer import Producer
from onepiece_hpc.transport.region import ArrayRegion
from onepiece_hpc.transport.ring import CREDIT_REGION_BYTES, DeviceBytes
from support import REPO as ROOT
from support import run_cli

ME = PeerInfo(rank=0, host=socket.gethostname(), pid=os.getpid())
#: the stages of tests/plugins/posterize_stage.py's model: a fourth after the decode
POSTERIZED = Topology((*CLASSIC.stages, StageDef("posterize")))


class PayloadRegion(ArrayRegion):
    """A data ring whose payloads live in a second memory, as cuda-ipc's live in the consumer's GPU.
    Here that memory is a CPU tensor (this machine has no GPU); the protocol cannot tell."""

    accepts_device = True

    def __init__(self, nbytes: int) -> None:
        super().__init__(nbytes)
        self.payload = torch.zeros(nbytes, dtype=torch.uint8)

    def write(self, offset: int, data) -> None:
        if type(data) is DeviceBytes:
            self.payload[offset: offset + data.nbytes] = data.data
        else:
            super().write(offset, data)

    def device_view(self, offset: int, nbytes: int) -> torch.Tensor:
        return self.payload[offset: offset + nbytes]


def _channel(integrity: Integrity) -> tuple[Producer, Consumer]:
    layout = RingLayout(slots=2, slot_bytes=64 * 1024, integrity=integrity)
    ring, credits = PayloadRegion(layout.data_bytes), ArrayRegion(CREDIT_REGION_BYTES)
    return Producer(layout, credits, ring, ME), Consumer(layout, ring, credits, ME)


def test_device_tensors_travel_as_device_bytes_and_arrive_as_views_of_the_payload_memory():
    producer, consumer = _channel(Integrity.HEADER)
    assert producer.accepts_device
    sent = {"latents": torch.randn(2, 4, 8, 8).to(torch.bfloat16), "ids": torch.arange(6)}
    wire = [TensorOut(out.name, DeviceBytes(t.reshape(-1).view(torch.uint8), tuple(t.shape),
                                            t.numel() * t.element_size()), out.dtype)
            for out, t in zip(to_wire(sent), (sent["ids"], sent["latents"]))]
    producer.send(wire, unit_id=3)
    with consumer.receive(timeout_s=5) as message:
        got = from_wire(message.tensors, message.specs)
        assert all(isinstance(a, DeviceBytes) for a in message.tensors.values())
        for name, tensor in sent.items():
            assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor)
        assert got["latents"].untyped_storage().data_ptr() == consumer._ring.payload.untyped_storage().data_ptr()


def test_device_bytes_are_refused_where_the_channel_carries_host_memory_or_checksums():
    payload = DeviceBytes(torch.zeros(16, dtype=torch.uint8), (16,), 16)
    producer, _ = _channel(Integrity.FULL)  # the CPU can't checksum device memory
    assert not producer.accepts_device
    with pytest.raises(ValueError, match="device memory"):
        producer.send([TensorOut("x", payload, DType.UINT8)])
    layout = RingLayout(slots=2, slot_bytes=4096, integrity=Integrity.HEADER)
    host_only = Producer(layout, ArrayRegion(CREDIT_REGION_BYTES), ArrayRegion(layout.data_bytes), ME)
    with pytest.raises(ValueError, match="host memory only"):
        host_only.send([TensorOut("x", payload, DType.UINT8)])


def test_host_tensors_still_travel_as_arrays():
    wire = to_wire({"x": torch.ones(3)}, device_ok=True)  # CPU tensors: nothing to keep on a device
    assert isinstance(wire[0].array, np.ndarray)


@pytest.mark.parametrize(("local", "holds_manager", "gpus", "expected"), [
    (1, True, 4, 0), (4, True, 4, 3), (5, True, 4, 0),   # rank 0 takes no GPU on its node
    (0, False, 4, 0), (3, False, 2, 1),                  # other nodes count from their first rank
])
def test_stage_ranks_take_the_gpus_of_their_node_in_turn(local, holds_manager, gpus, expected):
    assert gpu_index(local, holds_manager, gpus) == expected


def test_a_shared_gpu_counts_its_busy_time_once():
    rows = np.array([(1, 8.0), (2, 9.0), (3, 3.0), (4, 6.0)], dtype=[("rank", "<i4"), ("busy_s", "<f8")])
    # 2 GPUs: ranks 1 and 3 on GPU 0 (11 s of busy in a 10 s window: capped), ranks 2 and 4 on GPU 1
    assert gpu_busy(rows, gpus=2, window=10.0) == pytest.approx(10.0 + 10.0)
    assert gpu_busy(rows, gpus=4, window=10.0) == pytest.approx(26.0)


def test_each_configuration_gets_its_best_batch():
    profile = {"stages": {
        "encode": {"s_per_item": {"1": 0.04, "2": 0.02, "4": 0.01}, "best_batch": 4, "best_s_per_item": 0.01},
        "denoise": {"s_per_item": {"1": 2.3, "2": 1.3, "4": 1.1}, "best_batch": 4, "best_s_per_item": 1.1},
        "decode": {"s_per_item": {"1": 0.1, "2": 0.1}, "best_batch": 1, "best_s_per_item": 0.1},
    }}
    assert best_batches(profile) == (2, 4)  # whole pipeline: only batches every stage ran


def test_bench_job_copy_is_absolute_on_cuda_with_the_configuration(tmp_path):
    bench = GpuBench(job=ROOT / "jobs" / "gpu" / "sdxl-1024.yaml", stages=CLASSIC.names, gpus=4, stage_ranks=(1, 4, 2),
                     gpu_memory_gib=None, offload=(), batches=(1, 2), policies=("static",), as_root=False)
    fields = yaml.safe_load(_job_copy(bench, tmp_path, 4, "x").read_text())
    assert fields["microbatch"] == 4 and fields["device"] == "cuda"
    assert fields["stages"] == {"encode": 1, "denoise": 4, "decode": 2}
    assert os.path.isabs(fields["prompts"]) and os.path.exists(fields["prompts"])
    four = replace(bench, stages=POSTERIZED.names, stage_ranks=(1, 3, 1, 2))  # a model with a fourth stage
    fields = yaml.safe_load(_job_copy(four, tmp_path, 1, "y").read_text())
    assert fields["stages"] == {"encode": 1, "denoise": 3, "decode": 1, "posterize": 2}
    with pytest.raises(ValueError, match="one number a stage"):
        replace(bench, stage_ranks=(1, 3, 1, 2))


def test_bench_items_takes_the_first_prompts_and_keeps_images_found(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "job.yaml").write_text("name: j\nmodel: builtin:tiny-wan-i2v\nprompts: p.jsonl\n")
    (tmp_path / "in" / "p.jsonl").write_text('{"prompt": "a", "image": "cat.png"}\n\n{"prompt": "b"}\n{"prompt": "c"}\n')
    bench = GpuBench(job=tmp_path / "in" / "job.yaml", stages=CLASSIC.names, gpus=1, stage_ranks=None,
                     gpu_memory_gib=None, offload=(), batches=(1,), policies=("static",), as_root=False, items=2)
    fields = yaml.safe_load(_job_copy(bench, tmp_path, 1, "x").read_text())
    lines = [json.loads(line) for line in open(fields["prompts"]).read().splitlines()]
    assert lines == [{"prompt": "a", "image": str(tmp_path / "in" / "cat.png")}, {"prompt": "b"}]
    assert "stages" not in fields  # chosen after the profile
    with pytest.raises(UserError, match="--items 9: .* has only 3 prompts"):
        _job_copy(replace(bench, items=9), tmp_path, 1, "y")


def test_a_child_sees_the_first_gpus_of_those_it_may_see(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert with_visible_gpus(2)["CUDA_VISIBLE_DEVICES"] == "0,1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # two benches side by side on one machine
    assert with_visible_gpus(1)["CUDA_VISIBLE_DEVICES"] == "2"
    assert with_visible_gpus(2)["CUDA_VISIBLE_DEVICES"] == "2,3"


GIB = 1024.0
WAN14B = (StageCost(0.052, 12.8 * GIB), StageCost(13.09, 30.3 * GIB), StageCost(2.38, 4.7 * GIB))  # measured, H200


def test_the_layout_puts_the_big_denoiser_alone_on_its_gpus_and_pairs_the_small_stages():
    # 40 GiB a GPU: a 30 GiB denoise rank can't share; encode and decode share GPU 0
    layout = choose_layout(WAN14B, gpus=4, gpu_memory_mb=40 * GIB)
    assert layout.stage_ranks == (1, 3, 1)
    assert layout.gpu_s_per_output == pytest.approx(4 * 13.09 / 3)
    assert ranks_per_gpu(layout.stage_ranks, 4)[0] == [(0, 1), (2, 1)]
    assert evaluate((1, 3, 2), WAN14B, 4, 40 * GIB) is None  # the second decode rank would join a denoise rank


WAN13 = (StageCost(0.052, 13 * GIB), StageCost(2.50, 5.8 * GIB), StageCost(2.36, 6 * GIB))
SDXL = (StageCost(0.0118, 1.6 * GIB), StageCost(1.084, 6.3 * GIB), StageCost(0.091, 8.2 * GIB))  # batch 4, H200


@pytest.mark.parametrize("costs, batch", [(WAN13, 1), (SDXL, 4)], ids=["wan-1.3b", "sdxl"])
@pytest.mark.parametrize("gpus", [2, 4])
def test_where_memory_allows_every_gpu_runs_the_bottleneck_stage_and_the_batch_keeps_them_busy(costs, batch, gpus):
    # 1,2,2 on four GPUs left two GPUs running denoise alone and one decode alone: a stage a little
    # slower in the pipeline than alone (the 1.3B decode: 2.70 against 2.55 s) idled the others
    layout = choose_layout(costs, gpus=gpus, gpu_memory_mb=134 * GIB, batch=batch)
    bottleneck = max(range(3), key=lambda stage: costs[stage].seconds_per_item)
    assert all(any(stage == bottleneck for stage, _ in ranks) for ranks in ranks_per_gpu(layout.stage_ranks, gpus))
    assert layout.batch.efficiency > 0.95
    assert choose_layout(costs, gpus=1, gpu_memory_mb=134 * GIB, batch=batch).stage_ranks == (1, 1, 1)
    units = layout.batch.units
    assert batch_window(layout.stage_ranks, costs, gpus, units, batch) <= (
        batch_window((1, 2, 2), costs, gpus, units, batch) * (1 + TIE))


def test_memory_split_by_need_fits_a_small_stage_beside_a_big_one():
    assert not fits((1, 3, 2), WAN14B, 4, 40 * GIB)  # an even 20 GiB can't hold the 30 GiB denoiser
    assert fits((1, 3, 2), WAN14B, 4, 40 * GIB, split="need")  # 30.3 + 4.7 GiB can
    assert not fits((1, 4, 1), WAN14B, 4, 40 * GIB, split="need")  # 12.8 + 30.3 GiB can't


def test_layouts_are_enumerated_for_as_many_stages_as_the_model_has():
    four = list(candidate_layouts(4, 6))
    assert four[0] == (1, 1, 1, 1) and all(len(layout) == 4 and min(layout) >= 1 and sum(layout) <= 6
                                           for layout in four)
    assert len(four) == len(set(four)) == 15  # compositions of 4 to 6 into 4 parts: 1 + 4 + 10
    # Wan2.2's two denoisers (high and low noise) each get the GPUs their share of the work asks for
    wan22 = (StageCost(0.05, 13 * GIB), StageCost(2.4, 30 * GIB), StageCost(2.4, 30 * GIB), StageCost(2.4, 6 * GIB))
    layout = choose_layout(wan22, gpus=4, gpu_memory_mb=64 * GIB)
    assert len(layout.stage_ranks) == 4 and min(layout.stage_ranks[1:3]) >= 2


@pytest.mark.parametrize("stages", [CLASSIC.names, POSTERIZED.names, ("encode", "denoise_high", "denoise_low", "decode")])
def test_stage_ranks_and_offload_are_read_against_the_models_stages(stages):
    ones = ",".join("1" for _ in stages)
    assert parse_stage_ranks("auto", stages) is None
    assert parse_stage_ranks(ones.replace("1", "3", 1), stages) == (3, *[1] * (len(stages) - 1))
    for bad in ("1,2", ones + ",1", ones.replace("1", "0", 1), ones.replace("1", "x", 1)):
        with pytest.raises(UserError, match=f"write auto, or {len(stages)} whole numbers .*{','.join(stages)}"):
            parse_stage_ranks(bad, stages)
    assert parse_offload((stages[-1], stages[0], stages[0]), stages) == (stages[0], stages[-1])
    with pytest.raises(UserError, match=f"--offload 'vae': the job's model has no such stage; choose from {stages[0]}"):
        parse_offload(("vae",), stages)


def test_no_fitting_layout_is_a_clear_error():
    with pytest.raises(UserError, match="fits 20.0 GiB a GPU.*fix: more GPUs"):
        choose_layout(WAN14B, gpus=4, gpu_memory_mb=20 * GIB)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU is visible")
@pytest.mark.parametrize("command", [["bench", "pipeline", "jobs/gpu/sdxl-1024.yaml", "--device", "cuda"],
                                     ["bench", "transport", "--device", "cuda"]])
def test_gpu_benchmarks_refuse_clearly_without_a_gpu(command):
    result = run_cli(*command, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert "no GPU is visible" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, words", [
    (["jobs/gpu/sdxl-1024.yaml", "--stage-ranks", "1,2"],
     "--stage-ranks '1,2': write auto, or 3 whole numbers above 0, one for each stage of the model "
     "(encode,denoise,decode)"),
    (["jobs/gpu/sdxl-1024.yaml", "--offload", "vae"], "--offload 'vae': the job's model has no such stage"),
    (["jobs/gpu/sdxl-1024.yaml", "--policies", "fast"], "--policies 'fast': write static, adaptive or both"),
    (["jobs/gpu/missing.yaml"], "missing.yaml: job file not found"),
    # Wan2.2's two experts: four stages, read from the model's topology
    (["jobs/wan22-t2v.yaml", "--stage-ranks", "1,2,1"],
     "write auto, or 4 whole numbers above 0, one for each stage of the model (encode,denoise_high,denoise_low,decode)"),
])
def test_the_gpu_bench_names_a_user_mistake_before_it_looks_for_a_gpu(args, words):
    result = run_cli("bench", "pipeline", *args, "--device", "cuda", cwd=ROOT)
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks that the flags pass, then the refusal without a GPU")
def test_the_gpu_bench_takes_a_layout_and_offload_for_each_of_wan22s_four_stages():
    result = run_cli("bench", "pipeline", "jobs/wan22-t2v.yaml", "--device", "cuda", "--stage-ranks", "1,3,2,1",
                     "--offload", "denoise_low", cwd=ROOT)
    assert result.returncode == 2 and "no GPU is visible" in result.stderr, result.stderr


def test_stage_profile_sums_the_best_stage_times_into_the_floor(model_cache):
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "onepiece_hpc.bench.stage_profile", str(ROOT / "jobs" / "tiny.yaml"),
                           "--batches", "1,2", "--repeats", "1"], capture_output=True, text=True, timeout=240,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    profile = json.loads(done.stdout.strip().splitlines()[-1])
    stages = profile["stages"]
    assert set(stages) == {"encode", "denoise", "decode"}
    assert profile["floor_s_per_item"] == pytest.approx(sum(s["best_s_per_item"] for s in stages.values()))
    assert all(set(s["s_per_item"]) == {"1", "2"} for s in stages.values())


def test_cuda_ipc_is_refused_before_any_rank_starts_where_it_cannot_work(tmp_path):
    result = run_cli("run", "jobs/tiny.yaml", "-n", "4", "--fabric", "cuda-ipc", "-o", str(tmp_path / "x.h5"),
                     cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert "--fabric cuda-ipc" in result.stderr and "fix:" in result.stderr
    assert not (tmp_path / "x.h5").exists()
