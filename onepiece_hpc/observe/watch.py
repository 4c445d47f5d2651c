"""Following a running job: the newest snapshot there is, refreshed until the run finishes.

The newest snapshot comes from the endpoint that live.json names (rank 0 serves a fresh one each
second), else from live.json itself (a few seconds old). A run that stopped without its final
word (killed) leaves live.json at "running": when it was written on this host by a process that
is gone, the watch says so and ends; from another host it can only say how old the snapshot is.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onepiece_hpc.observe.live import LiveSnapshot
from onepiece_hpc.observe.live_file import live_path, read_live
from onepiece_hpc.observe.view import STAGE_COLUMNS, duration, plain_lines, stage_rows, summary
from onepiece_hpc.processes import process_alive

ENDPOINT_TIMEOUT_S = 1.0
OLD_AFTER_S = 30.0  # a running snapshot older than this gets a note


@dataclass(frozen=True)
class Sighting:
    snapshot: LiveSnapshot
    source: str  # "http://host:port" or the live.json path
    note: str    # what the reader should know about its freshness
    gone: bool   # rank 0 is known to have ended without a final snapshot

    @property
    def over(self) -> bool:
        return self.gone or self.snapshot.phase == "finished"


def from_endpoint(endpoint: str) -> LiveSnapshot | None:
    if not endpoint.startswith("http://"):
        return None
    try:
        with urllib.request.urlopen(f"{endpoint}/snapshot.json", timeout=ENDPOINT_TIMEOUT_S) as reply:
            return LiveSnapshot.from_json(reply.read().decode("utf-8"))
    except (OSError, urllib.error.URLError, ValueError, TypeError, KeyError, json.JSONDecodeError):
        return None


def sight(output: Path, now: Callable[[], float] = time.time) -> Sighting | None:
    """The newest snapshot of `output`'s run, or None when it has no live.json."""
    record = read_live(output)
    if record is None:
        return None
    snapshot, source = record.snapshot, str(live_path(output))
    if snapshot.phase != "finished" and record.endpoint:
        fresher = from_endpoint(record.endpoint)
        if fresher is not None:
            snapshot, source = fresher, record.endpoint
    if snapshot.phase == "finished":
        return Sighting(snapshot, source, "the run finished", False)
    if source == record.endpoint:
        return Sighting(snapshot, source, "", False)
    here = record.host == socket.gethostname()
    if here and record.pid > 0 and not process_alive(record.pid):
        return Sighting(snapshot, source, f"rank 0 (pid {record.pid} on {record.host}) is gone without a final "
                        "snapshot: the run was killed or crashed; these are its last numbers", True)
    age = now() - snapshot.unix_time
    note = f"no update for {duration(age)} (rank 0 on {record.host} may have stopped)" if age > OLD_AFTER_S else ""
    return Sighting(snapshot, source, note, False)


def watch(output: Path, every: float, interactive: bool, echo: Callable[[str], None],
          first: Sighting, sleep: Callable[[float], None] = time.sleep) -> Sighting:
    """Show `first`, then a new sighting every `every` seconds until the run is over; the last one seen."""
    if not interactive:
        return _watch_lines(output, every, echo, first, sleep)
    from rich.console import Console
    from rich.live import Live

    console = Console()
    latest = first
    with Live(_renderable(first), console=console, auto_refresh=False) as live:
        while not latest.over:
            sleep(every)
            latest = sight(output) or latest
            live.update(_renderable(latest), refresh=True)
    return latest


def _watch_lines(output: Path, every: float, echo: Callable[[str], None], first: Sighting,
                 sleep: Callable[[float], None]) -> Sighting:
    latest = first
    for line in plain_lines(latest.snapshot, latest.note):
        echo(line)
    while not latest.over:
        sleep(every)
        latest = sight(output) or latest
        for line in plain_lines(latest.snapshot, latest.note):
            echo(line)
    return latest


def _renderable(sighting: Sighting):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    s = sighting.snapshot
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for label, value in summary(s):
        head.add_row(Text(label), Text(value))  # Text: a job name in brackets is no markup
    stages = Table(*STAGE_COLUMNS, title="stages", title_justify="left")
    for row in stage_rows(s):
        stages.add_row(*(Text(cell) for cell in row))
    clock = time.strftime("%H:%M:%S", time.localtime(s.unix_time))
    foot = Text(f"snapshot of {clock} from {sighting.source}" + (f"; {sighting.note}" if sighting.note else ""),
                style="dim" if not sighting.gone else "bold red")
    parts = [Text(s.output, style="bold"), head] + ([stages] if s.stages else []) + [foot]
    return Group(*parts)
