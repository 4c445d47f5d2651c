"""The report's numbers over time, binned so that what is drawn stays small whatever the run's size
(pure numpy): throughput against the mean rate, item latency, memory and backlog per stage, and
each stage's shares of busy, waiting and sending time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepiece_hpc.report.timeline import ACTIVITIES, Intervals
from onepiece_hpc.store.items import as_text

MAX_BINS = 200       # bins of a series over time
MAX_LINES = 24       # ranks drawn one line each; more are drawn as per-stage bands
HISTOGRAM_BINS = 40
COMMITS_A_BIN = 4    # commits a throughput bin holds on average in the stretch of most commits


def _bin_count(span: float, step: float) -> int:
    return int(np.clip(np.ceil(span / step) if step > 0 else 1, 1, MAX_BINS))


@dataclass(frozen=True)
class Throughput:
    edges: np.ndarray        # unix seconds
    items_per_s: np.ndarray  # per bin
    work_per_s: np.ndarray
    sessions: list[tuple[float, float, float, float]]  # (first, last commit, items/s, work/s) of each stretch of runs


def throughput(times: np.ndarray, work: np.ndarray, windows: list[tuple[float, float]]) -> Throughput | None:
    """Commits per second in bins; the mean rate of each stretch of time that runs covered together
    (overlapping runs, a sweep's shards, are one stretch; a resume days later is another)."""
    times, work = np.asarray(times, dtype=float), np.asarray(work, dtype=float)
    if times.size < 2 or times[-1] <= times[0]:
        return None
    sessions = []
    step, most = float("inf"), 0  # the bin width: COMMITS_A_BIN commits a bin in the stretch of most commits
    for lo, hi in _stretches(windows, times):
        inside = (times >= lo) & (times <= hi)
        picked, picked_work = times[inside], work[inside]
        if picked.size >= 2 and picked[-1] > picked[0]:
            length = picked[-1] - picked[0]
            sessions.append((float(picked[0]), float(picked[-1]), (picked.size - 1) / length,
                             float(picked_work[1:].sum() / length)))
            if picked.size > most:
                step, most = length * COMMITS_A_BIN / picked.size, picked.size
    span = times[-1] - times[0]
    if step == float("inf"):
        step = span * COMMITS_A_BIN / times.size
    bins = int(np.clip(np.ceil(span / max(step, 1.0)), 1, MAX_BINS))
    edges = np.linspace(times[0], times[-1], bins + 1)
    width = np.diff(edges)
    counts, _ = np.histogram(times, edges)
    done, _ = np.histogram(times, edges, weights=work)
    return Throughput(edges, counts / width, done / width, sessions)


def _stretches(windows: list[tuple[float, float]], times: np.ndarray) -> list[tuple[float, float]]:
    """Run windows joined where they overlap; all commits as one stretch where no run says when it ran."""
    if not windows:
        return [(float(times[0]), float(times[-1]))]
    joined: list[list[float]] = []
    for lo, hi in sorted(windows):
        if joined and lo <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], hi)
        else:
            joined.append([lo, hi])
    return [(lo, hi) for lo, hi in joined]


@dataclass(frozen=True)
class Latency:
    edges: np.ndarray    # seconds
    counts: np.ndarray
    median_s: float
    p90_s: float
    p99_s: float
    measured: bool       # dispatch to commit per unit; False: the gaps between commits (no units table)
    samples: int


def _latency(values: np.ndarray, measured: bool) -> Latency | None:
    values = values[np.isfinite(values) & (values >= 0)]
    if values.size == 0:
        return None
    hi = float(values.max())
    edges = np.linspace(0.0, hi if hi > 0 else 1.0, HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(values, edges)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return Latency(edges, counts, float(p50), float(p90), float(p99), measured, int(values.size))


def unit_latency(units: np.ndarray) -> Latency | None:
    """Seconds from a unit's dispatch to its commit (the telemetry's `units` table)."""
    done = units[np.isfinite(units["committed_t"])]
    return _latency(done["committed_t"] - done["dispatched_t"], measured=True)


def commit_gaps(times: np.ndarray) -> Latency | None:
    """Seconds between one commit and the next (a unit's items commit together: one gap a unit)."""
    distinct = np.unique(np.asarray(times, dtype=float))
    return _latency(np.diff(distinct), measured=False) if distinct.size >= 2 else None


def _binned(t: np.ndarray, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges over `t` (at most MAX_BINS, none shorter than the typical heartbeat) and each sample's bin."""
    lo, hi = float(t.min()), float(t.max())
    bins = count or _bin_count(hi - lo, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    return edges, np.clip(np.searchsorted(edges, t, side="right") - 1, 0, bins - 1)


@dataclass(frozen=True)
class Lines:
    """Named series over one time axis (bin middles, seconds since the run started)."""

    t: np.ndarray
    series: dict[str, np.ndarray]
    bands: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (low, high), for many ranks


def _stages(samples: np.ndarray) -> np.ndarray:
    return np.array([as_text(v) for v in samples["stage"]], dtype=object)


def memory_lines(samples: np.ndarray) -> Lines | None:
    """Each rank's resident memory (the bin's highest), or with many ranks each stage's mean and range."""
    if len(samples) == 0:
        return None
    edges, bins = _binned(samples["t"].astype(float))
    middle = (edges[:-1] + edges[1:]) / 2
    memory = samples["memory_mb"].astype(float)
    ranks = np.unique(samples["rank"])
    if len(ranks) <= MAX_LINES:
        series = {}
        for rank in ranks:
            mine = samples["rank"] == rank
            top = np.full(len(middle), np.nan)
            np.fmax.at(top, bins[mine], memory[mine])
            series[f"rank {int(rank)}"] = top
        return Lines(middle, series, {})
    stages = _stages(samples)
    series, bands = {}, {}
    for stage in dict.fromkeys(stages):
        mine = stages == stage
        low, high = np.full(len(middle), np.nan), np.full(len(middle), np.nan)
        np.fmin.at(low, bins[mine], memory[mine])
        np.fmax.at(high, bins[mine], memory[mine])
        total, count = np.zeros(len(middle)), np.zeros(len(middle))
        np.add.at(total, bins[mine], memory[mine])
        np.add.at(count, bins[mine], 1)
        series[f"{stage} mean"] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        bands[f"{stage} range"] = (low, high)
    return Lines(middle, series, bands)


def backlog_lines(samples: np.ndarray, order: list[str] | None = None) -> Lines | None:
    """Units each stage has queued in the next stage's rings: per time bin, each rank's mean, summed by stage."""
    if len(samples) == 0:
        return None
    edges, bins = _binned(samples["t"].astype(float))
    count = len(edges) - 1
    ranks, rank_at = np.unique(samples["rank"], return_inverse=True)
    cell = rank_at * count + bins
    total, heard = np.zeros(len(ranks) * count), np.zeros(len(ranks) * count)
    np.add.at(total, cell, samples["backlog"].astype(float))
    np.add.at(heard, cell, 1)
    stages = _stages(samples)
    stage_of_cell = np.empty(len(ranks) * count, dtype=object)
    stage_of_cell[cell] = stages  # the stage of the cell's last heartbeat
    series = {}
    mean = np.where(heard > 0, total / np.maximum(heard, 1), 0.0)
    for stage in dict.fromkeys([*(order or []), *stages]):
        mine = stage_of_cell == stage
        summed = np.zeros(count)
        np.add.at(summed, (np.arange(len(ranks) * count) % count)[mine], mean[mine])
        series[str(stage)] = summed
    return Lines((edges[:-1] + edges[1:]) / 2, series, {})


@dataclass(frozen=True)
class StageUse:
    stage: str
    units: int
    busy: float      # shares of the time ranks served the stage
    sending: float
    waiting: float
    other: float     # served but counted in none of the three (control messages, bookkeeping)
    rank_s: float    # rank-seconds served
    mean_service_s: float


def stage_use(stages: np.ndarray, spans: Intervals) -> list[StageUse]:
    """Each stage's shares of its ranks' serving time, from the growth of each rank's totals between
    heartbeats (a rank that moved counts in each stage for the time it served it); units and mean service
    time from the run's summary where it has one (a live record may not)."""
    summary = {as_text(row["stage"]): row for row in stages} if len(stages) else {}
    serving = np.isin(spans.activity, ACTIVITIES)
    used = []
    for stage in dict.fromkeys([*summary, *spans.stage[serving]]):
        mine = serving & (spans.stage == stage)
        time = float((spans.end[mine] - spans.start[mine]).sum())
        counted = spans.seconds[mine].sum(axis=0)
        scale = max(time, float(counted.sum()))  # the first interval's length is a guess: never above 100%
        busy, sending, waiting = (counted / scale) if scale > 0 else (np.full(3, np.nan))
        row = summary.get(stage)
        units = int(row["units"]) if row is not None else int(spans.units[mine].sum())
        service = (float(row["mean_service_s"]) if row is not None else
                   float(counted[0] / units) if units else float("nan"))
        other = max(0.0, 1.0 - busy - sending - waiting) if scale > 0 else float("nan")
        used.append(StageUse(str(stage), units, float(busy), float(sending), float(waiting), other, time, service))
    return used
