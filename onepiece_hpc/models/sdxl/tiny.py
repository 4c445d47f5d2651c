"""builtin:tiny-sdxl: a Stable Diffusion XL pipeline of the real architecture, tiny and random."""

from __future__ import annotations

from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from onepiece_hpc.models.tiny_clip import tiny_clip_text_config
from onepiece_hpc.models.tiny_vae import tiny_vae
from onepiece_hpc.models.tokenizers import tiny_clip_tokenizer

#: SDXL conditions on six numbers (original size, crop corner, target size), each embedded this wide
TIME_EMBED_DIM = 8


def build() -> StableDiffusionXLPipeline:
    """Build the pipeline from configs; the caller seeds torch's RNG first."""
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(tiny_clip_text_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_text_config(tokenizer_2, "gelu"))
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=(4, 8),
        use_linear_projection=True,
        cross_attention_dim=text_encoder.config.hidden_size + text_encoder_2.config.hidden_size,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + text_encoder_2.config.projection_dim,
        norm_num_groups=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=tiny_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
    )
