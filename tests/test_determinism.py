"""Invariant 2 on the reference path: the staged split equals diffusers' own full call, bit for bit."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionXLPipeline
from PIL import Image

from support import builtin_model, invoke, write_job, write_png

PROMPTS = ["a red fox in snow", "a lighthouse at dusk", "a bowl of ramen", "an owl on a branch", "a tram"]
NEGATIVES = ["blurry", "", "text, watermark", "low quality", ""]
#: SDXL gives an item without a negative prompt zero embeddings, which one pipeline call can only
#: express for a whole batch: here the items of a two-item unit either all have one or all lack one
SDXL_NEGATIVES = ["blurry", "text, watermark", "", "", "low quality"]
STEPS, GUIDANCE, SIZE = 3, 4.5, 64


def _jsonl(seed0: int, negatives: list[str]) -> str:
    return "".join(json.dumps({"prompt": p, "negative_prompt": n, "seed": seed0 + 11 * i}) + "\n"
                   for i, (p, n) in enumerate(zip(PROMPTS, negatives)))


def _reference(folder, prompts, negatives, seeds, threads, guidance, dtype) -> np.ndarray:
    torch.set_num_threads(threads)  # CPU kernels block their sums by thread count: part of the contract
    pipe = DiffusionPipeline.from_pretrained(folder, dtype=getattr(torch, dtype))
    pipe.set_progress_bar_config(disable=True)
    extra = {"use_resolution_binning": False, "clean_caption": False} if "PixArt" in type(pipe).__name__ else {}
    if len(prompts) == 1:
        generator = torch.Generator("cpu").manual_seed(seeds[0])
        prompt, negative = prompts[0], negatives[0]
    else:
        generator = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        prompt, negative = list(prompts), list(negatives)
    if isinstance(pipe, StableDiffusionXLPipeline) and not any(negatives):
        negative = None  # how SDXL is called without a negative prompt
    images = pipe(prompt, negative_prompt=negative, num_inference_steps=STEPS, guidance_scale=guidance,
                  height=SIZE, width=SIZE, generator=generator, output_type="np", **extra).images
    return (images * 255).round().astype("uint8")


def _assert_equals_full_diffusers_call(tmp_path, model, folder, negatives, microbatch, threads, guidance=GUIDANCE,
                                       dtype="float32") -> None:
    """The monolithic run of `model` (its pipeline folder: `folder`) against one full pipeline call per
    unit, bit for bit."""
    job = write_job(tmp_path, _jsonl(100, negatives), prompt_file="p.jsonl", model=model,
                    microbatch=str(microbatch), cpu_threads=str(threads), dtype=dtype,
                    params=f"{{steps: {STEPS}, guidance: {guidance}, height: {SIZE}, width: {SIZE}}}")
    result = invoke("run", job, "--monolithic")
    assert result.code == 0, result.err
    with h5py.File(tmp_path / "out/t.h5", "r") as f:
        images = f["outputs/images"][...]
        seeds = [int(s) for s in f["items"]["seed"]]
        assert f["done"][...].all()
    for start in range(0, len(PROMPTS), microbatch):
        stop = min(start + microbatch, len(PROMPTS))
        expected = _reference(folder, PROMPTS[start:stop], negatives[start:stop], seeds[start:stop], threads,
                              guidance, dtype)
        np.testing.assert_array_equal(images[start:stop], expected, err_msg=f"items {start}..{stop - 1}")
    assert len({images[i].tobytes() for i in range(len(PROMPTS))}) == len(PROMPTS), "items must differ"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-sd", "tiny-pixart"])
@pytest.mark.parametrize("microbatch, threads", [(1, 1), (2, 2)])
def test_output_equals_full_diffusers_call(tmp_path, model_cache, model, microbatch, threads):
    _assert_equals_full_diffusers_call(tmp_path, f"builtin:{model}", builtin_model(model_cache, model), NEGATIVES,
                                       microbatch, threads)


@pytest.mark.slow
@pytest.mark.parametrize("guidance", [1.0, GUIDANCE], ids=["no-guidance", "guidance"])
@pytest.mark.parametrize("microbatch, threads", [(1, 1), (2, 2)])
def test_sdxl_output_equals_full_diffusers_call(tmp_path, model_cache, microbatch, threads, guidance):
    _assert_equals_full_diffusers_call(tmp_path, "builtin:tiny-sdxl", builtin_model(model_cache, "tiny-sdxl"),
                                       SDXL_NEGATIVES, microbatch, threads, guidance)


@pytest.mark.slow
def test_sdxl_float16_vae_upcast_and_latent_statistics_follow_the_pipeline(tmp_path, model_cache):
    folder = tmp_path / "sdxl-latent-statistics"
    shutil.copytree(builtin_model(model_cache, "tiny-sdxl"), folder)
    config = json.loads((folder / "vae/config.json").read_text())
    assert config["force_upcast"]
    config |= {"latents_mean": [0.1, -0.2, 0.3, 0.0], "latents_std": [0.9, 1.1, 0.8, 1.2]}
    (folder / "vae/config.json").write_text(json.dumps(config))
    _assert_equals_full_diffusers_call(tmp_path / "run", str(folder), folder, SDXL_NEGATIVES, 2, 1, dtype="float16")


WAN_PROMPTS = ["a red fox running in snow", "waves on a rocky shore", "a tram in the rain", "an owl turning its head"]
WAN_NEGATIVES = ["blurry", "", "text, watermark", ""]
WAN_FRAMES, WAN_SIZE = 9, 32


def _wan_reference(pipe, prompts, negatives, seeds, image_path) -> np.ndarray:
    """One WanPipeline / WanImageToVideoPipeline call for one unit, converted to uint8 like the adapter."""
    if len(prompts) == 1:
        prompt, negative = prompts[0], negatives[0]
        generator = torch.Generator("cpu").manual_seed(seeds[0])
    else:
        prompt, negative = list(prompts), list(negatives)
        generator = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    extra = {"image": Image.open(image_path).convert("RGB")} if image_path else {}
    frames = pipe(prompt=prompt, negative_prompt=negative, height=WAN_SIZE, width=WAN_SIZE, num_frames=WAN_FRAMES,
                  num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=generator, output_type="np",
                  **extra).frames
    return (frames * 255).round().astype("uint8")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-wan-t2v", "tiny-wan-i2v"])
@pytest.mark.parametrize("microbatch, threads", [(1, 1), (2, 2)])
def test_wan_output_equals_full_diffusers_call(tmp_path, model_cache, model, microbatch, threads):
    image_to_video = model.endswith("i2v")
    lines = [{"prompt": p, "negative_prompt": n, "seed": 100 + 11 * i} for i, (p, n) in
             enumerate(zip(WAN_PROMPTS, WAN_NEGATIVES))]
    params = f"steps: {STEPS}, guidance: {GUIDANCE}, height: {WAN_SIZE}, width: {WAN_SIZE}, frames: {WAN_FRAMES}"
    if image_to_video:  # a job-wide first frame, and one line with its own (a unit of its own)
        write_png(tmp_path / "first.png")
        write_png(tmp_path / "images/other.png", shift=90)
        lines[2]["image"] = "images/other.png"
        params += ", image: first.png"
    job = write_job(tmp_path, "".join(json.dumps(line) + "\n" for line in lines), prompt_file="p.jsonl",
                    model=f"builtin:{model}", microbatch=str(microbatch), cpu_threads=str(threads),
                    params=f"{{{params}}}")
    result = invoke("run", job, "--monolithic")
    assert result.code == 0, result.err
    with h5py.File(tmp_path / "out/t.h5", "r") as f:
        videos = f["outputs/videos"][...]
        items = f["items"][...]
        assert f["done"][...].all()
    torch.set_num_threads(threads)
    pipe = DiffusionPipeline.from_pretrained(builtin_model(model_cache, model))
    pipe.set_progress_bar_config(disable=True)
    for unit in np.unique(items["unit"]):
        members = np.flatnonzero(items["unit"] == unit)
        assert len(members) <= microbatch
        image = items["image"][members[0]].decode() if image_to_video else None
        expected = _wan_reference(pipe, [WAN_PROMPTS[i] for i in members], [WAN_NEGATIVES[i] for i in members],
                                  [int(items["seed"][i]) for i in members], image)
        np.testing.assert_array_equal(videos[members], expected, err_msg=f"unit {unit} (items {list(members)})")
    assert len({videos[i].tobytes() for i in range(len(WAN_PROMPTS))}) == len(WAN_PROMPTS), "items must differ"


@pytest.mark.slow
def test_same_job_twice_gives_identical_files(tmp_path):
    first = write_job(tmp_path / "a", PROMPTS)
    second = write_job(tmp_path / "b", PROMPTS)
    assert invoke("run", first, "--monolithic").code == 0
    assert invoke("run", second, "--monolithic").code == 0
    with h5py.File(tmp_path / "a/out/t.h5", "r") as a, h5py.File(tmp_path / "b/out/t.h5", "r") as b:
        np.testing.assert_array_equal(a["outputs/images"][...], b["outputs/images"][...])
        assert a.attrs["job_fingerprint"] == b.attrs["job_fingerprint"]
