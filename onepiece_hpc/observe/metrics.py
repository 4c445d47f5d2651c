"""A live snapshot in the Prometheus text exposition format (version 0.0.4), written by hand.

No client library and no global registry: the snapshot is the only state, and `exposition` is a
pure function of it and the scrape time, so the numbers a scraper sees are exactly the snapshot's.
Names follow Prometheus' conventions: base units (seconds, bytes, ratios 0..1) in the name,
`_total` on counters and only on counters. A value the snapshot does not know yet (no rate before
two commits, no busy share before a stage has served) is left out rather than written as NaN, so
a panel shows "no data" instead of a wrong number.

Target labels (job, output, Slurm job id, host) come from service discovery (discovery.py), so the
series here carry only what varies inside one job: stage, rank, reason, phase.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from onepiece_hpc.observe.live import LiveSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PHASES = ("running", "draining", "finished")
MEBIBYTE = 1024 * 1024


@dataclass
class Family:
    """One metric: its name, type, help text and samples (a rendered label set, value)."""

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    samples: list[tuple[str, float]] = field(default_factory=list)

    def add(self, value: float | None, labels: str = "") -> None:
        """A sample with labels from `label_set`; an unknown value (None or NaN) is left out."""
        if value is None or value != value:  # NaN is the one value unequal to itself
            return
        self.samples.append((labels, float(value)))


def label_set(**labels: object) -> str:
    """`{name="value",...}`, values escaped; rendered once and shared by a rank's or a stage's samples."""
    return "{" + ",".join(f'{key}="{escape_label_value(str(value))}"' for key, value in labels.items()) + "}"


def escape_label_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def render(families: Iterable[Family]) -> str:
    """The families with samples, each headed by its HELP and TYPE lines."""
    lines: list[str] = []
    for family in families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        name = family.name
        lines.extend(f"{name}{labels} {format_value(value)}" for labels, value in family.samples)
    return "\n".join(lines) + "\n" if lines else ""


def exposition(snapshot: LiveSnapshot, now: float) -> str:
    """The snapshot as a scrape's body at unix time `now`."""
    return render(families(snapshot, now))


def families(snapshot: LiveSnapshot, now: float) -> Iterator[Family]:
    s = snapshot
    yield _one("onepiece_job_info", "gauge", "The job this target runs (always 1): its name, output file and "
               "Slurm job id.", 1, label_set(job_name=s.job_name, output=s.output, slurm_job=s.slurm_job))
    phase = Family("onepiece_phase", "gauge", "1 for the run's phase (running, draining, finished), 0 for the others.")
    for name in PHASES:
        phase.add(1 if s.phase == name else 0, label_set(phase=name))
    yield phase
    yield _one("onepiece_snapshot_timestamp_seconds", "gauge", "Unix time when rank 0 made the snapshot.",
               s.unix_time)
    yield _one("onepiece_snapshot_age_seconds", "gauge", "Seconds between the snapshot and this scrape "
               "(grows when rank 0's loop stalls).", max(now - s.unix_time, 0.0))
    yield _one("onepiece_elapsed_seconds", "gauge", "Seconds since rank 0 opened the output.", s.elapsed_s)
    yield _one("onepiece_items_planned", "gauge", "Items the job's output holds, done or not.", s.items_total)
    yield _one("onepiece_items_done_total", "counter", "Items committed to the output, this run and before.",
               s.items_done)
    yield _one("onepiece_items_failed_total", "counter", "Items recorded as failed.", s.items_failed)
    yield _one("onepiece_work_planned_megapixel_forwards", "gauge", "The job's work: denoiser forwards times "
               "megapixels, summed over its items.", s.work_total)
    yield _one("onepiece_work_done_megapixel_forwards_total", "counter", "Work of the committed items, in "
               "megapixel-forwards.", s.work_done)
    yield _one("onepiece_rate_items_per_second", "gauge", "Items committed per second over the latest commits.",
               s.rate_items_per_s)
    yield _one("onepiece_rate_work_megapixel_forwards_per_second", "gauge", "Megapixel-forwards committed per "
               "second over the latest commits.", s.rate_work_per_s)
    yield _one("onepiece_eta_seconds", "gauge", "Seconds left: the work left over the work rate (absent before "
               "a rate is known).", s.eta_s)
    yield _one("onepiece_moves_total", "counter", "Ranks moved from one stage to another this run.", s.moves)
    by_reason = Family("onepiece_moves_by_reason_total", "counter", "Ranks moved this run, by the policy's reason.")
    for reason, count in sorted(s.moves_by_reason.items()):
        by_reason.add(count, label_set(reason=reason))
    yield by_reason
    yield from _stage_families(s)
    yield from _rank_families(s)


def _stage_families(s: LiveSnapshot) -> Iterator[Family]:
    ranks = Family("onepiece_stage_ranks", "gauge", "Ranks serving the stage now.")
    units = Family("onepiece_stage_units_done_total", "counter", "Units the stage has finished this run.")
    busy = Family("onepiece_stage_busy_ratio", "gauge", "Busy seconds over the seconds ranks served the stage (0..1).")
    service = Family("onepiece_stage_mean_service_seconds", "gauge", "Busy seconds per unit of the stage.")
    backlog = Family("onepiece_stage_backlog_units", "gauge", "Units waiting for the stage: undispatched for "
                     "the first stage, queued in its rings after.")
    for stage in s.stages:
        labels = label_set(stage=stage.stage)
        ranks.add(stage.ranks, labels)
        units.add(stage.units_done, labels)
        busy.add(stage.busy_share, labels)
        service.add(stage.mean_service_s, labels)
        backlog.add(stage.backlog, labels)
    yield from (ranks, units, busy, service, backlog)


def _rank_families(s: LiveSnapshot) -> Iterator[Family]:
    info = Family("onepiece_rank_info", "gauge", "A rank's host, stage, last heartbeat state and GPU "
                  "(always 1; -1 for no GPU).")
    memory = Family("onepiece_rank_memory_bytes", "gauge", "The rank's memory at its latest heartbeat "
                    "(on a GPU the peak GPU memory torch has allocated, else resident memory).")
    peak = Family("onepiece_rank_peak_memory_bytes", "gauge", "The rank's peak memory this run.")
    units = Family("onepiece_rank_units_done_total", "counter", "Units the rank has finished this run.")
    for rank in s.ranks:
        info.add(1, label_set(rank=rank.rank, host=rank.host, stage=rank.stage, state=rank.state, gpu=rank.gpu))
        labels = label_set(rank=rank.rank, host=rank.host)
        memory.add(rank.memory_mb * MEBIBYTE, labels)
        peak.add(rank.peak_memory_mb * MEBIBYTE, labels)
        units.add(rank.units_done, labels)
    yield from (info, memory, peak, units)


def _one(name: str, kind: str, help_text: str, value: float | None, labels: str = "") -> Family:
    family = Family(name, kind, help_text)
    family.add(value, labels)
    return family
