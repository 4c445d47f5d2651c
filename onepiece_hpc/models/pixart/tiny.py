"""builtin:tiny-pixart: a PixArt-alpha pipeline (DiT + T5) of the real architecture, tiny and random."""

from __future__ import annotations

from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
from transformers import T5Config, T5EncoderModel

from onepiece_hpc.models.tiny_vae import tiny_vae
from onepiece_hpc.models.tokenizers import tiny_t5_tokenizer


def build() -> PixArtAlphaPipeline:
    """Build the pipeline from configs; the caller seeds torch's RNG first."""
    tokenizer = tiny_t5_tokenizer()
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    ))
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=32,
        sample_size=8,
        patch_size=2,
        caption_channels=32,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    return PixArtAlphaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=tiny_vae(),
        transformer=transformer, scheduler=DPMSolverMultistepScheduler(),
    )
