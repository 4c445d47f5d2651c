"""Random-weight models of real sizes: configs on disk, weights drawn on the rank's own device.

`builtin:random:NAME` names a published architecture (SDXL, Wan2.1 1.3B/14B, ...) for
benchmarks where no weights can be downloaded. Its folder holds every config, tokenizer and
scheduler file but no weights; each rank builds only its stage's modules, directly on its GPU in
the run's dtype, from a fixed seed per component. Compute and memory are those of the real model;
the outputs are noise and are never to be presented as images or videos.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from onepiece_hpc.models.folders import publish_folder

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: the marker that makes a pipeline folder a random-weight one (its content enters the identity)
MARKER = "random_weights.json"
RANDOM_SEED = 20261122


def is_random(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def write_config_folder(name: str, version: int, build: Callable, folder: Path) -> Path:
    """Write the configs of `build()`'s pipeline (built on the meta device: nothing is allocated)
    into `folder`, once (see `publish_folder`)."""
    import torch

    def save(staging: Path) -> None:
        with torch.device("meta"):
            pipeline = build()
        pipeline.save_config(staging)
        for component, module in pipeline.components.items():
            if module is None:
                continue
            target = staging / component
            target.mkdir()
            if hasattr(module, "save_config"):          # diffusers models and schedulers
                module.save_config(target)
            elif isinstance(module, torch.nn.Module):   # transformers models
                module.config.save_pretrained(target)
            else:                                       # tokenizers, image processors
                module.save_pretrained(target)
        marker = {"architecture": name, "version": version, "seed": RANDOM_SEED,
                  "note": "random weights of the real architecture: for timing and memory only"}
        (staging / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")

    return publish_folder(folder, save)


def _component_class(index: dict, component: str):
    library, class_name = index[component]
    return getattr(importlib.import_module(library), class_name)


def _keep_in_float32(module: torch.nn.Module) -> None:
    """Keep the modules the model class asks to keep in float32 there, as from_pretrained does."""
    keep = getattr(module, "_keep_in_fp32_modules", None) or ()
    for name, child in module.named_modules():
        if any(part in keep for part in name.split(".")):
            child.float()


def build_component(folder: Path, index: dict, component: str, device: torch.device,
                    dtype: torch.dtype):
    """One component: modules drawn at random on `device` in `dtype` (seeded by the component's
    name, so every rank that builds it gets the same weights); other parts read from files."""
    import torch

    cls = _component_class(index, component)
    path = folder / component
    if not issubclass(cls, torch.nn.Module):
        return cls.from_pretrained(path)
    seed = RANDOM_SEED ^ zlib.crc32(component.encode())
    previous = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device), torch.no_grad():
                if hasattr(cls, "from_config"):
                    module = cls.from_config(cls.load_config(path))
                else:
                    module = cls(cls.config_class.from_pretrained(path))
        finally:
            torch.set_default_dtype(previous)
    _keep_in_float32(module)
    return module.eval()


def build_pipeline(pipeline_class, folder: Path, index: dict, wanted: set[str], device: torch.device,
                   dtype: torch.dtype):
    """The pipeline with only `wanted` components built; the others are None."""
    expected, optional = pipeline_class._get_signature_keys(pipeline_class)
    kwargs = {}
    for name in expected:
        kwargs[name] = build_component(folder, index, name, device, dtype) if name in wanted else None
    accepted = inspect.signature(pipeline_class.__init__).parameters
    for name in optional:
        if name in index and name in accepted and not isinstance(index[name], list):
            kwargs[name] = index[name]
    log.info("built random-weight components %s on %s", sorted(wanted), device)
    return pipeline_class(**kwargs)
