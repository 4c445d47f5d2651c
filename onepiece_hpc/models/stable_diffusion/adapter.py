"""Stable Diffusion 1.x/2.x: CLIP encode -> UNet denoise -> VAE decode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onepiece_hpc.models.base import Placement, TensorSpec, UnitInput, dtype_name, no_grad, read_config
from onepiece_hpc.models.pipeline_adapter import DiffusersPipelineAdapter
from onepiece_hpc.jobfile.job import GenParams

if TYPE_CHECKING:
    import torch


class StableDiffusionAdapter(DiffusersPipelineAdapter):
    pipeline_classes = ("StableDiffusionPipeline",)
    pipeline_class_name = "StableDiffusionPipeline"
    denoiser = "unet"

    def uses_guidance(self, params: GenParams) -> bool:
        """Classifier-free guidance, decided as the pipeline decides it."""
        return params.guidance > 1 and read_config(self.folder, "unet").get("time_cond_proj_dim") is None

    def encode_specs(self, params: GenParams, batch: int, dtype: torch.dtype) -> tuple[TensorSpec, ...]:
        length = int(read_config(self.folder, "tokenizer").get("model_max_length", 77))
        width = int(read_config(self.folder, "text_encoder").get("hidden_size", 768))
        name = dtype_name(dtype)
        specs = [TensorSpec("prompt_embeds", (batch, length, width), name)]
        if self.uses_guidance(params):
            specs.append(TensorSpec("negative_prompt_embeds", (batch, length, width), name))
        return tuple(specs)

    @no_grad
    def encode(self, pipe, placement: Placement, unit: UnitInput) -> dict[str, torch.Tensor]:
        guided = self.uses_guidance(unit.params)
        positive, negative = pipe.encode_prompt(
            list(unit.prompts), placement.device, 1, guided, negative_prompt=list(unit.negative_prompts),
        )
        out = {"prompt_embeds": positive}
        if guided:
            out["negative_prompt_embeds"] = negative
        return out

    @no_grad
    def denoise(self, pipe, placement: Placement, unit: UnitInput,
                inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"latents": self.latents_of(pipe, placement, unit, inputs)}
