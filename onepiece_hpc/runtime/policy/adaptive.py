"""The adaptive policy: look a little ahead in the known batch, balance the stages' rates,
and move ranks only when the time saved pays for the move several times over.

Invariant: a decision reads only its PolicyInput and returns moves no larger than the movable
ranks and `max_move_share`; the time it takes grows with the stages and the queues' runs, never
with the ranks (a few splits of three stages each, whatever the job's size).
"""

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
    """Mean seconds per unit over each stage's next `window x ranks` units not yet started, and
    each stage's cap (a stage can't keep more ranks busy than it has units left).

    A stage's first `serving` units are (about) the ones its ranks hold now: those ranks are
    committed to them, so the split is balanced on the work after them. Counting them would keep
    a stage whose last long units are nearly done looking costly well after the long units have
    stopped arriving, and hold back the ranks the next stage needs (the workload shift's phase
    change, where denoise ranks then wait on a full decode stage)."""
    span = max(1, math.ceil(window * view.ranks))
    costs, caps = [], []
    for queue, serving in zip(view.queues, view.serving):
        units = queue.units
        taken, seconds = queue.head(span, skip=min(serving, units - 1))
        costs.append(seconds / taken if taken else 0.0)
        caps.append(units)
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
    """Move toward the best split that pays: among the balanced split and those where only some
    stages take ranks in, the one saving the most over the rest of the batch, net of its move."""
    costs, caps = lookahead(view, settings.window)
    now_rate = throughput([min(s, c) for s, c in zip(view.serving, caps)], costs)
    units = max(caps)  # a better split keeps its rate until the batch ends or the policy moves again
    best: tuple[float, list[int], float, float] | None = None
    for target in candidate_splits(costs, caps, view):
        new_rate = throughput(target, costs)
        if new_rate <= now_rate:
            continue
        saved = units / now_rate - units / new_rate if now_rate > 0 else math.inf
        cost = max(view.switch_s[i] for i in range(len(target)) if target[i] > view.serving[i])
        if saved >= settings.margin * cost and (best is None or saved - cost > best[0] - best[3]):
            best = (saved, target, new_rate, cost)
    if best is None:
        return []
    saved, target, new_rate, cost = best
    limit = max(1, int(settings.max_move_share * view.ranks))
    reason = (f"rebalance: rates {now_rate:.3g} -> {new_rate:.3g} units/s over the last {units} units "
              f"(saves {saved:.1f} s, move costs {cost:.1f} s)")
    return plan_moves(view, target, limit, reason)


def candidate_splits(costs: list[float], caps: list[int], view: PolicyInput) -> list[list[int]]:
    """The balanced split, and the best split for each set of stages allowed to take ranks in
    (the others keep at most what they serve): a stage whose weights load slowly, and that
    would gain only a rank or two, then can't veto a cheap move that the others need."""
    stages = range(len(costs))
    found: list[list[int]] = []
    for receiving in range(1, 2 ** len(costs)):
        held = [caps[i] if receiving >> i & 1 else min(caps[i], view.serving[i]) for i in stages]
        target = fitting_split(costs, held, view)
        if target != list(view.serving) and target not in found:
            found.append(target)
    return found


def oracle(view: PolicyInput) -> list[Move]:
    """Balance on exactly the next unit of each stage, move at once, no margin: with exact costs
    (as the simulator gives it) this uses the best split of every phase, paying for the moves."""
    costs = [q.head(1)[1] for q in view.queues]
    caps = [q.units for q in view.queues]
    target = fitting_split(costs, caps, view)
    return plan_moves(view, target, view.ranks, "phase: best split for the current phase")


def static(view: PolicyInput) -> list[Move]:
    """Never move: the layout the job starts with is the layout it ends with."""
    return []
