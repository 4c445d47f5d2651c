"""The published SDXL base 1.0 architecture with random weights: for sizing, placement and speed work
where only shapes matter. Build it under `with torch.device("meta"):` to materialise no weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from onepiece_hpc.models.tokenizers import tiny_clip_tokenizer

CLIP_VOCAB = 49408  # the real encoders' vocabulary; the local tokenizer's ids are a subset of it


def _clip_text_config(tokenizer: CLIPTokenizer, hidden: int, intermediate: int, layers: int, heads: int,
                      act: str) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=hidden,
        hidden_act=act,
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def sdxl_unet() -> UNet2DConditionModel:
    """stabilityai/stable-diffusion-xl-base-1.0's unet/config.json."""
    return UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,  # 6 size/crop numbers x 256 + the 1280 pooled text
        norm_num_groups=32,
        norm_eps=1e-5,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
        upcast_attention=False,
    )


def sdxl_vae() -> AutoencoderKL:
    """The SDXL VAE: SD's AutoencoderKL layout with SDXL's scaling factor; overflows in float16."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=1024,
        scaling_factor=0.13025,
        force_upcast=True,
    )


def sdxl_scheduler() -> EulerDiscreteScheduler:
    """SDXL base's scheduler_config.json."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        interpolation_type="linear",
        use_karras_sigmas=False,
        timestep_spacing="leading",
        steps_offset=1,
    )


def sdxl_base() -> StableDiffusionXLPipeline:
    """SDXL base 1.0: CLIP ViT-L and OpenCLIP bigG text encoders, the 2.6e9-parameter UNet, the VAE."""
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(_clip_text_config(
        tokenizer, hidden=768, intermediate=3072, layers=12, heads=12, act="quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(
        tokenizer_2, hidden=1280, intermediate=5120, layers=32, heads=20, act="gelu"))
    with torch.device("cpu"):  # the noise schedule is numbers, not weights: real even under a meta device
        scheduler = sdxl_scheduler()
    return StableDiffusionXLPipeline(
        vae=sdxl_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=sdxl_unet(), scheduler=scheduler,
    )


BUILDERS: dict[str, Callable[[], StableDiffusionXLPipeline]] = {"sdxl": sdxl_base}
