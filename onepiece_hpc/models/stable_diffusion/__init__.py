"""The Stable Diffusion family (UNet denoiser, CLIP text encoder, AutoencoderKL)."""
