"""The makespan lower bound (sim/bound.py): no simulated policy ever beats it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from onepiece_hpc.runtime.policy import PolicySettings, make_policy
from onepiece_hpc.runtime.policy.adaptive import oracle
from onepiece_hpc.sim.bound import makespan_bound
from onepiece_hpc.sim.engine import Simulation
from onepiece_hpc.sim.scenario import Scenario, UnitClass

stage_seconds = st.tuples(*(st.floats(0.01, 20.0) for _ in range(3)))
scenarios = st.builds(
    lambda classes, load, capacity, noise: Scenario("random", tuple(UnitClass(n, s) for n, s in classes),
                                                    load_s=load, capacity=capacity, noise=noise),
    st.lists(st.tuples(st.integers(1, 25), stage_seconds), min_size=1, max_size=3),
    st.tuples(*(st.floats(0.0, 5.0) for _ in range(3))), st.integers(1, 4), st.sampled_from([0.0, 0.05, 0.3]))


@settings(deadline=None, max_examples=40)
@given(scenario=scenarios, split=st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
       seed=st.integers(0, 3))
def test_no_policy_finishes_before_the_bound(scenario, split, seed):
    ranks = sum(split)
    bound = makespan_bound(scenario.service_times(seed), ranks)
    adaptive = make_policy(PolicySettings(name="adaptive", interval_s=1.0, cooldown_s=2.0))
    for name, policy in (("static", None), ("adaptive", adaptive), ("oracle", oracle)):
        result = Simulation(scenario, split, policy, name, interval_s=1.0, cooldown_s=2.0, seed=seed).run()
        assert result.makespan_s >= bound.seconds * (1 - 1e-9), (name, result.makespan_s, bound)


def test_every_policy_meets_the_same_service_times():
    scenario = Scenario("s", (UnitClass(5, (0.1, 1.0, 0.5)),), load_s=(1.0, 1.0, 1.0), noise=0.2)
    assert np.array_equal(scenario.service_times(3), scenario.service_times(3))
    assert not np.array_equal(scenario.service_times(3), scenario.service_times(4))
    assert scenario.service_times(3).shape == (5, 3)


def test_one_unit_is_bounded_by_its_chain_and_many_units_by_their_work():
    one = makespan_bound(np.array([[1.0, 5.0, 2.0]]), ranks=100)
    assert one.seconds == pytest.approx(8.0)
    few = makespan_bound(np.array([[1.0, 5.0, 2.0], [0.1, 0.1, 0.1]]), ranks=100)
    assert few.seconds == pytest.approx(8.0) and few.binding == "chain"
    many = makespan_bound(np.tile([1.0, 5.0, 2.0], (400, 1)), ranks=10)
    assert many.seconds == pytest.approx(400 * 8.0 / 10) and many.binding == "fluid"


def test_a_simulation_with_one_rank_a_stage_meets_the_bound_when_one_stage_dominates():
    # a single denoise rank does all the work that matters: the bound is then nearly reached
    scenario = Scenario("tight", (UnitClass(50, (0.001, 2.0, 0.001)),), load_s=(0.0, 0.0, 0.0), noise=0.0)
    result = Simulation(scenario, (1, 1, 1), None, "static").run()
    bound = makespan_bound(scenario.service_times(0), 3)
    assert bound.seconds <= result.makespan_s <= 3.1 * bound.seconds
    assert makespan_bound(scenario.service_times(0), 1).seconds == pytest.approx(result.makespan_s, rel=0.01)
