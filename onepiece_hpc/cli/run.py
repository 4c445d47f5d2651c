"""`onepiece run`: run a job file."""

from __future__ import annotations

import signal
import sys
from dataclasses import replace

import click

from onepiece_hpc import environment
from onepiece_hpc.errors import UserError
from onepiece_hpc.exit_codes import ExitCode, after_signal
from onepiece_hpc.runtime.options import RunOptions, run_command_options


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
@run_command_options
def run(ctx: click.Context, **values) -> None:
    """Generate every item of JOB_FILE that is not yet in its output.

    Running the same job again resumes it: only missing items are generated. An output that
    belongs to another job is refused. An item that fails is recorded and the run goes on;
    exit code 4 then says that some items failed (--retry-failed generates them again).
    """
    options = RunOptions.from_values(values)
    if options.monolithic == (options.ranks is not None):
        raise UserError("say how to run the job: --monolithic (one process) or -n N (staged, N MPI ranks)")
    if options.phases is not None and options.policy not in (None, "static"):
        raise UserError(f"--phases moves no ranks (the ranks of a GPU take turns on it), so --policy "
                        f"{options.policy} can't apply; fix: leave --policy out, or run without --phases")
    if options.mps and options.monolithic:
        raise UserError("--mps lets the ranks that share a GPU run their kernels at once; a --monolithic run is "
                        "one process; fix: run staged (-n N) with --mps, or leave --mps out")
    from onepiece_hpc.runtime.prepare import prepare
    from onepiece_hpc.runtime.quiet import quiet_environment, quiet_libraries

    # a staged run's models load in its ranks, not here: this process need not import the libraries
    (quiet_libraries if options.monolithic else quiet_environment)(ctx.obj["verbose"])
    # a staged run is checked here (job file, model, device) and planned by its rank 0 alone
    prepared = prepare(options.job, options.output, environment.cache_dir(), plan=options.monolithic)
    interactive = environment.is_interactive(sys.stderr)
    if options.ranks is not None:
        if options.fabric == "cuda-ipc":
            _check_cuda_ipc(prepared)
        if options.mps and prepared.placement.device_type != "cuda":
            raise UserError(f"--mps shares GPUs between ranks, but {prepared.job.source} runs on "
                            f"{prepared.placement.device_type}; fix: device: cuda (on a GPU node), or leave --mps out")
        port = options.metrics_port if options.metrics_port is not None else prepared.job.metrics_port
        if port is not None:  # a taken port is said before any rank starts
            from onepiece_hpc.observe.server import check_port

            check_port(port)
        # the ranks' stderr is a pipe: tell them how to show progress
        _run_staged(prepared, replace(options, progress="bar" if interactive else "lines"))
        return

    from onepiece_hpc.runtime.failures import StageFailed
    from onepiece_hpc.runtime.interrupts import exit_code, interrupt_on_sigterm
    from onepiece_hpc.runtime.monolithic import run_monolithic  # torch and diffusers: import on use
    from onepiece_hpc.runtime.progress import ProgressReporter

    def progress(meter) -> ProgressReporter:
        return ProgressReporter(meter, prepared.job.name, sys.stderr, interactive)

    if options.gpu_memory_gib is not None and prepared.placement.device_type == "cuda":
        from onepiece_hpc.runtime.gpus import take_gpu

        take_gpu(prepared.placement.device.index or 0, options.gpu_memory_gib)
    interrupt_on_sigterm()
    try:
        summary = run_monolithic(prepared, progress, options.retry_failed, phase=options.phases)
    except KeyboardInterrupt as stop:
        click.echo(f"interrupted; finished items are kept in {prepared.output}; run the same command "
                   "again to resume", err=True)
        sys.exit(exit_code(stop))
    except StageFailed as err:
        click.echo(f"error: {err} Finished items are kept in {prepared.output}.", err=True)
        sys.exit(ExitCode.FAILED)
    _print_summary(summary)
    _exit_if_failed(prepared, list(summary.failures), summary.items_failed, _retry_command(options))


def _check_phase_chains(prepared, layout) -> None:
    """Refuse a run in phases whose layout can't give each GPU one rank of every stage."""
    chains = layout.chains()
    if prepared.placement.device_type != "cuda":
        return
    import torch

    gpus = torch.cuda.device_count()
    if len(chains) != gpus:
        stages = ", ".join(f"{stage}: {gpus}" for stage in layout.topology.names)
        raise UserError(f"--phases runs one rank of every stage on each GPU, but the layout has {len(chains)} "
                        f"rank(s) a stage for {gpus} GPU(s); fix: stages: {{{stages}}} in "
                        f"{prepared.job.source} and -n {1 + gpus * len(layout.topology)}")


def _check_cuda_ipc(prepared) -> None:
    """Refuse --fabric cuda-ipc before any rank starts where it can't work."""
    if prepared.placement.device_type != "cuda":
        raise UserError(f"--fabric cuda-ipc passes tensors between GPUs, but {prepared.job.source} runs on "
                        f"{prepared.placement.device_type}; fix: device: cuda (on a GPU node), or another --fabric")
    from onepiece_hpc.transport.fabrics.cuda_memory import ipc_available

    if not ipc_available():
        raise UserError("--fabric cuda-ipc needs CuPy for CUDA IPC; fix: pip install the CuPy of your CUDA "
                        "(e.g. cupy-cuda12x), or use --fabric auto (pinned shm between GPUs)")


def _run_staged(prepared, options: RunOptions) -> None:
    """Refuse a layout that can't fit before any rank starts; then launch and report."""
    import os

    from onepiece_hpc.planning.layout import plan_layout
    from onepiece_hpc.runtime.launch import launch, stopped_exit_code

    from onepiece_hpc.runtime.gpus import check_stage_memory

    layout = plan_layout(prepared.job, options.ranks, prepared.model.adapter.topology)
    if options.phases is not None:
        _check_phase_chains(prepared, layout)
    check_stage_memory(options.stage_memory_gib(), layout.topology.names, prepared.placement.device_type,
                       options.phases)
    try:
        report = launch(options, as_root=os.geteuid() == 0)
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or SIGHUP: the ranks are stopped by now
        click.echo(f"interrupted; finished items are kept in {prepared.output}; run the same command "
                   "again to resume", err=True)
        sys.exit(stopped_exit_code(stop))
    status = report["status"]
    if status == "completed" and report.get("items_failed"):  # rank 0 has named them
        click.echo(f"fix their cause, then generate them again: {_retry_command(options)}", err=True)
        sys.exit(ExitCode.ITEMS_FAILED)
    said_by_rank_0 = report.get("error") if report.get("reported_by") != "launcher" else None
    if said_by_rank_0:  # rank 0 leaves its one error line to this process (runtime/rank.py say_error)
        click.echo(f"error: {said_by_rank_0}", err=True)
    if status == "refused":
        sys.exit(ExitCode.REFUSED)
    if status == "preempted":
        click.echo(f"stopped early on request (SIGUSR1): finished items are kept in {prepared.output}; run the "
                   "same command again to go on", err=True)
        sys.exit(ExitCode.DRAINED)
    if status != "completed":
        if report.get("reported_by") == "launcher":
            click.echo(f"error: {report['error']}. Finished items are kept in {prepared.output}; run the same "
                       "command again to resume", err=True)
        elif "error" not in report:
            click.echo(f"error: the ranks ended with exit code {report['exit_code']} before rank 0 could "
                       f"report (see the messages above); finished items are kept in {prepared.output}; "
                       "run the same command again to resume", err=True)
        sys.exit(after_signal(signal.SIGINT) if status == "interrupted" else ExitCode.FAILED)


# -- failed items ------------------------------------------------------------------------------------
def _exit_if_failed(prepared, failures: list, count: int, retry: str) -> None:
    """Name the failed items (the first few units: item, prompt file line, stage, error) and exit 4."""
    from onepiece_hpc.runtime.failures import failed_items_summary

    if not count:
        return
    for line in failed_items_summary(prepared.plan, failures, count):
        click.echo(line, err=True)
    click.echo(f"fix their cause, then generate them again: {retry}", err=True)
    sys.exit(ExitCode.ITEMS_FAILED)


def _retry_command(options: RunOptions) -> str:
    """The command that generates the failed items again, as the user would type it."""
    import shlex

    words = ["onepiece", "run", str(options.job), *(["-o", str(options.output)] if options.output else []),
             *(["-n", str(options.ranks)] if options.ranks is not None else ["--monolithic"]), "--retry-failed"]
    return " ".join(shlex.quote(word) for word in words)
