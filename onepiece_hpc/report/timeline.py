"""What every rank was doing over a staged run, from its heartbeats (pure numpy, no plotting).

A heartbeat carries the rank's running totals of busy, waiting and sending seconds, so the
interval since its previous heartbeat is classed by which of the three grew most, or as moving
(draining or loading for another stage) by the rank's state. Consecutive intervals of one class
and stage become one bar. A run with more bars than MAX_BARS is shown as a grid instead: ranks
in at most MAX_ROWS rows (neighbouring ranks grouped), time in at most MAX_BINS bins (none
shorter than a heartbeat interval), each cell the class that took most of its time, so 10^4 ranks over days still draw as one small image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepiece_hpc.store.items import as_text

MAX_BARS = 4000
MAX_ROWS = 200
MAX_BINS = 300

ACTIVITIES = ("busy", "sending", "waiting")
MOVING, LOADING, ENDED = "draining (move)", "loading", "ended"
_MOVING_STATES = {"draining": MOVING, "loading": LOADING, "done": ENDED, "failed": ENDED}


@dataclass(frozen=True)
class Intervals:
    """One row per heartbeat interval: the rank, its stage, what it did, from `start` to `end` seconds."""

    rank: np.ndarray
    stage: np.ndarray   # str objects
    activity: np.ndarray
    start: np.ndarray
    end: np.ndarray
    seconds: np.ndarray  # intervals x 3: busy, sending and waiting seconds the rank counted in it (ACTIVITIES)
    units: np.ndarray    # units the rank finished in it

    def __len__(self) -> int:
        return len(self.rank)

    def labels(self) -> np.ndarray:
        """`activity_label` of every interval."""
        staged = np.isin(self.activity, ACTIVITIES)
        return np.where(staged, self.stage + " " + self.activity, self.activity)


def activity_label(stage: str, activity: str) -> str:
    """'denoise busy', or 'moving' (a move's drain and load name no one stage)."""
    return f"{stage} {activity}" if activity in ACTIVITIES else activity


def _column(samples: np.ndarray, name: str) -> np.ndarray:
    return np.array([as_text(v) for v in samples[name]], dtype=object)


def heartbeat_intervals(samples: np.ndarray) -> Intervals:
    """The intervals between each rank's heartbeats, classed (the first runs from one typical heartbeat before)."""
    if len(samples) == 0:
        empty = np.empty(0)
        return Intervals(empty.astype(int), empty.astype(object), empty.astype(object), empty, empty,
                         np.empty((0, 3)), empty.astype(int))
    order = np.lexsort((samples["t"], samples["rank"]))
    rows = samples[order]
    rank, t = rows["rank"].astype(int), rows["t"].astype(float)
    first = np.r_[True, rank[1:] != rank[:-1]]
    gaps = np.diff(t)[~first[1:]]
    typical = float(np.median(gaps)) if gaps.size else 1.0
    start = np.r_[t[0], t[:-1]]
    start[first] = np.maximum(t[first] - typical, 0.0)
    seconds = np.vstack([_growth(rows[name].astype(float), first) for name in ("busy_s", "send_s", "wait_s")])
    activity = np.array(ACTIVITIES, dtype=object)[np.argmax(seconds, axis=0)]
    activity[seconds.sum(axis=0) <= 0] = "waiting"
    states = _column(rows, "state")
    for state, name in _MOVING_STATES.items():
        activity[states == state] = name
    units = _growth(rows["units_done"].astype(float), first).astype(int)
    return Intervals(rank, _column(rows, "stage"), activity, start, t, seconds.T, units)


def _growth(total: np.ndarray, first: np.ndarray) -> np.ndarray:
    """How much a running total grew since the rank's previous heartbeat (its first: all of it)."""
    delta = np.r_[total[:1], np.diff(total)]
    delta[first] = total[first]
    return np.where(delta < 0, total, delta)  # a total that restarted


@dataclass(frozen=True)
class Bars:
    """Intervals merged where a rank kept one stage and activity."""

    rank: np.ndarray
    label: np.ndarray
    start: np.ndarray
    end: np.ndarray


def merged_bars(spans: Intervals) -> Bars:
    labels = spans.labels()
    keep = spans.activity != ENDED
    rank, labels, start, end = spans.rank[keep], labels[keep], spans.start[keep], spans.end[keep]
    if len(rank) == 0:
        return Bars(rank, labels, start, end)
    opens = np.r_[True, (rank[1:] != rank[:-1]) | (labels[1:] != labels[:-1])]
    heads = np.flatnonzero(opens)
    tails = np.r_[heads[1:], len(rank)] - 1
    return Bars(rank[heads], labels[heads], start[heads], end[tails])


@dataclass(frozen=True)
class Grid:
    """Rows of ranks by bins of time; `cells` holds an index into `labels`, -1 where nothing was heard."""

    row_ranks: list[tuple[int, int]]  # the first and last rank of each row
    edges: np.ndarray                 # bin edges in seconds, len(bins) + 1
    labels: list[str]
    cells: np.ndarray                 # rows x bins


def activity_grid(spans: Intervals, max_rows: int = MAX_ROWS, max_bins: int = MAX_BINS) -> Grid:
    """The class that took most of each (group of ranks, time bin), weighed by the time of each interval
    inside the bin; bins are no shorter than a typical heartbeat interval."""
    ranks, rank_at = np.unique(spans.rank, return_inverse=True)
    per_row = max(1, -(-len(ranks) // max_rows))
    rows = -(-len(ranks) // per_row)
    row_ranks = [(int(ranks[i * per_row]), int(ranks[min((i + 1) * per_row, len(ranks)) - 1])) for i in range(rows)]
    keep = spans.activity != ENDED
    labels, codes = np.unique(spans.labels()[keep].astype(str), return_inverse=True)
    start, end, row = spans.start[keep], spans.end[keep], rank_at[keep] // per_row
    lo, hi = float(spans.start.min()), float(spans.end.max())
    typical = float(np.median(end - start)) if len(start) else 1.0
    count = int(np.clip(np.ceil((hi - lo) / max(typical, 1e-9)), 1, max_bins))
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, count + 1)
    first = np.clip(np.searchsorted(edges, start, side="right") - 1, 0, count - 1)
    last = np.clip(np.searchsorted(edges, end, side="left") - 1, first, count - 1)
    # one entry per (interval, bin it overlaps): at most ranks x bins + intervals, as a rank's intervals are disjoint
    spread = last - first + 1
    which = np.repeat(np.arange(len(start)), spread)
    bin_of = first[which] + (np.arange(len(which)) - np.repeat(np.cumsum(spread) - spread, spread))
    overlap = np.minimum(end[which], edges[bin_of + 1]) - np.maximum(start[which], edges[bin_of])
    weight = np.zeros((rows, count, max(len(labels), 1)))
    np.add.at(weight, (row[which], bin_of, codes[which]), np.maximum(overlap, 0.0) + 1e-9)
    cells = np.where(weight.sum(axis=2) > 0, weight.argmax(axis=2), -1)
    return Grid(row_ranks, edges, [str(label) for label in labels], cells)


def needs_grid(bars: Bars) -> bool:
    return len(bars.rank) > MAX_BARS
