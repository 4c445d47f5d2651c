"""The published Wan2.1 and Wan2.2 A14B architectures with random weights: for sizing, placement
and speed work where only shapes matter. Build them under `with torch.device("meta"):` to
materialise no weights.

Numbers are those of the Wan-AI/Wan2.1-*-Diffusers configs (checked against diffusers' defaults,
which follow the same release). Wan2.2 A14B pairs two DiTs of the Wan2.1-14B shape (a high-noise
and a low-noise expert) with the Wan2.1 VAE and UMT5-XXL; its I2V model has no image encoder.
The tokenizer is the local tiny one: its ids are valid UMT5 ids, and the encoder keeps UMT5-XXL's
full vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import (
    AutoencoderKLWan, DiffusionPipeline, UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline,
    WanTransformer3DModel,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from onepiece_hpc.models.tokenizers import tiny_t5_tokenizer
from onepiece_hpc.models.wan.experts import FLOW_SHIFT, I2V_BOUNDARY, T2V_BOUNDARY

UMT5_VOCAB = 256384
TEXT_WIDTH = 4096
CLIP_WIDTH = 1280
LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
               3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # OpenAI CLIP's pixel statistics
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def umt5_xxl_encoder() -> UMT5EncoderModel:
    """google/umt5-xxl's encoder (5.7 B parameters)."""
    return UMT5EncoderModel(UMT5Config(
        vocab_size=UMT5_VOCAB,
        d_model=TEXT_WIDTH,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    ))


def wan_transformer(layers: int, heads: int, ffn: int, in_channels: int = 16,
                    image_dim: int | None = None, added_kv_proj_dim: int | None = None) -> WanTransformer3DModel:
    """The Wan2.1 DiT; heads of 128 channels."""
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=128,
        in_channels=in_channels,
        out_channels=16,
        text_dim=TEXT_WIDTH,
        freq_dim=256,
        ffn_dim=ffn,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=image_dim,
        added_kv_proj_dim=added_kv_proj_dim,
        rope_max_seq_len=1024,
    )


def wan_vae() -> AutoencoderKLWan:
    """The Wan2.1 causal 3-D VAE: 8x spatial, 4x temporal compression to 16 channels."""
    return AutoencoderKLWan(
        base_dim=96,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=2,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        dropout=0.0,
        latents_mean=LATENTS_MEAN,
        latents_std=LATENTS_STD,
    )


def wan_scheduler() -> UniPCMultistepScheduler:
    """UniPC on flow-matching sigmas, shifted by 3.0 as the Wan diffusers folders ship it."""
    with torch.device("cpu"):  # a scheduler's tables are data, never meta tensors
        return UniPCMultistepScheduler(
            num_train_timesteps=1000,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=FLOW_SHIFT,
            solver_order=2,
            solver_type="bh2",
            predict_x0=True,
            lower_order_final=True,
        )


def clip_vit_h14() -> tuple[CLIPVisionModel, CLIPImageProcessor]:
    """The I2V image encoder, open CLIP ViT-H/14 (its vision tower), and its image processor."""
    encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=CLIP_WIDTH,
        intermediate_size=5120,
        projection_dim=1024,
        num_hidden_layers=32,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    ))
    processor = CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3,
        image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )
    return encoder, processor


def t2v(layers: int, heads: int, ffn: int) -> WanPipeline:
    return WanPipeline(
        tokenizer=tiny_t5_tokenizer(), text_encoder=umt5_xxl_encoder(), vae=wan_vae(), scheduler=wan_scheduler(),
        transformer=wan_transformer(layers, heads, ffn),
    )


def i2v_14b_480p() -> WanImageToVideoPipeline:
    """Wan2.1-I2V-14B-480P: the 14B DiT over noise + mask + image latent (36 channels), with CLIP image tokens."""
    image_encoder, image_processor = clip_vit_h14()
    transformer = wan_transformer(40, 40, 13824, in_channels=36, image_dim=CLIP_WIDTH, added_kv_proj_dim=5120)
    return WanImageToVideoPipeline(
        tokenizer=tiny_t5_tokenizer(), text_encoder=umt5_xxl_encoder(), vae=wan_vae(), scheduler=wan_scheduler(),
        image_processor=image_processor, image_encoder=image_encoder, transformer=transformer,
    )


def _expert_14b(in_channels: int = 16) -> WanTransformer3DModel:
    """One Wan2.2 A14B expert: the Wan2.1-14B DiT, without image tokens."""
    return wan_transformer(40, 40, 13824, in_channels=in_channels)


def t2v_a14b() -> WanPipeline:
    """Wan2.2-T2V-A14B: the high-noise expert above timestep 875 of 1000, the low-noise one below."""
    return WanPipeline(
        tokenizer=tiny_t5_tokenizer(), text_encoder=umt5_xxl_encoder(), vae=wan_vae(), scheduler=wan_scheduler(),
        transformer=_expert_14b(), transformer_2=_expert_14b(), boundary_ratio=T2V_BOUNDARY,
    )


def i2v_a14b() -> WanImageToVideoPipeline:
    """Wan2.2-I2V-A14B: experts over noise + mask + image latent (36 channels), switching at timestep 900."""
    return WanImageToVideoPipeline(
        tokenizer=tiny_t5_tokenizer(), text_encoder=umt5_xxl_encoder(), vae=wan_vae(), scheduler=wan_scheduler(),
        transformer=_expert_14b(in_channels=36), transformer_2=_expert_14b(in_channels=36),
        boundary_ratio=I2V_BOUNDARY,
    )


BUILDERS: dict[str, Callable[[], DiffusionPipeline]] = {
    "wan2.1-t2v-1.3b": lambda: t2v(layers=30, heads=12, ffn=8960),
    "wan2.1-t2v-14b": lambda: t2v(layers=40, heads=40, ffn=13824),
    "wan2.1-i2v-14b-480p": i2v_14b_480p,
    "wan2.2-t2v-a14b": t2v_a14b,
    "wan2.2-i2v-a14b": i2v_a14b,
}
