"""`onepiece run`: run a job file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from onepiece_hpc import environment
from onepiece_hpc.errors import UserError


def _print_summary(summary) -> None:
    failed = f", {summary.items_failed} failed" if summary.items_failed else ""
    click.echo(f"{summary.output}: {summary.items_done}/{summary.items_total} items done{failed} "
               f"({summary.committed_now} this run, {summary.seconds:.1f} s)")
    if summary.committed_now:
        total = sum(summary.stage_seconds.values())
        parts = ", ".join(f"{name} {sec:.2f} s ({sec / total:.0%})" for name, sec in summary.stage_seconds.items())
        click.echo(f"  stage time: {parts}")


@click.command()
@click.pass_context
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option("--monolithic", is_flag=True, help="Run every stage in this one process (the reference path).")
@click.option("-n", "--ranks", type=int, default=None,
              help="Run staged on this many local MPI ranks (rank 0 manages; the rest serve stages).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output .h5 file (default: the job file's 'output').")
@click.option("--fabric", type=click.Choice(["auto", "shm", "mpi-rma", "verbs", "cuda-ipc"]), default="auto",
              show_default=True, help="How stage ranks pass tensors (auto: cuda-ipc between GPUs of a node, "
              "else shm on a node, else verbs or mpi-rma).")
@click.option("--gpu-memory-gib", type=click.FloatRange(min=1.0), default=None,
              help="Cap what each rank may allocate on its GPU, in GiB.")
@click.option("--ring-slots", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Units in flight per channel.")
@click.option("--policy", type=click.Choice(["static", "adaptive"]), default=None,
              help="Override the job file's policy: static never moves ranks, adaptive moves them by load.")
@click.option("--wait-timeout", type=click.FloatRange(1.0), default=600.0, show_default=True,
              help="Deadline, in seconds, of any single wait on a peer.")
@click.option("--heartbeat-timeout", type=click.FloatRange(5.0, 86_400.0), default=60.0, show_default=True,
              help="Seconds rank 0 waits to hear from a rank (heartbeat or pulse) before it calls it dead.")
@click.option("--retry-failed", is_flag=True,
              help="Generate only the items that failed in earlier runs (a plain run leaves them be).")
def run(ctx: click.Context, job_file: Path, monolithic: bool, ranks: int | None, output: Path | None,
        fabric: str, gpu_memory_gib: float | None, ring_slots: int, policy: str | None,
        wait_timeout: float, heartbeat_timeout: float, retry_failed: bool) -> None:
    """Generate every item of JOB_FILE that is not yet in its output.

    Running the same job again resumes it: only missing items are generated. An output that
    belongs to another job is refused. An item that fails is recorded and the run goes on;
    exit code 4 then says that some items failed (--retry-failed generates them again).
    """
    if monolithic == (ranks is not None):
        raise UserError("say how to run the job: --monolithic (one process) or -n N (staged, N MPI ranks)")
    from onepiece_hpc.runtime.quiet import quiet_libraries

    quiet_libraries(ctx.obj["verbose"])
    from onepiece_hpc.runtime.failures import StageFailed
    from onepiece_hpc.runtime.interrupts import exit_code, interrupt_on_sigterm
    from onepiece_hpc.runtime.monolithic import run_monolithic  # torch and diffusers: import on use
    from onepiece_hpc.runtime.prepare import prepare
    from onepiece_hpc.runtime.progress import ProgressReporter
    # a staged run is checked here (job file, model, device) and planned by its rank 0 alone
    prepared = prepare(job_file, output, environment.cache_dir(), plan=ranks is None)
    interactive = environment.is_interactive(sys.stderr)
    if ranks is not None and fabric == "cuda-ipc":
        _check_cuda_ipc(prepared)
    if ranks is not None:
        _run_staged(prepared, job_file, ranks, output, [
            "--fabric", fabric, "--ring-slots", str(ring_slots), "--wait-timeout", str(wait_timeout),
            "--heartbeat-timeout", str(heartbeat_timeout),
            "--progress", "bar" if interactive else "lines",  # the ranks' stderr is a pipe: tell them
            *(["--policy", policy] if policy else []), *(["--retry-failed"] if retry_failed else []),
            *(["--gpu-memory-gib", str(gpu_memory_gib)] if gpu_memory_gib else [])],
            _retry_command(job_file, output, ranks))
        return

    def progress(total: int, done: int) -> ProgressReporter:
        return ProgressReporter(total, done, prepared.job.name, sys.stderr, interactive)

    interrupt_on_sigterm()
    try:
        summary = run_monolithic(prepared, progress, retry_failed)
    except KeyboardInterrupt as stop:
        click.echo(f"interrupted; finished items are kept in {prepared.output}; run the same command "
                   "again to resume", err=True)
        sys.exit(exit_code(stop))
    except StageFailed as err:
        click.echo(f"error: {err} Finished items are kept in {prepared.output}.", err=True)
        sys.exit(1)
    _print_summary(summary)
    _exit_if_failed(prepared, list(summary.failures), summary.items_failed, _retry_command(job_file, output, None))


def _check_cuda_ipc(prepared) -> None:
    """Refuse --fabric cuda-ipc before any rank starts where it can't work."""
    if prepared.placement.device.type != "cuda":
        raise UserError(f"--fabric cuda-ipc passes tensors between GPUs, but {prepared.job.source} runs on "
                        f"{prepared.placement.device.type}; fix: device: cuda (on a GPU node), or another --fabric")
    from onepiece_hpc.transport.fabrics.cuda_memory import ipc_available

    if not ipc_available():
        raise UserError("--fabric cuda-ipc needs CuPy for CUDA IPC; fix: pip install the CuPy of your CUDA "
                        "(e.g. cupy-cuda12x), or use --fabric auto (pinned shm between GPUs)")


def _run_staged(prepared, job_file: Path, ranks: int, output: Path | None, flags: list[str], retry: str) -> None:
    """Refuse a layout that can't fit before any rank starts; then launch and report."""
    import os

    from onepiece_hpc.runtime.launch import launch, stopped_exit_code
    from onepiece_hpc.planning.layout import plan_layout

    plan_layout(prepared.job, ranks, prepared.model.adapter.topology)
    try:
        report = launch(job_file, ranks, output, flags, as_root=os.geteuid() == 0)
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or SIGHUP: the ranks are stopped by now
        click.echo(f"interrupted; finished items are kept in {prepared.output}; run the same command "
                   "again to resume", err=True)
        sys.exit(stopped_exit_code(stop))
    status = report["status"]
    if status == "completed" and report.get("items_failed"):  # rank 0 has named them
        from onepiece_hpc.runtime.failures import EXIT_ITEMS_FAILED

        click.echo(f"fix their cause, then generate them again: {retry}", err=True)
        sys.exit(EXIT_ITEMS_FAILED)
    if status == "refused":
        sys.exit(UserError.exit_code)
    if status == "preempted":
        click.echo(f"stopped early on request (SIGUSR1): finished items are kept in {prepared.output}; run the "
                   "same command again to go on", err=True)
        sys.exit(3)
    if status != "completed":
        if report.get("reported_by") == "launcher":
            click.echo(f"error: {report['error']}. Finished items are kept in {prepared.output}; run the same "
                       "command again to resume", err=True)
        elif "error" not in report:
            click.echo(f"error: the ranks ended with exit code {report['exit_code']} before rank 0 could "
                       f"report (see the messages above); finished items are kept in {prepared.output}; "
                       "run the same command again to resume", err=True)
        sys.exit(130 if status == "interrupted" else 1)


# -- failed items ------------------------------------------------------------------------------------
def _exit_if_failed(prepared, failures: list, count: int, retry: str) -> None:
    """Name the failed items (the first few units: item, prompt file line, stage, error) and exit 4."""
    from onepiece_hpc.runtime.failures import EXIT_ITEMS_FAILED, failed_items_summary

    if not count:
        return
    for line in failed_items_summary(prepared.plan, failures, count):
        click.echo(line, err=True)
    click.echo(f"fix their cause, then generate them again: {retry}", err=True)
    sys.exit(EXIT_ITEMS_FAILED)


def _retry_command(job_file: Path, output: Path | None, ranks: int | None) -> str:
    import shlex

    words = ["onepiece", "run", str(job_file), *(["-o", str(output)] if output else []),
             *(["-n", str(ranks)] if ranks is not None else ["--monolithic"]), "--retry-failed"]
    return " ".join(shlex.quote(word) for word in words)
