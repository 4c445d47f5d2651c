"""`onepiece run`: run a job file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onepiece_hpc import environment
from onepiece_hpc.errors import UserError


def quiet_libraries(verbose: int) -> None:
    """diffusers and transformers print progress bars and advice by default; keep runs readable."""
    if verbose >= 2:
        return
    import transformers.utils.logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    import diffusers.utils.logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()


def _print_summary(summary) -> None:
    click.echo(f"{summary.output}: {summary.items_done}/{summary.items_total} items done "
               f"({summary.committed_now} this run, {summary.seconds:.1f} s)")
    if summary.committed_now:
        total = sum(summary.stage_seconds.values())
        parts = ", ".join(f"{name} {sec:.2f} s ({sec / total:.0%})" for name, sec in summary.stage_seconds.items())
        click.echo(f"  stage time: {parts}")


@click.command()
@click.pass_context
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option("--monolithic", is_flag=True, help="Run every stage in this one process (the reference path).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output .h5 file (default: the job file's 'output').")
def run(ctx: click.Context, job_file: Path, monolithic: bool, output: Path | None) -> None:
    """Generate every item of JOB_FILE that is not yet in its output.

    Running the same job again resumes it: only missing items are generated. An output that
    belongs to another job is refused.
    """
    if not monolithic:
        raise UserError("the staged runtime (onepiece run JOB -n N) is not available in this version; "
                        "fix: add --monolithic to run every stage in one process")
    quiet_libraries(ctx.obj["verbose"])
    from onepiece_hpc.runtime.monolithic import run_monolithic  # torch and diffusers: import on use
    from onepiece_hpc.runtime.prepare import prepare
    from onepiece_hpc.runtime.progress import ProgressReporter

    prepared = prepare(job_file, output, environment.cache_dir())
    interactive = environment.is_interactive(sys.stderr)

    def progress(total: int, done: int) -> ProgressReporter:
        return ProgressReporter(total, done, prepared.job.name, sys.stderr, interactive)

    try:
        summary = run_monolithic(prepared, progress)
    except KeyboardInterrupt:
        click.echo(f"interrupted; finished items are kept in {prepared.output}; run the same command "
                   "again to resume", err=True)
        sys.exit(130)
    _print_summary(summary)
