"""The adaptive policy: look a little ahead in the known batch, balance the stages' rates,
and move ranks only when the time saved pays for the move several times over."""

from __future__ import annotations

import math
from dataclasses import dataclass

from onepiece_hpc.runtime.policy.model import Move, PolicyInput
from onepiece_hpc.runtime.policy.splits import balanced_split, throughput


@dataclass(frozen=True)
class AdaptiveSettings:
    window: float = 4.0          # look ahead this many units per rank
    margin: float = 1.5          # a move must save `margin` times its own duration
    max_move_share: float = 0.25  # at most this share of the ranks moves in one decision


def lookahead(view: PolicyInput, window: float) -> tuple[list[float], list[int]]:
    """Mean seconds per unit over each stage's next `window x ranks` units, and each stage's cap
    (a stage can't keep more ranks busy than it has units left)."""
    span = max(1, math.ceil(window * view.ranks))
    costs, caps = [], []
    for queue in view.queues:
        taken, seconds = queue.head(span)
        costs.append(seconds / taken if taken else 0.0)
        caps.append(queue.units)
    return costs, caps


def plan_moves(view: PolicyInput, target: list[int], limit: int, reason: str) -> list[Move]:
    """Moves from stages above `target` to stages below it, biggest shortfall first."""
    surplus = [min(view.movable[i], view.serving[i] - target[i]) for i in range(len(target))]
    deficit = [target[i] - view.serving[i] for i in range(len(target))]
    moves: list[Move] = []
    for to in sorted(range(len(target)), key=lambda i: -deficit[i]):
        for src in sorted(range(len(target)), key=lambda i: -surplus[i]):
            count = min(deficit[to], surplus[src], limit)
            if to == src or count <= 0:
                continue
            moves.append(Move(src, to, count, reason))
            deficit[to] -= count
            surplus[src] -= count
            limit -= count
    return moves


def fitting_split(costs: list[float], caps: list[int], view: PolicyInput) -> list[int]:
    """Balanced split over the stages a rank can hold; a stage that doesn't fit in a rank's
    memory keeps the ranks it has (none move in, none are taken away)."""
    frozen = [not fits for fits in view.fits]
    free = view.ranks - sum(n for n, f in zip(view.serving, frozen) if f)
    split = balanced_split([0.0 if f else c for c, f in zip(costs, frozen)], free, caps, view.fits)
    return [view.serving[i] if frozen[i] else split[i] for i in range(len(costs))]


def adaptive(view: PolicyInput, settings: AdaptiveSettings = AdaptiveSettings()) -> list[Move]:
    costs, caps = lookahead(view, settings.window)
    target = fitting_split(costs, caps, view)
    if list(target) == list(view.serving):
        return []
    now_rate = throughput([min(s, c) for s, c in zip(view.serving, caps)], costs)
    new_rate = throughput(target, costs)
    if new_rate <= now_rate:
        return []
    units = max(taken for taken in (q.head(math.ceil(settings.window * view.ranks))[0] for q in view.queues))
    saved = units / now_rate - units / new_rate if now_rate > 0 else math.inf
    cost = max(view.switch_s[i] for i in range(len(target)) if target[i] > view.serving[i])
    if saved < settings.margin * cost:
        return []
    limit = max(1, int(settings.max_move_share * view.ranks))
    reason = (f"rates {now_rate:.3g} -> {new_rate:.3g} units/s over the next {units} units "
              f"(saves {saved:.1f} s, move costs {cost:.1f} s)")
    return plan_moves(view, target, limit, reason)


def oracle(view: PolicyInput) -> list[Move]:
    """Balance on exactly the next unit of each stage, move at once, no margin: with exact costs
    (as the simulator gives it) this uses the best split of every phase, paying for the moves."""
    costs = [q.head(1)[1] for q in view.queues]
    caps = [q.units for q in view.queues]
    target = fitting_split(costs, caps, view)
    return plan_moves(view, target, view.ranks, "best split for the current phase")


def static(view: PolicyInput) -> list[Move]:
    """Never move: the layout the job starts with is the layout it ends with."""
    return []
