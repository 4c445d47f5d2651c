"""How this Slurm job's run of an output ended, read from the output's journal.

    python -m onepiece_hpc.slurm.outcome JOB.yaml [--output OUT.h5]     # exit 3, 5 or 1

The batch script asks when the step's exit code can't say: after a drain past its deadline rank 0
closes the output and aborts the other ranks (they may wait on a unit that never comes), and srun
then reports them killed (137) instead of rank 0's 3 or 5. The journal can say: this job's run
(same job id and restart count) ended "preempted" with items committed (exit 3: go on), or
without any (exit 5: don't requeue); anything else exits 1 (not a drain).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onepiece_hpc.runtime.drain import EXIT_DRAINED, EXIT_NO_PROGRESS, PREEMPTED

NOT_A_DRAIN = 1


def output_of(job_file: Path, given: str | None) -> Path | None:
    """The output a run of `job_file` writes, as `onepiece run` resolves it (None if the job file
    can't say). Reads the job file alone, never its prompts."""
    if given:
        return Path(given).absolute()
    from onepiece_hpc.spec.loader import read_document, resolve_path

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
    """3 or 5 if the last run of this job (and restart) ended drained, else 1."""
    mine = [r for r in runs if r.get("slurm_job") == slurm_job and int(r.get("slurm_restart", 0) or 0) == restart]
    if not slurm_job or not mine or mine[-1].get("status") != PREEMPTED:
        return NOT_A_DRAIN
    return EXIT_DRAINED if int(mine[-1].get("items_committed", 0) or 0) > 0 else EXIT_NO_PROGRESS


def main(argv: list[str] | None = None) -> None:
    from onepiece_hpc.environment import slurm_job

    parser = argparse.ArgumentParser(prog="onepiece-outcome", description=__doc__)
    parser.add_argument("job")
    parser.add_argument("--output", default=None)
    args, _ = parser.parse_known_args(argv)
    job_id, restart = slurm_job()
    sys.exit(drained_exit(runs_of(output_of(Path(args.job), args.output)), job_id, restart))


if __name__ == "__main__":
    main()
