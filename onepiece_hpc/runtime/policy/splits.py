"""Rate-balanced splits: how many ranks each stage needs so that no stage starves the next."""

from __future__ import annotations

import math
from collections.abc import Sequence


def balanced_split(costs: Sequence[float], ranks: int, caps: Sequence[int], fits: Sequence[bool]) -> list[int]:
    """Integer ranks per stage that maximise the pipeline's rate (its slowest stage's ranks over
    its seconds of work per unit ahead, `costs`).

    A stage with work gets at least one rank; none gets more than `caps` (it can't use more
    ranks than it has units) and a stage that doesn't fit a rank's memory gets none. Ranks
    left over by the caps go to the stage that is slowest after the split.
    """
    stages = len(costs)
    split = [0] * stages
    wanted = [i for i in range(stages) if costs[i] > 0 and caps[i] > 0 and fits[i]]
    if not wanted:
        return split
    for i in wanted:
        split[i] = 1
    if ranks < len(wanted):
        return _fewer_ranks_than_stages(costs, ranks, wanted)

    scale = max(costs[i] for i in wanted)  # rates in units per `scale` seconds: no overflow

    def needed(rate: float) -> list[int]:
        """Ranks each stage needs to serve `rate` units (at least one, at most its cap)."""
        return [min(caps[i], max(1, math.ceil(rate * costs[i] / scale - 1e-9))) for i in wanted]

    # the highest rate the ranks can serve in every stage at once (a bisection: `needed` grows
    # with the rate; at `high` the cheapest stage alone would need every rank, so only caps and
    # rounding leave ranks over, and those go to the slowest stages: a few, not O(ranks), steps)
    low, high = 0.0, float(ranks) * min(scale / min(costs[i] for i in wanted), 1e9)
    for _ in range(64):
        middle = (low + high) / 2
        low, high = (middle, high) if sum(needed(middle)) <= ranks else (low, middle)
    for i, count in zip(wanted, needed(low)):
        split[i] = count
    left = ranks - sum(split)
    while left > 0:
        open_stages = [i for i in wanted if split[i] < caps[i]]
        if not open_stages:
            break
        slowest = max(open_stages, key=lambda i: costs[i] / split[i])
        split[slowest] += 1
        left -= 1
    return split


def _fewer_ranks_than_stages(costs: Sequence[float], ranks: int, wanted: list[int]) -> list[int]:
    split = [0] * len(costs)
    for i in sorted(wanted, key=lambda i: -costs[i])[:ranks]:
        split[i] = 1
    return split


def throughput(split: Sequence[int], costs: Sequence[float]) -> float:
    """Units per second of the pipeline: its slowest stage's ranks over its per-unit seconds."""
    rates = [split[i] / costs[i] for i in range(len(costs)) if costs[i] > 0]
    return min(rates) if rates else math.inf
