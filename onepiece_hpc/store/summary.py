"""What `onepiece inspect` shows, computed segment by segment (memory bounded by one data file's
small datasets, whatever the item count; an output with failed items adds a byte an item)."""

from __future__ import annotations

import numpy as np

from onepiece_hpc.store import schema as s
from onepiece_hpc.store.failed import failed_mask, still_failed
from onepiece_hpc.store.items import as_text
from onepiece_hpc.store.reader import OutputView
from onepiece_hpc.store.safe_read import read_dataset, timing_columns
from onepiece_hpc.store.telemetry import read_runs


def _telemetry_summary(view: OutputView) -> list[dict]:
    """One record per staged run: its policy, moves, and where the rank-seconds went."""
    records = []
    for run in read_runs(view.telemetry_dirs, view.path if view.kind == "format-2" else None):
        records.append({
            "run": run.name, "policy": str(run.attrs.get("policy", "static")), "layout": str(run.attrs.get("layout", "")),
            "ranks": int(len(run.ranks)), "moves": int(len(run.moves)),
            "stages": [as_text(stage) for stage in run.stages["stage"]],
            "busy_rank_s": float(run.ranks["busy_s"].sum()), "idle_rank_s": float(run.ranks["wait_s"].sum()),
            "moving_data_rank_s": float(run.ranks["send_s"].sum()),
            "hosts": sorted({as_text(h) for h in run.ranks["host"]}), "channels": _channel_counts(run.ranks),
        })
    return records


def _channel_counts(ranks: np.ndarray) -> dict[str, int]:
    """Channels by the fabric they cross, each counted once (at its producer's end)."""
    counts: dict[str, int] = {}
    if "links" not in (ranks.dtype.names or ()):
        return counts  # a record from before channels were noted
    for links in ranks["links"]:
        for part in as_text(links).split(";")[0].split(","):
            words = part.split()
            if len(words) == 3 and words[0] == "to":
                counts[words[2]] = counts.get(words[2], 0) + 1
    return dict(sorted(counts.items()))


def latest_commits(view: OutputView, keep: int) -> tuple[int, np.ndarray]:
    """Items done, and the commit times of the latest `keep` of them (sorted), file by file."""
    done_total, latest = 0, np.empty(0)
    for seg, file in view.each():
        if file is None:
            continue
        done = read_dataset(file, s.DONE, seg.path).astype(bool)
        done_total += int(done.sum())
        times = read_dataset(file, s.COMMITTED_AT, seg.path)[done]
        latest = np.sort(np.concatenate([latest, times[np.isfinite(times)]]))[-keep:]
    return done_total, latest


def work_commits(view: OutputView, keep: int) -> dict:
    """Progress in work (planning/work.py) read off the file: items and work done, the work of
    every item, and the latest `keep` commits' times and work. Items of data files not created
    yet are counted at the mean work of those that are (their params are in the plan alone)."""
    from onepiece_hpc.planning.work import rows_work

    done_total, work_done, work_known, known = 0, 0.0, 0.0, 0
    times, work = np.empty(0), np.empty(0)
    for seg, file in view.each():
        if file is None:
            continue
        rows = read_dataset(file, s.ITEMS, seg.path)
        each = rows_work(rows)
        done = read_dataset(file, s.DONE, seg.path).astype(bool)[:len(each)]
        at = read_dataset(file, s.COMMITTED_AT, seg.path)[:len(each)]
        done_total += int(done.sum())
        work_done += float(each[done].sum())
        work_known += float(each.sum())
        known += len(each)
        finite = done & np.isfinite(at)
        times, work = np.concatenate([times, at[finite]]), np.concatenate([work, each[finite]])
        order = np.argsort(times, kind="stable")[-keep:]
        times, work = times[order], work[order]
    total = view.items_total
    work_total = work_known + (work_known / known * (total - known) if known else 0.0)
    return {"items_done": done_total, "items_total": total, "work_done": work_done, "work_total": work_total,
            "times": times, "work": work}


def _failed_summary(view: OutputView) -> tuple[int, list[dict]]:
    """Items failed and not done since, and the records of their units (store/failed.py)."""
    if not view.failures:
        return 0, []
    done = view.done_mask()
    return int(failed_mask(view.failures, done).sum()), [f.as_dict() for f in still_failed(view.failures, done)]


def summary(view: OutputView) -> dict:
    """The facts `onepiece inspect` shows, as plain JSON-able values."""
    stages = list(timing_columns(view.attrs))
    sums = np.zeros(len(stages))
    done_total, first, last, times = 0, None, None, 0
    created = 0
    for seg, file in view.each():
        if file is None:
            continue
        created += 1
        done = read_dataset(file, s.DONE, seg.path).astype(bool)
        if not done.any():
            continue
        done_total += int(done.sum())
        timings = read_dataset(file, s.TIMINGS, seg.path)[done]
        sums += np.nansum(timings[:, :len(stages)], axis=0)
        committed = read_dataset(file, s.COMMITTED_AT, seg.path)[done]
        committed = committed[np.isfinite(committed)]
        if committed.size:
            first = float(committed.min()) if first is None else min(first, float(committed.min()))
            last = float(committed.max()) if last is None else max(last, float(committed.max()))
            times += int(committed.size)
    mean = {st: (float(sums[i] / done_total) if done_total else None) for i, st in enumerate(stages)}
    rate = (times - 1) / (last - first) if times >= 2 and last > first else None
    attrs = view.attrs
    total = view.items_total
    failed, failures = _failed_summary(view)
    return {
        "file": str(view.path),
        "kind": view.kind,
        "format_version": int(attrs["format_version"]),
        "job_name": str(attrs.get("job_name", "")),
        "job_fingerprint": str(attrs.get("job_fingerprint", "")),
        "items_total": total,
        "items_done": done_total,
        "complete": done_total == total,
        "items_failed": failed,
        "failed": failures,
        "output_kind": view.output_kind,
        "frame_rate": int(attrs["frame_rate"]) if "frame_rate" in attrs else None,
        "outputs": {s.OUTPUT_DATASETS[view.output_kind]: {"shape": [total, *view.item_shape], "dtype": "uint8",
                                                          "kind": view.output_kind},
                    **{d.name: {"shape": [total, *d.item_shape], "dtype": "uint8", "kind": d.kind}
                       for d in view.extras}},
        "files": {"data_files": len(view.segments), "created": created,
                  "items_per_file": int(attrs["items_per_file"]) if "items_per_file" in attrs else total},
        "microbatch": int(attrs.get("microbatch", 0)),
        "execution": str(attrs.get("execution", "")),
        "mean_seconds_per_item": mean,
        "commit_rate_items_per_s": rate,
        "provenance": {k: v for k, v in view.provenance.items() if k != "job_file"},
        "runs": [_run_row(run) for run in view.runs],
        "sources": view.sources,
        "telemetry": _telemetry_summary(view),
        "warnings": view.warnings,
    }


def _run_row(run: dict) -> dict:
    keys = ("run", "started_at", "finished_at", "host", "pid", "mode", "status", "items_committed", "slurm_job",
            "software", "hardware", "source")
    row = {key: run[key] for key in keys if key in run}
    row.setdefault("host", run.get("hardware", {}).get("host", "")) if isinstance(run.get("hardware"), dict) else None
    return row
