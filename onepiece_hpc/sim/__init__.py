"""A discrete-event simulator of the staged pipeline that runs the runtime's own policies.

`scenario` says what is simulated, `inputs` where its numbers come from (a profile, an output's
telemetry, a job file), `engine` runs it, `bound` gives the makespan no schedule can beat and
`compare` sets static-best, adaptive and oracle side by side; `scale`, `control_plane`,
`control_bench` and `scale_report` size rank 0's load at 64 to 4,096 GPUs (`onepiece simulate`).
"""

from onepiece_hpc._exports import lazy_exports

__all__ = ["SimResult", "Simulation", "WAN_1_3B_H100", "job_scenario", "load_profile", "makespan_bound",
           "workload_shift"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "bound": ["makespan_bound"],
    "engine": ["SimResult", "Simulation"],
    "inputs": ["job_scenario", "load_profile"],
    "scenario": ["WAN_1_3B_H100", "workload_shift"],
})
