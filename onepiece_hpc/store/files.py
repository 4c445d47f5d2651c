"""File-system primitives the store's rules rest on: safe temporary files, publishing without
ever replacing a path, syncing to stable storage, and free space.

- Temporary files come from mkstemp (O_EXCL, unguessable names, never a symlink followed).
- A finished file is published with link(2): it fails if anything is at the target, so a
  file that exists is never replaced (rename(2) would silently replace it).
- A full disk or a quota is a UserError naming the folder and the space asked for.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from onepiece_hpc.errors import UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class AlreadyThere(Exception):
    """Publishing found something at the target path: the file there was left as it was."""


def no_space_error(folder: Path, needed: int | None, err: OSError | None = None) -> UserError:
    """The error a full disk or quota gives: the folder, what was asked for, what is free, the fix."""
    free = free_bytes(folder)
    asked = f"; it needs {format_bytes(needed)} more" if needed else ""
    cause = f" ({err.strerror})" if err else ""
    return UserError(f"{folder}: not enough space{cause}{asked}, {format_bytes(free)} free there; everything "
                     "committed so far is kept; fix: free space there (or raise the quota), then run the same "
                     "command again to resume")


def format_bytes(count: int | None) -> str:
    if count is None:
        return "an unknown amount"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def free_bytes(folder: Path) -> int | None:
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def sync_folder(folder: Path) -> None:
    """Make the folder's entries (a new link, an unlink) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def temporary_path(folder: Path, prefix: str, suffix: str = ".partial") -> Iterator[Path]:
    """A new empty file with an unguessable name in `folder`, removed on the way out."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def publish(source: Path, target: Path) -> None:
    """Give the complete, synced file `source` the name `target` only if nothing is there.

    Raises AlreadyThere if something is (the existing file is untouched); a file system without
    hard links is named as such.
    """
    try:
        os.link(source, target)
    except FileExistsError:
        raise AlreadyThere(target) from None
    except OSError as err:
        if err.errno in NO_SPACE:
            raise no_space_error(target.parent, None, err) from None
        if err.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
            raise UserError(f"{target.parent}: the file system does not support hard links ({err.strerror}), "
                            "which onepiece needs to publish a file without replacing one; fix: write the "
                            "output to a POSIX file system (a local disk, NFS, Lustre, GPFS)") from None
        raise
    sync_folder(target.parent)


def write_new(target: Path, fill: Callable[[Path], None], prefix: str | None = None) -> None:
    """Write a file through `fill(temporary path)`, sync it, and publish it at `target`."""
    with temporary_path(target.parent, prefix or f".{target.name}.") as tmp:
        fill(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        sync_file(tmp)
        publish(tmp, target)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def reserve(fd: int, size: int, folder: Path) -> None:
    """Allocate `size` bytes of the open file now, so that writes into it can't find the disk full."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno in NO_SPACE:
            raise no_space_error(folder, size, err) from None
        if err.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            raise
