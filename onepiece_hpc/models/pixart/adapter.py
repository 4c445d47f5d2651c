"""PixArt-alpha and PixArt-sigma: T5 encode -> DiT denoise -> VAE decode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onepiece_hpc.models.base import Placement, TensorSpec, UnitInput, dtype_name, no_grad, read_config
from onepiece_hpc.models.pipeline_adapter import DiffusersPipelineAdapter
from onepiece_hpc.jobfile.job import GenParams

if TYPE_CHECKING:
    import torch

#: PixArt-alpha's default; PixArt-sigma uses 300 (set per folder below)
ALPHA_MAX_SEQUENCE = 120
SIGMA_MAX_SEQUENCE = 300


class PixArtAdapter(DiffusersPipelineAdapter):
    pipeline_classes = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
    pipeline_class_name = "PixArtAlphaPipeline"
    denoiser = "transformer"

    def __init__(self, folder, index) -> None:
        super().__init__(folder, index)
        if index.get("_class_name") == "PixArtSigmaPipeline":
            self.pipeline_class_name = "PixArtSigmaPipeline"
            self.max_sequence = SIGMA_MAX_SEQUENCE
        else:
            self.max_sequence = ALPHA_MAX_SEQUENCE

    def uses_guidance(self, params: GenParams) -> bool:
        return params.guidance > 1

    def plain_arguments(self, unit: UnitInput) -> dict:
        return super().plain_arguments(unit) | {"negative_prompt": list(unit.negative_prompts), "clean_caption": False,
                                                "use_resolution_binning": False,
                                                "max_sequence_length": self.max_sequence}

    def encode_specs(self, params: GenParams, batch: int, dtype: torch.dtype) -> tuple[TensorSpec, ...]:
        width = int(read_config(self.folder, "text_encoder").get("d_model", 4096))
        name = dtype_name(dtype)
        specs = [TensorSpec("prompt_embeds", (batch, self.max_sequence, width), name),
                 TensorSpec("prompt_attention_mask", (batch, self.max_sequence), "int64")]
        if self.uses_guidance(params):
            specs += [TensorSpec("negative_prompt_embeds", (batch, self.max_sequence, width), name),
                      TensorSpec("negative_prompt_attention_mask", (batch, self.max_sequence), "int64")]
        return tuple(specs)

    @no_grad
    def encode(self, pipe, placement: Placement, unit: UnitInput) -> dict[str, torch.Tensor]:
        guided = self.uses_guidance(unit.params)
        embeds, mask, negative, negative_mask = pipe.encode_prompt(
            list(unit.prompts), guided, negative_prompt=list(unit.negative_prompts),
            device=placement.device, clean_caption=False, max_sequence_length=self.max_sequence,
        )
        out = {"prompt_embeds": embeds, "prompt_attention_mask": mask}
        if guided:
            out |= {"negative_prompt_embeds": negative, "negative_prompt_attention_mask": negative_mask}
        return out

    @no_grad
    def denoise(self, pipe, placement: Placement, unit: UnitInput,
                inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        latents = self.latents_of(pipe, placement, unit, inputs, negative_prompt=None, use_resolution_binning=False,
                                  clean_caption=False, max_sequence_length=self.max_sequence)
        return {"latents": latents}
