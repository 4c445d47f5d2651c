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

    # a mode that ran in a call of its own is compared through its record (--compare)
    from onepiece_hpc.cli.bench_phased import earlier_record, table

    resident = earlier_record(tmp_path / "tiny-resident.json", REPO / "jobs" / "tiny.yaml", None)
    lines = table([phased], [resident]).splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows["resident*"][-1] == "1.000x"
    assert rows["phased"][-1] == f"{phased['s_per_output'] / resident['s_per_output']:.3f}x"
    assert lines[-1] == "* from an earlier call: tiny-resident.json"


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


def test_a_record_to_compare_that_does_not_fit_is_refused_before_any_mode_runs(tmp_path):
    damaged, other_job, other_cap = tmp_path / "damaged.json", tmp_path / "other.json", tmp_path / "cap.json"
    damaged.write_text('{"label": "resident", "job"')
    other_job.write_text(json.dumps({"label": "resident", "job": "jobs/sdxl.yaml", "items": 1, "s_per_output": 1.0}))
    other_cap.write_text(json.dumps({"label": "group-offload", "job": "jobs/tiny.yaml", "items": 1,
                                     "s_per_output": 1.0, "gpu_memory_gib": 48.0}))
    for record, said in [(tmp_path / "absent.json", "not a readable record"), (damaged, "not a readable record"),
                         (other_job, "a record of jobs/sdxl.yaml"), (other_cap, "measured under a cap of 48.0 GiB")]:
        done = run_cli("bench", "phased", REPO / "jobs" / "tiny.yaml", "--modes", "resident:1",
                       "--gpu-memory-gib", "40", "--compare", record, "--results", tmp_path / "kept")
        assert done.returncode == 2, done.stderr
        assert f"--compare {record}: {said}" in done.stderr and "fix:" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "kept").exists()
