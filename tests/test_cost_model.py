"""The cost model's queues: run-length encoded in order, and bounded in length for the policy."""

from __future__ import annotations

import numpy as np

from onepiece_hpc.runtime.cost_model import runs_of


def test_equal_neighbours_make_one_run():
    assert runs_of(np.array([1.0, 1.0, 2.0, 2.0, 2.0, 1.0])) == ((2, 1.0), (3, 2.0), (1, 1.0))


def test_a_queue_of_many_costs_is_coarsened_with_its_units_and_work_kept():
    costs = np.random.default_rng(3).uniform(0.5, 5.0, size=3_000_001)
    runs = runs_of(costs, limit=2048)
    assert len(runs) <= 2048
    assert sum(n for n, _ in runs) == len(costs)
    assert abs(sum(n * c for n, c in runs) - costs.sum()) < 1e-6 * costs.sum()
