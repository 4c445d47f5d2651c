"""Built-in models: built once from configs with a fixed seed, saved, then loaded like any folder."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path

from onepiece_hpc.models.folders import publish_folder

log = logging.getLogger(__name__)

BUILTIN_SEED = 20261122
#: name -> (version, "module:builder"). Bump a model's version when its builder changes, so caches
#: built earlier are not reused. Builders are imported only to build: importing every family's
#: diffusers and transformers classes costs each rank seconds it would spend on a model it never uses.
BUILTINS: dict[str, tuple[int, str]] = {
    "tiny-sd": (1, "onepiece_hpc.models.stable_diffusion.tiny:build"),
    "tiny-pixart": (1, "onepiece_hpc.models.pixart.tiny:build"),
    "tiny-sdxl": (1, "onepiece_hpc.models.sdxl.tiny:build"),
    "tiny-wan-t2v": (1, "onepiece_hpc.models.wan.tiny:build_t2v"),
    "tiny-wan-i2v": (1, "onepiece_hpc.models.wan.tiny:build_i2v"),
    "tiny-wan22-t2v": (1, "onepiece_hpc.models.wan.tiny:build_wan22_t2v"),
    "tiny-wan22-i2v": (1, "onepiece_hpc.models.wan.tiny:build_wan22_i2v"),
}


def builder(name: str) -> Callable:
    """The function that builds built-in model `name` (its module is imported here)."""
    module, function = BUILTINS[name][1].split(":")
    return getattr(importlib.import_module(module), function)


def builtin_folder(name: str, cache: Path) -> Path:
    """The pipeline folder of built-in model `name`, building and saving it on first use."""
    version = BUILTINS[name][0]
    folder = cache / "models" / f"{name}-v{version}"

    def save(staging: Path) -> None:
        import torch

        log.info("building built-in model %s into %s", name, folder)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILTIN_SEED)
            pipeline = builder(name)()
        pipeline.save_pretrained(staging, safe_serialization=True)

    return publish_folder(folder, save)


#: the model families whose `real_size.py` publishes BUILDERS of real-size architectures
REAL_SIZE_FAMILIES = ("onepiece_hpc.models.sdxl.real_size", "onepiece_hpc.models.wan.real_size")
RANDOM_PREFIX = "random:"
RANDOM_VERSION = 1


def real_size_builders() -> dict[str, Callable]:
    """Every `builtin:random:NAME` architecture, by NAME."""
    builders: dict[str, Callable] = {}
    for module in REAL_SIZE_FAMILIES:
        builders.update(importlib.import_module(module).BUILDERS)
    return builders


def random_folder(name: str, cache: Path) -> Path:
    """The config-only folder of `builtin:random:NAME` (weights are drawn on each rank's device)."""
    from onepiece_hpc.models.random_weights import write_config_folder

    folder = cache / "models" / f"random-{name}-v{RANDOM_VERSION}"
    return write_config_folder(name, RANDOM_VERSION, real_size_builders()[name], folder)
