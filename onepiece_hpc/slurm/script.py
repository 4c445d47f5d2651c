"""The sbatch script and the sbatch command line, rendered by pure functions.

The script's body is the same for every job. What to run (job file, output, sweep folder)
reaches it only as arguments, which it passes on quoted ("$@") and never evaluates; the
#SBATCH lines hold only values that validation has already held to patterns without spaces,
quotes or line breaks. So no string from a job file or flag can run as shell code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from onepiece_hpc.spec.job import NAME_PATTERN, SlurmFields

#: what a value on an #SBATCH line may hold (defence in depth: validation already checked it)
_HEADER_VALUE = re.compile(r"[A-Za-z0-9._:@&|*\[\]()!,=-]+")

BODY = r"""
# onepiece-hpc batch script. Submit it as it is or let `onepiece submit` / `onepiece sweep` do it:
#
#   sbatch [OPTIONS] onepiece.sbatch [--python PY] [--mpi PLUGIN] JOB.yaml [--output OUT.h5]
#   sbatch --array=0-N%K [OPTIONS] onepiece.sbatch [--python PY] [--mpi PLUGIN] --shards DIR --offset M
#
# The body is the same for every job: what to run arrives as arguments and is only passed on,
# quoted, never evaluated. One task runs the whole pipeline in one process (onepiece run
# --monolithic); four or more run the staged runtime under srun, one rank a task (one a GPU where
# there are GPUs). With --shards, array task T runs the job file DIR/NNNNN.yaml, NNNNN = M + T.
#
# Before the time limit Slurm sends USR1 to this script (--signal=B:USR1@SECONDS). It is passed on
# to the run, which stops taking new work, commits what is in flight and exits 3; the job is then
# requeued, and the requeued job resumes the output, generating only what is still missing.
set -euo pipefail

say() { echo "onepiece.sbatch: $*" >&2; }

python=python3
mpi=auto
shards=
offset=0
while [ $# -gt 0 ]; do
    case "$1" in
        --python) python="$2"; shift 2 ;;
        --mpi) mpi="$2"; shift 2 ;;
        --shards) shards="$2"; shift 2 ;;
        --offset) offset="$2"; shift 2 ;;
        *) break ;;
    esac
done

if [ -n "$shards" ]; then
    if ! [[ "$offset" =~ ^[0-9]+$ && "${SLURM_ARRAY_TASK_ID:-}" =~ ^[0-9]+$ ]]; then
        say "--shards needs a job array (sbatch --array=...) and a whole-number --offset"
        exit 2
    fi
    printf -v job '%s/%05d.yaml' "$shards" "$((10#$offset + 10#$SLURM_ARRAY_TASK_ID))"
    set -- "$job"
fi
if [ $# -eq 0 ]; then
    say "no job file given; usage: sbatch onepiece.sbatch JOB.yaml [--output OUT.h5]"
    exit 2
fi
if ! command -v "$python" >/dev/null; then
    say "'$python' not found; fix: activate the environment that has onepiece-hpc before sbatch, or pass --python PATH"
    exit 2
fi

ntasks="${SLURM_NTASKS:-1}"
set -m  # job control: the step below then keeps SIGINT, which background jobs would otherwise ignore
if [ "$ntasks" = 1 ]; then
    step_name="onepiece run --monolithic"
    "$python" -m onepiece_hpc.cli.main run --monolithic "$@" &
    step=$!
    drain_signal=INT  # a single-process run stops at once on Ctrl-C, keeping every finished item
else
    if ! command -v srun >/dev/null; then
        say "srun not found on PATH; fix: submit this script with sbatch on a Slurm cluster"
        exit 2
    fi
    if [ "$mpi" = auto ]; then
        mpi="$("$python" -m onepiece_hpc.slurm.mpi)" || { say "fix: pass --mpi PLUGIN (see srun --mpi=list)"; exit 2; }
    fi
    step_name="srun --mpi=$mpi"
    srun --mpi="$mpi" "$python" -m onepiece_hpc.runtime.rank_main --expect-ranks "$ntasks" --progress lines "$@" &
    step=$!
    drain_signal=USR1  # srun passes it to every rank: rank 0 drains, the other ranks ignore it
fi

drained=0
drain() {
    drained=1
    say "got USR1: stopping new work, committing what is in flight, then requeueing"
    kill -s "$drain_signal" "$step" 2>/dev/null || true
}
trap drain USR1

while :; do
    rc=0
    wait "$step" || rc=$?
    kill -0 "$step" 2>/dev/null || break  # still there: the wait was cut short by the trap
done

if [ "$rc" = 0 ]; then
    exit 0
fi
if [ "$rc" = 2 ]; then
    say "$step_name refused the job (exit 2, see above); not requeued"
    exit 2
fi
if [ "$rc" = 3 ] || [ "$drained" = 1 ]; then
    say "stopped early; every finished item is committed; requeueing job $SLURM_JOB_ID to resume"
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        say "scontrol requeue $SLURM_JOB_ID failed (see above); fix: submit the same job again to resume"
    fi
    exit 3
fi
say "$step_name failed with exit code $rc (see above); finished items are kept; submit the same job again to resume"
exit "$rc"
"""


def _line(option: str, value: object | None = None) -> str:
    if value is None:
        return f"#SBATCH --{option}"
    text = str(value)
    if not _HEADER_VALUE.fullmatch(text):
        raise ValueError(f"refusing to render --{option}={text!r} into an #SBATCH line")
    return f"#SBATCH --{option}={text}"


def render_script(options: SlurmFields, job_name: str | None) -> str:
    """The whole batch script for these options; `job_name` None leaves Slurm's default name."""
    lines = ["#!/bin/bash"]
    if job_name is not None:
        if not re.fullmatch(NAME_PATTERN, job_name):
            raise ValueError(f"job name {job_name!r} does not match {NAME_PATTERN}")
        lines.append(_line("job-name", f"onepiece-{job_name}"))
    lines += [_line("nodes", options.nodes), _line("ntasks-per-node", options.ntasks_per_node)]
    optional = (("gpus-per-node", options.gpus_per_node), ("cpus-per-task", options.cpus_per_task),
                ("mem", options.mem), ("time", options.time), ("partition", options.partition),
                ("account", options.account), ("qos", options.qos), ("constraint", options.constraint))
    lines += [_line(name, value) for name, value in optional if value is not None]
    lines += [_line("signal", f"B:USR1@{options.drain_seconds}"), _line("requeue"), _line("open-mode", "append")]
    return "\n".join(lines) + "\n" + BODY


@dataclass(frozen=True)
class Submission:
    """One sbatch call: the script's text and the exact argument list that submits it."""

    script: str
    argv: tuple[str, ...]


def script_arguments(python: str, mpi: str) -> list[str]:
    """The script's own leading arguments: which Python runs onepiece, which srun --mpi plugin."""
    return ["--python", python, *(["--mpi", mpi] if mpi != "auto" else [])]


def sbatch_argv(script_path: Path, log_pattern: str, script_args: list[str], extra: tuple[str, ...] = (),
                array: str | None = None) -> tuple[str, ...]:
    """sbatch's argument list: each value one argument, so no shell ever reads them."""
    head = ["sbatch", "--parsable", f"--output={log_pattern}"]
    if array is not None:
        head.append(f"--array={array}")
    return (*head, *extra, str(script_path), *script_args)
