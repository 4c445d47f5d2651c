"""Live snapshots for the metrics, publisher and watch tests: a typical one and hostile strings."""

from __future__ import annotations

import dataclasses
import time

from onepiece_hpc.observe.live import LiveSnapshot, RankLive, StageLive

HOSTILE = 'out "quoted"\\ back\nline; $(shell) `x` [bold]ünï🌸'


def snapshot(**changes) -> LiveSnapshot:
    """A running job of three stages and four ranks, mid-way; `changes` override fields."""
    base = LiveSnapshot(
        output="/data/run/out.h5", job_name="harbour", slurm_job="4242", phase="running",
        unix_time=time.time(), elapsed_s=125.5, items_total=1000, items_done=420, items_failed=3,
        work_total=5120.0, work_done=2150.4, rate_items_per_s=2.5, rate_work_per_s=12.8, eta_s=232.0, moves=5,
        moves_by_reason={"backlog": 3, "idle": 2},
        stages=(StageLive("encode", 1, 60, 0.125, 0.02, 0), StageLive("denoise", 2, 52, 0.97, 1.75, 6),
                StageLive("decode", 1, 51, 0.5, 0.3, 1)),
        ranks=(RankLive(1, "node1", "encode", "waiting", 512.0, 600.0, 60, 0),
               RankLive(2, "node1", "denoise", "busy", 20480.0, 22000.5, 26, 1),
               RankLive(3, "node2", "denoise", "busy", 20000.0, 21000.0, 26, 0),
               RankLive(4, "node2", "decode", "sending", 4700.0, 5900.0, 51, 1)))
    return dataclasses.replace(base, **changes)
