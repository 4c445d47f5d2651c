"""The Slurm resource flags shared by `onepiece submit` and `onepiece sweep`: one flag for each
field of the job file's `slurm:` section that a flag may override, on top of the file's value."""

from __future__ import annotations

import click

#: (the slurm section's field, its click type, what it is); the flag is --FIELD with '-' for '_'
FIELDS = (
    ("nodes", int, "Nodes"),
    ("ntasks_per_node", int, "Ranks a node; one a GPU by default when --gpus-per-node is given"),
    ("gpus_per_node", int, "GPUs a node"),
    ("cpus_per_task", int, "CPUs a rank"),
    ("mem", str, "Memory a node, e.g. 64G"),
    ("time", str, "Time limit, e.g. 4:00:00"),
    ("partition", str, "Partition"),
    ("account", str, "Account"),
    ("qos", str, "QOS"),
    ("constraint", str, "Node features, e.g. a100"),
    ("drain_seconds", int, "Seconds before the time limit at which the job commits and requeues"),
    ("mpi", str, "srun --mpi plugin; auto detects it from mpi4py"),
)
NAMES = (*(name for name, _, _ in FIELDS), "extra")


def slurm_flags(command):
    """Decorate a click command with every Slurm flag, unset (None) unless given."""
    command = click.option("--sbatch-arg", "extra", multiple=True,
                           help="Another sbatch option, --name=value; repeatable (slurm.extra).")(command)
    for name, kind, what in reversed(FIELDS):
        flag = "--" + name.replace("_", "-")
        command = click.option(flag, name, type=kind, default=None, help=f"{what} (slurm.{name}).")(command)
    return command


def pop_flags(kwargs: dict) -> dict:
    """Take the Slurm flags out of a command's keyword arguments; unset ones are None."""
    flags = {name: kwargs.pop(name) for name in NAMES}
    flags["extra"] = tuple(flags["extra"]) or None
    return flags
