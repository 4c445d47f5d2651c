"""Every exit code of `onepiece run`, a rank, the batch script and its helpers, in one place.

The batch script's bash gets them rendered in from here (slurm/script.py), so the codes a run ends
with and the codes the script acts on can't drift apart. A process stopped by a signal exits with
128 + the signal's number, as shells report it (`after_signal`).
"""

from __future__ import annotations

import enum
import signal

SIGNAL_BASE = 128


class ExitCode(enum.IntEnum):
    """How a run, or one of its processes, ended; `meaning` says it in words."""

    DONE = 0
    FAILED = 1
    REFUSED = 2
    DRAINED = 3
    ITEMS_FAILED = 4
    NO_PROGRESS = 5
    UNKNOWN = 9

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.DONE: "every item is in the output",
    ExitCode.FAILED: "the run failed (the log says why); finished items are kept",
    ExitCode.REFUSED: "refused before anything ran: bad input, named with its fix; never requeued",
    ExitCode.DRAINED: "drained after committing something: run it again to go on (Slurm: requeued or chained)",
    ExitCode.ITEMS_FAILED: "done, but some items failed (named in the log); not requeued; --retry-failed",
    ExitCode.NO_PROGRESS: "drained before committing anything; not requeued (the time limit can't hold one unit)",
    ExitCode.UNKNOWN: "slurm.outcome only: the journal and rank 0's report don't say how the step ended",
}

def after_signal(signum: int) -> int:
    """The exit code of a run stopped by signal `signum`: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return SIGNAL_BASE + int(signum)


def exit_codes_table() -> str:
    """Every exit code as a Markdown table (docs/options.md)."""
    rows = ["| code | name | meaning |", "| --- | --- | --- |"]
    rows += [f"| {int(code)} | `{code.name}` | {code.meaning} |" for code in ExitCode]
    stops = ", ".join(str(after_signal(s)) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
    rows.append(f"| {stops} | - | stopped by Ctrl-C, SIGTERM or "
                f"SIGHUP ({SIGNAL_BASE} + the signal's number); finished items are kept |")
    return "\n".join(rows)


if __name__ == "__main__":  # docs/options.md's table of exit codes
    print(exit_codes_table())
