"""Built-in models: built once from configs with a fixed seed, saved, then loaded like any folder."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from onepiece_hpc.models.folders import publish_folder
from onepiece_hpc.models.pixart import tiny as tiny_pixart
from onepiece_hpc.models.sdxl import tiny as tiny_sdxl
from onepiece_hpc.models.stable_diffusion import tiny as tiny_sd
from onepiece_hpc.models.wan import tiny as tiny_wan

log = logging.getLogger(__name__)

BUILTIN_SEED = 20261122
#: bump a model's version when its builder changes, so caches built earlier are not reused
BUILTINS: dict[str, tuple[int, Callable]] = {
    "tiny-sd": (1, tiny_sd.build),
    "tiny-pixart": (1, tiny_pixart.build),
    "tiny-sdxl": (1, tiny_sdxl.build),
    "tiny-wan-t2v": (1, tiny_wan.build_t2v),
    "tiny-wan-i2v": (1, tiny_wan.build_i2v),
    "tiny-wan22-t2v": (1, tiny_wan.build_wan22_t2v),
    "tiny-wan22-i2v": (1, tiny_wan.build_wan22_i2v),
}


def builtin_folder(name: str, cache: Path) -> Path:
    """The pipeline folder of built-in model `name`, building and saving it on first use."""
    version, build = BUILTINS[name]
    folder = cache / "models" / f"{name}-v{version}"

    def save(staging: Path) -> None:
        log.info("building built-in model %s into %s", name, folder)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILTIN_SEED)
            pipeline = build()
        pipeline.save_pretrained(staging, safe_serialization=True)

    return publish_folder(folder, save)


#: the model families whose `real_size.py` publishes BUILDERS of real-size architectures
REAL_SIZE_FAMILIES = ("onepiece_hpc.models.sdxl.real_size", "onepiece_hpc.models.wan.real_size")
RANDOM_PREFIX = "random:"
RANDOM_VERSION = 1


def real_size_builders() -> dict[str, Callable]:
    """Every `builtin:random:NAME` architecture, by NAME."""
    import importlib

    builders: dict[str, Callable] = {}
    for module in REAL_SIZE_FAMILIES:
        builders.update(importlib.import_module(module).BUILDERS)
    return builders


def random_folder(name: str, cache: Path) -> Path:
    """The config-only folder of `builtin:random:NAME` (weights are drawn on each rank's device)."""
    from onepiece_hpc.models.random_weights import write_config_folder

    folder = cache / "models" / f"random-{name}-v{RANDOM_VERSION}"
    return write_config_folder(name, RANDOM_VERSION, real_size_builders()[name], folder)
