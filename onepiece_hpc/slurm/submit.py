"""Submission: a job file -> one sbatch job; a sweep file -> shards -> job arrays."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from onepiece_hpc.errors import UserError
from onepiece_hpc.models.topologies import topology_of
from onepiece_hpc.models.workflow.topology import workflow_topology
from onepiece_hpc.planning.layout import plan_layout
from onepiece_hpc.slurm import records
from onepiece_hpc.slurm.commands import parse_job_id, run_slurm
from onepiece_hpc.slurm.limits import check_time_limit
from onepiece_hpc.slurm.script import Submission, render_script, sbatch_argv, script_arguments
from onepiece_hpc.slurm.sweep import Sweep, array_spec, load_sweep, shard_output, split_array, write_shards
from onepiece_hpc.jobfile.job import FIELD_HINTS, Job, SlurmFields
from onepiece_hpc.jobfile.loader import load_job


def resolve_options(base: SlurmFields, flags: dict, origin: str) -> SlurmFields:
    """The job file's slurm section with command-line flags on top, validated as one.

    Without an explicit ntasks_per_node, a GPU count gives one rank per GPU.
    """
    data = base.model_dump(exclude_unset=True)
    data.update({name: value for name, value in flags.items() if value is not None})
    if "gpus_per_node" in data and "ntasks_per_node" not in data:
        data["ntasks_per_node"] = data["gpus_per_node"]
    try:
        return SlurmFields.model_validate(data)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            name = str(error["loc"][0])
            from_flag = flags.get(name) is not None
            source = f"--{name.replace('_', '-')}" if from_flag else f"{origin}: field 'slurm.{name}'"
            hint = FIELD_HINTS.get(f"slurm.{name}")
            text = f"{source}: {error['msg']} (got {error.get('input')!r})"
            problems.append(f"{text}; fix: {hint}" if hint else text)
        raise UserError(problems) from None


def check_ranks(job: Job, options: SlurmFields) -> None:
    """Refuse, before anything is queued, a task count the runtime can't use."""
    ntasks = options.nodes * options.ntasks_per_node
    if ntasks > 1:
        plan_layout(job, ntasks, workflow_topology(job) if job.workflow else topology_of(job.model))


def check_options(job: Job, options: SlurmFields, flags: dict, where: str) -> None:
    """Everything refused before anything is queued: the task count, and a time limit that can't
    hold the drain plus one unit (it would requeue without end)."""
    check_ranks(job, options)
    check_time_limit(options, where, frozenset(name for name, value in flags.items() if value is not None))


def successor_options(log: str, options: SlurmFields) -> list[str]:
    """The sbatch options a chained successor is submitted with (the script's #SBATCH lines come
    with the script): the same log pattern and the same extra options."""
    return [f"--output={log}", *options.extra]


def log_pattern(folder: Path, name: str) -> str:
    if "%" in str(folder):
        raise UserError(f"{folder}: Slurm reads '%' in a log path as a pattern; fix: choose an output path "
                        "without '%'")
    return str(folder / name)


@dataclass(frozen=True)
class PlannedJob:
    """A submission ready to go: everything decided, nothing written yet."""

    job: Job
    output: Path
    options: SlurmFields
    folder: Path
    script_path: Path
    submission: Submission


def plan_job(job_path: Path, output: Path | None, flags: dict, python: str) -> PlannedJob:
    problems: list[str] = []
    job = load_job(Path(job_path), problems)
    if job is None:
        raise UserError(problems, headline=f"{job_path}: the job file has {len(problems)} problem(s):")
    options = resolve_options(job.slurm, flags, job.where("slurm"))
    check_options(job, options, flags, job.where("slurm"))
    out = output.absolute() if output else job.output
    folder = records.slurm_folder(out)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{time.time_ns() % 1_000_000_000:09d}"
    script_path = folder / f"job-{stamp}.sbatch"
    log = log_pattern(folder, "%j.log")
    args = [*script_arguments(python, options, successor_options(log, options)), str(job.source), "--output", str(out)]
    argv = sbatch_argv(script_path, log, args, options.extra)
    return PlannedJob(job, out, options, folder, script_path,
                      Submission(render_script(options, job.name), argv))


def submit_job(planned: PlannedJob, index: Path) -> str:
    """Write the script beside the output, run sbatch, record the submission; returns the job id."""
    planned.folder.mkdir(parents=True, exist_ok=True)
    planned.script_path.write_text(planned.submission.script, encoding="utf-8")
    job_id = parse_job_id(run_slurm(planned.submission.argv))
    records.save(records.SubmissionRecord(
        job_id=job_id, kind="job", submitted_at=time.time(), argv=planned.submission.argv,
        script=str(planned.script_path), outputs=(str(planned.output),), job_file=str(planned.job.source),
    ), planned.folder, index)
    return job_id


@dataclass(frozen=True)
class PlannedArray:
    offset: int
    tasks: int
    submission: Submission


@dataclass(frozen=True)
class PlannedSweep:
    sweep: Sweep
    shard_files: tuple[Path, ...]
    options: SlurmFields
    folder: Path
    script_path: Path
    arrays: tuple[PlannedArray, ...]


def plan_sweep(sweep_path: Path, flags: dict, parallel: int | None, python: str, max_array: int) -> PlannedSweep:
    """Write the shards' job files (validated) and plan one job array per MaxArraySize shards."""
    sweep = load_sweep(sweep_path)
    shard_files = write_shards(sweep)
    options = resolve_options(sweep.fields.slurm, flags, str(sweep.source))
    problems: list[str] = []
    first = load_job(shard_files[0], problems)
    if first is None:
        raise UserError(problems)
    check_options(first, options, flags, str(sweep.source))
    folder = sweep.folder / "slurm"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{time.time_ns() % 1_000_000_000:09d}"
    script_path = folder / f"array-{stamp}.sbatch"
    script = render_script(options, sweep.name)
    log = log_pattern(folder, "%A_%a.log")
    parallel = parallel or sweep.fields.parallel
    arrays = []
    for offset, tasks in split_array(len(shard_files), max_array):
        args = [*script_arguments(python, options, successor_options(log, options)), "--shards", str(sweep.shards_dir),
                "--offset", str(offset)]
        argv = sbatch_argv(script_path, log, args, options.extra, array=array_spec(tasks, parallel))
        arrays.append(PlannedArray(offset, tasks, Submission(script, argv)))
    return PlannedSweep(sweep, tuple(shard_files), options, folder, script_path, tuple(arrays))


def submit_sweep(planned: PlannedSweep, index: Path) -> list[str]:
    """Submit every array; returns their job ids. Each array's record lists its tasks' outputs."""
    planned.folder.mkdir(parents=True, exist_ok=True)
    planned.script_path.write_text(planned.arrays[0].submission.script, encoding="utf-8")
    ids = []
    for array in planned.arrays:
        job_id = parse_job_id(run_slurm(array.submission.argv))
        outputs = tuple(str(shard_output(planned.sweep, array.offset + t)) for t in range(array.tasks))
        records.save(records.SubmissionRecord(
            job_id=job_id, kind="array", submitted_at=time.time(), argv=array.submission.argv,
            script=str(planned.script_path), outputs=outputs, job_file=str(planned.sweep.source),
            shards=str(planned.sweep.shards_dir), offset=array.offset,
        ), planned.folder, index)
        ids.append(job_id)
    return ids
