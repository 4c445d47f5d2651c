"""`onepiece status`: Slurm's view of a job (squeue, sacct) joined with the outputs' progress.

Parsing and arithmetic are pure; `job_tasks` and `output_progress` do the I/O. The rate is
taken over the last RATE_WINDOW commits of all the job's outputs together (so an array's rate
is the whole array's), and the ETA is the work left (steps, guidance and size of every item
not done, planning/work.py) over the work rate of those commits.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.planning.work import RATE_WINDOW, WorkProgress, work_progress
from onepiece_hpc.slurm.commands import SlurmCommandError, run_slurm

#: the state a job shows when its tasks differ: the first of these that any task is in
STATE_ORDER = ("RUNNING", "COMPLETING", "REQUEUED", "PENDING", "SUSPENDED", "PREEMPTED", "FAILED",
               "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "CANCELLED", "COMPLETED")


@dataclass(frozen=True)
class TaskState:
    task: str  # "12" or, in an array, "12_3"
    state: str
    elapsed: str = ""
    detail: str = ""  # squeue's reason, or sacct's exit code


def expand_task_ids(task: str) -> list[str]:
    """'12_[0-2,5%2]' -> ['12_0', '12_1', '12_2', '12_5']; other ids as they are."""
    match = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(?:%\d+)?\]", task)
    if not match:
        return [task]
    ids = []
    for part in match.group(2).split(","):
        low, _, high = part.partition("-")
        ids += [f"{match.group(1)}_{i}" for i in range(int(low), int(high or low) + 1)]
    return ids


def parse_squeue(text: str) -> list[TaskState]:
    """Lines of `squeue -h -o %i|%T|%M|%r`."""
    tasks = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            tasks += [TaskState(t, parts[1], parts[2], parts[3]) for t in expand_task_ids(parts[0])]
    return tasks


def parse_sacct(text: str) -> list[TaskState]:
    """Lines of `sacct -n -P -X -o JobID,State,ExitCode,Elapsed` ('CANCELLED by 0' -> CANCELLED)."""
    tasks = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0]:
            state = parts[1].split()[0] if parts[1] else "UNKNOWN"
            tasks += [TaskState(t, state, parts[3], f"exit {parts[2]}") for t in expand_task_ids(parts[0])]
    return tasks


def combine(squeue: list[TaskState], sacct: list[TaskState]) -> list[TaskState]:
    """sacct's history with squeue's live view on top, in task order."""
    merged = {t.task: t for t in sacct}
    merged.update({t.task: t for t in squeue})

    def order(task: str) -> tuple[int, int]:
        head, _, tail = task.partition("_")
        return int(head) if head.isdigit() else 0, int(tail) if tail.isdigit() else -1
    return [merged[k] for k in sorted(merged, key=order)]


def overall_state(tasks: list[TaskState]) -> str:
    states = {t.state for t in tasks}
    return next((s for s in STATE_ORDER if s in states), sorted(states)[0] if states else "UNKNOWN")


def progress(done: int, total: int, work_done: float, work_total: float, times: np.ndarray,
             work: np.ndarray) -> WorkProgress:
    """Done counts, and the rate and ETA from the latest commits' times and work (planning/work.py)."""
    return work_progress(done, total, work_done, work_total, times, work)


def job_tasks(job_id: str) -> tuple[list[TaskState], list[str]]:
    """The job's tasks from squeue and sacct, plus notes on what could not be asked."""
    if not re.fullmatch(r"\d+(_\d+)?", job_id):
        raise UserError(f"{job_id!r} is not a Slurm job id; fix: give a number such as 1234 (or 1234_5 for an "
                        "array task), or an output .h5 file")
    notes = []
    try:
        live = parse_squeue(run_slurm(["squeue", "-h", "-j", job_id, "-o", "%i|%T|%M|%r"]))
    except SlurmCommandError as err:
        if "Invalid job id" not in str(err):
            raise
        live = []  # squeue forgets finished jobs; sacct remembers them
    try:
        history = parse_sacct(run_slurm(["sacct", "-n", "-P", "-X", "-j", job_id, "-o",
                                         "JobID,State,ExitCode,Elapsed"]))
    except SlurmCommandError as err:
        history = []
        notes.append(f"{err.render()}; showing squeue's view only (finished jobs are not listed)")
    return combine(live, history), notes


def output_progress(paths: list[Path], totals: list[int | None]) -> tuple[WorkProgress, list[WorkProgress | None]]:
    """Progress of each output (None where it is not there yet) and of all of them together; an
    output not created yet counts its expected items at the mean work of the others'."""
    from onepiece_hpc.store.reader import open_output
    from onepiece_hpc.store.summary import work_commits

    each: list[WorkProgress | None] = []
    done_all, total_all, work_done, work_total, missing = 0, 0, 0.0, 0.0, 0
    times_all, work_all = np.empty(0), np.empty(0)
    for path, expected in zip(paths, totals):
        if not Path(path).exists():
            each.append(None)
            missing += expected or 0
            continue
        with open_output(Path(path)) as view:
            got = work_commits(view, RATE_WINDOW)
        each.append(progress(got["items_done"], got["items_total"], got["work_done"], got["work_total"],
                             got["times"], got["work"]))
        done_all += got["items_done"]
        total_all += got["items_total"]
        work_done += got["work_done"]
        work_total += got["work_total"]
        times_all, work_all = np.concatenate([times_all, got["times"]]), np.concatenate([work_all, got["work"]])
    if missing:
        work_total += (work_total / total_all if total_all else 1.0) * missing
    return progress(done_all, total_all + missing, work_done, work_total, times_all, work_all), each


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86_400 else f"{seconds / 86_400:.1f} days"


def expected_items(job_file: Path) -> int | None:
    """How many items a job file's output will hold (for outputs not created yet)."""
    from onepiece_hpc.jobfile.loader import load_job

    job = load_job(Path(job_file), [])
    return len(job.records) if job else None
