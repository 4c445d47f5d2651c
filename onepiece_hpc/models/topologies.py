"""Which stages a pipeline splits into, from its model_index.json alone: no torch, no weights, so
that checks before a job is queued (`onepiece submit`) name the stages as the ranks will."""

from __future__ import annotations

import json
from pathlib import Path

from onepiece_hpc.models.plugins import plugin_for
from onepiece_hpc.topology import CLASSIC, Topology


def topology_for(index: dict) -> Topology:
    """The stages of a built-in family's pipeline whose model_index.json is `index` (a plugin's
    adapter declares its own)."""
    return CLASSIC  # every pipeline family here splits into encode -> denoise -> decode


def topology_of(ref: str) -> Topology:
    """The stages of the model a job names (`builtin:NAME` or a folder), from its model_index.json."""
    if ref.startswith("builtin:"):
        return CLASSIC  # every built-in (built on first use, so maybe no folder yet) is encode -> denoise -> decode
    try:
        index = json.loads((Path(ref) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}  # the run itself reports a missing or damaged model, naming the fix
    index = index if isinstance(index, dict) else {}
    plugin = plugin_for(str(index.get("_class_name", "")))
    declared = getattr(plugin, "topology", None)
    return declared if isinstance(declared, Topology) else topology_for(index)
