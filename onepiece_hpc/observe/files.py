"""Small files published whole: written under an unguessable temporary name in their own folder,
then given their name with os.replace, so a reader sees the old file or the new one, never half.

The temporary names start with a dot and end in `.partial`: Prometheus' `*.json` pattern never
matches them, and in an output's data folder the store sweeps such orphans after a crash.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

READABLE = 0o644  # a scraper or a colleague's `status --watch` may run as another user


def publish_text(path: Path, text: str, prefix: str) -> None:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(name, READABLE)
        os.replace(name, path)
    except BaseException:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
        raise


def check_writable(folder: Path) -> str | None:
    """Why a file can't be published in `folder` (made if missing), or None when it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".onepiece-check-", suffix=".partial", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        return err.strerror or str(err)
    return None
