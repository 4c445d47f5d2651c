"""The pure choice of which ranks move (runtime/policy/movers.py): properties over random fleets
and policy answers, as the Node Manager and the simulator both call it."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from onepiece_hpc.runtime.policy import Move, StageQueue
from onepiece_hpc.runtime.policy.adaptive import AdaptiveSettings, adaptive
from onepiece_hpc.runtime.policy.movers import Fleet, choose_movers, counts, fleet_input, stage_fits

NOW = 10.0


@st.composite
def fleets(draw, with_gpus: bool = True):
    stages = draw(st.integers(1, 5))
    n = draw(st.integers(1, 24))
    gpu_choices = st.one_of(st.none(), st.tuples(st.sampled_from(["n1", "n2"]), st.integers(0, 3))) if with_gpus \
        else st.none()
    rows = draw(st.lists(st.tuples(st.integers(0, stages - 1), st.booleans(), st.sampled_from([0.0, NOW, NOW + 5]),
                                   st.integers(0, 4), st.sampled_from([0.0, 10.0, 20.0]), gpu_choices),
                         min_size=n, max_size=n))
    ranks = draw(st.permutations(range(1, n + 1)))  # the routes' order is not the ranks' order
    needs = draw(st.lists(st.sampled_from([0.0, 5.0, 15.0, 30.0]), min_size=stages, max_size=stages))
    return Fleet(ranks=tuple(ranks), stage=tuple(r[0] for r in rows), moving=tuple(r[1] for r in rows),
                 cool_until=tuple(r[2] for r in rows), load=tuple(float(r[3]) for r in rows),
                 memory_limit_mb=tuple(r[4] for r in rows), gpu=tuple(r[5] for r in rows), needs_mb=tuple(needs))


@st.composite
def decisions(draw, with_gpus: bool = True):
    """A fleet, its policy view (some stages with work left) and a list of moves between stages."""
    fleet = draw(fleets(with_gpus))
    work = draw(st.lists(st.booleans(), min_size=fleet.stages, max_size=fleet.stages))
    queues = [StageQueue(((3, 1.0),) if left else ()) for left in work]
    view = fleet_input(fleet, NOW, queues, (1.0,) * fleet.stages)
    pairs = [(s, t) for s in range(fleet.stages) for t in range(fleet.stages) if s != t]
    moves = draw(st.lists(st.tuples(st.sampled_from(pairs), st.integers(1, 6)), max_size=4)) if pairs else []
    return fleet, view, [Move(s, t, c, f"move {i}") for i, ((s, t), c) in enumerate(moves)]


def _position(fleet: Fleet) -> dict[int, int]:
    return {rank: i for i, rank in enumerate(fleet.ranks)}


@settings(deadline=None, max_examples=300)
@given(decisions())
def test_chosen_ranks_respect_every_rule(decision):
    fleet, view, moves = decision
    chosen = choose_movers(fleet, view, moves)
    at = _position(fleet)
    assert len({m.rank for m in chosen}) == len(chosen), "a rank chosen twice"
    for move in moves:
        mine = [m for m in chosen if m.reason == move.reason]
        assert len(mine) <= move.count
        for m in mine:
            i = at[m.rank]
            assert (m.source, m.target) == (move.source, move.target)
            assert fleet.stage[i] == move.source and not fleet.moving[i] and fleet.cool_until[i] <= NOW
            assert fleet.holds(i, move.target)
    staying = Counter(fleet.stage[i] for i in range(len(fleet.ranks)) if not fleet.moving[i])
    staying.subtract(m.source for m in chosen)
    for stage in range(fleet.stages):
        if view.queues[stage].units and any(not fleet.moving[i] and fleet.stage[i] == stage
                                            for i in range(len(fleet.ranks))):
            assert staying[stage] >= 1, f"stage {stage} has work left and lost its last rank"
    # no rank joins a stage on a GPU that runs it after this decision (ranks leaving it free their GPU)
    chosen_ranks = {m.rank for m in chosen}
    for target in range(fleet.stages):
        stays = [i for i in range(len(fleet.ranks)) if fleet.stage[i] == target and fleet.ranks[i] not in chosen_ranks]
        joins = [at[m.rank] for m in chosen if m.target == target]
        for i in joins:
            others = [fleet.gpu[j] for j in stays + joins if j != i]
            assert fleet.gpu[i] is None or fleet.gpu[i] not in others, (fleet.ranks[i], target)


@settings(deadline=None, max_examples=300)
@given(decisions(with_gpus=False))
def test_the_least_loaded_go_first_and_no_eligible_rank_is_left_behind(decision):
    fleet, view, moves = decision
    chosen = choose_movers(fleet, view, moves)
    at = _position(fleet)
    taken = {m.rank for m in chosen}
    left = Counter(fleet.stage[i] for i in range(len(fleet.ranks)) if not fleet.moving[i])
    for move in moves:
        mine = [at[m.rank] for m in chosen if m.reason == move.reason]
        left[move.source] -= len(mine)
        eligible = [i for i in range(len(fleet.ranks)) if fleet.ranks[i] not in taken and fleet.stage[i] == move.source
                    and not fleet.moving[i] and fleet.cool_until[i] <= NOW and fleet.holds(i, move.target)]
        if mine and eligible:
            assert max(fleet.load[i] for i in mine) <= min(fleet.load[i] for i in eligible)
        keep = 1 if view.queues[move.source].units else 0
        if len(mine) < move.count and left[move.source] > keep:
            assert not eligible, "a rank that could have moved stayed"


@settings(deadline=None, max_examples=100)
@given(decisions())
def test_the_choice_is_deterministic(decision):
    fleet, view, moves = decision
    assert choose_movers(fleet, view, moves) == choose_movers(fleet, view, list(moves))


@settings(deadline=None, max_examples=200)
@given(fleets())
def test_the_view_counts_every_rank_once_and_fits_where_a_rank_could_move_in(fleet):
    serving, movable = counts(fleet, NOW)
    assert sum(serving) == len(fleet.ranks)
    assert all(0 <= m <= s for m, s in zip(movable, serving))
    fits = stage_fits(fleet)
    for stage in range(fleet.stages):
        could = any(not fleet.moving[i] and fleet.stage[i] != stage and fleet.holds(i, stage)
                    for i in range(len(fleet.ranks)))
        assert fits[stage] == could


def test_the_policy_and_the_mover_choice_together_move_idle_encode_ranks():
    # three encode ranks with no work left, one of them cooling down, one mid-move: of the
    # others, the least loaded go to denoise, the one that holds most stays
    fleet = Fleet(ranks=(1, 2, 3, 4, 5, 6, 7), stage=(0, 0, 0, 0, 1, 2, 1), moving=(False,) * 6 + (True,),
                  cool_until=(0.0, NOW + 1, 0.0, 0.0, 0.0, 0.0, 0.0), load=(2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
                  memory_limit_mb=(0.0,) * 7, gpu=(None,) * 7, needs_mb=(0.0, 0.0, 0.0))
    view = fleet_input(fleet, NOW, [StageQueue(()), StageQueue(((40, 10.0),)), StageQueue(((40, 1.0),))], (1.0,) * 3)
    assert view.serving == (4, 2, 1) and view.movable == (3, 1, 1)
    moves = adaptive(view, AdaptiveSettings(max_move_share=1.0))
    assert moves and all(m.source == 0 for m in moves) and sum(m.count for m in moves) >= 2
    chosen = [m.rank for m in choose_movers(fleet, view, moves)]
    assert chosen[:2] == [3, 4] and 2 not in chosen


def test_a_fleet_with_ragged_columns_is_refused():
    with pytest.raises(ValueError, match="one entry per rank"):
        Fleet(ranks=(1, 2), stage=(0,), moving=(False, False), cool_until=(0.0, 0.0), load=(0.0, 0.0),
              memory_limit_mb=(0.0, 0.0), gpu=(None, None), needs_mb=(0.0,))
