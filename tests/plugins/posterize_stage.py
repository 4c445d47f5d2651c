"""A stage added by a plugin, in this one file: tiny Stable Diffusion with a post-processing stage
after the VAE decode that posterizes the images (each channel keeps its top three bits).

A package registers it as an entry point of `onepiece_hpc.adapters` (tests/test_stage_plugin.py
writes the metadata an install would); a model folder whose model_index.json names the pipeline
class PosterizedStableDiffusionPipeline then runs with four stages."""

from __future__ import annotations

import torch

from onepiece_hpc.models.stable_diffusion.adapter import StableDiffusionAdapter
from onepiece_hpc.topology import CLASSIC, DECODE, StageDef, Topology, Work

POSTERIZE = "posterize"
KEEP_BITS = 0xE0


class Posterize:
    """The stage's runner: no weights, so nothing to offload or restore."""

    def __call__(self, unit, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"images": inputs["images"] & KEEP_BITS}

    def offload(self) -> None:
        return None

    def restore(self) -> None:
        return None


class PosterizedAdapter(StableDiffusionAdapter):
    pipeline_classes = ("PosterizedStableDiffusionPipeline",)
    topology = Topology((*CLASSIC.stages, StageDef(POSTERIZE, Work.ITEMS, default_share=1 / 8)))

    def components(self, stage: str) -> tuple[str, ...]:
        return () if stage == POSTERIZE else super().components(stage)

    def output_specs(self, stage: str, params, batch: int, dtype: torch.dtype):
        return super().output_specs(DECODE if stage == POSTERIZE else stage, params, batch, dtype)

    def load(self, stage: str, placement):
        return Posterize() if stage == POSTERIZE else super().load(stage, placement)
