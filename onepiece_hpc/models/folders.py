"""Model folders written once, atomically, by whichever process gets there first."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def publish_folder(folder: Path, fill: Callable[[Path], None]) -> Path:
    """`folder`, filled by `fill(staging)` on first use. Concurrent first uses (several ranks)
    are safe: each fills a private temporary folder and the first rename wins; the others
    discard theirs. A folder with a model_index.json is complete."""
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        fill(staging)
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / "model_index.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder
