"""Each step's seed of a workflow item, from the item's seed alone (so a user can redo any item by
hand with the plain pipelines, one after the other):

- step 0 (the first) uses the item's seed itself: its outputs are those of a job of that model;
- step k >= 1 uses the first 8 bytes, read little-endian, of the sha256 of the ASCII text
  "SEED:k" (e.g. "1234:1"), with the top bit cleared (seeds are 0 .. 2**63 - 1).

    int.from_bytes(hashlib.sha256(f"{seed}:{k}".encode()).digest()[:8], "little") & (2**63 - 1)

A hash, not seed + k: item seeds are consecutive (seed + i), so seed + k would give step 1 of
item i the noise of step 0 of item i + 1.
"""

from __future__ import annotations

import hashlib

from onepiece_hpc.jobfile.job import SEED_MAX


def step_seed(item_seed: int, step: int) -> int:
    """The seed of step `step` (0-based) of the item whose seed is `item_seed`."""
    if step == 0:
        return item_seed
    return int.from_bytes(hashlib.sha256(f"{item_seed}:{step}".encode("ascii")).digest()[:8], "little") & SEED_MAX
