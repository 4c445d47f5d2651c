"""What every diffusers-pipeline adapter shares: partial loading, size rules, the VAE decode, and
the plain pipeline call that users run instead (the baseline of `onepiece bench pipeline`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

from typing import TYPE_CHECKING

import numpy as np

from onepiece_hpc.models.base import (
    LoadedStage, ModelAdapter, Placement, StageRunner, TensorSpec, UnitInput, dtype_name, no_grad, read_config,
)
from onepiece_hpc.models.random_weights import build_pipeline, is_random
from onepiece_hpc.jobfile.job import GenParams
from onepiece_hpc.topology import DENOISE, ENCODE

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] to uint8, rounding exactly as diffusers' numpy_to_pil does."""
    return (images * 255).round().astype("uint8")


def pixels_to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """The VAE's pixels (N, C, ...) in [-1, 1] as host uint8 with the channels last: the bits of
    diffusers' postprocess to "np" (denormalised in the pixels' dtype, then float32) followed by
    `to_uint8`, computed where the pixels are, so only the uint8 bytes cross to the host (a
    quarter of the float32 frames, and no pass of the host's CPU over them), into page-locked
    memory (a pageable copy of an 81-frame 480p video took 72 ms on an H200, a pinned one 2 ms)."""
    import torch

    unit = (pixels * 0.5 + 0.5).clamp(0, 1)  # VaeImageProcessor.denormalize, op for op
    frames = unit.movedim(1, -1).contiguous().float().mul_(255).round_().to(torch.uint8)
    if not frames.is_cuda:
        return frames
    host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)  # torch caches pinned blocks
    return host.copy_(frames)  # synchronous: the frames are on the host when this returns


class PlainCall:
    """The whole pipeline in one process, called as users call it: `pipe(...)` per batch with
    output_type "np", then uint8 as `to_uint8` rounds. `phases` runs the same call with the device
    synchronised where the stages split it, to give each stage's share of the plain call."""

    def __init__(self, pipe: DiffusionPipeline, arguments: Callable[[UnitInput], dict], device: torch.device) -> None:
        self.pipe, self._arguments, self._device = pipe, arguments, device

    def __call__(self, unit: UnitInput) -> np.ndarray:
        return to_uint8(self.pipe(**self._arguments(unit))[0])

    def phases(self, unit: UnitInput) -> tuple[np.ndarray, dict[str, float]]:
        """The outputs and the seconds of encode (to the prompt embeddings), denoise (to the VAE's
        first call) and decode (the VAE, postprocess and uint8) of one call."""
        marks: dict[str, float] = {}
        started = self._now()
        with self._marking(self.pipe, "encode_prompt", marks, "encoded", after=True), \
                self._marking(self.pipe.vae, "decode", marks, "decoding", after=False):
            frames = self(unit)
        ended = self._now()
        return frames, {"encode": marks["encoded"] - started, "denoise": marks["decoding"] - marks["encoded"],
                        "decode": ended - marks["decoding"]}

    def _now(self) -> float:
        import torch

        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        return time.perf_counter()

    @contextmanager
    def _marking(self, owner, name: str, marks: dict[str, float], mark: str, after: bool):
        """`owner.name` notes the (synchronised) time before or after its first call, while inside."""
        original = getattr(owner, name)

        def marked(*args, **kwargs):
            if not after:
                marks.setdefault(mark, self._now())
            result = original(*args, **kwargs)
            if after:
                marks.setdefault(mark, self._now())
            return result

        setattr(owner, name, marked)
        try:
            yield
        finally:
            delattr(owner, name)  # the instance attribute goes; the class's method shows again


class DiffusersPipelineAdapter(ModelAdapter):
    """A pipeline with a text encoder, a latent denoiser and an AutoencoderKL-style VAE."""

    #: the diffusers class this adapter loads, by name: diffusers is imported only when a stage
    #: loads, so ranks that plan, write or check a job never pay for it
    pipeline_class_name: str
    denoiser: str  # "unet" or "transformer"
    text_components: tuple[str, ...] = ("text_encoder", "tokenizer")

    @property
    def pipeline_class(self) -> type[DiffusionPipeline]:
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    def components(self, stage: str) -> tuple[str, ...]:
        if stage == ENCODE:
            return self.text_components
        if stage == DENOISE:
            return (self.denoiser, "scheduler")
        return ("vae",)

    # -- sizes ------------------------------------------------------------------------------
    def vae_scale_factor(self) -> int:
        return 2 ** (len(read_config(self.folder, "vae").get("block_out_channels", [0] * 4)) - 1)

    def latent_channels(self) -> int:
        return int(read_config(self.folder, self.denoiser).get("in_channels", 4))

    def patch_size(self) -> int:
        return int(read_config(self.folder, self.denoiser).get("patch_size") or 1)

    def size_multiple(self) -> int:
        return self.vae_scale_factor() * self.patch_size()

    def default_size(self) -> tuple[int, int]:
        sample = read_config(self.folder, self.denoiser).get("sample_size", 64)
        sample = sample if isinstance(sample, (list, tuple)) else (sample, sample)
        factor = self.vae_scale_factor()
        return int(sample[0]) * factor, int(sample[1]) * factor

    def latent_spec(self, params: GenParams, batch: int, dtype: torch.dtype) -> TensorSpec:
        factor = self.vae_scale_factor()
        shape = (batch, self.latent_channels(), params.height // factor, params.width // factor)
        return TensorSpec("latents", shape, dtype_name(dtype))

    def output_specs(self, stage: str, params: GenParams, batch: int, dtype: torch.dtype) -> tuple[TensorSpec, ...]:
        if stage == ENCODE:
            return self.encode_specs(params, batch, dtype)
        if stage == DENOISE:
            return (self.latent_spec(params, batch, dtype),)
        return (TensorSpec("images", (batch, params.height, params.width, 3), "uint8"),)

    def encode_specs(self, params: GenParams, batch: int, dtype: torch.dtype) -> tuple[TensorSpec, ...]:
        raise NotImplementedError

    # -- loading ----------------------------------------------------------------------------
    def load_pipeline(self, stage: str, placement: Placement) -> DiffusionPipeline:
        """The pipeline with only `stage`'s components loaded; the rest are None."""
        return self._load_components(set(self.components(stage)), placement)

    def _load_components(self, wanted: set[str], placement: Placement) -> DiffusionPipeline:
        import torch

        if is_random(self.folder):
            pipe = build_pipeline(self.pipeline_class, self.folder, self.index, wanted, placement.device,
                                  placement.dtype)
        else:
            skipped = {name: None for name, entry in self.index.items()  # components only: other keys
                       if isinstance(entry, list) and name not in wanted}  # are the pipeline's settings
            pipe = self.pipeline_class.from_pretrained(self.folder, dtype=placement.dtype, **skipped)
            pipe.to(placement.device)
        pipe.set_progress_bar_config(disable=True)
        pipe.vae_scale_factor = self.vae_scale_factor()
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.eval()
        return pipe

    def load(self, stage: str, placement: Placement) -> StageRunner:
        pipe = self.load_pipeline(stage, placement)
        if stage == ENCODE:
            run = lambda unit, inputs: self.encode(pipe, placement, unit)  # noqa: E731
        elif stage == DENOISE:
            run = lambda unit, inputs: self.denoise(pipe, placement, unit, inputs)  # noqa: E731
        else:
            run = lambda unit, inputs: self.decode(pipe, unit, inputs)  # noqa: E731
        return LoadedStage(pipe, run, placement.device)

    def load_plain(self, placement: Placement) -> PlainCall:
        """Every stage's components in one pipeline, called whole (see `PlainCall`)."""
        pipe = self._load_components({name for stage in self.topology for name in self.components(stage)}, placement)
        return PlainCall(pipe, self.plain_arguments, placement.device)

    def plain_arguments(self, unit: UnitInput) -> dict:
        """The `pipe(...)` arguments a user passes for the unit's items (one generator an item)."""
        params = unit.params
        negatives = list(unit.negative_prompts) if any(unit.negative_prompts) else None
        return {"prompt": list(unit.prompts), "negative_prompt": negatives, "num_inference_steps": params.steps,
                "guidance_scale": params.guidance, "height": params.height, "width": params.width,
                "generator": unit.generators(), "output_type": "np", "return_dict": False}

    # -- stages -----------------------------------------------------------------------------
    def encode(self, pipe: DiffusionPipeline, placement: Placement, unit: UnitInput) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def denoise(self, pipe: DiffusionPipeline, placement: Placement, unit: UnitInput,
                inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def latents_of(pipe: DiffusionPipeline, placement: Placement, unit: UnitInput,
                   inputs: dict[str, torch.Tensor], **extra) -> torch.Tensor:
        """The pipeline's own denoising loop over a unit, stopped before the VAE: the encode
        stage's tensors (on this device) as its embeddings, the unit's params, one generator an
        item; `extra` are the family's own arguments."""
        params = unit.params
        on_device = {name: tensor.to(placement.device) for name, tensor in inputs.items()}
        return pipe(num_inference_steps=params.steps, guidance_scale=params.guidance, height=params.height,
                    width=params.width, generator=unit.generators(), output_type="latent", return_dict=False,
                    **on_device, **extra)[0]

    @no_grad
    def decode(self, pipe: DiffusionPipeline, unit: UnitInput,
               inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        vae = pipe.vae
        latents = inputs["latents"].to(vae.device, vae.dtype)
        image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        return {"images": pixels_to_uint8(image)}
