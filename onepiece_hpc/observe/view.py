"""A live snapshot for a person: the words and numbers `onepiece status --watch` shows.

Pure functions of a snapshot: a summary (label, value) list, a per-stage table, and the plain
lines printed where there is no terminal. watch.py draws them; tests read them.
"""

from __future__ import annotations

import math
import time

from onepiece_hpc.observe.live import LiveSnapshot

STAGE_COLUMNS = ("stage", "ranks", "busy", "backlog", "service s", "units done", "memory max")


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} days"
    return time.strftime("%H:%M:%S", time.gmtime(max(seconds, 0.0)))


def mebibytes(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value:.0f} MiB"


def _share(value: float) -> str:
    return f"{value:.0%}" if math.isfinite(value) else "-"


def _seconds(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "-"


def summary(s: LiveSnapshot) -> list[tuple[str, str]]:
    items = f"{s.items_done}/{s.items_total}"
    if s.items_total:
        items += f" ({s.items_done / s.items_total:.0%})"
    work = f"{s.work_done / s.work_total:.0%} of {s.work_total:.4g} megapixel-forwards" if s.work_total > 0 else "-"
    rate = f"{s.rate_items_per_s:.3g} items/s" if s.rate_items_per_s is not None else "unknown"
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(s.moves_by_reason.items()))
    rows = [("job", f"{s.job_name}" + (f" (Slurm job {s.slurm_job})" if s.slurm_job else "")),
            ("phase", f"{s.phase}, {duration(s.elapsed_s)} elapsed"),
            ("items", items), ("work", work), ("rate", rate),
            ("ETA", "done" if s.phase == "finished" else duration(s.eta_s)),
            ("failed", str(s.items_failed)),
            ("moves", f"{s.moves}" + (f" ({reasons})" if reasons else ""))]
    if s.ranks:
        top = max(s.ranks, key=lambda r: r.memory_mb if math.isfinite(r.memory_mb) else -1.0)
        peak = max((r.peak_memory_mb for r in s.ranks if math.isfinite(r.peak_memory_mb)), default=float("nan"))
        rows.append(("memory", f"max {mebibytes(top.memory_mb)} (rank {top.rank} on {top.host}), "
                               f"peak {mebibytes(peak)}"))
    return rows


def stage_rows(s: LiveSnapshot) -> list[tuple[str, ...]]:
    rows = []
    for stage in s.stages:
        memory = max((r.memory_mb for r in s.ranks if r.stage == stage.stage and math.isfinite(r.memory_mb)),
                     default=float("nan"))
        rows.append((stage.stage, str(stage.ranks), _share(stage.busy_share), str(stage.backlog),
                     _seconds(stage.mean_service_s), str(stage.units_done), mebibytes(memory)))
    return rows


def plain_lines(s: LiveSnapshot, note: str = "") -> list[str]:
    """Two lines or so a refresh, for logs and pipes."""
    values = dict(summary(s))
    clock = time.strftime("%H:%M:%S", time.localtime(s.unix_time))
    head = (f"{clock} {s.phase}: items {values['items']}, work {values['work'].split(' of ')[0]}, "
            f"{values['rate']}, ETA {values['ETA']}, failed {s.items_failed}, moves {s.moves}")
    stages = "; ".join(f"{row[0]} {row[1]} ranks busy {row[2]} backlog {row[3]} service {row[4]} s"
                       for row in stage_rows(s))
    lines = [head] + ([f"  stages: {stages}"] if stages else [])
    if "memory" in values:
        lines.append(f"  memory: {values['memory']}")
    return lines + ([f"  note: {note}"] if note else [])
