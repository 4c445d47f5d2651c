"""The Slurm resource flags shared by `onepiece submit` and `onepiece sweep`."""

from __future__ import annotations

import click

OPTIONS = (
    click.option("--nodes", type=int, default=None, help="Nodes (slurm.nodes)."),
    click.option("--ntasks-per-node", type=int, default=None,
                 help="Ranks a node; one a GPU by default when --gpus-per-node is given (slurm.ntasks_per_node)."),
    click.option("--gpus-per-node", type=int, default=None, help="GPUs a node (slurm.gpus_per_node)."),
    click.option("--cpus-per-task", type=int, default=None, help="CPUs a rank (slurm.cpus_per_task)."),
    click.option("--mem", default=None, help="Memory a node, e.g. 64G (slurm.mem)."),
    click.option("--time", default=None, help="Time limit, e.g. 4:00:00 (slurm.time)."),
    click.option("--partition", default=None, help="Partition (slurm.partition)."),
    click.option("--account", default=None, help="Account (slurm.account)."),
    click.option("--qos", default=None, help="QOS (slurm.qos)."),
    click.option("--constraint", default=None, help="Node features, e.g. a100 (slurm.constraint)."),
    click.option("--drain-seconds", type=int, default=None,
                 help="Seconds before the time limit at which the job commits and requeues (slurm.drain_seconds)."),
    click.option("--mpi", default=None, help="srun --mpi plugin; auto detects it from mpi4py (slurm.mpi)."),
    click.option("--sbatch-arg", "extra", multiple=True,
                 help="Another sbatch option, --name=value; repeatable (slurm.extra)."),
)

NAMES = ("nodes", "ntasks_per_node", "gpus_per_node", "cpus_per_task", "mem", "time", "partition", "account",
         "qos", "constraint", "drain_seconds", "mpi", "extra")


def slurm_flags(command):
    """Decorate a click command with every Slurm flag."""
    for option in reversed(OPTIONS):
        command = option(command)
    return command


def pop_flags(kwargs: dict) -> dict:
    """Take the Slurm flags out of a command's keyword arguments; unset ones are None."""
    flags = {name: kwargs.pop(name) for name in NAMES}
    flags["extra"] = tuple(flags["extra"]) or None
    return flags
