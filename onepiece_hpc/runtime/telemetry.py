"""Telemetry the Node Manager keeps: the latest heartbeat per rank, samples over time, summaries."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from onepiece_hpc.runtime.messages import Heartbeat
from onepiece_hpc.topology import CLASSIC, Topology


@dataclass
class StageSummary:
    stage: str
    ranks: int               # ranks serving the stage at the end
    units: int
    busy_share: float        # busy seconds over the seconds ranks served the stage
    mean_service_s: float    # busy seconds per unit
    wait_share: float        # waiting for input or credits
    send_share: float        # moving data into rings
    peak_memory_mb: float


@dataclass
class Telemetry:
    """Heartbeats as they arrive; `samples` keeps every one for the HDF5 record. Their per-stage
    lists follow `topology`'s order."""

    topology: Topology = CLASSIC
    started: float = field(default_factory=time.monotonic)
    latest: dict[int, Heartbeat] = field(default_factory=dict)
    seen_at: dict[int, float] = field(default_factory=dict)
    peak_memory: dict[int, float] = field(default_factory=dict)
    samples: list[tuple[float, Heartbeat]] = field(default_factory=list)
    links: dict[int, str] = field(default_factory=dict)  # each rank's channels, said once (Heartbeat.links)

    def record(self, beat: Heartbeat) -> None:
        now = time.monotonic()
        self.latest[beat.rank] = beat
        if beat.links:
            self.links[beat.rank] = beat.links
        self.seen_at[beat.rank] = now
        self.peak_memory[beat.rank] = max(self.peak_memory.get(beat.rank, 0.0), beat.memory_mb)
        self.samples.append((now - self.started, beat))

    def stage_summaries(self) -> list[StageSummary]:
        """Per stage: ranks serving it now, units it ran, and shares of the time ranks spent in it."""
        beats = list(self.latest.values())
        rows = []
        for i, stage in enumerate(self.topology):
            now_in = [b for b in beats if b.stage == stage]
            serving = sum(b.stage_time_s[i] for b in beats) or float("nan")
            busy = sum(b.stage_busy_s[i] for b in beats)
            units = sum(b.stage_units[i] for b in beats)
            elapsed = sum(b.elapsed_s for b in now_in) or float("nan")
            rows.append(StageSummary(
                stage=stage, ranks=len(now_in), units=units, busy_share=busy / serving,
                mean_service_s=busy / units if units else float("nan"),
                wait_share=sum(b.wait_s for b in now_in) / elapsed,
                send_share=sum(b.send_s for b in now_in) / elapsed,
                peak_memory_mb=max((self.peak_memory[b.rank] for b in now_in), default=float("nan")),
            ))
        return rows

    def busy_note(self) -> str:
        """Per-stage busy share for the progress line, e.g. 'encode 12% denoise 97% decode 30%'."""
        parts = []
        for row in self.stage_summaries():
            share = row.busy_share
            parts.append(f"{row.stage} {share:.0%}" if share == share else f"{row.stage} -")
        return "busy: " + " ".join(parts)


def summary_table(rows: list[StageSummary]) -> str:
    """The end-of-run table; a share or figure with nothing to measure (a stage no rank serves at
    the end) shows as '-'."""
    width = max([8, *(len(r.stage) for r in rows)])
    header = f"{'stage':<{width}} {'ranks':>5} {'units':>6} {'busy':>6} {'wait':>6} {'send':>6} {'mean s/unit':>12} {'peak MiB':>9}"
    lines = [header, "-" * len(header)]

    def shown(value: float, form: str, size: int) -> str:
        return f"{value:>{size}{form}}" if value == value else f"{'-':>{size}}"
    for r in rows:
        lines.append(f"{r.stage:<{width}} {r.ranks:>5} {r.units:>6} {shown(r.busy_share, '.0%', 6)} "
                     f"{shown(r.wait_share, '.0%', 6)} {shown(r.send_share, '.0%', 6)} "
                     f"{shown(r.mean_service_s, '.4f', 12)} {shown(r.peak_memory_mb, '.0f', 9)}")
    return "\n".join(lines)


def stage_memory_needs(beats) -> dict[str, float]:
    """The most memory any rank took while serving each stage (a GPU rank's peak restarts when it
    moves, so its later heartbeats speak of its new stage only)."""
    needs: dict[str, float] = {}
    for beat in beats:
        needs[beat.stage] = max(needs.get(beat.stage, 0.0), beat.memory_mb)
    return needs
