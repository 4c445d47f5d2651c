"""Submitting from Python, on submitit: one job, or a sweep as job arrays.

    from onepiece_hpc.slurm import api
    job = api.submit("jobs/tiny.yaml", ntasks_per_node=5, time="30:00")
    job.result()                                   # "completed"
    jobs = api.submit_sweep("jobs/tiny-sweep.yaml")

Resources come from the job (or sweep) file's `slurm:` section, with keyword arguments on top
(the same names). Every task runs `StagedRun`: one rank of the staged runtime, or, for a job of
one task, the whole pipeline. Before the time limit Slurm sends the drain signal
(slurm.drain_signal, USR1 by default) to every task, and a preemption SIGTERM; rank 0 drains
(commits what is in flight, until the drain's deadline) and then, if it committed something, hands
over to submitit's own preemption path (checkpoint, then requeue): the requeued job resumes the
output. A drain that committed nothing fails the job instead of requeueing it, and a time limit
that can't hold drain_seconds plus one unit is refused here, as `onepiece submit` refuses it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import submitit

from onepiece_hpc.errors import UserError
from onepiece_hpc.exit_codes import ExitCode
from onepiece_hpc.slurm import records
from onepiece_hpc.slurm.commands import max_array_size
from onepiece_hpc.slurm.limits import time_limit_seconds
from onepiece_hpc.slurm.mpi import choose_plugin, srun_plugins
from onepiece_hpc.slurm.submit import check_options, resolve_options
from onepiece_hpc.slurm.sweep import load_sweep, split_array, write_shards
from onepiece_hpc.jobfile.job import SlurmFields
from onepiece_hpc.jobfile.loader import load_job

DEFAULT_MINUTES = 60  # submitit always sets a time limit; without slurm.time, this one


def time_minutes(limit: str | None) -> int:
    """A Slurm time limit ('30', '30:00', '4:00:00', '1-12', '1-12:00:00') in whole minutes, rounded up."""
    if limit is None:
        return DEFAULT_MINUTES
    return max(1, -(-time_limit_seconds(limit) // 60))


class StagedRun(submitit.helpers.Checkpointable):
    """What each task runs: one rank of the job (or the whole job, with one task).

    Checkpointable: the checkpoint is the same call, since running a job against its output
    resumes it.
    """

    def __init__(self, job_file: str, output: str | None = None, drain_signal: str = "USR1",
                 drain_seconds: int = 120, requeue: str = "scontrol", heartbeat_timeout: int = 60) -> None:
        self.job_file = job_file
        self.output = output
        self.drain_signal, self.drain_seconds, self.requeue = drain_signal, drain_seconds, requeue
        self.heartbeat_timeout = heartbeat_timeout

    def __call__(self) -> str:
        env = submitit.JobEnvironment()
        handover = signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]
        submitits = signal.getsignal(handover)  # the drain replaces it; it is put back for the requeue
        if env.num_tasks == 1:
            from onepiece_hpc.slurm import one_task

            code = one_task.run(self.job_file, self.output, self.drain_signal)
        else:
            from onepiece_hpc.runtime import rank_main
            from onepiece_hpc.runtime.options import RunOptions

            options = RunOptions(job=self.job_file, output=self.output or None, expect_ranks=env.num_tasks,
                                 progress="lines", drain_signal=self.drain_signal, drain_seconds=self.drain_seconds,
                                 heartbeat_timeout=self.heartbeat_timeout)
            code = ExitCode.DONE
            try:
                rank_main.main(options.to_argv())
            except SystemExit as stop:
                code = stop.code or ExitCode.DONE
        if code == ExitCode.DRAINED and env.global_rank == 0:
            if self.requeue == "none":
                return "preempted"
            # hand over to submitit's preemption handler: checkpoint() and requeue
            sys.stderr.flush()
            signal.signal(handover, submitits)
            os.kill(os.getpid(), handover)
        if code == ExitCode.NO_PROGRESS:
            raise RuntimeError(f"{self.job_file}: drained before this run committed anything; not requeued, so "
                               "that a job whose time limit can't hold one unit does not requeue forever; fix: "
                               "raise slurm.time or lower slurm.drain_seconds")
        if code:
            raise RuntimeError(f"rank {env.global_rank} of {self.job_file} ended with exit code {code}")
        return "completed"


def _mpi(options: SlurmFields) -> str:
    if options.mpi != "auto":
        return options.mpi
    import mpi4py

    mpi4py.rc.initialize = False
    from mpi4py import MPI

    return choose_plugin(MPI.Get_library_version(), srun_plugins())


def _executor(folder: Path, options: SlurmFields, name: str) -> submitit.AutoExecutor:
    extra: dict = {"signal": f"{options.drain_signal}@{options.drain_seconds}", "requeue": True}
    for key in ("account", "qos", "constraint", "mem"):
        if getattr(options, key) is not None:
            extra[key] = getattr(options, key)
    for option in options.extra:
        key, _, value = option[2:].partition("=")
        extra[key.replace("-", "_")] = value or True
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(
        name=f"onepiece-{name}", nodes=options.nodes, tasks_per_node=options.ntasks_per_node,
        timeout_min=time_minutes(options.time), slurm_srun_args=[f"--mpi={_mpi(options)}", "--kill-on-bad-exit=1"],
        slurm_additional_parameters=extra,
        **({"gpus_per_node": options.gpus_per_node} if options.gpus_per_node else {}),
        **({"cpus_per_task": options.cpus_per_task} if options.cpus_per_task else {}),
        **({"slurm_partition": options.partition} if options.partition else {}),
    )
    return executor


def _check(job, options: SlurmFields, keywords: dict, where: str) -> None:
    """What `onepiece submit` refuses, refused here too; and chaining, which is the batch script's."""
    if options.requeue == "chain":
        raise UserError(f"{where}: slurm.requeue: chain is done by the batch script of `onepiece submit`; the "
                        "Python API requeues through submitit (scontrol requeue); fix: use requeue: scontrol or "
                        "none here, or submit with `onepiece submit`")
    given = {name: value for name, value in keywords.items() if name in ("time", "drain_seconds")}
    check_options(job, options, {}, f"{where} (keyword arguments {sorted(given)} on top)" if given else where)


def _run(job_file: str, output: str | None, options: SlurmFields) -> StagedRun:
    return StagedRun(job_file, output, options.drain_signal, options.drain_seconds, options.requeue,
                     options.heartbeat_timeout)


def submit(job_file: str | Path, output: str | Path | None = None, folder: str | Path | None = None,
           **slurm) -> submitit.Job:
    """Submit one job file; `slurm` overrides its slurm section (nodes=2, time="4:00:00", ...)."""
    problems: list[str] = []
    job = load_job(Path(job_file), problems)
    if job is None:
        raise UserError(problems, headline=f"{job_file}: the job file has {len(problems)} problem(s):")
    options = resolve_options(job.slurm, slurm, "arguments")
    _check(job, options, slurm, job.where("slurm"))
    out = Path(output).absolute() if output else job.output
    folder = Path(folder) if folder else records.slurm_folder(out) / "submitit"
    return _executor(folder, options, job.name).submit(_run(str(job.source), str(out), options))


def submit_sweep(sweep_file: str | Path, folder: str | Path | None = None, parallel: int | None = None,
                 **slurm) -> list[submitit.Job]:
    """Cut a sweep into shards (as `onepiece sweep` does) and submit them as job arrays."""
    sweep = load_sweep(Path(sweep_file))
    shard_files = write_shards(sweep)
    options = resolve_options(sweep.fields.slurm, slurm, "arguments")
    problems: list[str] = []
    first = load_job(shard_files[0], problems)
    if first is None:
        raise UserError(problems)
    _check(first, options, slurm, str(sweep.source))
    executor = _executor(Path(folder) if folder else sweep.folder / "submitit", options, sweep.name)
    limit = parallel or sweep.fields.parallel
    if limit:
        executor.update_parameters(slurm_array_parallelism=limit)
    jobs: list[submitit.Job] = []
    for offset, tasks in split_array(len(shard_files), max_array_size()):
        runs = [_run(str(path), None, options) for path in shard_files[offset:offset + tasks]]
        with executor.batch():
            jobs += [executor.submit(run) for run in runs]
    return jobs

