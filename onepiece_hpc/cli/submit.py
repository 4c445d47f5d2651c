"""`onepiece submit`: run a job file on Slurm."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from onepiece_hpc import environment
from onepiece_hpc.cli.slurm_options import pop_flags, slurm_flags


@click.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output .h5 file (default: the job file's 'output').")
@click.option("--dry-run", is_flag=True, help="Print the script and the sbatch command; submit nothing.")
@slurm_flags
def submit(job_file: Path, output: Path | None, dry_run: bool, **kwargs) -> None:
    """Submit JOB_FILE as one Slurm job and print its job id.

    Resources come from the job file's `slurm:` section, with flags on top. The rendered script
    is kept beside the output (OUT.slurm/), with the job's log and a record of the submission.
    Submitting the same job again resumes its output.
    """
    from onepiece_hpc.slurm.submit import plan_job, submit_job

    planned = plan_job(job_file, output, pop_flags(kwargs), sys.executable)
    if dry_run:
        click.echo(planned.submission.script, nl=False)
        click.echo(f"# submit with:\n# {shlex.join(planned.submission.argv)}")
        return
    job_id = submit_job(planned, environment.slurm_index_dir())
    click.echo(job_id)
    click.echo(f"submitted job {job_id}: {planned.job.name} -> {planned.output}; log: "
               f"{planned.folder / (job_id + '.log')}; follow it with: onepiece status {job_id}", err=True)
