"""The Wan2.1 family (Wan DiT denoiser, UMT5 text encoder, causal 3-D VAE): text- and image-to-video.

`adapter` splits its pipeline into stages; `tiny` builds the built-in random-weight model;
`real_size` the random-weight model of the real architecture's size. Wan2.2 A14B's two experts
are two stages: `experts` (their split of the steps and topology), `denoise_experts` (each one's
part of the loop) and `scheduler_state` (the scheduler handed from one to the other)."""

from onepiece_hpc._exports import lazy_exports

__all__ = ["WanAdapter", "WanImageToVideoAdapter"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {"adapter": __all__})
