"""Benchmarks and the baselines they measure against, apart from what production runs.

The pipeline benches on CPU (`pipeline`) and on GPUs (`pipeline_gpu`, with its layout model
`gpu_layout`), the baselines they run beside the staged runtime (`plain_loop`, the plain
diffusers loop; `data_parallel`, our monolithic data-parallel run) and the one-device stage
measurements (`stage_profile`, `stage_trace`), all started and timed alike (`harness`); the
transport benches (`transport`, `transport_gpu`), the store and writer benches (`store_scale`,
`writer`), start-up (`startup`) and one GPU short of memory (`phased`: the plain call resident
or offloaded, against our stages in phases). The runtime, transport and store import nothing
from here; the `onepiece bench` commands (cli/bench*.py) are its command line.
"""

from onepiece_hpc._exports import lazy_exports

__all__ = ["GpuBench", "GpuLayout", "StageCost", "SyntheticItems", "bench_pipeline", "bench_pipeline_gpu", "bench_scale",
           "bench_writer", "choose_layout", "measure", "results_path", "run_benchmark", "run_gpu_benchmark", "table",
           "timed_loop"]
__getattr__, __dir__ = lazy_exports(__name__, __all__, {
    "gpu_layout": ["GpuLayout", "StageCost", "choose_layout"],
    "harness": ["timed_loop"],
    "pipeline": ["bench_pipeline"],
    "pipeline_gpu": ["GpuBench", "bench_pipeline_gpu", "results_path", "table"],
    "startup": ["measure"],
    "store_scale": ["SyntheticItems", "bench_scale"],
    "transport": ["run_benchmark"],
    "transport_gpu": ["run_gpu_benchmark"],
    "writer": ["bench_writer"],
})
