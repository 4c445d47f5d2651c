"""`onepiece bench phased`: every mode in its own process, one table against the best plain mode
of the same call, records kept; a bad --modes word is refused with exit 2 (on CPU, tiny model)."""

from __future__ import annotations

import json

import pytest

from support import REPO, run_cli

pytestmark = pytest.mark.timeout(400)


def test_the_bench_runs_each_mode_and_gives_ratios_against_the_plain_loop(tmp_path):
    done = run_cli("bench", "phased", REPO / "jobs" / "tiny.yaml", "--modes", "resident:2 phased:2", "--phase", "2",
                   "--results", tmp_path, timeout=360)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:]}
    assert rows["resident"][-1] == "1.000x" and rows["phased"][-1].endswith("x")
    phased = json.loads((tmp_path / "tiny-phased.json").read_text())
    assert phased["mode"] == "phased" and phased["items"] == 2 and phased["phase"] == 2
    assert phased["warm_steps"] == phased["steps"]  # the unit off the clock is one of the job's
    assert (tmp_path / "tiny-resident.log").exists()


def test_the_unit_off_the_clock_can_run_fewer_steps(tmp_path):
    done = run_cli("bench", "phased", REPO / "jobs" / "tiny.yaml", "--modes", "resident:1", "--warm-steps", "1",
                   "--results", tmp_path, timeout=360)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "tiny-resident.json").read_text())
    assert record["warm_steps"] == 1 and record["steps"] > 1


def test_a_bad_mode_word_is_refused():
    from onepiece_hpc.cli.bench_phased import parse_modes

    assert parse_modes("capped-resident:3 phased:8") == [("capped-resident", 3), ("phased", 8)]
    done = run_cli("bench", "phased", REPO / "jobs" / "tiny.yaml", "--modes", "phased:0")
    assert done.returncode == 2 and "--modes: 'phased:0'" in done.stderr and "Traceback" not in done.stderr


def test_on_several_gpus_each_gpu_runs_its_share_and_the_figure_is_gpu_seconds(tmp_path):
    done = run_cli("bench", "phased", REPO / "jobs" / "tiny.yaml", "--modes", "resident:3", "--gpus", "2",
                   "--results", tmp_path, timeout=360)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "tiny-resident.json").read_text())
    assert record["gpus"] == 2 and [part["items"] for part in record["per_gpu"]] == [2, 2]  # 3 items: 2 a GPU
    assert record["items"] == 4 and record["wall_s"] == max(part["wall_s"] for part in record["per_gpu"])
    assert record["s_per_output"] == pytest.approx(2 * record["wall_s"] / 4)
