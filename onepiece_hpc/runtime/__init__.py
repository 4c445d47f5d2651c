"""Running jobs: everything checked first (`prepare`), the one-process reference path
(`monolithic`), and the staged runtime: the run's options (`options`), the local launcher
(`launch`), each rank's entry point and life (`rank_main`, `rank`, `setup`), the Node Manager on
rank 0 (`node_manager`, with `liveness`, `watch`, `drain`, `telemetry`, `cost_model` and the pure
`policy` package) and the stage workers (`worker`), talking over the control plane (`control`,
`messages`); GPUs (`gpus`), progress, signals and the launcher's lifeline beside them. `prepare.prepare` and
`launch.launch` share their module's name, so they are imported from those modules.
"""

from onepiece_hpc._exports import lazy_exports

__all__ = ["ControlPlane", "DRAIN_SIGNALS", "PREEMPTED", "Prepared", "ProgressReporter", "RunOptions", "StageFailed",
           "TAG_TO_MANAGER", "Telemetry", "Terminated", "exit_code", "failed_items_summary", "find_mpiexec",
           "gpu_index", "interrupt_on_sigterm", "memory_share_mb", "place_rank", "quiet_libraries",
           "run_monolithic", "stopped_exit_code", "take_gpu", "unit_input"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "control": ["ControlPlane", "TAG_TO_MANAGER"],
    "drain": ["DRAIN_SIGNALS", "PREEMPTED"],
    "failures": ["StageFailed", "failed_items_summary"],
    "gpus": ["gpu_index", "memory_share_mb", "place_rank", "take_gpu"],
    "interrupts": ["Terminated", "exit_code", "interrupt_on_sigterm"],
    "launch": ["find_mpiexec", "stopped_exit_code"],
    "monolithic": ["run_monolithic", "unit_input"],
    "options": ["RunOptions"],
    "prepare": ["Prepared"],
    "progress": ["ProgressReporter"],
    "quiet": ["quiet_libraries"],
    "telemetry": ["Telemetry"],
})
