"""A pipeline's stages as data: their names, their order, and what each one's work grows with.

A model adapter declares its topology (models/base.py); the job file's `stages:` names these
stages, and the layout, routes, heartbeats, cost model, policy, telemetry and output format take
whatever chain of stages it holds. Pure data: no torch, MPI or HDF5 here, so the simulator and the
policy use it as the runtime does.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass

#: the stages of the classic text-to-image and text-to-video pipelines
ENCODE, DENOISE, DECODE = "encode", "denoise", "decode"
#: the column after the stages' in an output's per-item timings: the commit's write
WRITE = "write"
STAGE_NAME = r"^[a-z][a-z0-9_]{0,31}$"


class Work(str, enum.Enum):
    """What a stage's seconds per unit grow with."""

    ITEMS = "items"        # each item once (text encoders, VAE decode, post-processing)
    FORWARDS = "forwards"  # each denoiser forward: items x steps, twice with guidance


@dataclass(frozen=True)
class StageDef:
    """One stage: its name (what users write in `stages:` and see in every table), what its work
    grows with, and its share of the ranks when a job gives no split (0: it takes what is left)."""

    name: str
    work: Work = Work.ITEMS
    default_share: float = 0.0
    share_of_steps: float = 1.0  # the part of each item's denoiser forwards this stage runs

    def __post_init__(self) -> None:
        if not re.fullmatch(STAGE_NAME, self.name) or self.name == WRITE:
            raise ValueError(f"stage name {self.name!r}: use lowercase letters, digits and '_' (at most 32), "
                             f"starting with a letter, and not {WRITE!r}")


@dataclass(frozen=True)
class Topology:
    """A chain of stages in data-flow order: the first pulls work from the Node Manager, the last
    sends its outputs to it."""

    stages: tuple[StageDef, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if not names:
            raise ValueError("a topology needs at least one stage")
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must differ: {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def first(self) -> str:
        return self.stages[0].name

    @property
    def last(self) -> str:
        return self.stages[-1].name

    def __len__(self) -> int:
        return len(self.stages)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no stage {name!r} in this pipeline (stages: {', '.join(self.names)})") from None

    def before(self, name: str) -> str | None:
        """The stage that feeds `name` (None for the first)."""
        index = self.index(name)
        return self.names[index - 1] if index else None

    def after(self, name: str) -> str | None:
        """The stage `name` feeds (None for the last: it feeds the Node Manager)."""
        index = self.index(name)
        return self.names[index + 1] if index + 1 < len(self.names) else None

    @property
    def timing_columns(self) -> tuple[str, ...]:
        """The columns of an output's per-item timings: each stage's seconds, then the write."""
        return (*self.names, WRITE)

    def describe(self) -> str:
        return " -> ".join(self.names)


#: encode -> denoise -> decode, the denoiser's ranks taking what the split leaves
CLASSIC = Topology((StageDef(ENCODE, Work.ITEMS, 1 / 8), StageDef(DENOISE, Work.FORWARDS),
                    StageDef(DECODE, Work.ITEMS, 1 / 4)))
