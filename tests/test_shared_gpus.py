"""The batch model of a staged layout on shared GPUs (bench/shared_gpus.py): fill, drain,
back-pressure and sharing, checked against what can be worked out by hand."""

from __future__ import annotations

import random

import pytest

from onepiece_hpc.bench.shared_gpus import data_parallel, simulate_batch


def test_a_pipeline_of_one_rank_a_stage_a_gpu_fills_and_drains():
    assert simulate_batch((1, 1, 1), (1, 1, 1), gpus=3, units=10).window_s == pytest.approx(12)  # 10 + 2 to fill
    assert simulate_batch((1, 1, 1), (0.1, 0.1, 1), gpus=3, units=10).window_s == pytest.approx(10.2)  # the last sets it


def test_ranks_sharing_one_gpu_keep_it_busy_and_a_chain_a_gpu_matches_data_parallel():
    one = simulate_batch((1, 1, 1), (1, 2, 3), gpus=1, units=10)
    assert one.window_s == pytest.approx(60) and one.efficiency == pytest.approx(1)
    chains = simulate_batch((2, 2, 2), (1, 2, 3), gpus=2, units=10)
    assert chains.window_s == pytest.approx(data_parallel((1, 2, 3), 2, 10).window_s)


def test_a_slow_stage_backs_up_the_pipeline_without_losing_a_unit():
    slow = simulate_batch((2, 1, 1), (0.1, 0.1, 5), gpus=4, units=8, slots=1)
    assert slow.window_s == pytest.approx(8 * 5 + 0.2) and slow.busy_gpu_s == pytest.approx(8 * 5.2)


@pytest.mark.parametrize("seed", range(20))
def test_no_batch_beats_the_work_or_one_units_path(seed):
    rng = random.Random(seed)
    stages = rng.randint(2, 4)
    layout = tuple(rng.randint(1, 4) for _ in range(stages))
    seconds = tuple(rng.uniform(0.01, 3) for _ in range(stages))
    gpus, units = rng.randint(1, 4), rng.randint(1, 40)
    run = simulate_batch(layout, seconds, gpus, units)
    assert run.units == units and run.busy_gpu_s == pytest.approx(units * sum(seconds))
    assert run.window_s >= max(run.busy_gpu_s / gpus, sum(seconds)) - 1e-9
    assert 0 < run.efficiency <= 1 + 1e-9


def test_a_layout_without_a_rank_for_a_stage_is_refused():
    with pytest.raises(ValueError, match="one rank at least a stage"):
        simulate_batch((1, 0, 1), (1, 1, 1), gpus=1, units=1)


def test_bench_layouts_holds_the_model_against_measured_records_and_names_a_bad_file(tmp_path):
    from support import REPO, invoke

    record = REPO / "bench/results/20261122T134848-sdxl-1024-4gpu.json"
    shown = invoke("bench", "layouts", str(record))
    assert shown.code == 0, shown.err
    static = next(line for line in shown.out.splitlines() if "| staged static |" in line)
    assert "| 4 | 96 | 1,4,3 | 1.308 | 1.283 | 1.019x" in static
    chosen = next(line for line in shown.out.splitlines() if line.startswith(record.name) and "| 2,4,4 |" in line)
    assert "| 1.187 | 1.253" in chosen  # data-parallel: the model's and the measured
    (tmp_path / "bad.json").write_text('{"runs": []}')
    (tmp_path / "torn.json").write_text('{"runs": [')
    for bad, words in (("bad.json", "not a GPU pipeline bench record"), ("torn.json", "not a JSON record"),
                       ("missing.json", "no such record")):
        refused = invoke("bench", "layouts", str(tmp_path / bad))
        assert refused.code == 2 and f"{tmp_path / bad}: {words}" in refused.err and "fix:" in refused.err
