"""`onepiece sweep`: a prompt source times a parameter grid, as Slurm job arrays."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from onepiece_hpc import environment
from onepiece_hpc.cli.slurm_options import pop_flags, slurm_flags


@click.command()
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--parallel", type=click.IntRange(1), default=None,
              help="At most this many array tasks at once (--array=...%K; default: the file's 'parallel').")
@click.option("--max-array-size", type=click.IntRange(1), default=None,
              help="Split into arrays of at most this many tasks (default: the cluster's MaxArraySize).")
@click.option("--dry-run", is_flag=True, help="Write the shards, print the script and sbatch commands; submit nothing.")
@slurm_flags
def sweep(sweep_file: Path, parallel: int | None, max_array_size: int | None, dry_run: bool, **kwargs) -> None:
    """Cut SWEEP_FILE into shards and submit them as job arrays; print each array's job id.

    Each shard is an ordinary job file (DIR/shards/NNNNN.yaml) with its own output (DIR/NNNNN.h5),
    so a shard can be resubmitted or run alone. Submitting the same sweep again resumes every
    shard. Merge the outputs into one view with `onepiece merge DIR`.
    """
    from onepiece_hpc.slurm.commands import max_array_size as cluster_max_array_size
    from onepiece_hpc.slurm.submit import plan_sweep, submit_sweep

    limit = max_array_size or (1000 if dry_run else cluster_max_array_size())
    planned = plan_sweep(sweep_file, pop_flags(kwargs), parallel, sys.executable, limit)
    shards = len(planned.shard_files)
    if dry_run:
        click.echo(planned.arrays[0].submission.script, nl=False)
        click.echo(f"# {shards} shards in {planned.sweep.shards_dir}; submit with:")
        for array in planned.arrays:
            click.echo(f"# {shlex.join(array.submission.argv)}")
        return
    ids = submit_sweep(planned, environment.slurm_index_dir())
    for job_id in ids:
        click.echo(job_id)
    click.echo(f"submitted {shards} shards of {planned.sweep.name} as {len(ids)} array(s): {', '.join(ids)}; "
               f"outputs in {planned.sweep.folder}; follow with: onepiece status {ids[0]}", err=True)
