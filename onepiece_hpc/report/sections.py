"""The report's parts about the output itself: the header with progress, per-shard progress,
throughput, latency, failed and missing items, the contact sheet and provenance."""

from __future__ import annotations

import time

import numpy as np

from onepiece_hpc.report import figures
from onepiece_hpc.report.contact_sheet import Thumbnail
from onepiece_hpc.report.output_data import COMPLETE, FAILURES_NAMED, IN_PROGRESS, OutputFacts, iso_to_unix
from onepiece_hpc.report.page import Page, esc, note, table
from onepiece_hpc.report.series import commit_gaps, throughput, unit_latency
from onepiece_hpc.report.telemetry_data import StagedRun
from onepiece_hpc.slurm.status import format_eta

SHARDS_LISTED = 50   # shards in the table (the figure has them all)


def _rate(value: float | None, unit: str) -> str:
    return f"{value:.3g} {unit}/s" if value else "-"


def header(facts: OutputFacts) -> str:
    p = facts.progress
    state = facts.state
    share = p.work_share if p.work_total > 0 else (p.items_done / p.items_total if p.items_total else 0.0)
    eta = f", ETA {format_eta(p.eta_s)}" if state == IN_PROGRESS else ""
    estimated = " (the work of items in data files not created yet is estimated)" if facts.work_estimated else ""
    title = facts.job_name or facts.path.name
    if facts.kind == "merged":
        title = f"{facts.path.parent.name or title} (merged, {len(facts.shards)} shards)"
    return (f"<h1>{esc(title)}<span class=\"badge {state.replace(' ', '-')}\">"
            f"{esc(state)}</span></h1><div class=\"path\">{esc(facts.path)} ({esc(facts.kind)})</div>"
            f"<div class=\"bar\" title=\"work done\"><div style=\"width:{100 * min(share, 1.0):.2f}%\"></div></div>"
            f"<div class=\"facts\">{p.items_done:,} of {p.items_total:,} items done, {100 * share:.1f}% of the work"
            f"{esc(estimated)}; rate {_rate(p.rate_items_per_s, 'items')}, {_rate(p.rate_work_per_s, 'MP-forwards')}"
            f"{esc(eta)}; {facts.failed_items:,} failed, {facts.missing_items:,} missing</div>")


def progress_parts(page: Page, facts: OutputFacts) -> list[str]:
    p = facts.progress
    lead = (f"{facts.state.capitalize()}: {p.items_done:,}/{p.items_total:,} items, {100 * p.work_share:.1f}% of the "
            "work (an item's work is its denoiser forwards times its megapixels, so a long video counts for more "
            "than a small image); the rate is over the latest commits and the ETA is the work left over that rate, "
            "as `onepiece status` shows them.")
    if facts.state == IN_PROGRESS:
        lead += " A run is writing this output now: run `onepiece report` again to update this page."
    elif facts.state != COMPLETE:
        lead += (" No run is writing it now (no writer holds its lock), so there is no ETA: run the job again "
                 "(`onepiece run`, or `onepiece submit` / `sweep` under Slurm) to resume it where it stopped.")
    parts = [note(lead)]
    if len(facts.shards) > 1:
        labels = [shard.label for shard in facts.shards]
        shares = [shard.progress.work_share for shard in facts.shards]
        texts = [f"{s.progress.items_done}/{s.progress.items_total} items, {s.state}" for s in facts.shards]
        parts.append(page.figure(figures.progress_figure(labels, shares, texts),
                                 "One bar per shard of the merged sweep: the share of its work done. A shard "
                                 "stuck short of 100% while the others finished is a task to look at "
                                 "(`onepiece status`, its Slurm log).", "shards"))
        rows = [[s.label, s.state, f"{s.progress.items_done}/{s.progress.items_total}",
                 f"{100 * s.progress.work_share:.1f}%", _rate(s.progress.rate_items_per_s, "items"),
                 format_eta(s.progress.eta_s) if s.state == IN_PROGRESS else "-"] for s in facts.shards[:SHARDS_LISTED]]
        parts.append(table(["shard", "state", "items", "work done", "rate", "ETA"], rows, numeric={2, 3}))
        if len(facts.shards) > SHARDS_LISTED:
            parts.append(note(f"... and {len(facts.shards) - SHARDS_LISTED} more shards (the figure shows all)."))
    return parts


def _run_windows(facts: OutputFacts) -> list[tuple[float, float]]:
    """When each run ran: its start to its end (a run not closed: to the last commit or now)."""
    last = float(facts.commit_times[-1]) if len(facts.commit_times) else facts.read_at
    windows = []
    for run in facts.runs:
        start = iso_to_unix(str(run.get("started_at", "")))
        end = iso_to_unix(str(run.get("finished_at", ""))) or (facts.read_at if run.get("status") == "running"
                                                                 else last)
        if start is not None:  # journal times are whole seconds: a second either side keeps every commit in
            windows.append((start - 1.0, max(start, end) + 1.0))
    return windows


def _move_times(runs: list[StagedRun]) -> list[float]:
    """When the drawn runs' moves were ordered, in unix seconds (records that say when their t = 0 was)."""
    return [run.started_unix + float(t) for run in runs if run.started_unix is not None for t in run.record.moves["t"]]


def throughput_parts(page: Page, facts: OutputFacts, runs: list[StagedRun]) -> list[str]:
    series = throughput(facts.commit_times, facts.commit_work, _run_windows(facts))
    if series is None:
        return [note("Fewer than two commits so far: no rate to draw yet.")]
    caption = ("Items committed per second (top) and work per second (bottom, megapixel-forwards: steps x "
               "guidance passes x pixels), in time bins of the commits. The dashed line is the batch's expected "
               "rate, taken as the mean rate over each run (its items over the time from its first commit to its "
               "last; runs that overlap, such as a sweep's shards, count as one). A curve that sags below it is a "
               "slowdown (a stage short of ranks, a node lost, a shared filesystem); spikes at the start are the "
               "pipeline filling.")
    moves = _move_times(runs)
    if moves:
        caption += " Red dotted lines are the Node Manager's moves: after a good one the rate rises."
    return [page.figure(figures.throughput_figure(series, moves), caption, "throughput")]


def latency_parts(page: Page, facts: OutputFacts, runs: list[StagedRun]) -> list[str]:
    tables = [run.units for run in runs if run.units is not None and len(run.units)]
    if tables:
        latency = unit_latency(np.concatenate(tables))
        caption = ("How long units took from rank 0's dispatch to their commit (the telemetry's units table"
                   + (", all shards shown together" if len(tables) > 1 else "") + "): the time an item spends in "
                   "flight through the stages, queues included. A long tail means units wait in some ring; the "
                   "median times the throughput is about how many units are in flight.")
    else:
        latency = commit_gaps(facts.commit_times)
        caption = ("No record of dispatch times (the run predates the units table, or ran in one process), so this "
                   "shows the gaps between successive commits instead, not the latency of an item: the spacing of "
                   "finished units, whose inverse is the instantaneous rate. Long gaps are stalls.")
    if latency is None:
        return [note("Nothing committed yet: no latency to draw.")]
    caption += f" Median {latency.median_s:.3g} s, p90 {latency.p90_s:.3g} s, p99 {latency.p99_s:.3g} s over " \
               f"{latency.samples} {'units' if latency.measured else 'gaps'}."
    return [page.figure(figures.latency_figure(latency), caption, "latency")]


def failed_parts(facts: OutputFacts) -> list[str]:
    parts = [note(f"{facts.failed_items:,} item(s) failed when generated (a plain run leaves them be; "
                  f"`onepiece run JOB --retry-failed` generates them again); {facts.missing_items:,} item(s) are "
                  "missing (not generated yet, or lost with a kill: a run of the same job resumes them).")]
    if facts.failures:
        prompts = {item.index: item.prompt for item in facts.failed_named}
        rows = [[f"{f.start}..{f.stop - 1}" if f.stop - f.start > 1 else str(f.start), prompts.get(f.start, "")[:120],
                 f.run, f.stage, f.rank, _short_time(f.at), (f.error.splitlines() or [""])[0][:300]]
                for f in facts.failures[:FAILURES_NAMED]]
        parts.append("<h3>Failed units</h3>" + table(["items", "prompt (first item)", "run", "stage", "rank", "at",
                                                      "error"], rows, nowrap={0, 5}))
        if len(facts.failures) > FAILURES_NAMED:
            parts.append(note(f"... and {len(facts.failures) - FAILURES_NAMED} more failed units "
                              "(`onepiece inspect --json` lists them all)."))
    if facts.missing:
        rows = [[m.index, m.key[:16] + ("..." if len(m.key) > 16 else "") if m.key else "(data file not created yet)",
                 m.prompt[:200]] for m in facts.missing]
        more = facts.missing_items - len(facts.missing)
        parts.append("<h3>First missing items</h3>" + table(["item", "key", "prompt"], rows, numeric={0})
                     + (note(f"... and {more:,} more.") if more > 0 else ""))
    return parts


def contact_sheet_parts(thumbs: list[Thumbnail], done: int, video: bool) -> list[str]:
    if not thumbs:
        return [note("No output is done yet: nothing to show.")]
    what = "a looping preview of frames spread over each video" if video else "each image shrunk"
    cells = "".join(f"<figure><img src=\"{t.uri}\" width=\"{t.shown[0]}\" height=\"{t.shown[1]}\" "
                    f"alt=\"item {t.index}\">"
                    f"<figcaption title=\"{esc(t.prompt)}\">#{t.index} seed {t.seed}: {esc(t.prompt[:90])}"
                    "</figcaption></figure>" for t in thumbs)
    return [note(f"{len(thumbs)} of the {done:,} done items, picked evenly from first to last ({what}). Look for "
                 "blank, noisy or repeated outputs: a wrong model, a broken stage or a bad seed shows here first."),
            f"<div class=\"sheet\">{cells}</div>"]


PROVENANCE_KEYS = (("package_version", "onepiece"), ("torch_version", "torch"), ("diffusers_version", "diffusers"),
                   ("transformers_version", "transformers"), ("python_version", "python"),
                   ("pipeline_class", "pipeline"), ("host", "created on"),
                   ("created_at", "created at"))


def _short_time(value) -> str:
    """'2026-12-02T04:40:15+00:00' as '2026-12-02 04:40:15' (UTC); other text as it is."""
    unix = iso_to_unix(str(value or ""))
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(unix)) if unix is not None else str(value or "")


def provenance_parts(facts: OutputFacts) -> list[str]:
    attrs, prov = facts.attrs, facts.provenance
    rows = [["job name", facts.job_name], ["job fingerprint", attrs.get("job_fingerprint", "")],
            ["model identity", attrs.get("model_identity", "")], ["model", attrs.get("model_ref", prov.get(
                "model_ref", ""))], ["execution", attrs.get("execution", "")],
            ["microbatch", attrs.get("microbatch", "")], ["outputs", f"{facts.progress.items_total:,} "
             f"{attrs.get('output_kind', '')}s of {' x '.join(str(x) for x in np.ravel(attrs.get('item_shape', [])))}"]]
    rows += [[label, prov[key]] for key, label in PROVENANCE_KEYS if prov.get(key)]
    parts = [note("What made this output: the job's identity (its fingerprint changes with any field that changes "
                  "an output), the model's identity, and the software of the run that created it."),
             table(["", ""], [[k, v] for k, v in rows])]
    if facts.runs:
        runs = [[run.get("source", "") or "", run.get("run", ""), _short_time(run.get("started_at", "")),
                 _short_time(run.get("finished_at", "")) or "(not closed)", run.get("mode", ""),
                 run.get("host") or (run.get("hardware") or {}).get("host", ""), run.get("status", ""),
                 run.get("items_committed", 0), run.get("slurm_job", ""),
                 ", ".join(f"{k} {v}" for k, v in sorted((run.get("software") or {}).items()))]
                for run in facts.runs[-50:]]
        headers = ["shard", "run", "started", "finished", "mode", "host", "status", "items", "Slurm job", "software"]
        shift = 0
        if not any(row[0] for row in runs):  # no shards: drop the column
            headers, runs, shift = headers[1:], [row[1:] for row in runs], 1
        parts += ["<h3>Runs</h3>", note("Every run that wrote to the output, oldest first (the latest 50; times in "
                                        "UTC)."),
                  table(headers, runs, numeric={7 - shift}, nowrap={c - shift for c in (0, 2, 3, 4, 8) if c >= shift})]
    return parts
