"""The Stable Diffusion XL family (UNet with added time conditioning, two CLIP text encoders, AutoencoderKL)."""
