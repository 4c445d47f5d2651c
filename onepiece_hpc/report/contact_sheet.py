"""Thumbnails of a sample of the outputs, small enough to inline: done items picked evenly over the
output, images as PNG, videos as a short looping GIF, each at most THUMB_PX on its longer side."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

from onepiece_hpc.store import schema as s
from onepiece_hpc.store.reader import OutputView
from onepiece_hpc.store.safe_read import read_dataset, text

MAX_THUMBS = 24
THUMB_PX = 160
GIF_FRAMES = 12      # frames a video preview keeps, spread over the video
GIF_FRAME_MS = 120


@dataclass(frozen=True)
class Thumbnail:
    index: int
    prompt: str
    seed: int
    mime: str    # image/png or image/gif
    data: str    # base64
    width: int
    height: int

    @property
    def shown(self) -> tuple[int, int]:
        """The size it is shown at: THUMB_PX on its longer side (a small output scaled up)."""
        scale = THUMB_PX / max(self.width, self.height, 1)
        return max(1, round(self.width * scale)), max(1, round(self.height * scale))

    @property
    def uri(self) -> str:
        return f"data:{self.mime};base64,{self.data}"


def pick_evenly(done: np.ndarray, count: int = MAX_THUMBS) -> np.ndarray:
    """At most `count` of the sorted indices `done`, spread evenly from the first to the last."""
    if len(done) <= count:
        return np.asarray(done)
    return np.asarray(done)[np.unique(np.linspace(0, len(done) - 1, count).round().astype(int))]


def _small(frame: np.ndarray):
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame[..., :3]).astype(np.uint8))
    image.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    return image


def encode_image(pixels: np.ndarray) -> tuple[str, str, int, int]:
    image = _small(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "image/png", base64.b64encode(buffer.getvalue()).decode("ascii"), image.width, image.height


def encode_video(frames: np.ndarray) -> tuple[str, str, int, int]:
    picked = frames[np.unique(np.linspace(0, len(frames) - 1, min(GIF_FRAMES, len(frames))).round().astype(int))]
    images = [_small(frame) for frame in picked]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=GIF_FRAME_MS, loop=0)
    return "image/gif", base64.b64encode(buffer.getvalue()).decode("ascii"), images[0].width, images[0].height


def contact_sheet(view: OutputView, indices: np.ndarray) -> list[Thumbnail]:
    """Thumbnails of the items `indices` (done, sorted), reading each data file once."""
    thumbs = []
    wanted = np.asarray(indices, dtype=np.int64)
    for seg in view.segments:
        mine = wanted[(wanted >= seg.start) & (wanted < seg.start + seg.count)]
        file = seg.open() if len(mine) else None  # only the files that hold a picked item
        if file is None:
            continue
        with file:
            for index in mine:
                local = int(index - seg.start)
                pixels = np.asarray(read_dataset(file, seg.dataset, seg.path, np.s_[local]))
                row = read_dataset(file, s.ITEMS, seg.path, np.s_[local])
                encoded = encode_video(pixels) if view.output_kind == "video" else encode_image(pixels)
                thumbs.append(Thumbnail(int(index), text(row["prompt"]), int(row["seed"]), *encoded))
    return thumbs
