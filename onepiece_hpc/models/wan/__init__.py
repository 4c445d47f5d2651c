"""The Wan2.1 family (Wan DiT denoiser, UMT5 text encoder, causal 3-D VAE): text- and image-to-video."""
