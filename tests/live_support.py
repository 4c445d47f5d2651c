"""Live snapshots for the metrics, publisher and watch tests: a typical one, hostile strings, and
the samples a snapshot should give, written out apart from the code under test."""

from __future__ import annotations

import dataclasses
import time

from onepiece_hpc.observe.live import LiveSnapshot, RankLive, StageLive

MIB = 1024 * 1024
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


def expected_samples(s) -> dict[tuple[str, frozenset], float]:
    """What the snapshot says, metric by metric, written out apart from the code under test."""
    def key(name, **labels):
        return name, frozenset((k, str(v)) for k, v in labels.items())

    want = {
        key("onepiece_job_info", job_name=s.job_name, output=s.output, slurm_job=s.slurm_job): 1,
        key("onepiece_snapshot_timestamp_seconds"): s.unix_time,
        key("onepiece_elapsed_seconds"): s.elapsed_s,
        key("onepiece_items_planned"): s.items_total,
        key("onepiece_items_done_total"): s.items_done,
        key("onepiece_items_failed_total"): s.items_failed,
        key("onepiece_work_planned_megapixel_forwards"): s.work_total,
        key("onepiece_work_done_megapixel_forwards_total"): s.work_done,
        key("onepiece_rate_items_per_second"): s.rate_items_per_s,
        key("onepiece_rate_work_megapixel_forwards_per_second"): s.rate_work_per_s,
        key("onepiece_eta_seconds"): s.eta_s,
        key("onepiece_moves_total"): s.moves,
    }
    for phase in ("running", "draining", "finished"):
        want[key("onepiece_phase", phase=phase)] = float(phase == s.phase)
    for reason, count in s.moves_by_reason.items():
        want[key("onepiece_moves_by_reason_total", reason=reason)] = count
    for st in s.stages:
        want[key("onepiece_stage_ranks", stage=st.stage)] = st.ranks
        want[key("onepiece_stage_units_done_total", stage=st.stage)] = st.units_done
        want[key("onepiece_stage_busy_ratio", stage=st.stage)] = st.busy_share
        want[key("onepiece_stage_mean_service_seconds", stage=st.stage)] = st.mean_service_s
        want[key("onepiece_stage_backlog_units", stage=st.stage)] = st.backlog
    for r in s.ranks:
        want[key("onepiece_rank_info", rank=r.rank, host=r.host, stage=r.stage, state=r.state, gpu=r.gpu)] = 1
        want[key("onepiece_rank_memory_bytes", rank=r.rank, host=r.host)] = r.memory_mb * MIB
        want[key("onepiece_rank_peak_memory_bytes", rank=r.rank, host=r.host)] = r.peak_memory_mb * MIB
        want[key("onepiece_rank_units_done_total", rank=r.rank, host=r.host)] = r.units_done
    return want
