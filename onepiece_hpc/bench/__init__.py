"""Benchmarks and the baselines they measure against: the pipeline benches on CPU (`pipeline`) and
on GPUs (`pipeline_gpu`, with its layout model `gpu_layout`), the baselines they run beside the
staged runtime (`plain_loop`, the plain diffusers loop; `data_parallel`, our monolithic
data-parallel run), the one-device stage measurements (`stage_profile`, `stage_trace`), the
transport benches (`transport`, `transport_gpu`), the store and writer benches (`store_scale`,
`writer`) and start-up (`startup`). The runtime, transport and store import nothing from here;
the `onepiece bench` commands (cli/bench*.py) are its command line layer.

Names other packages import:

- cli.bench_pipeline: `pipeline.bench_pipeline`; `pipeline_gpu.GpuBench`, `bench_pipeline_gpu`,
  `results_path`, `table`
- cli.bench_transport: `transport.run_benchmark`, `transport_gpu.run_gpu_benchmark`
- cli.bench_store: `store_scale.bench_scale`
- cli.bench_writer: `writer.bench_writer`
- cli.bench_startup: `startup.measure`
- sim.control_bench (rank 0's measured costs for `onepiece simulate --scale`): `store_scale.SyntheticItems`
"""
