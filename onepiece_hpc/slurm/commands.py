"""Calling Slurm's commands: argument lists only (no shell), bounded in time, clear failures."""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from collections.abc import Sequence

from onepiece_hpc.errors import UserError

log = logging.getLogger("onepiece.slurm")
TIMEOUT_S = 120.0


class SlurmCommandError(UserError):
    """A Slurm command is missing, failed or hung; the message names it and carries its output."""


def run_slurm(argv: Sequence[str], timeout_s: float = TIMEOUT_S) -> str:
    """Run one Slurm command and return its standard output, or raise SlurmCommandError."""
    argv = [str(a) for a in argv]
    name = argv[0]
    log.info("running %s", shlex.join(argv))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SlurmCommandError(f"{name} not found on PATH; fix: run this on a Slurm login node (or load your "
                                "cluster's Slurm module); to try onepiece without a cluster, start one with "
                                "slurm/local-cluster.sh up") from None
    except PermissionError:
        raise SlurmCommandError(f"{name} on PATH is not executable; fix: check the Slurm installation") from None
    except subprocess.TimeoutExpired:
        raise SlurmCommandError(f"{name} did not answer within {timeout_s:.0f} s (command: {shlex.join(argv)}); "
                                "fix: check that slurmctld is up (sinfo) and try again") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or "(no output)")
        raise SlurmCommandError(f"{name} failed with exit code {done.returncode}: {said}\n"
                                f"  command: {shlex.join(argv)}")
    return done.stdout


def parse_job_id(sbatch_output: str) -> str:
    """sbatch --parsable prints 'ID' or 'ID;CLUSTER'."""
    text = sbatch_output.strip().splitlines()[-1] if sbatch_output.strip() else ""
    job_id = text.split(";", 1)[0]
    if not re.fullmatch(r"\d+", job_id):
        raise SlurmCommandError(f"sbatch printed {sbatch_output.strip()!r} where a job id was expected")
    return job_id


def parse_config_value(scontrol_config: str, key: str) -> str | None:
    """A value from `scontrol show config` output ('Key = value' lines)."""
    for line in scontrol_config.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


def max_array_size() -> int:
    """The cluster's MaxArraySize: array task ids must stay below it."""
    value = parse_config_value(run_slurm(["scontrol", "show", "config"]), "MaxArraySize")
    if value is None or not value.isdigit():
        raise SlurmCommandError(f"scontrol show config gave no usable MaxArraySize (got {value!r})")
    return int(value)
