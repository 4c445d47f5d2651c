"""The runtime's state machines (runtime/states.py) and their holders: a unit's life at rank 0,
a stage rank's life and work supply. An illegal change names the unit or rank and both states."""

from __future__ import annotations

import numpy as np
import pytest

from onepiece_hpc.runtime.manager.units import UnitBook
from onepiece_hpc.runtime.messages import RankState, WorkGrant
from onepiece_hpc.runtime.rank_state import RankLife, WorkSupply
from onepiece_hpc.runtime.states import (
    RANK_TRANSITIONS, SEAT_TRANSITIONS, SUPPLY_TRANSITIONS, UNIT_TRANSITIONS, IllegalTransition, RankSeat, Supply,
    UnitState,
)

TABLES = [(UNIT_TRANSITIONS, UnitState, UnitState.PLANNED), (RANK_TRANSITIONS, RankState, RankState.LOADING),
          (SUPPLY_TRANSITIONS, Supply, Supply.READY), (SEAT_TRANSITIONS, RankSeat, RankSeat.SERVING)]


@pytest.mark.parametrize("table, kind, start", TABLES, ids=[t[1].__name__ for t in TABLES])
def test_every_state_has_a_row_and_is_reachable_from_the_first(table, kind, start):
    assert set(table) == set(kind)
    reached, frontier = {start}, [start]
    while frontier:
        for after in table[frontier.pop()]:
            if after not in reached:
                reached.add(after)
                frontier.append(after)
    assert set(kind) - {UnitState.SKIPPED} <= reached  # a skipped unit is born so: this run leaves it


def test_a_units_life_runs_in_dispatch_order_and_ends_once():
    book = UnitBook(6, np.array([4, 1, 2], dtype=np.int64))
    assert book.state(0) is UnitState.SKIPPED and book.state(4) is UnitState.PLANNED
    assert [book.dispatch(), book.dispatch()] == [4, 1]
    assert book.planned == 1 and book.in_flight == 2 and list(book.flying()) == [1, 4]
    assert list(book.undispatched()) == [2]
    book.commit(4)
    book.fail(1)
    assert (book.state(4), book.state(1)) == (UnitState.COMMITTED, UnitState.FAILED)
    assert book.unfinished and book.in_flight == 0
    book.commit(book.dispatch())
    assert not book.unfinished


@pytest.mark.parametrize("steps, words", [
    (lambda b: (b.dispatch(), b.commit(0), b.commit(0)), "unit 0: committed -> committed"),
    (lambda b: b.commit(1), "unit 1: planned -> committed"),
    (lambda b: b.fail(3), "unit 3: skipped -> failed"),
    (lambda b: (b.dispatch(), b.fail(0), b.commit(0)), "unit 0: failed -> committed"),
])
def test_an_illegal_unit_change_names_the_unit_and_both_states(steps, words):
    book = UnitBook(4, np.array([0, 1, 2], dtype=np.int64))
    with pytest.raises(IllegalTransition, match=words):
        steps(book)


def test_a_ranks_life_through_a_move():
    life = RankLife(5)
    life.serve()
    life.order("decode", version=3, reason="test")
    assert life.state is RankState.DRAINING and life.moving.to == "decode"
    life.fenced(3, 1)
    life.fenced(2, 2)  # a fence of other routes does not count
    assert not life.fences_in([1, 2])
    life.fenced(3, 2)
    assert life.fences_in([1, 2])
    assert life.switch().to == "decode" and life.state is RankState.LOADING
    life.arrived()
    assert life.state is RankState.SERVING and life.moving is None
    life.done()
    life.fail()  # a life that has ended stays as it ended
    assert life.state is RankState.DONE


def test_a_move_ordered_to_a_rank_that_is_moving_names_the_rank_and_both_states():
    life = RankLife(7)
    with pytest.raises(IllegalTransition, match="rank 7: loading -> draining"):
        life.order("decode", 1, "too early")
    life.serve()
    life.order("decode", 1, "first")
    with pytest.raises(IllegalTransition, match=r"rank 7: draining -> draining .*from draining: done, failed, loading"):
        life.order("encode", 2, "second")


def test_the_work_supply_asks_once_and_stops_asking_when_none_is_left():
    supply = WorkSupply(2)
    assert supply.may_ask and supply.take() is None
    with pytest.raises(IllegalTransition, match="rank 2's work supply: ready -> granted"):
        supply.granted(WorkGrant(4))
    supply.asked()
    assert not supply.may_ask and supply.awaited
    supply.granted(WorkGrant(4))
    assert supply.awaited and supply.take() == WorkGrant(4) and supply.may_ask
    supply.asked()
    supply.granted(WorkGrant(-1))
    assert supply.take().unit == -1 and supply.state is Supply.EXHAUSTED and not supply.may_ask
    supply.renew()
    assert supply.may_ask
