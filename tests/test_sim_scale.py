"""Rank 0's load (sim/control_plane.py), its measured capacity (sim/control_bench.py) and the
scale-out report of `onepiece simulate --scale`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from onepiece_hpc.cli.main import cli
from onepiece_hpc.sim.control_bench import measure_costs
from onepiece_hpc.sim.control_plane import ControlCosts, ControlModel, Workload, rank0_load
from onepiece_hpc.sim.engine import Simulation
from onepiece_hpc.sim.scenario import Scenario, UnitClass

COSTS = ControlCosts(request_s=1e-4, heartbeat_s=1e-4, commit_s=1e-3, commit_byte_s=1e-8)


def test_the_closed_form_counts_the_runtimes_messages():
    load = rank0_load(Workload("w", gpu_s_per_unit=5.0, items_per_unit=1, item_bytes=10**6), 1000, COSTS,
                      heartbeat_s=2.0)
    assert load.commits_per_s == pytest.approx(200.0)
    assert load.messages_per_s == pytest.approx(2 * 200 + 500)  # request + grant a unit, a heartbeat a rank
    assert load.writer_share == pytest.approx(200 * (1e-3 + 1e-2))
    assert load.manager_share == pytest.approx(200 * 1e-4 + 500 * 1e-4)
    assert not load.holds and load.max_gpus == int(1000 / load.busy_share)


def scenario(units: int) -> Scenario:
    return Scenario("steady", (UnitClass(units, (0.01, 1.0, 1.0)),), load_s=(0.1, 0.1, 0.1), noise=0.0)


def test_a_slow_writer_bounds_the_run_and_writers_per_node_remove_it():
    slow = ControlCosts(request_s=1e-4, heartbeat_s=1e-5, commit_s=0.25, commit_byte_s=0.0)
    case, split = scenario(320), (2, 31, 31)
    free = Simulation(case, split, None, "free").run()
    one = Simulation(case, split, None, "one", control=ControlModel(64, slow, 0)).run()
    hier = Simulation(case, split, None, "hier", control=ControlModel(64, slow, 0, node_size=8)).run()
    assert one.makespan_s >= 320 * 0.25  # every commit passes one writer
    assert one.control["commits_per_s"] == pytest.approx(320 / one.makespan_s)
    assert hier.makespan_s < 1.2 * free.makespan_s < one.makespan_s
    assert hier.control["commits_per_s"] == 0.0  # rank 0 gets notes, not outputs
    assert hier.control["messages_per_s"] < one.control["messages_per_s"]


def test_a_manager_drowned_in_heartbeats_never_finishes():
    drowned = ControlCosts(request_s=1e-4, heartbeat_s=0.02, commit_s=1e-3, commit_byte_s=0.0)
    result = Simulation(scenario(64), (1, 6, 6), None, "one", control=ControlModel(100, drowned, 0)).run()
    assert math.isinf(result.makespan_s)
    hier = Simulation(scenario(64), (1, 6, 6), None, "hier", control=ControlModel(100, drowned, 0, node_size=8)).run()
    assert math.isfinite(hier.makespan_s)


def test_the_real_commit_and_message_paths_are_measured(tmp_path: Path):
    costs = measure_costs(tmp_path, quick=True)
    assert 0 < costs.request_s < 0.05 and 0 < costs.heartbeat_s < 0.05
    assert 0 < costs.commit_s < 0.5 and costs.commit_byte_s >= 0
    assert not list(tmp_path.iterdir())  # the benchmark's outputs are gone


def test_simulate_reports_the_bound():
    out = CliRunner().invoke(cli, ["simulate", "--scenario", "workload-shift", "-r", "8", "--json"])
    assert out.exit_code == 0, out.output
    records = [json.loads(line) for line in out.output.splitlines()]
    assert {r["policy"] for r in records} == {"static-best", "adaptive", "oracle"}
    for r in records:
        assert r["makespan_s"] >= r["bound_s"] > 0
        assert r["adaptive_over_bound"] >= 1.0
