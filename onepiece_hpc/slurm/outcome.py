"""How this Slurm job's run of an output ended, read from the output's journal and rank 0's report.

    python -m onepiece_hpc.slurm.outcome [--report FILE] JOB.yaml [--output OUT.h5]

The batch script asks when the step's exit code can't say. Rank 0 ends a step with MPI_Abort
after a drain past its deadline (the other ranks may wait on a unit that never comes), after a
refusal only it found (the output is another job's, or in use) and after a failure; srun then
reports the tasks killed (137) instead of rank 0's code. The journal can say: this job's run (same
job id and restart count) ended "preempted" with items committed (exit DRAINED, 3: go on), or
without any (NO_PROGRESS, 5: don't requeue). Else rank 0's report (`rank_main --report`) can say:
refused (REFUSED, 2) or failed (FAILED, 1). With neither, UNKNOWN (9): nothing is known, and the
step's own code stands (the codes: onepiece_hpc/exit_codes.py). It prints the hosts rank 0 found
lost (comma-separated), if any.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from onepiece_hpc.exit_codes import ExitCode
from onepiece_hpc.runtime.drain import PREEMPTED

NOT_A_DRAIN = ExitCode.FAILED  # what drained_exit says of a run that did not drain
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def output_of(job_file: Path, given: str | None) -> Path | None:
    """The output a run of `job_file` writes, as `onepiece run` resolves it (None if the job file
    can't say). Reads the job file alone, never its prompts."""
    if given:
        return Path(given).absolute()
    from onepiece_hpc.jobfile.loader import read_document, resolve_path

    doc = read_document(job_file.absolute(), [])
    if doc is None or not isinstance(doc.data, dict) or not isinstance(doc.data.get("name"), str):
        return None
    output = doc.data.get("output")
    return resolve_path(job_file.absolute().parent, output if isinstance(output, str) and output
                        else f"out/{doc.data['name']}.h5")


def runs_of(output: Path | None) -> list[dict]:
    """The output's run records, oldest first; none if it can't be read."""
    if output is None or not output.exists():
        return []
    from onepiece_hpc.errors import UserError
    from onepiece_hpc.store.reader import view_of

    try:
        return view_of(output, provenance=False).runs
    except (UserError, OSError):
        return []


def drained_exit(runs: list[dict], slurm_job: str, restart: int) -> int:
    """DRAINED or NO_PROGRESS if the last run of this job (and restart) ended drained, else NOT_A_DRAIN."""
    mine = [r for r in runs if r.get("slurm_job") == slurm_job and int(r.get("slurm_restart", 0) or 0) == restart]
    if not slurm_job or not mine or mine[-1].get("status") != PREEMPTED:
        return NOT_A_DRAIN
    return ExitCode.DRAINED if int(mine[-1].get("items_committed", 0) or 0) > 0 else ExitCode.NO_PROGRESS


def read_report(report: Path | None) -> dict:
    """Rank 0's report, or {} (none, an empty one: rank 0 never got that far or ran on another
    node, or one that can't be read)."""
    import json

    try:
        found = json.loads(report.read_text(encoding="utf-8")) if report else {}
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def reported_exit(report: Path | None) -> int:
    """REFUSED if rank 0's report says it refused the job, FAILED if it says the run failed, else UNKNOWN."""
    return {"refused": ExitCode.REFUSED, "failed": ExitCode.FAILED}.get(read_report(report).get("status"),
                                                                        ExitCode.UNKNOWN)


def reported_lost_hosts(report: Path | None) -> list[str]:
    """The hosts rank 0 found lost, every rank on them dead (runtime/liveness.py)."""
    hosts = read_report(report).get("lost_hosts")
    # they reach scontrol and sbatch as node names: plain host names only
    return [h for h in hosts if isinstance(h, str) and HOST_NAME.fullmatch(h)] if isinstance(hosts, list) else []


def step_exit(runs: list[dict], slurm_job: str, restart: int, report: Path | None) -> int:
    """What the step's run ended with, as the batch script goes on: a drain first (the journal is
    the output's own word), then rank 0's report."""
    drained = drained_exit(runs, slurm_job, restart)
    return drained if drained != NOT_A_DRAIN else reported_exit(report)


def main(argv: list[str] | None = None) -> None:
    from onepiece_hpc.environment import slurm_job

    parser = argparse.ArgumentParser(prog="onepiece-outcome", description=__doc__)
    parser.add_argument("job")
    parser.add_argument("--output", default=None)
    parser.add_argument("--report", type=Path, default=None)
    args, _ = parser.parse_known_args(argv)
    job_id, restart = slurm_job()
    lost = reported_lost_hosts(args.report)
    if lost:  # for the batch script, which keeps them out of the requeued job
        print(",".join(lost))
    sys.exit(step_exit(runs_of(output_of(Path(args.job), args.output)), job_id, restart, args.report))


if __name__ == "__main__":
    main()
