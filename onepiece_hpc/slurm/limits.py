"""Slurm time limits, and the check that a job's limit leaves room for its drain.

A job is signalled `drain_seconds` before its time limit; a requeued job that is signalled
before it has committed a single unit can't make progress, and would requeue forever. So a
limit that can't hold the drain plus a start and one unit is refused before anything is queued.
"""

from __future__ import annotations

import re

from onepiece_hpc.errors import UserError
from onepiece_hpc.jobfile.job import DRAIN_SECONDS_MIN, SlurmFields

#: a conservative time for a requeued job to start (load the models, open the output) and
#: commit one unit, beyond the drain window; a limit shorter than this plus drain_seconds is refused
UNIT_ESTIMATE_S = 60

_DAYS = re.compile(r"(\d+)-(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?")
_CLOCK = re.compile(r"(\d+)(?::(\d{2}))?(?::(\d{2}))?")


def time_limit_seconds(limit: str) -> int:
    """Seconds in a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    if days := _DAYS.fullmatch(limit):
        d, h, m, s = (int(part or 0) for part in days.groups())
        return ((d * 24 + h) * 60 + m) * 60 + s
    if clock := _CLOCK.fullmatch(limit):
        parts = [int(part) for part in clock.groups() if part is not None]
        if len(parts) == 3:
            h, m, s = parts
            return (h * 60 + m) * 60 + s
        return parts[0] * 60 + (parts[1] if len(parts) == 2 else 0)  # MM or MM:SS
    raise ValueError(f"{limit!r} is not a Slurm time limit (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)")


def _clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def check_time_limit(options: SlurmFields, where: str, flagged: frozenset[str] = frozenset()) -> None:
    """Refuse a time limit that can't hold the drain window plus a start and one unit.

    `where` names the job file (or the API call); `flagged` the fields given as command-line
    flags, which the message then names instead. No time limit given, or 0 (Slurm: none): the
    partition's limit applies, and there is nothing to check here.
    """
    if options.time is None or time_limit_seconds(options.time) == 0:
        return
    limit = time_limit_seconds(options.time)
    needed = options.drain_seconds + UNIT_ESTIMATE_S
    if limit >= needed:
        return

    def name(field: str) -> str:
        return f"--{field.replace('_', '-')}" if field in flagged else f"slurm.{field}"

    room = limit - UNIT_ESTIMATE_S
    lower = f", or lower {name('drain_seconds')} to at most {room}" if room >= DRAIN_SECONDS_MIN else ""
    raise UserError(
        f"{where}: {name('time')} {options.time} ({limit} s) can't hold {name('drain_seconds')} "
        f"{options.drain_seconds} plus a start and one unit (about {UNIT_ESTIMATE_S} s): the job would be "
        f"signalled to stop before it commits anything, and requeued without end; fix: raise {name('time')} "
        f"to at least {_clock(needed)}{lower}")
