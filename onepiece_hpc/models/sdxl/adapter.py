"""Stable Diffusion XL: two-CLIP encode -> UNet denoise (with size conditioning) -> VAE decode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onepiece_hpc.models.base import Placement, TensorSpec, UnitInput, dtype_name, no_grad, read_config
from onepiece_hpc.models.pipeline_adapter import DiffusersPipelineAdapter, pixels_to_uint8
from onepiece_hpc.jobfile.job import GenParams

if TYPE_CHECKING:
    import torch


class StableDiffusionXLAdapter(DiffusersPipelineAdapter):
    pipeline_classes = ("StableDiffusionXLPipeline",)
    pipeline_class_name = "StableDiffusionXLPipeline"
    denoiser = "unet"
    text_components = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")

    def uses_guidance(self, params: GenParams) -> bool:
        """Classifier-free guidance, decided as the pipeline decides it."""
        return params.guidance > 1 and read_config(self.folder, "unet").get("time_cond_proj_dim") is None

    def zeroes_empty_negatives(self) -> bool:
        """The pipeline's force_zeros_for_empty_prompt: no negative prompt means zero embeddings."""
        return bool(self.index.get("force_zeros_for_empty_prompt", True))

    def encode_specs(self, params: GenParams, batch: int, dtype: torch.dtype) -> tuple[TensorSpec, ...]:
        length = int(read_config(self.folder, "tokenizer").get("model_max_length", 77))
        first, second = read_config(self.folder, "text_encoder"), read_config(self.folder, "text_encoder_2")
        width = int(first.get("hidden_size", 768)) + int(second.get("hidden_size", 1280))
        pooled = int(second.get("projection_dim", 1280))
        name = dtype_name(dtype)
        specs = [TensorSpec("prompt_embeds", (batch, length, width), name),
                 TensorSpec("pooled_prompt_embeds", (batch, pooled), name)]
        if self.uses_guidance(params):
            specs += [TensorSpec("negative_prompt_embeds", (batch, length, width), name),
                      TensorSpec("negative_pooled_prompt_embeds", (batch, pooled), name)]
        return tuple(specs)

    @no_grad
    def encode(self, pipe, placement: Placement, unit: UnitInput) -> dict[str, torch.Tensor]:
        """Each item's own negative prompt; with force_zeros_for_empty_prompt an item without one
        gets zeros, as a pipeline call without negative_prompt gives, whatever its unit-mates have."""
        import torch

        guided = self.uses_guidance(unit.params)
        empty = [row for row, text in enumerate(unit.negative_prompts) if not text]
        zeros = self.zeroes_empty_negatives()
        # no negative prompt at all: the pipeline makes the zeros itself, and encodes nothing more
        negatives = None if zeros and len(empty) == len(unit.items) else list(unit.negative_prompts)
        positive, negative, pooled, negative_pooled = pipe.encode_prompt(
            list(unit.prompts), device=placement.device, num_images_per_prompt=1,
            do_classifier_free_guidance=guided, negative_prompt=negatives,
        )
        out = {"prompt_embeds": positive, "pooled_prompt_embeds": pooled}
        if not guided:
            return out
        if empty and zeros and negatives is not None:
            rows = torch.tensor(empty, device=placement.device)
            negative, negative_pooled = negative.index_fill(0, rows, 0.0), negative_pooled.index_fill(0, rows, 0.0)
        out |= {"negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled}
        return out

    @no_grad
    def denoise(self, pipe, placement: Placement, unit: UnitInput,
                inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"latents": self.latents_of(pipe, placement, unit, inputs)}

    @no_grad
    def decode(self, pipe, unit: UnitInput, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The pipeline's own decode: a force_upcast VAE runs in float32 when loaded in float16 (it
        overflows there), latents are denormalised by latents_mean/std when the VAE declares them."""
        import torch

        vae = pipe.vae
        if vae.dtype == torch.float16 and vae.config.force_upcast:
            vae.to(torch.float32)  # the pipeline upcasts per call; this stage holds only the VAE, so once
        latents = inputs["latents"].to(vae.device, vae.dtype)
        config = vae.config
        if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
            mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        if pipe.watermark is not None:  # present when the invisible-watermark package is installed
            image = pipe.watermark.apply_watermark(image)
        return {"images": pixels_to_uint8(image)}
