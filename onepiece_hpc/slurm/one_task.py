"""A one-task Slurm job: the whole pipeline in this process (`onepiece run --monolithic`), drained
by the batch script's drain signal or by SIGTERM.

    python -m onepiece_hpc.slurm.one_task --drain-signal USR1 JOB.yaml [--output OUT.h5]

One process can't commit what is in flight while it stops, so a drain stops it at once: the unit
in progress is dropped, every committed item is kept. The exit code then tells the batch script
what to do, as rank 0's does in a staged run: 3 when this run committed something (go on), 5 when
it committed nothing (don't requeue: a time limit that can't hold one unit would requeue forever).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from onepiece_hpc.exit_codes import ExitCode, after_signal
from onepiece_hpc.runtime.drain import DRAIN_SIGNALS
from onepiece_hpc.runtime.interrupts import Terminated, stop_handler
from onepiece_hpc.slurm.outcome import output_of, runs_of

STOPPED = (after_signal(signal.SIGINT), after_signal(signal.SIGTERM))  # `onepiece run`'s exit codes after a stop


class Drained(Terminated):
    """The drain signal arrived: stop as on SIGTERM."""


def committed_by(output: Path | None, pid: int) -> int:
    """Items that the runs of process `pid` committed to `output`, from its journal."""
    return sum(int(run.get("items_committed", 0) or 0) for run in runs_of(output) if run.get("pid") == pid)


def drained_exit(output: Path | None, pid: int, cause: str) -> int:
    """3 if this process committed something before the stop, else 5; says which on stderr."""
    committed = committed_by(output, pid)
    if committed:
        print(f"stopped on {cause}: {committed} items committed by this run are kept; the unit in progress "
              "was dropped", file=sys.stderr)
        return ExitCode.DRAINED
    print(f"error: stopped on {cause} before this run committed anything; exit {ExitCode.NO_PROGRESS}: not to be "
          "requeued, so that a job whose time limit can't hold one unit does not requeue forever; fix: raise "
          "slurm.time or lower slurm.drain_seconds, then submit it again", file=sys.stderr)
    return ExitCode.NO_PROGRESS


def run(job_file: str, output: str | None, drain_signal: str) -> int:
    """Run the job in this process; returns the exit code (3 or 5 after a drain, see above)."""
    stops: list[str] = []

    @stop_handler  # raised inside torch's import, Drained would abort the process; swallowed, it would be lost
    def on_drain(signum, frame) -> None:
        stops.append(signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_IGN)  # the stop is under way: the same signal again changes nothing
        raise Drained()

    chosen = {signal.Signals[f"SIG{drain_signal}"], signal.SIGTERM}
    for signum in chosen:
        signal.signal(signum, on_drain)
    try:
        from onepiece_hpc.cli.main import cli

        cli.main(["run", job_file, "--monolithic", *(["--output", output] if output else [])], prog_name="onepiece")
        code = ExitCode.DONE
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else ExitCode.FAILED
    except KeyboardInterrupt:  # the drain came before `onepiece run` could catch it (while importing it)
        code = after_signal(signal.SIGTERM)
    finally:
        for signum in chosen:
            signal.signal(signum, signal.SIG_IGN)
    # a stop that reached `onepiece run` ends it with 130 or 143; one during its start-up, with 1
    stopped = code == after_signal(signal.SIGTERM) or (stops and code in (ExitCode.FAILED, *STOPPED))
    if stopped:
        code = drained_exit(output_of(Path(job_file), output), os.getpid(), stops[0] if stops else "SIGTERM")
    return code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="onepiece-one-task", description=__doc__)
    parser.add_argument("--drain-signal", choices=DRAIN_SIGNALS, default="USR1")
    parser.add_argument("job")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    sys.exit(run(args.job, args.output, args.drain_signal))


if __name__ == "__main__":
    main()
