"""What a running job looks like right now: one immutable snapshot that rank 0 makes from its
telemetry, its unit book and its commits, a few times a second at most.

Everything a person or a scraper sees live is read off a `LiveSnapshot`: the Prometheus metrics
(observe/metrics.py), the service-discovery entry, `onepiece status --watch`, and the live copy of
the run's telemetry that `onepiece report` reads while the run goes on. Plain data: JSON in and
out, no torch, MPI or HDF5.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class StageLive:
    stage: str
    ranks: int              # ranks serving the stage now
    units_done: int         # units the stage has finished this run
    busy_share: float       # busy seconds over the seconds ranks served it (nan before any)
    mean_service_s: float   # busy seconds per unit (nan before any)
    backlog: int            # units waiting for it: undispatched for the first stage, queued in its rings after


@dataclass(frozen=True)
class RankLive:
    rank: int
    host: str
    stage: str
    state: str              # the rank's last heartbeat state ("busy", "waiting", "sending", "moving", ...)
    memory_mb: float
    peak_memory_mb: float
    units_done: int
    gpu: int = -1


@dataclass(frozen=True)
class LiveSnapshot:
    output: str             # the output file
    job_name: str
    slurm_job: str          # "" outside Slurm
    phase: str              # "running", "draining" or "finished"
    unix_time: float        # when the snapshot was made
    elapsed_s: float        # since rank 0 opened the output
    items_total: int
    items_done: int         # committed, this run and before
    items_failed: int
    work_total: float       # megapixel-forwards (planning/work.py)
    work_done: float
    rate_items_per_s: float | None
    rate_work_per_s: float | None
    eta_s: float | None     # from the work left (planning/work.py), not from item counts
    moves: int
    moves_by_reason: dict[str, int] = field(default_factory=dict)
    stages: tuple[StageLive, ...] = ()
    ranks: tuple[RankLive, ...] = ()

    def to_json(self) -> str:
        """Strict JSON: a figure not known yet (nan) is null."""
        data = {**vars(self), "stages": [_plain(s) for s in self.stages], "ranks": [_plain(r) for r in self.ranks]}
        return json.dumps(_plain_dict(data), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> LiveSnapshot:
        data = json.loads(text)
        data["stages"] = tuple(StageLive(**_nan_back(row, StageLive)) for row in data.get("stages", ()))
        data["ranks"] = tuple(RankLive(**_nan_back(row, RankLive)) for row in data.get("ranks", ()))
        return cls(**data)


def _plain(row) -> dict:
    return _plain_dict(vars(row))


def _plain_dict(data: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}


def _nan_back(row: dict, kind) -> dict:
    """A stage's or rank's float fields that were nan (null in JSON) are nan again."""
    floats = {f.name for f in fields(kind) if f.type in ("float", float)}
    return {k: (math.nan if v is None and k in floats else v) for k, v in row.items()}
