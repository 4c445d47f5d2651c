"""Which stages a pipeline splits into, from its model_index.json (and, for Wan2.2's two experts,
its scheduler config) alone: no torch, no weights, so that checks before a job is queued
(`onepiece submit`) name the stages as the ranks will."""

from __future__ import annotations

import json
from pathlib import Path

from onepiece_hpc.models.plugins import plugin_for
from onepiece_hpc.models.wan.experts import BUILTIN_SPLITS, ExpertSplit, expert_topology, scheduler_shift, two_experts
from onepiece_hpc.topology import CLASSIC, Topology


def _json(path: Path) -> dict:
    """A JSON object from `path`, or {} where it is missing or damaged (the run itself reports that,
    naming the fix)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def topology_for(index: dict, folder: Path | None = None) -> Topology:
    """The stages of a built-in family's pipeline whose model_index.json is `index` (a plugin's
    adapter declares its own): encode -> denoise -> decode, or for a Wan2.2 A14B folder (two
    experts and a boundary) encode -> denoise_high -> denoise_low -> decode, each expert weighted by
    its share of the steps as the scheduler config in `folder` places them."""
    if not two_experts(index):
        return CLASSIC
    boundary = index["boundary_ratio"]
    entry = index.get("scheduler")
    scheduler = str(entry[1]) if isinstance(entry, list) and len(entry) == 2 else ""
    config = _json(folder / "scheduler" / "scheduler_config.json") if folder is not None else {}
    ratio = float(boundary) if isinstance(boundary, (int, float)) and 0 <= boundary <= 1 else 1.0
    return expert_topology(ExpertSplit(ratio, scheduler_shift(scheduler, config)))


def topology_of(ref: str) -> Topology:
    """The stages of the model a job names (`builtin:NAME` or a folder), from its model_index.json;
    a built-in's without building it (it is built on first use, so there may be no folder yet)."""
    if ref.startswith("builtin:"):
        split = BUILTIN_SPLITS.get(ref.removeprefix("builtin:"))
        return expert_topology(split) if split is not None else CLASSIC
    folder = Path(ref)
    index = _json(folder / "model_index.json")
    plugin = plugin_for(str(index.get("_class_name", "")))
    declared = getattr(plugin, "topology", None)
    return declared if isinstance(declared, Topology) else topology_for(index, folder)
