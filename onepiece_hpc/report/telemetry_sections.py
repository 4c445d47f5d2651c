"""The report's part for one staged run's telemetry: the rank timeline with the Node Manager's moves,
the stages' use of their time, memory and backlog over time."""

from __future__ import annotations

import time

import numpy as np

from onepiece_hpc.report import figures
from onepiece_hpc.report.page import Page, esc, note, table
from onepiece_hpc.report.series import backlog_lines, memory_lines, stage_use
from onepiece_hpc.report.telemetry_data import StagedRun
from onepiece_hpc.report.timeline import (
    MAX_BARS,
    Intervals,
    activity_grid,
    heartbeat_intervals,
    merged_bars,
    needs_grid,
)
from onepiece_hpc.store.items import as_text
from onepiece_hpc.store.telemetry import LIVE_EVERY_S

NO_STAGED_RUN = ("No staged run recorded: this output was written in one process (--monolithic) or its telemetry "
                 "record is missing, so there is no rank timeline, stage use, memory or backlog to show; a staged "
                 "run (onepiece run JOB -n N) records them")


def _stages_of(run: StagedRun) -> list[str]:
    """The pipeline's stages in order, as the run's summary (or, failing that, its heartbeats) name them."""
    named = [as_text(v) for v in run.record.stages["stage"]] if len(run.record.stages) else []
    heard = [as_text(v) for v in run.record.samples["stage"]] if len(run.record.samples) else []
    return list(dict.fromkeys(named + heard))


def _meta(run: StagedRun) -> str:
    attrs = run.record.attrs
    parts = [f"policy {attrs.get('policy', 'static')}"] + ([f"mode {attrs['mode']}"] if attrs.get("mode") else [])
    if attrs.get("layout"):
        parts.append(f"starting layout: {attrs['layout']}")
    if run.started_unix is not None:
        parts.append("t = 0 at " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run.started_unix)))
    parts.append(f"{len(run.record.ranks) or len(np.unique(run.record.samples['rank']))} stage ranks, "
                 f"{len(run.record.samples)} heartbeats, {len(run.record.moves)} moves")
    if run.live and len(run.record.samples):
        parts.append(f"this live copy reaches t = {float(run.record.samples['t'].max()):.0f} s (rank 0 replaces it "
                     f"every {LIVE_EVERY_S:.0f} s while the run goes on; the final record replaces it at the end)")
    return note("; ".join(parts))


def _timeline(page: Page, run: StagedRun, spans: Intervals, stages: list[str], name: str) -> str:
    bars = merged_bars(spans)
    grid = activity_grid(spans) if needs_grid(bars) else None
    how = ("Each row is a stage rank, time runs left to right; a bar is a stretch of heartbeats in which the rank "
           "served one stage and mostly did one thing: full colour busy (running the stage), lighter sending "
           "(moving data into the next stage's rings, including waiting for a free slot), palest waiting (for "
           "input or for rank 0); black is a rank draining its old stage for a move, grey a rank loading a "
           "stage's components (at the start, or the second half of a move). "
           "Yellow triangles are the Node Manager's move orders (hover for the reason). A stage whose ranks are all "
           "full colour is the bottleneck; long pale stretches are idle GPUs.")
    if grid is not None:
        how += (f" This run has more than {MAX_BARS} such bars, so it is drawn as a grid: each cell is the class "
                "that took most of that time bin" + (" for that group of ranks" if len(grid.row_ranks) < len(
                    np.unique(spans.rank)) else "") + ".")
    fig = figures.timeline_figure(None if grid is not None else bars, grid, stages, run.record.moves)
    return page.figure(fig, how, f"timeline-{name}")


def _moves_table(run: StagedRun) -> str:
    moves = np.sort(run.record.moves, order="t") if len(run.record.moves) else run.record.moves
    if not len(moves):
        policy = run.record.attrs.get("policy", "static")
        return note(f"The Node Manager moved no rank in this run (policy {policy}).")
    rows = [[f"{m['t']:.1f}", int(m["rank"]), as_text(m["source"]), as_text(m["target"]), as_text(m["reason"]),
             f"{m['drain_s']:.2f}", f"{m['load_s']:.2f}", f"{m['cost_s']:.2f}"] for m in moves]
    return ("<h3>The Node Manager's moves</h3>"
            + note("When (seconds since the run started) it ordered each move, which rank went from which stage to "
                   "which and why (the rates it expected and the time the move had to save), and what the move cost: "
                   "the drain (serving the old stage until every sender's fence arrived), the load of the new "
                   "stage's components, and the rank's whole time away.")
            + table(["t (s)", "rank", "from", "to", "reason", "drain (s)", "load (s)", "cost (s)"], rows,
                    numeric={0, 1, 5, 6, 7}))


def _stage_use(page: Page, run: StagedRun, spans: Intervals, name: str) -> str:
    uses = stage_use(run.record.stages, spans)
    if not uses:
        return note("No rank served a stage between two heartbeats: nothing to say of the stages' use.")
    caption = ("Left: how the ranks serving each stage spent that time (from the growth of their counters between "
               "heartbeats; a rank that moved counts in each stage for the time it served it): busy running the "
               "stage, sending into the next stage's rings (waiting for a free slot included), waiting for input, "
               "other (control and bookkeeping). The stage nearest 100% busy limits the run; a stage mostly "
               "waiting has ranks to spare. Right: busy seconds per unit, the cost of one unit on one rank "
               + ("(the run's summary)." if len(run.record.stages) else "(from the heartbeats: no summary yet)."))
    return page.figure(figures.stage_use_figure(uses), caption, f"stages-{name}")


def telemetry_parts(page: Page, run: StagedRun, number: int) -> list[str]:
    """Every part of one run's telemetry, headed by the run's name."""
    name = f"run{number}"
    parts = [f"<h3>{esc(run.title)}</h3>", _meta(run)]
    if not len(run.record.samples):
        return parts + [note("This record holds no heartbeats (the run ended before the first one)."),
                        _moves_table(run)]
    stages = _stages_of(run)
    spans = heartbeat_intervals(run.record.samples)
    parts += [_timeline(page, run, spans, stages, name), _moves_table(run), _stage_use(page, run, spans, name)]
    colours = {stage: figures.SHADES[i % len(figures.SHADES)][0] for i, stage in enumerate(stages)}
    memory = memory_lines(run.record.samples)
    if memory is not None:
        many = bool(memory.bands)
        caption = ("Resident memory of each stage rank over the run (on GPUs: the peak memory torch allocated), the "
                   "highest value heard in each time bin. " if not many else
                   "Memory of the ranks of each stage over the run: the line is their mean, the shaded band their "
                   "lowest to highest (too many ranks for a line each). ")
        caption += "A step up at a move is the new stage's components loading; a steady climb is a leak."
        fig = figures.lines_figure(memory, "MiB", colours if many else None, from_zero=False)
        parts.append(page.figure(fig, caption, f"memory-{name}"))
    backlog = backlog_lines(run.record.samples, stages)
    if backlog is not None:
        caption = ("Units each stage has queued in the next stage's rings, summed over its ranks (each rank's mean "
                   "in the time bin). A backlog that keeps growing after a stage means the next stage can't keep "
                   "up: it is the bottleneck; a backlog near zero everywhere means the first stage (or rank 0's "
                   "dispatch) sets the pace.")
        parts.append(page.figure(figures.lines_figure(backlog, "units queued downstream", colours, step=True),
                                 caption, f"backlog-{name}"))
    return parts
