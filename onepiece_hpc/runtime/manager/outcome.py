"""What a staged run ends with: its summary, or the one error that names why it stopped."""

from __future__ import annotations

from dataclasses import dataclass

from onepiece_hpc.runtime.telemetry import StageSummary


class JobFailed(RuntimeError):
    """The staged run stopped; the message names the rank, host, stage and unit (or the lost host)."""

    def __init__(self, message: str, lost_hosts: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.lost_hosts = lost_hosts


@dataclass(frozen=True)
class StagedSummary:
    status: str  # "completed", or "preempted" when a drain stopped dispatch early
    items_total: int
    items_done: int
    committed_now: int
    seconds: float
    moves: int
    stages: list[StageSummary]
    items_failed: int = 0  # items of the output that failed and are not done, after this run
    failures: tuple = ()   # their units' records (store.journal.FailedUnit), in item order
    phase_turns: int = 0   # a run in phases: turns its ranks took on their GPUs
    weights_s: float = 0.0  # and the seconds they spent moving weights in and out, summed
