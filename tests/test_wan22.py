"""Wan2.2 A14B's two experts as two stages (denoise_high -> denoise_low): the scheduler's state
crosses between them bit for bit, the chained stages equal the pipeline's own call, a staged run
with the experts on separate ranks and an elastic one equal the one-process run and the plain call,
and what can't be split is refused with exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from PIL import Image

from onepiece_hpc.errors import UserError
from onepiece_hpc.jobfile.images import ImageReader
from onepiece_hpc.jobfile.job import GenParams
from onepiece_hpc.models.base import Placement, UnitInput
from onepiece_hpc.models.source import resolve_model
from onepiece_hpc.models.topologies import topology_of
from onepiece_hpc.models.wan.denoise_experts import boundary_split
from onepiece_hpc.models.wan.experts import DENOISE_HIGH, DENOISE_LOW, ExpertSplit
from onepiece_hpc.models.wan.scheduler_state import capture, check_scheduler, restore, state_specs
from onepiece_hpc.planning.layout import default_split
from onepiece_hpc.topology import CLASSIC

from support import REPO, builtin_model, invoke, run_cli, runs_of, telemetry_of, write_job, write_png

CPU = Placement("cpu", "float32")
STAGES = ["encode", DENOISE_HIGH, DENOISE_LOW, "decode"]
MODELS = ["tiny-wan22-t2v", "tiny-wan22-i2v"]
#: five steps: two at or above the boundary (999, 923 of the shifted schedule) and three below, so
#: the low expert's first step reads the solver history the high expert left
STEPS, SIZE, FRAMES = 5, 32, 9
PROMPTS = ["a red kite over a beach", "waves on a rocky shore", "a tram in the rain", "an owl turning its head",
           "smoke over a chimney"]
NEGATIVES = ["blurry", "", "text, watermark", "", "low quality"]


# -- the scheduler's state, handed over ---------------------------------------------------------

SCHEDULERS = {
    "unipc-order-2": (lambda: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                      flow_shift=3.0), torch.float32),
    "unipc-order-3": (lambda: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                      flow_shift=5.0, solver_order=3), torch.float32),
    "unipc-order-1": (lambda: UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                      solver_order=1), torch.float32),
    # model outputs kept as the model gives them (epsilon, not x0): bfloat16 in the solver's history
    "unipc-epsilon-bf16": (lambda: UniPCMultistepScheduler(predict_x0=False, final_sigmas_type="sigma_min"),
                           torch.bfloat16),
    "flow-euler": (lambda: FlowMatchEulerDiscreteScheduler(shift=3.0), torch.float32),
}


def _model(sample: torch.Tensor, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A stand-in denoiser: a fixed function of the sample and the timestep."""
    return torch.sin(sample * 3 + float(t) / 97).to(dtype)


def _steps(scheduler, sample: torch.Tensor, timesteps, dtype: torch.dtype) -> torch.Tensor:
    for t in timesteps:
        sample = scheduler.step(_model(sample, t, dtype), t, sample, return_dict=False)[0]
    return sample


def _fresh(make, steps: int):
    scheduler = make()
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.mark.parametrize("kind", sorted(SCHEDULERS))
def test_a_loop_stopped_and_resumed_in_another_scheduler_equals_the_uninterrupted_loop(kind):
    make, dtype = SCHEDULERS[kind]
    steps = 6
    start = torch.randn((2, 4, 3, 4, 4), generator=torch.Generator().manual_seed(5))
    whole = _fresh(make, steps)
    expected = _steps(whole, start, whole.timesteps, dtype)
    name = type(whole).__name__
    specs = state_specs(name, dict(whole.config), tuple(start.shape))
    for split in range(steps + 1):
        first = _fresh(make, steps)
        middle = _steps(first, start, first.timesteps[:split], dtype)
        state = capture(first, middle)
        assert [(n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in sorted(state.items())] == \
               sorted((s.name, s.shape, s.dtype) for s in specs)
        sent = {n: torch.from_numpy(t.numpy().copy()) for n, t in state.items()}  # as a ring slot carries it
        second = _fresh(make, steps)
        restore(second, sent, torch.device("cpu"))
        got = _steps(second, middle, second.timesteps[split:], dtype)
        assert torch.equal(got, expected), f"{kind}: stopped after {split} of {steps} steps"
        if name == "UniPCMultistepScheduler" and 0 < split < steps - 1:  # the history is what makes it exact
            # (not before the last step: it lands on sigma 0, where the corrected sample drops out)
            blind = _fresh(make, steps)
            blind._step_index = split
            assert not torch.equal(_steps(blind, middle, blind.timesteps[split:], dtype), expected), kind


@pytest.mark.parametrize("kind", sorted(SCHEDULERS))
def test_a_zero_state_restores_without_error(kind):
    """A stage's warm-up (`--warm-up`) feeds it zeros of the declared shapes."""
    make, dtype = SCHEDULERS[kind]
    scheduler = _fresh(make, 4)
    shape = (1, 4, 2, 4, 4)
    zeros = {s.name: torch.zeros(s.shape, dtype=getattr(torch, s.dtype))
             for s in state_specs(type(scheduler).__name__, dict(scheduler.config), shape)}
    restore(scheduler, zeros, torch.device("cpu"))
    assert torch.isfinite(_steps(scheduler, torch.ones(shape), scheduler.timesteps[2:], dtype)).all()


def test_schedulers_whose_state_is_unknown_are_refused_naming_the_class_and_the_fix():
    with pytest.raises(UserError) as refused:
        check_scheduler("DPMSolverMultistepScheduler", {}, "model/model_index.json")
    message = str(refused.value)
    assert "model/model_index.json" in message and "DPMSolverMultistepScheduler" in message
    assert "fix: set the folder's scheduler to UniPCMultistepScheduler" in message
    with pytest.raises(UserError, match="stochastic_sampling"):
        check_scheduler("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}, "m")
    check_scheduler("FlowMatchEulerDiscreteScheduler", {"shift": 5.0}, "m")


@pytest.mark.parametrize("boundary", [0.875, 0.9])
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 12.0])
def test_each_experts_share_of_the_steps_is_within_one_step_of_the_split(boundary, shift):
    share = ExpertSplit(boundary, shift).high_share()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    for steps in range(1, 61):
        scheduler.set_timesteps(steps)
        high = boundary_split(scheduler.timesteps, boundary * 1000)
        assert abs(high - steps * share) <= 1.0 + 1e-9, (steps, high, steps * share)


def test_a_schedule_that_crosses_the_boundary_twice_is_refused():
    assert boundary_split(torch.tensor([999, 900, 700, 500]), 875.0) == 2
    with pytest.raises(ValueError, match="more than once"):
        boundary_split(torch.tensor([999, 700, 900, 500]), 875.0)


# -- topology and built-ins ---------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_the_builtins_split_into_the_experts_stages_known_before_they_are_built(model_cache, model):
    announced = topology_of(f"builtin:{model}")
    assert list(announced.names) == STAGES
    source = resolve_model(f"builtin:{model}", model_cache, "test", [])
    assert source.adapter.topology == announced == topology_of(str(source.folder))
    high, low = announced.stages[1], announced.stages[2]
    assert high.share_of_steps == pytest.approx(0.3 if model.endswith("t2v") else 0.25)
    assert high.share_of_steps + low.share_of_steps == pytest.approx(1.0)
    assert topology_of("builtin:tiny-wan-t2v") == CLASSIC
    if model.endswith("t2v"):  # without a split, the experts divide the denoisers' ranks by their steps
        assert default_split(announced, 16) == {"encode": 2, DENOISE_HIGH: 3, DENOISE_LOW: 7, "decode": 4}
    expected = {"encode": {"text_encoder", "tokenizer"} | ({"vae"} if model.endswith("i2v") else set()),
                DENOISE_HIGH: {"transformer", "scheduler"}, DENOISE_LOW: {"transformer_2", "scheduler"},
                "decode": {"vae"}}
    for stage in announced:
        pipe = source.adapter.load_pipeline(stage, CPU)
        assert {n for n, v in pipe.components.items() if v is not None} == expected[stage], stage


def test_the_topology_module_imports_no_torch():
    code = ("import sys; from onepiece_hpc.models.topologies import topology_of; "
            "print(topology_of('builtin:random:wan2.2-i2v-a14b').describe()); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.stdout.split("\n")[:2] == [" -> ".join(STAGES), "False"], done.stderr


#: each expert of the A14B releases has the Wan2.1-14B shape (the I2V one over 36 input channels)
A14B = {"wan2.2-t2v-a14b": (14_288_491_584, 0.875), "wan2.2-i2v-a14b": (14_288_901_184, 0.9)}


@pytest.mark.parametrize("name", sorted(A14B))
def test_the_real_size_a14b_architectures_and_their_folders(tmp_path, model_cache, name):
    from onepiece_hpc.models.wan.real_size import BUILDERS

    parameters, boundary = A14B[name]
    with torch.device("meta"):
        pipe = BUILDERS[name]()
    for expert in ("transformer", "transformer_2"):
        module = getattr(pipe, expert)
        assert sum(p.numel() for p in module.parameters()) == parameters, expert
        config = module.config
        assert (config.num_layers, config.num_attention_heads, config.attention_head_dim, config.ffn_dim,
                config.text_dim, config.freq_dim, config.image_dim) == (40, 40, 128, 13824, 4096, 256, None)
    assert pipe.config.boundary_ratio == boundary and not pipe.config.expand_timesteps
    source = resolve_model(f"builtin:random:{name}", model_cache, "test", [], weights=False)
    assert source is not None and source.adapter.topology == topology_of(f"builtin:random:{name}")
    index = json.loads((source.folder / "model_index.json").read_text())
    assert index["boundary_ratio"] == boundary and index["transformer_2"] == ["diffusers", "WanTransformer3DModel"]
    if name.endswith("i2v-a14b"):
        assert index.get("image_encoder") in (None, [None, None])
        assert "image_embeds" not in {s.name for s in source.adapter.output_specs("encode", _params(
            source.adapter, 4.0, tmp_path), 1, torch.bfloat16)}


# -- the stages chained in one process ----------------------------------------------------------

def _params(adapter, guidance: float, folder: Path) -> GenParams:
    image = {}
    if adapter.needs_image:
        image["image"] = ImageReader().read(write_png(folder / "first.png"), "test", "test", [])
    return GenParams(steps=STEPS, guidance=guidance, height=SIZE, width=SIZE, frames=FRAMES, **image)


def _plain(pipe, prompts, negatives, seeds, guidance: float, image: Path | None) -> np.ndarray:
    """One pipeline call for one unit, as a user makes it, in uint8 as the adapter rounds."""
    extra = {"image": Image.open(image).convert("RGB")} if image else {}
    frames = pipe(prompt=list(prompts), negative_prompt=list(negatives), height=SIZE, width=SIZE, num_frames=FRAMES,
                  num_inference_steps=STEPS, guidance_scale=guidance,
                  generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], output_type="np", **extra).frames
    return (frames * 255).round().astype("uint8")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("guidance", [1.0, 4.0], ids=["no-guidance", "guidance"])
@pytest.mark.parametrize("model", MODELS)
def test_the_stages_chained_by_hand_equal_the_pipeline_call(tmp_path, model_cache, model, guidance):
    torch.set_num_threads(1)
    source = resolve_model(f"builtin:{model}", model_cache, "test", [])
    adapter = source.adapter
    params = _params(adapter, guidance, tmp_path)
    unit = UnitInput(unit=0, items=(0, 1), prompts=tuple(PROMPTS[:2]), negative_prompts=tuple(NEGATIVES[:2]),
                     seeds=(11, 12), params=params)
    tensors: dict[str, torch.Tensor] = {}
    for stage in adapter.topology:
        tensors = adapter.load(stage, CPU)(unit, tensors)
        declared = adapter.output_specs(stage, params, 2, CPU.dtype)
        assert {n: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in tensors.items()} == \
               {s.name: (s.shape, s.dtype) for s in declared}, stage
    pipe = DiffusionPipeline.from_pretrained(source.folder)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler.set_timesteps(STEPS)
    assert boundary_split(pipe.scheduler.timesteps, pipe.config.boundary_ratio * 1000) == 2  # 2 high, 3 low
    expected = _plain(pipe, PROMPTS[:2], NEGATIVES[:2], (11, 12), guidance,
                      tmp_path / "first.png" if adapter.needs_image else None)
    np.testing.assert_array_equal(tensors["videos"].numpy(), expected)
    assert not np.array_equal(expected[0], expected[1]), "the items must differ"


# -- real ranks ---------------------------------------------------------------------------------

def _lines(count: int) -> str:
    return "".join(json.dumps({"prompt": f"{PROMPTS[i % 5]}, take {i}", "negative_prompt": NEGATIVES[i % 5]}) + "\n"
                   for i in range(count))


def _job(folder: Path, model: str, count: int, steps: int = STEPS, **fields) -> Path:
    params = f"steps: {steps}, guidance: 4.0, height: {SIZE}, width: {SIZE}, frames: {FRAMES}"
    if model.endswith("i2v"):
        write_png(folder / "first.png")
        params += ", image: first.png"
    return write_job(folder, _lines(count), prompt_file="p.jsonl", prompts="p.jsonl", model=f"builtin:{model}",
                     microbatch="2", params=f"{{{params}}}", **fields)


def _videos(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        assert f["done"][...].all(), "every item must be done"
        return f["outputs/videos"][...], f["items"][...]


def _monolithic(folder: Path, model: str, count: int, steps: int = STEPS) -> np.ndarray:
    result = invoke("run", _job(folder, model, count, steps), "--monolithic")
    assert result.code == 0, result.err
    return _videos(folder / "out/t.h5")[0]


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("model", MODELS)
def test_the_experts_on_separate_ranks_equal_the_one_process_run_and_the_plain_call(tmp_path, model_cache, model):
    count = 5
    reference = _monolithic(tmp_path / "mono", model, count)
    job = _job(tmp_path / "staged", model, count, stages="{encode: 1, denoise_high: 1, denoise_low: 1, decode: 1}")
    proc = run_cli("run", job, "-n", "5", "--wait-timeout", "120", timeout=360)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "denoise_high 1 (ranks 2)" in proc.stdout and "denoise_low 1 (ranks 3)" in proc.stdout
    output = tmp_path / "staged/out/t.h5"
    videos, items = _videos(output)
    np.testing.assert_array_equal(videos, reference)
    assert int(runs_of(output)[0]["items_committed"]) == count
    record = telemetry_of(output)
    assert [s.decode() for s in record.stages["stage"]] == STAGES
    units = len(set(items["unit"].tolist()))
    assert [int(n) for n in record.stages["units"]] == [units] * 4  # each unit once through each stage
    torch.set_num_threads(1)
    pipe = DiffusionPipeline.from_pretrained(builtin_model(model_cache, model))
    pipe.set_progress_bar_config(disable=True)
    lines = [json.loads(line) for line in _lines(count).splitlines()]
    image = tmp_path / "staged/first.png" if model.endswith("i2v") else None
    for unit in np.unique(items["unit"]):
        members = np.flatnonzero(items["unit"] == unit)
        expected = _plain(pipe, [lines[i]["prompt"] for i in members], [lines[i]["negative_prompt"] for i in members],
                          [int(items["seed"][i]) for i in members], 4.0, image)
        np.testing.assert_array_equal(videos[members], expected, err_msg=f"unit {unit}")


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_ranks_moving_between_the_experts_land_identical_outputs(tmp_path):
    """Enough steps that the experts are the bottleneck whatever the load (at 5 steps the text
    encoder was, under the suite's load, and no move was worth making): the second encode rank
    moves to an expert, and the outputs are the one-process run's."""
    count, steps = 16, 30
    reference = _monolithic(tmp_path / "mono", "tiny-wan22-t2v", count, steps)
    job = _job(tmp_path / "elastic", "tiny-wan22-t2v", count, steps,
               stages="{encode: 2, denoise_high: 1, denoise_low: 1, decode: 1}",
               policy="{name: adaptive, interval_s: 0.3, cooldown_s: 0.5, margin: 0.0}")
    proc = run_cli("run", job, "-n", "6", "--wait-timeout", "120", timeout=360)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = tmp_path / "elastic/out/t.h5"
    videos, _ = _videos(output)
    np.testing.assert_array_equal(videos, reference)
    assert int(runs_of(output)[0]["items_committed"]) == count
    moves = telemetry_of(output).moves
    assert {m["target"].decode() for m in moves} & {DENOISE_HIGH, DENOISE_LOW}, (moves, proc.stdout)
    assert {m["source"].decode() for m in moves} | {m["target"].decode() for m in moves} <= set(STAGES)


# -- refusals -----------------------------------------------------------------------------------

def _edited_copy(model_cache, tmp_path: Path, index_changes: dict, scheduler_class: str | None = None) -> Path:
    folder = tmp_path / "edited-wan22"
    shutil.copytree(builtin_model(model_cache, "tiny-wan22-t2v"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(index | index_changes))
    if scheduler_class:
        config = json.loads((folder / "scheduler/scheduler_config.json").read_text())
        (folder / "scheduler/scheduler_config.json").write_text(json.dumps(config | {"_class_name": scheduler_class}))
    return folder


REFUSALS = {
    "unknown-scheduler": ({"scheduler": ["diffusers", "DDIMScheduler"]}, "DDIMScheduler",
                          ["DDIMScheduler", "UniPCMultistepScheduler", "fix:"]),
    "expand-timesteps": ({"expand_timesteps": True}, None, ["expand_timesteps", "TI2V-5B", "fix:"]),
    "boundary-without-second-expert": ({"transformer_2": [None, None]}, None, ["transformer_2", "fix:"]),
    "boundary-out-of-range": ({"boundary_ratio": 1.5}, None, ["boundary_ratio is 1.5", "from 0 to 1", "fix:"]),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_what_the_stages_cannot_split_is_refused_with_exit_2(tmp_path, model_cache, case):
    changes, scheduler, words = REFUSALS[case]
    folder = _edited_copy(model_cache, tmp_path, changes, scheduler)
    job = write_job(tmp_path / "job", ["a kite"], model=str(folder), params="{steps: 2, height: 32, width: 32}")
    result = invoke("run", job, "--monolithic")
    assert result.code == 2, (result.out, result.err)
    assert all(word in result.err for word in words), result.err
    assert str(folder / "model_index.json") in result.err and "Traceback" not in result.err
    assert not (tmp_path / "job/out").exists()


def test_a_split_naming_the_classic_denoise_stage_is_refused_with_the_experts_stages(tmp_path):
    job = _job(tmp_path, "tiny-wan22-t2v", 2, stages="{encode: 1, denoise: 2, decode: 1}")
    result = invoke("run", job, "-n", "5")
    assert result.code == 2, result.err
    assert "'denoise'" in result.err and ", ".join(STAGES) in result.err
