"""`onepiece report`: one HTML file that opens in a browser with no error and every plot drawn, for a
staged elastic run (with moves, also while it runs), a merged sweep with per-shard progress, a
one-process output and a video output with a failed item; its data side (timeline bars and the
grid for huge runs, latency, throughput, stage use, shard progress, writer state) checked on
records made to measure; a damaged or foreign file refused with exit 2."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from onepiece_hpc.report import series, timeline
from onepiece_hpc.report.build import render_report, write_report
from onepiece_hpc.report.contact_sheet import MAX_THUMBS, pick_evenly
from onepiece_hpc.report.output_data import COMPLETE, IN_PROGRESS, STOPPED, read_output_facts, writer_state
from onepiece_hpc.report.telemetry_sections import NO_STAGED_RUN
from onepiece_hpc.store import journal
from onepiece_hpc.store.reader import view_of
from onepiece_hpc.store.telemetry import SAMPLE_DTYPE, STAGE_DTYPE, UNIT_DTYPE, write_telemetry
from report_browser import browser_missing, check_page
from support import (
    REPO, done_count, i2v_job, invoke, rank_pids, running, tamper, undecodable_png, wait_until, write_job,
)

pytestmark = pytest.mark.timeout(900)

SKEWED = {"encode": 3, "denoise": 1, "decode": 1}  # a denoise-heavy batch on three encode ranks: ranks must move
EAGER = {"name": "adaptive", "interval_s": 0.3, "cooldown_s": 0.5, "margin": 0.0}
STAGED_PLOTS = {"throughput", "latency", "timeline-run0", "stages-run0", "memory-run0", "backlog-run0"}
# Every page's screenshot is kept in build/screenshots (ignored by git). ONEPIECE_UPDATE_DOCS_IMAGES=1 also puts
# the staged run's in docs/images, where the README shows it; a test run changes no tracked file otherwise.
SCREENSHOTS = REPO / "build/screenshots"
DOCS_SCREENSHOT = REPO / "docs/images/report.png"


# -- outputs to report on --------------------------------------------------------------------------------
def _workload_shift(folder: Path) -> Path:
    """jobs/workload-shift.yaml cut to 32 items (12 heavy, then 20 light), on skewed stages with an eager
    policy, writing into `folder`."""
    job = yaml.safe_load((REPO / "jobs/workload-shift.yaml").read_text())
    lines = (REPO / "jobs" / job["prompts"]).read_text().splitlines()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "p.jsonl").write_text("\n".join(lines[:12] + lines[24:44]) + "\n")
    job.update(prompts="p.jsonl", stages=SKEWED, policy=EAGER, output=str(folder / "out/ws.h5"))
    path = folder / "workload-shift.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> dict:
    """A staged elastic run of the workload-shift job, and a report made while it ran."""
    root = tmp_path_factory.mktemp("report-staged")
    job = _workload_shift(root)
    output = root / "out/ws.h5"
    with running("run", job, "-n", "6", "--wait-timeout", "120") as proc:
        wait_until(proc, lambda: done_count(output) >= 2, "the first commits")
        writer = rank_pids(str(job))[0]
        os.kill(writer, signal.SIGSTOP)  # the run can't finish while its report is made (a loaded machine)
        try:
            live = write_report(output, root / "live.html")
            live_facts = read_output_facts(view_of(output))
        finally:
            os.kill(writer, signal.SIGCONT)
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return {"output": output, "live": live, "live_facts": live_facts, "root": root}


def _copy_output(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    shutil.copytree(f"{source}.d", f"{target}.d", ignore=shutil.ignore_patterns("lock"))
    return target


@pytest.fixture(scope="module")
def monolithic(tmp_path_factory) -> dict[str, Path]:
    """Two one-process outputs of other prompts than the staged job's."""
    root = tmp_path_factory.mktemp("report-mono")
    made = {}
    for name, prompts in {"a": ["a harbour at noon", "a snowy owl", "a tin robot"],
                          "b": ["a paper boat", "a red kite", "a field of poppies", "a lighthouse"]}.items():
        job = write_job(root / name, prompts, name=f"shard-{name}", output=str(root / f"{name}.h5"))
        assert invoke("run", job, "--monolithic").code == 0
        made[name] = root / f"{name}.h5"
    return made


@pytest.fixture(scope="module")
def sweep(staged, monolithic, tmp_path_factory) -> Path:
    """A merged sweep of three shards: the staged run (done, with telemetry), shard a with a failed item,
    shard b with two items missing."""
    folder = tmp_path_factory.mktemp("report-sweep") / "tiny-sweep"
    _copy_output(staged["output"], folder / "00000.h5")
    first = _copy_output(monolithic["a"], folder / "00001.h5")
    second = _copy_output(monolithic["b"], folder / "00002.h5")
    tamper(first, [1], done=0)
    journal.append(Path(f"{first}.d") / "journal.jsonl", journal.failed_record(
        0, 1, 2, "encode", "monolithic", "OSError: broken data stream when reading image file", "2026-12-02T00:00:00"))
    tamper(second, [2, 3], done=0)
    merged = invoke("merge", folder)
    assert merged.code == 0, merged.err
    return folder / "merged.h5"


def _browse(html: Path, shot: Path):
    why = browser_missing()
    if why:
        pytest.skip(f"no headless browser: {why}")
    page = check_page(html, shot)
    assert page.console_errors == [] and page.page_errors == [], (page.console_errors, page.page_errors)
    assert page.requests == []  # self-contained: nothing fetched
    assert shot.stat().st_size > 0
    _keep_small(shot, SCREENSHOTS / shot.name)
    return page


# -- in the browser -------------------------------------------------------------------------------------------
@pytest.mark.mpi
@pytest.mark.slow
def test_a_staged_elastic_run_reports_every_plot_and_its_moves(staged, tmp_path, monkeypatch):
    output = staged["output"]
    moves = view_moves(output)
    assert len(moves) >= 1
    monkeypatch.chdir(staged["root"])  # the page shows the path as given: out/ws.h5
    result = invoke("report", "out/ws.h5")
    assert result.code == 0, result.err
    assert result.out.strip() == "out/ws.report.html"
    html = output.with_name("ws.report.html")
    from plotly.offline import get_plotlyjs

    assert html.read_text().count(get_plotlyjs()[:300]) == 1  # plotly's script, once
    page = _browse(html, tmp_path / "staged.png")
    assert {name for name, drawn in page.plots.items() if drawn} >= STAGED_PLOTS, page.plots
    assert all(page.plots.values()), page.plots
    assert len(page.images) == MAX_THUMBS and all(width > 0 for width in page.images)
    assert "complete" in page.text and "The Node Manager's moves" in page.text
    assert "dispatch to commit" in page.text  # the units table, not the fallback
    for move in moves:
        assert move["reason"].decode() in page.text
    if os.environ.get("ONEPIECE_UPDATE_DOCS_IMAGES") == "1":
        shutil.copyfile(SCREENSHOTS / "staged.png", DOCS_SCREENSHOT)  # _browse kept it, made small


def _keep_small(shot: Path, target: Path) -> None:
    """The screenshot in 256 colours (a third of the bytes, no visible change), for the docs."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(shot) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(target, optimize=True)


def view_moves(output: Path) -> np.ndarray:
    from onepiece_hpc.store.telemetry import latest_run

    return latest_run(view_of(output)).moves


@pytest.mark.mpi
@pytest.mark.slow
def test_a_report_made_while_the_run_goes_on_says_in_progress(staged, tmp_path):
    facts = staged["live_facts"]
    assert facts.state == IN_PROGRESS and 2 <= facts.progress.items_done < facts.progress.items_total
    text = staged["live"].read_text()
    assert "in progress</span>" in text and "A run is writing this output now" in text
    page = _browse(staged["live"], tmp_path / "live.png")
    assert page.plots.get("throughput") and all(page.plots.values()), page.plots
    assert all(width > 0 for width in page.images)


@pytest.mark.mpi
@pytest.mark.slow
def test_a_merged_sweep_reports_each_shard_and_the_staged_shards_telemetry(sweep, tmp_path):
    html = write_report(sweep, tmp_path / "sweep.html")
    page = _browse(html, tmp_path / "sweep.png")
    assert {"shards", "throughput", "latency", "timeline-run0", "stages-run0"} <= set(page.plots), page.plots
    assert all(page.plots.values()), page.plots
    assert len(page.images) == MAX_THUMBS and all(width > 0 for width in page.images)
    assert "1 shard(s) recorded a staged run, 2 did not" in page.text
    assert "00000.h5: run0" in page.text
    failed = page.text.split("Failed units")[1].split("First missing items")[0]
    assert "broken data stream" in failed and "a snowy owl" in failed  # the error, and the failed item's prompt
    assert "stopped" in page.text


def test_a_one_process_output_says_no_staged_run_and_shows_commit_gaps(monolithic, tmp_path):
    target = tmp_path / "nested name; with 'quotes'.html"
    result = invoke("report", monolithic["b"], "-o", target)
    assert result.code == 0, result.err
    assert Path(result.out.strip()) == target
    text = target.read_text()
    assert NO_STAGED_RUN in text and "gaps between successive commits" in text
    assert 'data-plot="timeline-' not in text and text.count('<img src="data:image/png;base64,') == 4
    page = _browse(target, tmp_path / "mono.png")
    assert set(page.plots) == {"throughput", "latency"} and all(page.plots.values()), page.plots


# -- the data side ------------------------------------------------------------------------------------------
@pytest.mark.mpi
@pytest.mark.slow
def test_shards_progress_in_work_and_states(sweep):
    facts = read_output_facts(view_of(sweep))
    shards = facts.shards
    assert [s.label for s in shards] == ["00000.h5", "00001.h5", "00002.h5"]
    assert [(s.progress.items_done, s.progress.items_total) for s in shards] == [(32, 32), (2, 3), (2, 4)]
    assert [s.state for s in shards] == [COMPLETE, STOPPED, STOPPED]
    assert shards[2].progress.work_share == pytest.approx(0.5)  # items of one size: half the items, half the work
    assert facts.progress.items_done == 36 and facts.state == STOPPED
    assert facts.failed_items == 1 and facts.missing_items == 2
    assert [m.index for m in facts.missing] == [32 + 3 + 2, 32 + 3 + 3]
    assert [m.prompt for m in facts.missing] == ["a field of poppies", "a lighthouse"]
    heavy = facts.commit_work[:12].mean() if len(facts.commit_work) else 0
    assert heavy > 0 and facts.progress.work_total > 0


def test_a_fresh_writer_lock_means_in_progress_and_a_stale_one_stopped(monolithic, tmp_path):
    output = _copy_output(monolithic["a"], tmp_path / "o.h5")
    tamper(output, [2], done=0)
    lock = Path(f"{output}.d") / "lock"
    lock.write_text("{}")
    assert read_output_facts(view_of(output)).state == IN_PROGRESS
    old = time.time() - 3600
    os.utime(lock, (old, old))
    assert writer_state(output, complete=False) == STOPPED
    assert writer_state(output, complete=True) == COMPLETE


def _samples(rows: list[tuple]) -> np.ndarray:
    """Samples of (t, rank, state, stage, busy, wait, send, units_done, backlog, memory)."""
    out = np.zeros(len(rows), dtype=SAMPLE_DTYPE)
    for at, (t, rank, state, stage, busy, wait, send, units, backlog, memory) in enumerate(rows):
        out[at] = (t, rank, state, stage, -1, units, busy, wait, send, backlog, memory)
    return out


def test_heartbeats_become_classed_intervals_and_merged_bars():
    samples = _samples([
        (1.0, 1, "serving", "encode", 0.8, 0.1, 0.0, 2, 1, 400.0),
        (2.0, 1, "serving", "encode", 0.9, 1.0, 0.0, 2, 0, 400.0),   # waiting grew most
        (3.0, 1, "draining", "encode", 0.9, 1.0, 0.0, 2, 0, 400.0),
        (4.0, 1, "loading", "denoise", 0.0, 0.0, 0.0, 2, 0, 600.0),
        (5.0, 1, "serving", "denoise", 0.5, 0.2, 0.1, 3, 2, 600.0),  # its totals restarted: all of it is new
        (6.0, 1, "serving", "denoise", 1.4, 0.2, 0.1, 4, 1, 600.0),
        (1.0, 2, "serving", "denoise", 0.0, 0.0, 0.9, 0, 3, 500.0),
    ])
    spans = timeline.heartbeat_intervals(samples)
    mine = spans.rank == 1
    assert list(spans.labels()[mine]) == ["encode busy", "encode waiting", timeline.MOVING, timeline.LOADING,
                                          "denoise busy", "denoise busy"]
    assert list(spans.start[mine]) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(spans.units[mine]) == [2, 0, 0, 0, 1, 1]
    bars = timeline.merged_bars(spans)
    ones = bars.rank == 1
    assert list(bars.label[ones]) == ["encode busy", "encode waiting", timeline.MOVING, timeline.LOADING,
                                      "denoise busy"]
    assert (bars.start[ones][-1], bars.end[ones][-1]) == (4.0, 6.0)
    assert list(bars.label[bars.rank == 2]) == ["denoise sending"]
    uses = {use.stage: use for use in series.stage_use(np.empty(0, dtype=STAGE_DTYPE), spans)}
    assert set(uses) == {"encode", "denoise"} and uses["denoise"].units == 2
    for use in uses.values():
        assert 0.0 <= use.busy + use.sending + use.waiting <= 1.0 + 1e-9
    backlog = series.backlog_lines(samples, ["encode", "denoise"])
    assert list(backlog.series) == ["encode", "denoise"]


def _huge_samples(ranks: int, beats: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    samples = np.zeros(ranks * beats, dtype=SAMPLE_DTYPE)
    rank = np.repeat(np.arange(1, ranks + 1), beats)
    t = np.tile(np.arange(1, beats + 1, dtype=float), ranks)
    samples["t"], samples["rank"] = t, rank
    samples["state"] = "serving"
    samples["stage"] = np.where(rank % 3 == 0, "encode", np.where(rank % 3 == 1, "denoise", "decode")).astype(object)
    samples["busy_s"] = t * rng.uniform(0, 1, len(t))
    samples["wait_s"] = t * rng.uniform(0, 1, len(t))
    samples["units_done"] = t.astype(int)
    samples["backlog"] = rng.integers(0, 4, len(t))
    samples["memory_mb"] = rng.uniform(400, 600, len(t))
    return samples


def test_a_huge_run_is_drawn_as_a_small_grid(monolithic, tmp_path):
    samples = _huge_samples(10_000, 4)
    spans = timeline.heartbeat_intervals(samples)
    bars = timeline.merged_bars(spans)
    assert timeline.needs_grid(bars)
    grid = timeline.activity_grid(spans)
    assert grid.cells.shape == (timeline.MAX_ROWS, 4)  # bins no shorter than a heartbeat
    assert (grid.cells >= 0).all()  # every rank was heard in every bin
    fine = timeline.activity_grid(timeline.heartbeat_intervals(_huge_samples(1000, 400)))
    assert fine.cells.shape == (timeline.MAX_ROWS, timeline.MAX_BINS) and (fine.cells >= 0).all()
    assert grid.row_ranks[0] == (1, 50) and grid.row_ranks[-1] == (9951, 10_000)
    assert (grid.cells >= 0).any() and set(grid.labels) <= {f"{s} {a}" for s in ("encode", "denoise", "decode")
                                                            for a in timeline.ACTIVITIES}
    # the same record beside an output: the whole report stays a few MB beyond plotly's script
    output = _copy_output(monolithic["a"], tmp_path / "huge.h5")
    folder = Path(f"{output}.d") / "telemetry"
    folder.mkdir()
    write_telemetry(folder / "run-0000.h5", {"samples": samples}, {"policy": "adaptive", "mode": "staged -n 10001"})
    text = render_report(output)
    from plotly.offline import get_plotlyjs

    assert len(text) - len(get_plotlyjs()) < 4_000_000
    assert "drawn as a grid" in text and "their mean, the shaded band" in text


def test_a_live_record_with_units_draws_dispatch_to_commit_latency(monolithic, tmp_path):
    output = _copy_output(monolithic["b"], tmp_path / "live.h5")
    folder = Path(f"{output}.d") / "telemetry"
    folder.mkdir()
    samples = _samples([(1.0, 1, "serving", "encode", 0.5, 0.4, 0.0, 1, 1, 400.0),
                        (2.0, 1, "serving", "encode", 1.2, 0.6, 0.0, 2, 1, 400.0),
                        (1.0, 2, "serving", "denoise", 0.9, 0.0, 0.1, 1, 0, 500.0)])
    units = np.array([(0, 1, 0.5, 2.0), (1, 1, 0.7, 3.0), (2, 2, 1.0, np.nan)], dtype=UNIT_DTYPE)
    write_telemetry(folder / "run-0000.live.h5", {"samples": samples, "units": units},
                    {"live": 1, "started_unix": 1_796_000_000.0, "policy": "static"})
    text = render_report(output)
    assert "live record of the run in progress" in text and "this live copy reaches t = 2 s" in text
    assert "dispatch to commit" in text and "over 2 units" in text
    assert "(from the heartbeats: no summary yet)" in text


def test_latency_from_units_and_the_commit_gap_fallback():
    units = np.array([(0, 1, 0.0, 1.0), (1, 1, 0.5, 3.5), (2, 4, 1.0, np.nan), (3, 1, 2.0, 4.0)], dtype=UNIT_DTYPE)
    latency = series.unit_latency(units)
    assert latency.measured and latency.samples == 3 and latency.median_s == pytest.approx(2.0)
    assert latency.counts.sum() == 3
    gaps = series.commit_gaps(np.array([10.0, 10.0, 11.0, 13.0, 13.0, 16.0]))  # a unit's items commit together
    assert not gaps.measured and gaps.samples == 3 and gaps.median_s == pytest.approx(2.0)
    assert series.unit_latency(units[2:3]) is None and series.commit_gaps(np.array([5.0])) is None


def test_throughput_bins_and_the_mean_rate_of_each_stretch_of_runs():
    first = np.linspace(1000.0, 1010.0, 11)           # 1 item/s
    second = np.linspace(5000.0, 5002.0, 9)           # 4 items/s, days later... or an hour
    times = np.r_[first, second]
    work = np.r_[np.full(11, 2.0), np.full(9, 0.5)]
    got = series.throughput(times, work, [(999.0, 1011.0), (1005.0, 1012.0), (4999.0, 5003.0)])
    assert len(got.sessions) == 2  # the two overlapping runs are one stretch
    (lo, hi, items, per_s), (lo2, hi2, items2, per_s2) = got.sessions
    assert (lo, hi, items, per_s) == (1000.0, 1010.0, pytest.approx(1.0), pytest.approx(2.0))
    assert (items2, per_s2) == (pytest.approx(4.0), pytest.approx(2.0))
    assert len(got.edges) - 1 <= series.MAX_BINS
    assert got.items_per_s.sum() * np.diff(got.edges)[0] == pytest.approx(20)
    assert series.throughput(np.array([1.0]), np.array([1.0]), []) is None


def test_thumbnails_are_picked_evenly():
    assert list(pick_evenly(np.arange(5))) == [0, 1, 2, 3, 4]
    picked = pick_evenly(np.arange(1000, 2000), 24)
    assert len(picked) == 24 and picked[0] == 1000 and picked[-1] == 1999 and np.all(np.diff(picked) > 0)


@pytest.mark.slow
def test_a_video_output_with_a_failed_item_shows_gifs_and_the_failure(tmp_path):
    job = i2v_job(tmp_path, 3, {1: "broken.png"})
    undecodable_png(tmp_path / "broken.png")
    assert invoke("run", job, "--monolithic").code == 4
    html = write_report(tmp_path / "out/t.h5", tmp_path / "video.html")
    text = html.read_text()
    assert text.count('<img src="data:image/gif;base64,') == 2
    assert "broken data stream" in text and "1 item(s) failed" in text
    page = _browse(html, tmp_path / "video.png")
    assert len(page.images) == 2 and all(width > 0 for width in page.images)


# -- refused ------------------------------------------------------------------------------------------------
def test_a_damaged_or_foreign_file_is_refused_naming_it(monolithic, tmp_path):
    text_file = tmp_path / "notes.h5"
    text_file.write_text("not hdf5")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1, 2, 3]
    damaged = _copy_output(monolithic["a"], tmp_path / "damaged.h5")
    data = next(Path(f"{damaged}.d").glob("data-*.h5"))
    data.unlink()
    for path, named in ((text_file, text_file), (foreign, foreign), (damaged, data), (tmp_path / "none.h5", None)):
        result = invoke("report", path)
        assert result.code == 2, (path, result.out, result.err)
        assert str(named or path) in result.err and "fix:" in result.err and "Traceback" not in result.err
        assert not path.with_name(path.stem + ".report.html").exists()
    nowhere = invoke("report", monolithic["a"], "-o", tmp_path / "missing/r.html")
    assert nowhere.code == 2 and "does not exist" in nowhere.err
