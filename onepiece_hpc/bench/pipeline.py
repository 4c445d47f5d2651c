"""`onepiece bench pipeline`: the staged runtime against data-parallel, same items, same ranks.

Both runs start N ranks with the same MPI on the same machine, one after the other, and time
from the moment every rank has imported its libraries to the last output: weight loading, the
pipeline and the tail of the batch are all inside. Ratios are staged over data-parallel.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime.launch import find_mpiexec, launch
from onepiece_hpc.runtime.options import RunOptions
from onepiece_hpc.store.reader import open_output
from onepiece_hpc.store.telemetry import latest_run


def _staged(options: RunOptions, as_root: bool) -> dict:
    report = launch(options, as_root, rank_stdout=sys.stderr)
    if report["status"] != "completed":
        raise UserError(f"the staged run failed: {report.get('error', report)}")
    summary = report["summary"]
    with open_output(options.output) as view:
        rows = latest_run(view).ranks
    seconds = summary["seconds"]
    allocated = options.ranks * seconds
    return {
        "mode": "staged",
        "ranks": options.ranks,
        "items": summary["committed_now"],
        "seconds": seconds,
        "items_per_s": summary["committed_now"] / seconds,
        "busy_share": float(rows["busy_s"].sum()) / allocated,
        "moving_share": float(rows["send_s"].sum()) / allocated,
        "peak_memory_mb_max": float(rows["peak_memory_mb"].max()),
        "peak_memory_mb_mean": float(rows["peak_memory_mb"].mean()),
        "stages": summary["stages"],
    }


def _data_parallel(job: Path, ranks: int, as_root: bool) -> dict:
    launcher = find_mpiexec()
    with tempfile.TemporaryDirectory(prefix="onepiece-dp-") as scratch:
        program = [sys.executable, "-m", "onepiece_hpc.bench.data_parallel", str(job), "--report-dir", scratch]
        done = subprocess.run(launcher.command(ranks, program, as_root), stdout=sys.stderr,
                              stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise UserError(f"the data-parallel run failed (exit {done.returncode}): {done.stderr[-2000:]}")
        rows = [json.loads(p.read_text()) for p in sorted(Path(scratch).glob("rank-*.json"))]
    seconds = max(r["done_at_s"] for r in rows)
    allocated = ranks * seconds
    items = sum(r["items"] for r in rows)
    return {
        "mode": "data-parallel",
        "ranks": ranks,
        "items": items,
        "seconds": seconds,
        "items_per_s": items / seconds,
        "busy_share": sum(r["busy_s"] for r in rows) / allocated,
        "moving_share": 0.0,
        "peak_memory_mb_max": max(r["peak_memory_mb"] for r in rows),
        "peak_memory_mb_mean": sum(r["peak_memory_mb"] for r in rows) / len(rows),
    }


def _with_idle(record: dict) -> dict:
    """Idle: every allocated rank-second neither computing a stage nor moving data (loading
    weights, waiting for input or credits, the batch's tail, and rank 0's managing)."""
    return {**record, "idle_share": 1.0 - record["busy_share"] - record["moving_share"]}


def bench_pipeline(options: RunOptions, as_root: bool) -> dict:
    """Run both on `options.ranks` ranks, staged first (with these options); returns both records
    and the staged/data-parallel ratios."""
    job, ranks = options.job, options.ranks
    with tempfile.TemporaryDirectory(prefix="onepiece-bench-") as scratch:
        started = time.time()
        staged = _with_idle(_staged(replace(options, output=Path(scratch) / "staged.h5"), as_root))
        baseline = _with_idle(_data_parallel(job, ranks, as_root))
    ratios = {
        "throughput": staged["items_per_s"] / baseline["items_per_s"],
        "peak_memory_max": staged["peak_memory_mb_max"] / baseline["peak_memory_mb_max"],
        "busy_share": staged["busy_share"] / baseline["busy_share"],
    }
    return {"job": str(job), "ranks": ranks, "started_at": started, "staged": staged,
            "data_parallel": baseline, "ratios": ratios}
