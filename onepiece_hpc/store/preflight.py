"""What a writer checks around opening an output: that it can be created, that the remaining
items fit in the free space, which temporary files killed writers left, and whether this run's
software differs from the one that made the items so far."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.store import schema as s
from onepiece_hpc.store.files import format_bytes, free_bytes
from onepiece_hpc.store.index import StoreLayout
from onepiece_hpc.store.provenance import changes_between

log = logging.getLogger(__name__)


def check_writable(path: Path, problems: list[str]) -> None:
    """Fail early (before any model loads) if the output can't be created or updated."""
    folder = Path(s.data_folder(path))
    if path.exists() or path.is_symlink():
        if path.is_dir():
            problems.append(f"output {path} is a folder; fix: give a file path ending in .h5")
        elif not os.access(path, os.R_OK):
            problems.append(f"output {path} exists but is not readable by you; "
                            "fix: change its permissions or choose another output path")
        elif folder.exists() and not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            problems.append(f"output {path}: its folder {folder} is not writable by you; "
                            "fix: change its permissions or choose another output path")
        return
    if folder.is_symlink() or (folder.exists() and (not folder.is_dir() or any(folder.iterdir()))):
        problems.append(f"output {path} does not exist but {folder} does (the data of an output whose index "
                        f"was removed?); nothing was changed; fix: move {folder} away or choose another output path")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    reason = None
    if not parent.is_dir():
        reason = f"{parent} is not a folder"
    elif not os.access(parent, os.W_OK | os.X_OK):
        reason = f"{parent} is not writable"
    if reason:
        problems.append(f"output {path}: cannot create it, {reason}; "
                        "fix: choose an output path in a folder you can write")


ORPHAN_AGE_S = 3600.0  # a temporary file this old was left by a killed process, not one in progress


def remove_orphans(folder: Path) -> None:
    """Sweep temporary files that killed processes left in the data folder (old enough to be sure)."""
    now = time.time()
    for orphan in [*folder.glob(".*.partial"), *folder.glob(".stale-lock.*")]:
        try:
            if now - orphan.lstat().st_mtime > ORPHAN_AGE_S:
                orphan.unlink()
        except FileNotFoundError:
            pass


def check_space(store: StoreLayout, existing: set[int], done: np.ndarray, folder: Path) -> None:
    """Refuse to start if the data files still to create can't fit in the free space."""
    needed = 0
    for index in range(store.files):
        start, stop = store.file_range(index)
        if index not in existing and not done[start:stop].all():
            needed += store.file_bytes(index)
    free = free_bytes(folder)
    if free is not None and needed > free:
        raise UserError(f"{folder}: the items still to generate need {format_bytes(needed)} and "
                        f"{format_bytes(free)} is free there; nothing was started; fix: free space there (or raise "
                        "the quota), or write the output elsewhere")


def warn_changes(path: Path, previous: list[dict], now: dict) -> None:
    """Say so when this run could give other bits than the runs that made the items so far."""
    made = [run for run in previous if int(run.get("items_committed", 0)) > 0 or run.get("status") == "running"]
    if not made:
        return
    changes = changes_between(made[-1], now)
    if changes:
        log.warning("%s: this run differs from the run that made earlier items (%s); items made now may not "
                    "be bit-identical to those made before", path, "; ".join(changes))
