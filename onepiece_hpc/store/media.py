"""Files a user views: one writer per format, each creating its file and never replacing one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

MP4_CODEC = "libx264"
MP4_PIXELS = "yuv420p"  # the pixel format every player decodes; it halves colour resolution, so sizes are even
MP4_QUALITY = "18"  # x264's constant rate factor: visually lossless


def write_png(path: Path, image: np.ndarray) -> None:
    """An H x W x 3 uint8 image as PNG (lossless)."""
    with open(path, "xb") as handle:
        Image.fromarray(image).save(handle, format="PNG")


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """T x H x W x 3 uint8 frames as H.264 in MP4 (lossy); H and W must be even."""
    import av  # PyAV: only where videos are exported

    height, width = frames.shape[1:3]
    with open(path, "xb") as handle, av.open(handle, mode="w", format="mp4") as container:
        stream = container.add_stream(MP4_CODEC, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, MP4_PIXELS
        stream.options = {"crf": MP4_QUALITY}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_gif(path: Path, frames: np.ndarray, fps: int) -> None:
    """T x H x W x 3 uint8 frames as a looping GIF: 256 colours a frame, and a frame equal to the one
    before it is merged into that one (the video's duration is kept)."""
    images = [Image.fromarray(frame) for frame in frames]
    with open(path, "xb") as handle:
        images[0].save(handle, format="GIF", save_all=True, append_images=images[1:], duration=1000 / fps, loop=0)
