"""The adapter interface the runtime talks to: stages, their components and their outputs."""

from __future__ import annotations

import abc
import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from onepiece_hpc.jobfile.job import GenParams
from onepiece_hpc.models.topologies import topology_for
from onepiece_hpc.topology import Topology

if TYPE_CHECKING:  # torch is imported where tensors are made: a process that checks a job needs none
    import torch


def dtype_name(dtype: torch.dtype | str) -> str:
    """A torch dtype's name ("float32"), or the name itself: what specs and placements hold."""
    return str(dtype).removeprefix("torch.")


def no_grad(method):
    """`torch.no_grad()` around `method`, torch imported at the first call rather than with the
    module: the adapters' modules are imported where jobs are only checked (the launcher)."""

    @functools.wraps(method)
    def without_grad(*args, **kwargs):
        import torch

        with torch.no_grad():
            return method(*args, **kwargs)

    return without_grad


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one tensor a stage emits for a work unit (sizes ring slots)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # a torch dtype name: "float32", "bfloat16", "int64", "uint8", ...

    @property
    def nbytes(self) -> int:
        import torch

        count = 1
        for dim in self.shape:
            count *= dim
        return count * torch.empty((), dtype=getattr(torch, self.dtype)).element_size()


@dataclass(frozen=True)
class UnitInput:
    """What a stage knows about the work unit it runs: its items' prompts, seeds and params."""

    unit: int
    items: tuple[int, ...]
    prompts: tuple[str, ...]
    negative_prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    params: GenParams

    def generators(self) -> list[torch.Generator]:
        """One CPU generator per item, seeded with the item's own seed."""
        import torch

        return [torch.Generator("cpu").manual_seed(seed) for seed in self.seeds]


class StageRunner(Protocol):
    """A loaded stage: tensors of the previous stage in, this stage's tensors out."""

    def __call__(self, unit: UnitInput, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def offload(self) -> None:
        """Free the accelerator, keeping a host copy of the weights (a move back is then fast)."""

    def restore(self) -> None:
        """Bring the host copy back onto the stage's device."""


class PlainRunner(Protocol):
    """The whole pipeline, called as users call it: a unit's prompts in, its uint8 outputs out."""

    def __call__(self, unit: UnitInput) -> np.ndarray: ...

    def phases(self, unit: UnitInput) -> tuple[np.ndarray, dict[str, float]]:
        """The same call, with the seconds each stage's part of it took."""


class LoadedStage:
    """A stage's loaded components (`holder`: a pipeline, whose `components` hold the modules) and
    the function that runs them.

    On a GPU, `offload` frees the stage's GPU memory, keeping its weights in page-locked host
    memory (copied there once: weights never change), and `restore` copies them back by DMA.
    """

    def __init__(self, holder, run, device: torch.device) -> None:
        self._holder, self._run, self._device = holder, run, device
        self._host: dict[int, torch.Tensor] | None = None

    def __call__(self, unit: UnitInput, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._run(unit, inputs)

    def _tensors(self) -> list[torch.Tensor]:
        import torch

        modules = [m for m in getattr(self._holder, "components", {}).values() if isinstance(m, torch.nn.Module)]
        return [t for m in modules for t in (*m.parameters(), *m.buffers())]

    def offload(self) -> None:
        if self._device.type == "cpu":
            return
        tensors = self._tensors()
        if self._host is None:
            self._host = {id(t): t.data.to("cpu").pin_memory() for t in tensors}
        for tensor in tensors:
            tensor.data = self._host[id(tensor)]
        import torch

        torch.cuda.empty_cache()

    def restore(self) -> None:
        if self._device.type == "cpu" or self._host is None:
            return
        import torch

        for tensor in self._tensors():
            tensor.data = self._host[id(tensor)].to(self._device, non_blocking=True)
        torch.cuda.synchronize(self._device)


@dataclass(frozen=True)
class Placement:
    """Where and in what precision a stage runs, by name: a process that only checks a job (the
    launcher) needs no torch. `device` and `dtype` are torch's objects for the names."""

    device_name: str  # "cpu", "cuda" or "cuda:N"
    dtype_name: str  # "float32", "bfloat16" or "float16"
    memory_limit_mb: float = 0.0  # this process's share of its GPU's memory (0: no limit known)

    def __post_init__(self) -> None:  # torch's objects are taken too: Placement(torch.device("cpu"), torch.float32)
        object.__setattr__(self, "device_name", str(self.device_name))
        object.__setattr__(self, "dtype_name", dtype_name(self.dtype_name))

    @property
    def device_type(self) -> str:
        return self.device_name.partition(":")[0]

    @functools.cached_property  # made once: the runners read it for every unit
    def device(self) -> torch.device:
        import torch

        return torch.device(self.device_name)

    @functools.cached_property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype_name)

    def on(self, device: torch.device | str, **changes) -> Placement:
        """The same placement on another device (and with `changes`)."""
        return replace(self, device_name=str(device), **changes)


def read_config(folder: Path, component: str) -> dict:
    """A component's config.json (or scheduler_config.json) as a dict, without loading weights."""
    for name in ("config.json", "scheduler_config.json", "tokenizer_config.json"):
        path = folder / component / name
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return {}


class ModelAdapter(abc.ABC):
    """One diffusers pipeline family, split into the stages of its `topology` (by default
    encode -> denoise -> decode)."""


    #: diffusers pipeline class names this adapter handles (model_index.json's _class_name)
    pipeline_classes: tuple[str, ...] = ()
    #: what the decode stage produces: "image" (N x H x W x 3) or "video" (N x T x H x W x 3)
    output_kind: str = "image"
    #: whether every item needs a conditioning image (image-to-video)
    needs_image: bool = False
    #: frames per second a video plays at (written to the output for export); None for images
    frame_rate: int | None = None

    def __init__(self, folder: Path, index: dict) -> None:
        self.folder = folder
        self.index = index

    @property
    def topology(self) -> Topology:
        """The stages, in data-flow order: what `stages:` names and every table shows."""
        return topology_for(self.index)

    @abc.abstractmethod
    def components(self, stage: str) -> tuple[str, ...]:
        """The pipeline components (model_index.json keys) the stage loads; others stay unloaded."""

    @abc.abstractmethod
    def output_specs(self, stage: str, params: GenParams, batch: int, dtype: torch.dtype) -> tuple[TensorSpec, ...]:
        """The tensors the stage emits for a unit of `batch` items, in `dtype` where they follow the
        job's (a torch dtype, or its name: the specs hold names)."""

    @abc.abstractmethod
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (VAE factor times patch size)."""

    @abc.abstractmethod
    def default_size(self) -> tuple[int, int]:
        """(height, width) the model was configured for, used when the job gives none."""

    def default_frames(self) -> int:
        """Frames per item when the job gives none."""
        return 1

    def frame_step(self) -> int:
        """A video's frame count must be frame_step * k + 1 (its VAE packs that many frames together)."""
        return 1

    @abc.abstractmethod
    def load(self, stage: str, placement: Placement) -> StageRunner:
        """Load only the stage's components and return its runner."""

    @abc.abstractmethod
    def load_plain(self, placement: Placement) -> PlainRunner:
        """Load every component as one pipeline, to be called whole: what users run instead."""
