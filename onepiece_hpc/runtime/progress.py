"""Progress for a human: a live bar on a terminal, periodic plain lines in logs and pipes. The
numbers come from a WorkMeter (planning/work.py): the ETA is the work left over the work rate,
the same figure `onepiece status`, the metrics and the report show."""

from __future__ import annotations

import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from onepiece_hpc.planning.work import WorkMeter


def format_eta(seconds: float | None) -> str:
    """'1h02m03s', '4m05s', '12s'; '?' before a rate is known."""
    if seconds is None:
        return "?"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 48:
        return f"{seconds / 86_400:.1f} days"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressReporter:
    """Shows `meter`; `interactive` picks the live bar, else a line every `every` seconds. The
    caller adds to the meter, then calls `refresh`."""

    def __init__(self, meter: WorkMeter, label: str, stream: TextIO, interactive: bool, every: float = 10.0) -> None:
        self.meter, self.label = meter, label
        self._stream, self._every = stream, every
        self._last_line = time.monotonic()
        self._note = ""
        self._bar: Progress | None = None
        if interactive:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                TextColumn("{task.fields[note]}"), console=Console(file=stream, force_terminal=True),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=meter.items_total, completed=meter.items_done, rate="",
                                            eta="?", note="")

    def __enter__(self) -> ProgressReporter:
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar:
            self.refresh()
            self._bar.stop()
        else:
            self._line()

    @property
    def done(self) -> int:
        return self.meter.items_done

    def note(self, text: str) -> None:
        """A short status shown beside the bar (e.g. per-stage busy shares)."""
        self._note = text
        if self._bar:
            self._bar.update(self._task, note=text)

    def refresh(self) -> None:
        """Show the meter as it is now (a line only every `every` seconds when not interactive)."""
        if self._bar:
            now = self.meter.progress()
            rate = f"{now.rate_items_per_s:.2f} items/s" if now.rate_items_per_s else ""
            self._bar.update(self._task, completed=now.items_done, rate=rate, eta=format_eta(now.eta_s))
        elif time.monotonic() - self._last_line >= self._every:
            self._line()

    def _line(self) -> None:
        self._last_line = time.monotonic()
        now = self.meter.progress()
        rate = now.rate_items_per_s or 0.0
        note = f", {self._note}" if self._note else ""
        print(f"{self.label}: {now.items_done}/{now.items_total} items done ({now.work_share:.0%} of the work), "
              f"{rate:.2f} items/s, ETA {format_eta(now.eta_s)}{note}", file=self._stream, flush=True)
