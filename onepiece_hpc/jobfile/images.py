"""Conditioning images (image-to-video): checked and hashed when the job is read, opened when encoded."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from onepiece_hpc.errors import UserError
from onepiece_hpc.jobfile.job import ConditionImage

IMAGE_HINT = "give the path of a PNG or JPEG file"


def _read(path: Path) -> ConditionImage | str:
    """The image at `path` with its hash, or why it can't serve as a conditioning image."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return "not found"
    except IsADirectoryError:
        return "is a folder, not an image"
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.verify()
    except Image.DecompressionBombError as err:
        return f"has too many pixels to read safely ({err})"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"is not an image Pillow can read ({err})"
    return ConditionImage(path, hashlib.sha256(raw).hexdigest())


class ImageReader:
    """Reads each conditioning image once per job (many prompt lines may share one)."""

    def __init__(self) -> None:
        self._seen: dict[Path, ConditionImage | str] = {}

    def read(self, path: Path, where: str, relative_to: str, problems: list[str]) -> ConditionImage | None:
        """The image at `path` with its hash; a problem names `where`, the path and the fix."""
        path = path.resolve()
        if path not in self._seen:
            self._seen[path] = _read(path)
        found = self._seen[path]
        if isinstance(found, str):
            problems.append(f"{where}: conditioning image {path} {found}; fix: {IMAGE_HINT} "
                            f"(a relative path is read from {relative_to})")
            return None
        return found


def open_condition_image(image: ConditionImage) -> Image.Image:
    """The image as RGB, after checking that it still holds the bytes the job was planned with."""
    raw = image.path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != image.sha256:
        raise UserError(f"conditioning image {image.path} changed after the job was planned; its items' keys "
                        "name the old content; fix: restore the file, or give the new one another name "
                        "and run the job into a new output")
    with Image.open(io.BytesIO(raw)) as opened:
        return opened.convert("RGB")
