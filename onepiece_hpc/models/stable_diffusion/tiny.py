"""builtin:tiny-sd: a Stable Diffusion pipeline of the real architecture, tiny and random."""

from __future__ import annotations

from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from onepiece_hpc.models.tiny_clip import tiny_clip_text_config
from onepiece_hpc.models.tiny_vae import tiny_vae
from onepiece_hpc.models.tokenizers import tiny_clip_tokenizer


def build() -> StableDiffusionPipeline:
    """Build the pipeline from configs; the caller seeds torch's RNG first."""
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(tiny_clip_text_config(tokenizer))
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
