"""The PixArt family (DiT denoiser, T5 text encoder, AutoencoderKL)."""
