"""Slurm: the batch script (`script`, a pure renderer), submitting jobs and sweeps as job arrays
(`submit`, `sweep`, or from Python on submitit: `api`), the job's own helpers (`one_task`,
`outcome`, `mpi`, `limits`), Slurm's commands (`commands`), submission records and status
(`records`, `status`). Slurm's environment variables are read in onepiece_hpc/environment.py.
"""

from onepiece_hpc._exports import lazy_exports

__all__ = ["SCRIPT_EXIT_CODES", "expected_items", "format_eta", "job_tasks", "max_array_size", "output_progress",
           "overall_state", "plan_job", "plan_sweep", "render_script", "sbatch_argv", "script_arguments",
           "submit_job", "submit_sweep"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "commands": ["max_array_size"],
    "script": ["SCRIPT_EXIT_CODES", "render_script", "sbatch_argv", "script_arguments"],
    "status": ["expected_items", "format_eta", "job_tasks", "output_progress", "overall_state"],
    "submit": ["plan_job", "plan_sweep", "submit_job", "submit_sweep"],
})
