"""The Stable Diffusion XL family (UNet with added time conditioning, two CLIP text encoders, AutoencoderKL).

`adapter` splits its pipeline into stages; `tiny` builds the built-in random-weight model;
`real_size` the random-weight model of the real architecture's size."""

from onepiece_hpc._exports import lazy_exports

__all__ = ["StableDiffusionXLAdapter"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {"adapter": __all__})
