"""The Stable Diffusion family (UNet denoiser, CLIP text encoder, AutoencoderKL).

`adapter` splits its pipeline into stages; `tiny` builds the built-in random-weight model."""

from onepiece_hpc._exports import lazy_exports

__all__ = ["StableDiffusionAdapter"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {"adapter": __all__})
