"""The tiny CLIP text encoder config the built-in Stable Diffusion models share."""

from __future__ import annotations

from transformers import CLIPTextConfig, CLIPTokenizer


def tiny_clip_text_config(tokenizer: CLIPTokenizer, hidden_act: str = "quick_gelu") -> CLIPTextConfig:
    """Two layers of width 32 over `tokenizer`'s vocabulary and length (quick_gelu as CLIP ViT-L,
    gelu as OpenCLIP bigG)."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=32,
        hidden_act=hidden_act,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
