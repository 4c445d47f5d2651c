"""Which srun --mpi plugin fits the MPI that mpi4py uses.

A wrong pairing does not fail: every rank silently sees COMM_WORLD.size == 1 (the ranks then
refuse to run, through --expect-ranks). So the plugin is derived from the MPI library itself:

    python -m onepiece_hpc.slurm.mpi      # prints e.g. pmi2; exits 2 with the reason otherwise
"""

from __future__ import annotations

import subprocess
import sys

from onepiece_hpc.errors import UserError

#: MPI library (as its version string names it) -> srun plugins that start it, best first
PREFERRED = (
    ("Open MPI", ("pmix", "pmix_v5", "pmix_v4", "pmix_v3")),
    ("MPICH", ("pmi2",)),
    ("MVAPICH", ("pmi2",)),
    ("Intel(R) MPI", ("pmi2",)),
)


def parse_plugins(srun_list_output: str) -> set[str]:
    """The plugin names in `srun --mpi=list` output (Slurm prints one a line, indented)."""
    names = set()
    for line in srun_list_output.splitlines():
        text = line.strip()
        if text and " " not in text and not text.endswith(":"):
            names.add(text)
        if text.startswith("specific pmix plugin versions available:"):
            names.update(v.strip() for v in text.split(":", 1)[1].split(","))
    return names


def choose_plugin(library_version: str, available: set[str]) -> str:
    """The plugin for this MPI among those srun offers; UserError naming both when none fits."""
    for marker, plugins in PREFERRED:
        if marker in library_version:
            for plugin in plugins:
                if plugin in available:
                    return plugin
            raise UserError(f"mpi4py uses {marker}, which srun starts with --mpi={plugins[0]}, but this Slurm "
                            f"offers only: {', '.join(sorted(available)) or 'none'}; fix: use an MPI that "
                            "matches this Slurm, or set slurm.mpi in the job file")
    first = library_version.strip().splitlines()[0] if library_version.strip() else "an unknown MPI"
    raise UserError(f"cannot tell which srun --mpi plugin starts {first!r}; fix: set slurm.mpi in the job file "
                    "(or pass --mpi) to one of: " + ", ".join(sorted(available)))


def srun_plugins() -> set[str]:
    try:
        done = subprocess.run(["srun", "--mpi=list"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError("srun not found on PATH; fix: run on a node of a Slurm cluster") from None
    except subprocess.TimeoutExpired:
        raise UserError("srun --mpi=list did not answer within 60 s; fix: check the Slurm installation") from None
    if done.returncode != 0:
        raise UserError(f"srun --mpi=list failed with exit code {done.returncode}: "
                        f"{(done.stderr or done.stdout).strip()}")
    return parse_plugins(done.stdout + done.stderr)


def main() -> None:
    import mpi4py

    mpi4py.rc.initialize = False  # the library's name is all we need: start no MPI here
    from mpi4py import MPI

    try:
        print(choose_plugin(MPI.Get_library_version(), srun_plugins()))
    except UserError as err:
        print(f"error: {err.render()}", file=sys.stderr)
        sys.exit(UserError.exit_code)


if __name__ == "__main__":
    main()
