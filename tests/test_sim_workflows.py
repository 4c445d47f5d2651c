"""The simulator over any topology: the five-stage keyframe-video workflow at 4,096 ranks with
the runtime's own policy and mover choice, profiles of any stages, and the static-best search."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from onepiece_hpc.cli.main import cli
from onepiece_hpc.jobfile.job import PolicySettings
from onepiece_hpc.sim.compare import compare, fluid_makespans, static_candidates
from onepiece_hpc.sim.inputs import load_profile
from onepiece_hpc.sim.scenario import Scenario, UnitClass
from onepiece_hpc.sim.workflows import KEYFRAME_VIDEO_H200, WAN_1_3B_H200, keyframe_video
from onepiece_hpc.topology import StageDef, Topology

REPO = Path(__file__).resolve().parents[1]
FIVE = ("text_encode", "image_denoise", "image_decode", "video_denoise", "video_decode")


def _simulate(*args: str) -> tuple[list[dict], float]:
    began = time.perf_counter()
    out = CliRunner().invoke(cli, ["simulate", *args, "--json"])
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.output.splitlines()], time.perf_counter() - began


@pytest.mark.timeout(240)
def test_the_five_stage_workflow_runs_at_4096_ranks_as_a_user_runs_it():
    records, seconds = _simulate("--scenario", "keyframe-video", "-r", "4096", "--items-per-rank", "2")
    assert [r["policy"] for r in records] == ["static-best", "adaptive", "oracle"]
    for r in records:
        assert r["stages"] == list(FIVE) and list(r["utilisation"]) == list(FIVE)
        assert r["ranks"] == sum(r["split_start"]) == 4096 and r["units"] == 8192
        assert r["stage_units"] == [8192] * 5                  # every unit passed every stage
        assert r["makespan_s"] >= r["bound_s"] > 0
        assert 0 < r["efficiency"] <= 1 and r["throughput"] == pytest.approx(8192 / r["makespan_s"])
        for route in r["routes_moved"]:
            source, target = route.split(" -> ")
            assert source in FIVE and target in FIVE and source != target
    adaptive = records[1]
    assert adaptive["moves"] > 0 and sum(adaptive["routes_moved"].values()) == adaptive["moves"]
    assert any(route.endswith("-> video_denoise") for route in adaptive["routes_moved"])  # the phase change
    assert seconds < 200, f"the 4,096-rank workflow took {seconds:.0f} s"


def test_adaptive_follows_the_workflows_phase_change_and_beats_every_static_split():
    static_best, adapted, best_oracle = compare(keyframe_video(64), 64, PolicySettings(name="adaptive",
                                                                                        interval_s=5.0,
                                                                                        cooldown_s=30.0))
    assert adapted.makespan_s < 0.9 * static_best.makespan_s
    assert (static_best.makespan_s - adapted.makespan_s) >= 0.5 * (static_best.makespan_s - best_oracle.makespan_s)
    assert adapted.efficiency > static_best.efficiency
    assert adapted.stage_units == (64 * 30,) * 5


def test_the_workflows_costs_are_the_measured_ones():
    measured, _ = load_profile(REPO / "bench/profiles/wan13b-h200.yaml")
    assert measured == WAN_1_3B_H200
    video = {s.name: s for s in KEYFRAME_VIDEO_H200.stages}
    assert video["video_denoise"].seconds == measured.stages[1].seconds
    assert video["video_decode"].seconds == measured.stages[2].seconds
    assert KEYFRAME_VIDEO_H200.topology.names == FIVE


def test_a_profile_of_any_stages_drives_the_workload_shift(tmp_path):
    profile = tmp_path / "four.yaml"
    profile.write_text("host_gbps: 10\nstages:\n"
                       "  - {name: encode, seconds: 0.05, weights_gib: 1}\n"
                       "  - {name: denoise, seconds: 0.5, per: forward, weights_gib: 3}\n"
                       "  - {name: decode, seconds: 2.0, weights_gib: 0.3}\n"
                       "  - {name: upscale, seconds: 1.5, weights_gib: 0.5}\n", encoding="utf-8")
    records, _ = _simulate("--scenario", "workload-shift", "--profile", str(profile), "-r", "16",
                           "--items-per-rank", "4")
    assert all(r["stages"] == ["encode", "denoise", "decode", "upscale"] for r in records)
    assert all(r["stage_units"] == [64] * 4 for r in records)


@pytest.mark.parametrize("text, words", [
    ("stages:\n  - {name: encode, seconds: 0.05, weights_gib: 1, per: step}\n", "stages[0].per 'step': choose item or forward"),
    ("stages:\n  - {name: Encode, seconds: 0.05, weights_gib: 1}\n  - {name: b, seconds: -1, weights_gib: 1}\n",
     "2 problem(s)"),
    ("stages:\n  - {name: a}\n", "stages[0]: a mapping with name, seconds, weights_gib"),
    ("stages: []\n", "`stages` must be a list"),
])
def test_a_bad_profile_is_refused_naming_the_field_and_the_fix(tmp_path, text, words):
    profile = tmp_path / "bad.yaml"
    profile.write_text(text, encoding="utf-8")
    out = CliRunner().invoke(cli, ["simulate", "--scenario", "workload-shift", "--profile", str(profile), "-r", "8"])
    assert out.exit_code == 2 and words in out.output and "Traceback" not in out.output, out.output


def test_too_few_ranks_and_a_profile_of_other_stages_are_refused():
    out = CliRunner().invoke(cli, ["simulate", "--scenario", "keyframe-video", "-r", "4"])
    assert out.exit_code == 2 and "give at least 5 ranks" in out.output, out.output
    out = CliRunner().invoke(cli, ["simulate", "--scenario", "keyframe-video", "--profile",
                                   str(REPO / "bench/profiles/wan13b-h200.yaml"), "-r", "8"])
    assert out.exit_code == 2 and "text_encode -> image_denoise" in out.output, out.output


def test_a_scenario_whose_rows_do_not_match_its_stages_is_refused():
    with pytest.raises(ValueError, match=r"5 stages .*load_s has 3; classes\[0\].seconds has 3"):
        Scenario("short", (UnitClass(3, (1.0, 1.0, 1.0)),), load_s=(1.0, 1.0, 1.0), topology=KEYFRAME_VIDEO_H200.topology)


def _exhaustive(scenario: Scenario, ranks: int) -> float:
    stages = len(scenario.topology)
    splits = np.array([c for c in itertools.product(range(1, ranks), repeat=stages) if sum(c) == ranks])
    return float(fluid_makespans(scenario, splits).min())


@settings(deadline=None, max_examples=60)
@given(stages=st.integers(2, 5), ranks=st.integers(5, 12),
       classes=st.lists(st.tuples(st.integers(1, 40), st.lists(st.floats(0.01, 20.0), min_size=5, max_size=5)),
                        min_size=1, max_size=3))
def test_the_static_search_finds_the_best_split_of_small_cases(stages, ranks, classes):
    topology = Topology(tuple(StageDef(f"s{i}") for i in range(stages)))
    scenario = Scenario("random", tuple(UnitClass(n, tuple(s[:stages])) for n, s in classes),
                        load_s=(1.0,) * stages, topology=topology)
    found = static_candidates(scenario, ranks)
    assert all(sum(split) == ranks and min(split) >= 1 for split in found)
    assert float(fluid_makespans(scenario, np.array(found[:1]))[0]) <= _exhaustive(scenario, ranks) * (1 + 1e-9)
