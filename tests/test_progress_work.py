"""Progress you can trust (planning/work.py): an item's work counts its steps, guidance and size;
the ETA is the work left over the work rate, the same in the bar, `onepiece status` and rank 0's
live snapshot; a staged run keeps a live telemetry copy while it goes and a units table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from support import invoke, running, telemetry_of, wait_until, write_job

pytestmark = pytest.mark.timeout(300)


def test_an_item_s_work_counts_forwards_and_pixels():
    from onepiece_hpc.planning.work import item_work

    base = float(item_work(4, 1.0, 64, 64, 1))
    assert base == pytest.approx(4 * 64 * 64 / 1e6)
    assert float(item_work(4, 5.0, 64, 64, 1)) == pytest.approx(2 * base)   # guidance: two forwards a step
    assert float(item_work(8, 1.0, 64, 64, 1)) == pytest.approx(2 * base)
    assert float(item_work(4, 1.0, 64, 64, 17)) == pytest.approx(17 * base)
    assert float(item_work(4, 1.0, 128, 64, 1)) == pytest.approx(2 * base)


def test_equal_items_give_the_item_count_eta_and_heavy_items_left_a_longer_one():
    from onepiece_hpc.planning.work import work_progress

    times = np.arange(11.0)  # 11 commits of one item each, one a second: 1 item/s
    light = work_progress(11, 21, 11.0, 21.0, times, np.ones(11))
    assert light.rate_items_per_s == pytest.approx(1.0)
    assert light.eta_s == pytest.approx(10.0)  # 10 items left at 1 item/s
    heavy = work_progress(11, 21, 11.0, 11.0 + 10 * 5.0, times, np.ones(11))  # the 10 left are 5x the work
    assert heavy.eta_s == pytest.approx(50.0)
    assert heavy.work_share == pytest.approx(11 / 61)
    assert work_progress(0, 5, 0.0, 5.0, np.array([3.0]), np.array([1.0])).eta_s is None  # no rate yet
    assert work_progress(5, 5, 5.0, 5.0, np.array([]), np.array([])).eta_s == 0.0


def test_the_meter_takes_the_rate_over_units_of_several_items():
    from onepiece_hpc.planning.work import WorkMeter

    now = [0.0]
    meter = WorkMeter(items_total=40, work_total=40.0, clock=lambda: now[0])
    for _ in range(5):
        meter.add(4, 4.0)  # a unit of 4 items every 2 s
        now[0] += 2.0
    got = meter.progress()
    assert got.items_done == 20 and got.work_done == 20.0
    assert got.rate_items_per_s == pytest.approx(2.0)  # 16 items over the 8 s after the first commit
    assert got.eta_s == pytest.approx(10.0)


def _mixed_job(tmp_path, lines=8):
    """Half 2-step items, half 12-step items (a prompt line's own steps), in that order."""
    rows = [json.dumps({"prompt": f"p{i}", "steps": 2 if i < lines // 2 else 12}) for i in range(lines)]
    return write_job(tmp_path, rows, prompt_file="p.jsonl", prompts="p.jsonl",
                     params="{steps: 2, guidance: 1.0, height: 64, width: 64}")


def test_status_reports_work_and_its_eta_from_the_file(tmp_path):
    from onepiece_hpc.planning.work import item_work

    job = _mixed_job(tmp_path)
    output = tmp_path / "out" / "t.h5"
    assert invoke("run", job, "--monolithic").code == 0
    shown = invoke("status", output, "--json")
    info = json.loads(shown.out)
    expected = 4 * float(item_work(2, 1.0, 64, 64, 1)) + 4 * float(item_work(12, 1.0, 64, 64, 1))
    assert info["work_total"] == pytest.approx(expected)
    assert info["work_done"] == pytest.approx(expected)
    assert info["eta_s"] == 0.0 and info["items_done"] == 8
    assert "100% of the work" in invoke("status", output).out


def test_a_staged_run_keeps_a_live_record_while_it_goes_and_a_units_table(tmp_path):
    from onepiece_hpc.store.telemetry import read_runs

    # 96 units: about 16 s of work on an idle machine, well past the first live copy (5 s in)
    job = write_job(tmp_path, [f"prompt {i}" for i in range(96)],
                    params="{steps: 12, guidance: 5.0, height: 64, width: 64}")
    output = tmp_path / "out" / "t.h5"
    folder = output.parent / "t.h5.d" / "telemetry"
    with running("run", job, "-n", "4") as proc:
        wait_until(proc, lambda: any(folder.glob("run-*.live.h5")), "a live telemetry copy", deadline_s=240)
        live = read_runs([folder])
        assert len(live) == 1 and live[0].live and len(live[0].samples) > 0
        proc.wait(timeout=240)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert not list(folder.glob("run-*.live.h5"))  # the final record replaced it
    record = telemetry_of(output)
    assert not record.live and record.attrs["started_unix"] > 1.7e9
    units = record.units
    assert sorted(units["unit"].tolist()) == list(range(96))
    assert np.all(units["committed_t"] > units["dispatched_t"])
    assert np.all(units["dispatched_t"] >= 0)


def test_a_live_copy_gives_way_to_the_final_record(tmp_path):
    from onepiece_hpc.store.telemetry import UNIT_DTYPE, read_runs, save_record

    rows = np.array([(0, 1, 0.5, 1.5)], dtype=UNIT_DTYPE)
    save_record(tmp_path, 3, {"units": rows}, {"policy": "static"}, live=True, owner="o")
    save_record(tmp_path, 3, {"units": rows}, {"policy": "static"}, live=True, owner="o")  # replaced, not refused
    (run,) = read_runs([tmp_path])
    assert run.name == "run3" and run.live and run.units["committed_t"][0] == 1.5
    save_record(tmp_path, 3, {"units": rows}, {"policy": "static"}, live=False, owner="o")
    (run,) = read_runs([tmp_path])
    assert not run.live
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-0003.h5"]


def test_the_snapshot_names_each_stage_s_backlog_and_the_moves_by_kind(tmp_path):
    from onepiece_hpc.jobfile.loader import load_job
    from onepiece_hpc.planning.plan import plan_job
    from onepiece_hpc.runtime.manager.live import LiveBook
    from onepiece_hpc.runtime.manager.moves import MoveRecord
    from onepiece_hpc.runtime.manager.units import UnitBook
    from onepiece_hpc.runtime.messages import Heartbeat
    from onepiece_hpc.runtime.peers import RankInfo
    from onepiece_hpc.runtime.telemetry import Telemetry

    job = load_job(write_job(tmp_path, [f"p{i}" for i in range(6)]), [])
    plan = plan_job(job, "m", (64, 64), "cpu", [])
    telemetry = Telemetry()
    pending = np.ones(6, dtype=bool)
    book = LiveBook(plan, telemetry, pending, "out.h5")
    units = UnitBook(plan.unit_count, np.arange(plan.unit_count))
    for _ in range(3):
        unit = units.dispatch()
        book.dispatched(unit)
    units.commit(0)
    book.committed(0, 1)
    units.fail(1)
    book.failed(1, 1)

    def beat(rank, stage, backlog):
        return Heartbeat(rank, "busy", stage, -1, 1, 1.0, 0.5, 0.1, 2.0, 0.0, backlog, 100.0 * rank,
                         [1.0, 1.0, 1.0], [1, 1, 1], [2.0, 2.0, 2.0])
    for heartbeat in (beat(1, "encode", 2), beat(2, "denoise", 1), beat(3, "decode", 0)):
        telemetry.record(heartbeat)
    peers = [RankInfo(r, f"h{r}", 0) for r in range(4)]
    moves = [MoveRecord(1.0, 1, "encode", "denoise", "rebalance: rates 1 -> 2 units/s"),
             MoveRecord(2.0, 2, "decode", "denoise", "phase: best split for the current phase")]
    snap = book.snapshot("running", units, peers, moves)
    assert (snap.items_total, snap.items_done, snap.items_failed) == (6, 1, 1)
    assert [s.backlog for s in snap.stages] == [3, 2, 1]  # undispatched; encode's queue; denoise's queue
    assert snap.moves == 2 and snap.moves_by_reason == {"rebalance": 1, "phase": 1}
    assert [(r.rank, r.host, r.memory_mb) for r in snap.ranks] == [(1, "h1", 100.0), (2, "h2", 200.0),
                                                                  (3, "h3", 300.0)]
    rows = book.unit_rows()
    assert sorted(rows["unit"].tolist()) == [0, 1, 2]
    assert math.isnan(rows[rows["unit"] == 1]["committed_t"][0])  # failed: not committed
    assert math.isnan(rows[rows["unit"] == 2]["committed_t"][0])  # still in flight
    from onepiece_hpc.observe.live import LiveSnapshot

    again = LiveSnapshot.from_json(snap.to_json())
    assert again.items_done == 1 and again.stages[1].backlog == 2
