"""Progress for a human: a live bar on a terminal, periodic plain lines in logs and pipes."""

from __future__ import annotations

import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressReporter:
    """Items done of a total; `interactive` picks the live bar, else a line every `every` seconds."""

    def __init__(self, total: int, done: int, label: str, stream: TextIO, interactive: bool,
                 every: float = 10.0) -> None:
        self.total, self.done, self.label = total, done, label
        self._stream, self._every = stream, every
        self._start = time.monotonic()
        self._start_done = done
        self._last_line = self._start
        self._note = ""
        self._bar: Progress | None = None
        if interactive:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), TextColumn("{task.fields[note]}"), console=Console(file=stream, force_terminal=True),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=total, completed=done, rate="", note="")

    def __enter__(self) -> ProgressReporter:
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar:
            self._bar.stop()
        else:
            self._line()

    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0

    def note(self, text: str) -> None:
        """A short status shown beside the bar (e.g. per-stage busy shares)."""
        self._note = text
        if self._bar:
            self._bar.update(self._task, note=text)

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar:
            self._bar.update(self._task, completed=self.done, rate=f"{self.rate():.2f} items/s")
        elif time.monotonic() - self._last_line >= self._every:
            self._line()

    def _line(self) -> None:
        self._last_line = time.monotonic()
        rate = self.rate()
        left = self.total - self.done
        eta = "0s" if left == 0 else (f"{left / rate:.0f}s" if rate > 0 else "?")
        note = f", {self._note}" if self._note else ""
        print(f"{self.label}: {self.done}/{self.total} items done, {rate:.2f} items/s, ETA {eta}{note}",
              file=self._stream, flush=True)
