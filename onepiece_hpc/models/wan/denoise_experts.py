"""The Wan pipelines' denoising loop, cut where Wan2.2 switches experts.

WanPipeline and WanImageToVideoPipeline run one loop over the schedule and call `transformer` at
the timesteps at or above `boundary_ratio * num_train_timesteps` and `transformer_2` below it,
guided with the same scale (`guidance_scale_2` defaults to `guidance_scale`) and guided at all
only when `guidance_scale > 1`. Here the high-noise stage runs the first part and emits the
latents, the scheduler's state (scheduler_state.py) and the encode stage's tensors; the low-noise
stage restores the state and runs the rest. Each step is the pipelines' own, op for op, so the
bits are those of one `pipe(...)` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from onepiece_hpc.models.base import UnitInput
from onepiece_hpc.models.wan.scheduler_state import capture, restore

if TYPE_CHECKING:
    import torch

LATENTS = "latents"


@dataclass(frozen=True)
class Conditioning:
    """What the denoiser sees beside the latents and the text: image-to-video's mask and image
    latent, concatenated to the latents' channels, and (Wan2.1 I2V) the CLIP image tokens."""

    latents: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None


def boundary_split(timesteps: torch.Tensor, boundary: float) -> int:
    """How many of the schedule's first timesteps are the high-noise expert's (those >= boundary).
    The schedule falls, so they come first; one that rises again is refused rather than reordered."""
    high = (timesteps >= boundary).tolist()
    count = sum(high)
    if not all(high[:count]):
        raise ValueError(f"the schedule {timesteps.tolist()} crosses the experts' boundary {boundary} more than "
                         "once: the two experts can't run as two stages in turn")
    return count


def denoise_span(transformer, scheduler, latents: torch.Tensor, timesteps: Sequence[torch.Tensor],
                 embeds: dict[str, torch.Tensor], scale: float, guided: bool,
                 conditioning: Conditioning = Conditioning()) -> torch.Tensor:
    """The pipelines' steps over `timesteps` with one denoiser: latents (float32) in and out;
    `embeds` holds prompt_embeds (and negative_prompt_embeds when `guided`)."""
    import torch

    dtype = transformer.dtype
    positive = embeds["prompt_embeds"].to(transformer.device, dtype)
    negative = embeds["negative_prompt_embeds"].to(transformer.device, dtype) if guided else None
    image = conditioning.image_embeds
    extra = {} if image is None else {"encoder_hidden_states_image": image.to(transformer.device, dtype)}
    for t in timesteps:
        model_input = latents if conditioning.latents is None else torch.cat([latents, conditioning.latents], dim=1)
        predict = partial(transformer, hidden_states=model_input.to(dtype), timestep=t.expand(latents.shape[0]),
                          return_dict=False, **extra)
        noise = predict(encoder_hidden_states=positive)[0]
        if guided:
            unconditional = predict(encoder_hidden_states=negative)[0]
            noise = unconditional + scale * (noise - unconditional)
        latents = scheduler.step(noise, t, latents, return_dict=False)[0]
    return latents


def _boundary(pipe) -> float:
    return pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps


def high_expert(pipe, unit: UnitInput, inputs: dict[str, torch.Tensor], device: torch.device,
                shape: tuple[int, ...], begin_at_zero: bool, conditioning: Conditioning) -> dict[str, torch.Tensor]:
    """The steps at or above the boundary with `pipe.transformer`, from the unit's own noise: the
    latents, the scheduler's state and (copied: they may live in a ring slot that is released
    before they are sent on) the encode stage's tensors, all that the low-noise stage needs."""
    import torch

    params, scheduler = unit.params, pipe.scheduler
    scheduler.set_timesteps(params.steps, device=device)
    if begin_at_zero:  # WanPipeline sets it; WanImageToVideoPipeline lets the first step find it
        scheduler.set_begin_index(0)
    from diffusers.utils.torch_utils import randn_tensor  # here: a rank that never denoises need not import diffusers

    latents = randn_tensor(shape, generator=unit.generators(), device=device, dtype=torch.float32)
    timesteps = scheduler.timesteps
    split = boundary_split(timesteps, _boundary(pipe))
    latents = denoise_span(pipe.transformer, scheduler, latents, timesteps[:split], inputs,
                           params.guidance, params.guidance > 1, conditioning)
    carried = {name: tensor.clone() for name, tensor in inputs.items()}
    return {**carried, LATENTS: latents, **capture(scheduler, latents)}


def low_expert(pipe, unit: UnitInput, inputs: dict[str, torch.Tensor], device: torch.device,
               conditioning: Conditioning) -> torch.Tensor:
    """The steps below the boundary with `pipe.transformer_2`, from the high-noise stage's latents
    and scheduler state: the final latents (float32)."""
    import torch

    params, scheduler = unit.params, pipe.scheduler
    scheduler.set_timesteps(params.steps, device=device)
    restore(scheduler, inputs, device)
    timesteps = scheduler.timesteps
    split = boundary_split(timesteps, _boundary(pipe))
    latents = inputs[LATENTS].to(device=device, dtype=torch.float32, copy=True)
    return denoise_span(pipe.transformer_2, scheduler, latents, timesteps[split:], inputs,
                        params.guidance, params.guidance > 1, conditioning)
