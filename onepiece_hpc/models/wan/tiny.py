"""builtin:tiny-wan-t2v and builtin:tiny-wan-i2v (Wan2.1), builtin:tiny-wan22-t2v and
builtin:tiny-wan22-i2v (Wan2.2 A14B: two experts): pipelines of the real architecture, tiny and random.

All share the latent layout of the real models (16 latent channels, 8x spatial and 4x temporal
compression, 2x2 patches), so every shape rule a job meets here is the one it meets on Wan. The
Wan2.2 ones switch experts at the A14B releases' boundaries, on the same schedule.
"""

from __future__ import annotations

from diffusers import (
    AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from onepiece_hpc.models.tokenizers import tiny_t5_tokenizer
from onepiece_hpc.models.wan.experts import FLOW_SHIFT, I2V_BOUNDARY, T2V_BOUNDARY

LATENT_CHANNELS = 16
TEXT_WIDTH = 32
HEADS, HEAD_DIM = 2, 12  # the rotary embedding splits a head over (frame, row, column): 4 + 4 + 4
IMAGE_SIZE, IMAGE_PATCH, IMAGE_WIDTH = 32, 8, 16
MASK_CHANNELS = 4  # one a frame of the VAE's temporal group: I2V input = noise + mask + condition


def _text_encoder(tokenizer) -> UMT5EncoderModel:
    return UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer),
        d_model=TEXT_WIDTH,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    ))


def _transformer(in_channels: int, image_dim: int | None) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM,
        in_channels=in_channels,
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_WIDTH,
        freq_dim=16,
        ffn_dim=48,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        image_dim=image_dim,
        added_kv_proj_dim=HEADS * HEAD_DIM if image_dim else None,
        rope_max_seq_len=32,
    )


def _vae() -> AutoencoderKLWan:
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )


def _scheduler() -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=FLOW_SHIFT)


def build_t2v() -> WanPipeline:
    """Build the text-to-video pipeline from configs; the caller seeds torch's RNG first."""
    tokenizer = tiny_t5_tokenizer()
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=_text_encoder(tokenizer), vae=_vae(), scheduler=_scheduler(),
        transformer=_transformer(LATENT_CHANNELS, image_dim=None),
    )


def build_i2v() -> WanImageToVideoPipeline:
    """Build the image-to-video pipeline from configs; the caller seeds torch's RNG first."""
    tokenizer = tiny_t5_tokenizer()
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=IMAGE_WIDTH,
        intermediate_size=32,
        projection_dim=IMAGE_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=IMAGE_PATCH,
        hidden_act="gelu",
    ))
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=_text_encoder(tokenizer), vae=_vae(), scheduler=_scheduler(),
        image_processor=image_processor, image_encoder=image_encoder,
        transformer=_transformer(2 * LATENT_CHANNELS + MASK_CHANNELS, image_dim=IMAGE_WIDTH),
    )


def build_wan22_t2v() -> WanPipeline:
    """Wan2.2 T2V A14B in small: a high-noise and a low-noise expert of the same shape; the caller
    seeds torch's RNG first."""
    tokenizer = tiny_t5_tokenizer()
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=_text_encoder(tokenizer), vae=_vae(), scheduler=_scheduler(),
        transformer=_transformer(LATENT_CHANNELS, image_dim=None),
        transformer_2=_transformer(LATENT_CHANNELS, image_dim=None), boundary_ratio=T2V_BOUNDARY,
    )


def build_wan22_i2v() -> WanImageToVideoPipeline:
    """Wan2.2 I2V A14B in small: no image encoder, the experts see noise + mask + image latent; the
    caller seeds torch's RNG first."""
    tokenizer = tiny_t5_tokenizer()
    channels = 2 * LATENT_CHANNELS + MASK_CHANNELS
    return WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=_text_encoder(tokenizer), vae=_vae(), scheduler=_scheduler(),
        transformer=_transformer(channels, image_dim=None), transformer_2=_transformer(channels, image_dim=None),
        boundary_ratio=I2V_BOUNDARY,
    )
