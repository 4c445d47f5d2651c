"""Wan text-to-video and image-to-video: UMT5 (+ CLIP image) encode -> Wan DiT denoise -> Wan VAE decode.

Wan2.2 A14B folders (a high-noise `transformer`, a low-noise `transformer_2` and the boundary
between them) split the denoise into two stages, denoise_high -> denoise_low, each expert on ranks
of its own (experts.py, denoise_experts.py). Wan2.2 TI2V-5B (per-token timesteps) is refused.

Image-to-video encodes its condition in the encode stage: the CLIP image embedding and the
VAE latent of the first frame (followed by empty frames) are what the denoiser attends to,
computed once per unit there, so the denoise ranks hold the DiT alone and the VAE's memory peak
stays off them. The latent travels as the VAE returns it; denoise normalises it in float32
exactly where the pipeline does, so the bits are those of the whole pipeline call.
"""

from __future__ import annotations

import inspect
import math
from functools import partial
from typing import TYPE_CHECKING

from PIL import Image

from onepiece_hpc.errors import UserError
from onepiece_hpc.models.base import (
    LoadedStage, Placement, StageRunner, TensorSpec, UnitInput, dtype_name, no_grad, read_config,
)
from onepiece_hpc.models.pipeline_adapter import DiffusersPipelineAdapter, pixels_to_uint8
from onepiece_hpc.models.topologies import topology_for
from onepiece_hpc.models.wan.denoise_experts import LATENTS, Conditioning, denoise_span, high_expert, low_expert
from onepiece_hpc.models.wan.experts import DENOISE_HIGH, DENOISE_LOW, two_experts
from onepiece_hpc.models.wan.scheduler_state import check_scheduler, state_specs
from onepiece_hpc.jobfile.images import open_condition_image
from onepiece_hpc.jobfile.job import GenParams
from onepiece_hpc.topology import DECODE, ENCODE, Topology

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

#: the pipelines' max_sequence_length: prompt embeddings are padded to this many tokens
MAX_SEQUENCE = 512
#: Wan2.1 generates 16 frames a second
FRAME_RATE = 16


def latent_statistics(vae_config: dict, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 1 / std) of the VAE's latents, shaped for (N, C, T, H, W), computed as the pipelines compute them."""
    import torch

    shape = (1, vae_config["z_dim"], 1, 1, 1)
    mean = torch.tensor(vae_config["latents_mean"]).view(shape).to(device, dtype)
    inverse_std = 1.0 / torch.tensor(vae_config["latents_std"]).view(shape).to(device, dtype)
    return mean, inverse_std


def check_folder(folder, index: dict) -> None:
    """Refuse what the stages can't run as the pipeline does: per-token timesteps (Wan2.2 TI2V-5B),
    a boundary without a second expert or out of range, a scheduler whose state can't be handed over."""
    where = f"{folder}/model_index.json"
    if index.get("expand_timesteps"):
        raise UserError(f"{where}: expand_timesteps is set: this is a Wan2.2 TI2V-5B pipeline (per-token "
                        "timesteps), which onepiece does not run; fix: use a Wan2.1 folder or a Wan2.2 A14B one "
                        "(two experts, transformer and transformer_2)")
    boundary = index.get("boundary_ratio")
    if boundary is None:
        return
    if isinstance(boundary, bool) or not isinstance(boundary, (int, float)) or not math.isfinite(boundary) \
            or not 0 <= boundary <= 1:
        raise UserError(f"{where}: boundary_ratio is {boundary!r}; fix: a number from 0 to 1 (the share of the "
                        "training timesteps the high-noise expert covers, 0.875 in Wan2.2 T2V A14B)")
    if not two_experts(index):
        raise UserError(f"{where}: boundary_ratio is set but there is no transformer_2, the low-noise expert the "
                        "pipeline switches to below it; fix: save the complete Wan2.2 pipeline, or remove "
                        "boundary_ratio for a one-transformer (Wan2.1) folder")
    scheduler = index.get("scheduler")
    name = str(scheduler[1]) if isinstance(scheduler, list) and len(scheduler) == 2 else ""
    check_scheduler(name, read_config(folder, "scheduler"), where)


class WanAdapter(DiffusersPipelineAdapter):
    """WanPipeline: text to video (Wan2.1, and Wan2.2 A14B with its two experts as two stages)."""

    pipeline_classes = ("WanPipeline",)
    pipeline_class_name = "WanPipeline"
    denoiser = "transformer"
    output_kind = "video"
    frame_rate = FRAME_RATE
    #: the pipeline sets the scheduler's begin index before its loop (the I2V pipeline does not)
    begin_at_zero = True

    def __init__(self, folder, index) -> None:
        super().__init__(folder, index)
        check_folder(folder, index)

    @property
    def topology(self) -> Topology:
        return topology_for(self.index, self.folder)

    def components(self, stage: str) -> tuple[str, ...]:
        if stage == DENOISE_HIGH:
            return ("transformer", "scheduler")
        if stage == DENOISE_LOW:
            return ("transformer_2", "scheduler")
        return super().components(stage)

    # -- sizes ------------------------------------------------------------------------------
    def _vae_config(self) -> dict:
        return read_config(self.folder, "vae")

    def vae_scale_factor(self) -> int:
        return int(self._vae_config().get("scale_factor_spatial", 8))

    def frame_step(self) -> int:
        return int(self._vae_config().get("scale_factor_temporal", 4))

    def latent_channels(self) -> int:
        return int(self._vae_config().get("z_dim", 16))

    def patch_size(self) -> int:
        return int(read_config(self.folder, "transformer").get("patch_size", (1, 2, 2))[1])

    def _call_default(self, name: str) -> int:
        return int(inspect.signature(self.pipeline_class.__call__).parameters[name].default)

    def default_size(self) -> tuple[int, int]:
        return self._call_default("height"), self._call_default("width")

    def default_frames(self) -> int:
        return self._call_default("num_frames")

    def latent_spec(self, params: GenParams, batch: int, dtype: torch.dtype) -> TensorSpec:
        factor = self.vae_scale_factor()
        shape = (batch, self.latent_channels(), (params.frames - 1) // self.frame_step() + 1,
                 params.height // factor, params.width // factor)
        return TensorSpec("latents", shape, dtype_name(dtype))

    def uses_guidance(self, params: GenParams) -> bool:
        return params.guidance > 1

    def encode_specs(self, params: GenParams, batch: int, dtype: torch.dtype) -> tuple[TensorSpec, ...]:
        shape = (batch, MAX_SEQUENCE, int(read_config(self.folder, "text_encoder")["d_model"]))
        specs = [TensorSpec("prompt_embeds", shape, dtype_name(dtype))]
        if self.uses_guidance(params):
            specs.append(TensorSpec("negative_prompt_embeds", shape, dtype_name(dtype)))
        return tuple(specs)

    def output_specs(self, stage: str, params: GenParams, batch: int, dtype: torch.dtype) -> tuple[TensorSpec, ...]:
        if stage == DECODE:
            return (TensorSpec("videos", (batch, params.frames, params.height, params.width, 3), "uint8"),)
        if stage == DENOISE_HIGH:  # the encode stage's tensors, the float32 latents and the scheduler's state
            latents = self.latent_spec(params, batch, "float32")
            scheduler = self.index["scheduler"][1]
            return (*self.encode_specs(params, batch, dtype), latents,
                    *state_specs(scheduler, read_config(self.folder, "scheduler"), latents.shape))
        if stage == DENOISE_LOW:
            return (self.latent_spec(params, batch, dtype),)
        return super().output_specs(stage, params, batch, dtype)

    # -- loading ----------------------------------------------------------------------------
    def load_pipeline(self, stage: str, placement: Placement) -> DiffusionPipeline:
        pipe = super().load_pipeline(stage, placement)
        pipe.vae_scale_factor_spatial = self.vae_scale_factor()  # the pipeline guesses them when the VAE is not loaded
        pipe.vae_scale_factor_temporal = self.frame_step()
        return pipe

    def load(self, stage: str, placement: Placement) -> StageRunner:
        if stage not in (DENOISE_HIGH, DENOISE_LOW):
            return super().load(stage, placement)
        pipe = self.load_pipeline(stage, placement)
        expert = self.denoise_high if stage == DENOISE_HIGH else self.denoise_low
        return LoadedStage(pipe, partial(expert, pipe, placement), placement.device)

    # -- stages -----------------------------------------------------------------------------
    def plain_arguments(self, unit: UnitInput) -> dict:
        return super().plain_arguments(unit) | {"num_frames": unit.params.frames, "max_sequence_length": MAX_SEQUENCE}

    def encode_text(self, pipe, placement: Placement, unit: UnitInput) -> dict[str, torch.Tensor]:
        guided = self.uses_guidance(unit.params)
        positive, negative = pipe.encode_prompt(
            list(unit.prompts), list(unit.negative_prompts), guided, max_sequence_length=MAX_SEQUENCE,
            device=placement.device,
        )
        out = {"prompt_embeds": positive}
        if guided:
            out["negative_prompt_embeds"] = negative
        return out

    @no_grad
    def encode(self, pipe, placement: Placement, unit: UnitInput) -> dict[str, torch.Tensor]:
        return self.encode_text(pipe, placement, unit)

    @no_grad
    def denoise(self, pipe, placement: Placement, unit: UnitInput,
                inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        latents = self.latents_of(pipe, placement, unit, inputs, num_frames=unit.params.frames,
                                  max_sequence_length=MAX_SEQUENCE)
        return {"latents": latents.to(placement.dtype)}  # decode casts to the VAE's dtype first: the same bits

    def conditioning(self, shape: tuple[int, ...], inputs: dict[str, torch.Tensor],
                     device: torch.device) -> Conditioning:
        """What the denoiser sees beside the latents and the text (text to video: nothing)."""
        return Conditioning()

    @no_grad
    def denoise_high(self, pipe, placement: Placement, unit: UnitInput,
                     inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Wan2.2's high-noise expert: the steps at or above the boundary."""
        import torch

        shape = self.latent_spec(unit.params, len(unit.items), torch.float32).shape
        return high_expert(pipe, unit, inputs, placement.device, shape, self.begin_at_zero,
                           self.conditioning(shape, inputs, placement.device))

    @no_grad
    def denoise_low(self, pipe, placement: Placement, unit: UnitInput,
                    inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Wan2.2's low-noise expert: the steps below the boundary, from where the high one stopped."""
        shape = tuple(inputs[LATENTS].shape)
        latents = low_expert(pipe, unit, inputs, placement.device, self.conditioning(shape, inputs, placement.device))
        return {LATENTS: latents.to(placement.dtype)}

    @no_grad
    def decode(self, pipe, unit: UnitInput, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        vae = pipe.vae
        latents = inputs["latents"].to(vae.device, vae.dtype)
        mean, inverse_std = latent_statistics(vae.config, latents.device, latents.dtype)
        video = vae.decode(latents / inverse_std + mean, return_dict=False)[0]
        return {"videos": pixels_to_uint8(video)}  # (N, C, T, H, W) -> (N, T, H, W, 3)


class WanImageToVideoAdapter(WanAdapter):
    """WanImageToVideoPipeline: a prompt and a first frame to video. Wan2.1 I2V attends to the
    frame's CLIP image tokens and its VAE latent; Wan2.2 I2V A14B (no image encoder) to the latent alone."""

    pipeline_classes = ("WanImageToVideoPipeline",)
    pipeline_class_name = "WanImageToVideoPipeline"
    needs_image = True
    begin_at_zero = False
    encode_components = ("text_encoder", "tokenizer", "image_encoder", "image_processor", "vae")
    #: the encode stage's input that, when an upstream stage sends it, holds one condition image an
    #: item (N x H x W x 3 uint8: a workflow's earlier step's outputs) in place of params.image
    condition_images_input = "condition_images"

    def image_tokens(self) -> bool:
        """Whether the denoiser attends to CLIP image tokens, decided as the pipeline decides it: by
        whether its transformer takes image embeddings."""
        return read_config(self.folder, "transformer").get("image_dim") is not None

    def components(self, stage: str) -> tuple[str, ...]:
        if stage != ENCODE:
            return super().components(stage)
        if self.image_tokens():
            return self.encode_components
        return tuple(name for name in self.encode_components if name not in ("image_encoder", "image_processor"))

    def load(self, stage: str, placement: Placement) -> StageRunner:
        if stage != ENCODE:
            return super().load(stage, placement)
        pipe = self.load_pipeline(stage, placement)
        return LoadedStage(pipe, lambda unit, inputs: self.encode(pipe, placement, unit,
                                                                  inputs.get(self.condition_images_input)),
                           placement.device)

    def plain_arguments(self, unit: UnitInput) -> dict:
        return super().plain_arguments(unit) | {"image": open_condition_image(unit.params.image)}

    def encode_specs(self, params: GenParams, batch: int, dtype: torch.dtype) -> tuple[TensorSpec, ...]:
        condition = self.latent_spec(params, batch, dtype)
        specs = [*super().encode_specs(params, batch, dtype)]
        if self.image_tokens():
            vision = read_config(self.folder, "image_encoder")
            tokens = (int(vision["image_size"]) // int(vision["patch_size"])) ** 2 + 1  # patches and the class token
            specs.append(TensorSpec("image_embeds", (batch, tokens, int(vision["hidden_size"])), dtype_name(dtype)))
        return (*specs, TensorSpec("image_latents", condition.shape, condition.dtype))

    @no_grad
    def encode(self, pipe, placement: Placement, unit: UnitInput,
               images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The unit's text, and its condition image (params.image), or each item's own (`images`)
        encoded one at a time, as one pipeline call an item would."""
        import torch

        params, batch = unit.params, len(unit.items)
        pictures = ([open_condition_image(params.image)] if images is None
                    else [Image.fromarray(row.cpu().numpy()) for row in images])
        out = self.encode_text(pipe, placement, unit)
        embeds, latents = [], []
        for image in pictures:
            if self.image_tokens():
                embeds.append(pipe.encode_image(image, placement.device))
            pixels = pipe.video_processor.preprocess(image, height=params.height, width=params.width)
            pixels = pixels.to(placement.device, torch.float32).unsqueeze(2)
            empty = pixels.new_zeros(*pixels.shape[:2], params.frames - 1, *pixels.shape[3:])
            video = torch.cat([pixels, empty], dim=2).to(pipe.vae.device, pipe.vae.dtype)
            latents.append(pipe.vae.encode(video).latent_dist.mode())
        repeat = batch // len(pictures)  # one image for the whole unit, or one an item
        if embeds:
            out["image_embeds"] = torch.cat(embeds).repeat(repeat, 1, 1)
        out["image_latents"] = torch.cat(latents).repeat(repeat, 1, 1, 1, 1)
        return out

    def condition(self, latents_shape: tuple[int, ...], image_latents: torch.Tensor,
                  device: torch.device) -> torch.Tensor:
        """The mask and the normalised image latent, as the pipeline concatenates them. The mask tells the
        denoiser which latent frames the image fixes: one channel per frame the VAE packs together,
        ones over the first latent frame, zeros after."""
        import torch

        batch, _, frames, height, width = latents_shape
        mask = torch.zeros(batch, self.frame_step(), frames, height, width, device=device)
        mask[:, :, 0] = 1
        mean, inverse_std = latent_statistics(self._vae_config(), device, torch.float32)
        normalised = (image_latents.to(device, torch.float32) - mean) * inverse_std
        return torch.cat([mask, normalised], dim=1)

    def conditioning(self, shape: tuple[int, ...], inputs: dict[str, torch.Tensor],
                     device: torch.device) -> Conditioning:
        return Conditioning(self.condition(shape, inputs["image_latents"], device), inputs.get("image_embeds"))

    @no_grad
    def denoise(self, pipe, placement: Placement, unit: UnitInput,
                inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """WanImageToVideoPipeline's denoising loop (its __call__ insists on re-encoding the raw image)."""
        import torch

        from diffusers.utils.torch_utils import randn_tensor

        params, device = unit.params, placement.device
        shape = self.latent_spec(params, len(unit.items), torch.float32).shape
        latents = randn_tensor(shape, generator=unit.generators(), device=device, dtype=torch.float32)
        pipe.scheduler.set_timesteps(params.steps, device=device)
        latents = denoise_span(pipe.transformer, pipe.scheduler, latents, pipe.scheduler.timesteps, inputs,
                               params.guidance, self.uses_guidance(params), self.conditioning(shape, inputs, device))
        return {LATENTS: latents.to(placement.dtype)}
