"""The sbatch script and the sbatch command line, rendered by pure functions.

The script's body is the same for every job. What to run (job file, output, sweep folder)
reaches it only as arguments, which it passes on quoted ("$@") and never evaluates; the
#SBATCH lines hold only values that validation has already held to patterns without spaces,
quotes or line breaks. So no string from a job file or flag can run as shell code.
The body's text is `batch_body.BODY`; its constants are not written there but rendered in
(`render_body`) from where they are defined:
the exit codes (exit_codes.py), the drain signals (runtime/drain.py), the requeue modes and the
slurm section's defaults (jobfile/job.py).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from onepiece_hpc.exit_codes import ExitCode
from onepiece_hpc.jobfile.job import NAME_PATTERN, SlurmFields
from onepiece_hpc.runtime.drain import DRAIN_SIGNALS
from onepiece_hpc.slurm.batch_body import BODY

#: what a value on an #SBATCH line may hold (defence in depth: validation already checked it)
_HEADER_VALUE = re.compile(r"[A-Za-z0-9._:@&|*\[\]()!,=-]+")
#: where render_body fills in a value defined elsewhere (bash itself never writes @NAME@)
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z_]*)@")


#: the exit codes the script itself acts on and ends with (UNKNOWN is slurm.outcome's answer only)
SCRIPT_EXIT_CODES = tuple(code for code in ExitCode if code is not ExitCode.UNKNOWN)


def _choices(field: str) -> tuple[str, ...]:
    return typing.get_args(SlurmFields.model_fields[field].annotation)


def _either(words: tuple[str, ...]) -> str:
    return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]


def render_body() -> str:
    """The script's body: BODY with the exit codes, the drain signals, the requeue modes and the
    slurm section's defaults filled in from where they are defined."""
    signals = tuple(dict.fromkeys((*DRAIN_SIGNALS, "TERM")))  # SIGTERM (a preemption) drains too
    modes, defaults = _choices("requeue"), SlurmFields()
    width = max(len(code.name) for code in SCRIPT_EXIT_CODES)
    values = {
        "EARLY_TRAPS": "; ".join(f"trap 'early=${{early:-{name}}}' {name}" for name in signals),
        "SIGNAL_TRAPS": "\n".join(f"trap 'on_signal {name}' {name}" for name in signals),
        "DRAIN_SIGNALS": "|".join(DRAIN_SIGNALS), "DRAIN_SIGNALS_TEXT": _either(DRAIN_SIGNALS),
        "REQUEUE_MODES": "|".join(modes), "REQUEUE_MODES_TEXT": _either(modes),
        "DEFAULT_DRAIN_SIGNAL": defaults.drain_signal, "DEFAULT_DRAIN_SECONDS": str(defaults.drain_seconds),
        "DEFAULT_REQUEUE": defaults.requeue, "DEFAULT_HEARTBEAT_TIMEOUT": str(defaults.heartbeat_timeout),
        "EXIT_CODES": "readonly " + " ".join(f"EXIT_{code.name}={int(code)}" for code in SCRIPT_EXIT_CODES),
        "EXIT_CODE_LINES": "\n".join(f"#   {int(code)} {code.name:<{width}}  {code.meaning}"
                                     for code in SCRIPT_EXIT_CODES),
    }
    unused = set(values) - set(_PLACEHOLDER.findall(BODY))
    if unused:
        raise ValueError(f"BODY lacks the placeholders {sorted(unused)}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], BODY)


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
    lines += [_line("signal", f"B:{options.drain_signal}@{options.drain_seconds}"), _line("requeue"),
              _line("open-mode", "append")]
    return "\n".join(lines) + "\n" + render_body()


@dataclass(frozen=True)
class Submission:
    """One sbatch call: the script's text and the exact argument list that submits it."""

    script: str
    argv: tuple[str, ...]


def script_arguments(python: str, options: SlurmFields, successor: Sequence[str] = ()) -> list[str]:
    """The script's own leading arguments: which Python runs onepiece, which srun --mpi plugin, the
    drain (as the --signal line says) and how the job goes on after one; `successor`: the sbatch
    options a chained successor is submitted with (requeue: chain)."""
    args = ["--python", python, *(["--mpi", options.mpi] if options.mpi != "auto" else []),
            "--drain-signal", options.drain_signal, "--drain-seconds", str(options.drain_seconds),
            "--requeue", options.requeue, "--heartbeat-timeout", str(options.heartbeat_timeout)]
    if options.requeue == "chain":
        for option in successor:
            args += ["--successor-arg", option]
    return args


def sbatch_argv(script_path: Path, log_pattern: str, script_args: list[str], extra: tuple[str, ...] = (),
                array: str | None = None) -> tuple[str, ...]:
    """sbatch's argument list: each value one argument, so no shell ever reads them."""
    head = ["sbatch", "--parsable", f"--output={log_pattern}"]
    if array is not None:
        head.append(f"--array={array}")
    return (*head, *extra, str(script_path), *script_args)
