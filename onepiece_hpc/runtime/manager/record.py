"""The run's telemetry as the output keeps it: a row per rank, every heartbeat sample, a row per
stage, per move and per unit (store/telemetry.py's tables): a live copy while the run goes on,
the final record once as it closes."""

from __future__ import annotations

import time

import numpy as np

from onepiece_hpc.runtime.manager.moves import MoveRecord
from onepiece_hpc.runtime.peers import RankInfo
from onepiece_hpc.runtime.telemetry import Telemetry
from onepiece_hpc.store.output import OutputWriter
from onepiece_hpc.store.telemetry import MOVE_DTYPE, RANK_DTYPE, SAMPLE_DTYPE, STAGE_DTYPE


def telemetry_tables(t: Telemetry, peers: list[RankInfo], moves: list[MoveRecord], units: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """The record's tables (store/telemetry.py) from rank 0's telemetry, moves and unit times."""
    ranks = np.array([
        (p.rank, p.host, b.stage, b.units_done, b.busy_s, b.wait_s, b.send_s, b.elapsed_s, b.load_s,
         t.peak_memory.get(p.rank, 0.0), t.links.get(p.rank, ""))
        for p in peers[1:] if (b := t.latest.get(p.rank)) is not None
    ], dtype=RANK_DTYPE)
    samples = np.array([(at, b.rank, b.state, b.stage, b.unit, b.units_done, b.busy_s, b.wait_s, b.send_s,
                         b.backlog, b.memory_mb) for at, b in t.samples], dtype=SAMPLE_DTYPE)
    stages = np.array([(s.stage, s.ranks, s.units, s.busy_share, s.wait_share, s.send_share,
                        s.mean_service_s, s.peak_memory_mb) for s in t.stage_summaries()], dtype=STAGE_DTYPE)
    rows = np.array([(m.started, m.rank, m.source, m.target, m.reason, m.drain_s, m.load_s,
                      m.drain_s + m.load_s) for m in moves], dtype=MOVE_DTYPE)
    return {"ranks": ranks, "samples": samples, "stages": stages, "moves": rows, "units": units}


def record_telemetry(writer: OutputWriter, t: Telemetry, peers: list[RankInfo], moves: list[MoveRecord],
                     units: np.ndarray, meta: dict, live: bool = False) -> None:
    """Save the record: the final one as the run closes, or the live copy while it goes on."""
    meta = {**meta, "started_unix": time.time() - (time.monotonic() - t.started)}
    writer.record_telemetry(telemetry_tables(t, peers, moves, units), meta, live=live)
