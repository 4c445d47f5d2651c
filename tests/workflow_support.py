"""What the workflow tests share: a tiny text-to-image -> image-to-video job file, and the same
chain done by hand with the two plain diffusers pipelines (the reference every run must equal)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from support import builtin_model

PROMPTS = ["a red fox in snow", "a lighthouse at dusk", "a tram in the rain", "an owl on a branch"]
OWN_SEED = {1: 4242}  # a prompt line with its own seed: every step's seed follows from it
IMAGE = {"steps": 2, "guidance": 4.0, "height": 32, "width": 32, "negative_prompt": "low quality"}
VIDEO = {"steps": 2, "guidance": 4.5, "height": 32, "width": 32, "frames": 5, "negative_prompt": "blurry"}
SEED = 7


def _flow(params: dict) -> str:
    return "{" + ", ".join(f"{key}: {json.dumps(value)}" for key, value in params.items()) + "}"


def workflow_job(folder: Path, prompts: list[str] = PROMPTS, *, keep: bool = True, microbatch: int = 1,
                 stages: str | None = None, image: dict = IMAGE, video: dict = VIDEO,
                 image_model: str = "builtin:tiny-sdxl", video_model: str = "builtin:tiny-wan-i2v",
                 extra: str = "") -> Path:
    """A workflow job file (block style, one field a line) over `prompts` (a .jsonl, OWN_SEED's
    lines with their own seed); its output is out/t.h5 beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [{"prompt": p, **({"seed": OWN_SEED[i]} if i in OWN_SEED else {})} for i, p in enumerate(prompts)]
    (folder / "p.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    text = f"""name: chain
prompts: p.jsonl
seed: {SEED}
microbatch: {microbatch}
output: out/t.h5
device: cpu
workflow:
  - name: image
    model: {image_model}
    keep: {str(keep).lower()}
    params: {_flow(image)}
  - name: video
    model: {video_model}
    params: {_flow(video)}
"""
    if stages:
        text += f"stages: {stages}\n"
    path = folder / "job.yaml"
    path.write_text(text + extra, encoding="utf-8")
    return path


def item_seeds(prompts: list[str] = PROMPTS) -> list[int]:
    return [OWN_SEED.get(i, SEED + i) for i in range(len(prompts))]


def second_seed(seed: int) -> int:
    """The documented rule for step 1's seed, written out as a user would (docs/workflows.md)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:1".encode()).digest()[:8], "little") & (2**63 - 1)


def by_hand(cache: Path, prompts: list[str] = PROMPTS, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(images, videos) of the chain run by hand, an item at a time: SDXL's pipe(...) output as
    uint8, made a PIL image, given to WanImageToVideoPipeline's pipe(image=...)."""
    torch.set_num_threads(threads)
    first = DiffusionPipeline.from_pretrained(builtin_model(cache, "tiny-sdxl"))
    second = DiffusionPipeline.from_pretrained(builtin_model(cache, "tiny-wan-i2v"))
    for pipe in (first, second):
        pipe.set_progress_bar_config(disable=True)
    images, videos = [], []
    for prompt, seed in zip(prompts, item_seeds(prompts)):
        image = first(prompt, negative_prompt=IMAGE["negative_prompt"], num_inference_steps=IMAGE["steps"],
                      guidance_scale=IMAGE["guidance"], height=IMAGE["height"], width=IMAGE["width"],
                      generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
        image = (image * 255).round().astype("uint8")
        video = second(image=Image.fromarray(image), prompt=prompt, negative_prompt=VIDEO["negative_prompt"],
                       num_inference_steps=VIDEO["steps"], guidance_scale=VIDEO["guidance"], height=VIDEO["height"],
                       width=VIDEO["width"], num_frames=VIDEO["frames"],
                       generator=torch.Generator("cpu").manual_seed(second_seed(seed)), output_type="np").frames[0]
        images.append(image)
        videos.append((video * 255).round().astype("uint8"))
    return np.stack(images), np.stack(videos)


def outputs_of(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(kept images, videos) of a complete workflow output."""
    with h5py.File(path, "r") as f:
        assert f["done"][...].all(), "every item must be done"
        return f["outputs/image/images"][...], f["outputs/videos"][...]
