"""onepiece-hpc: staged diffusion generation on Slurm clusters."""

__version__ = "0.1.0"
