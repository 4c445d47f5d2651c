"""`onepiece bench ...`: benchmarks that report ratios against a baseline measured in the same run."""

from __future__ import annotations

import click

from onepiece_hpc.cli.bench_layouts import bench_layouts
from onepiece_hpc.cli.bench_phased import bench_phased
from onepiece_hpc.cli.bench_pipeline import bench_pipeline_cmd
from onepiece_hpc.cli.bench_transport import bench_transport
from onepiece_hpc.cli.bench_startup import bench_startup
from onepiece_hpc.cli.bench_store import bench_store
from onepiece_hpc.cli.bench_writer import bench_writer_cmd


@click.group()
def bench() -> None:
    """Measure throughput against a baseline taken in the same run."""


bench.add_command(bench_transport)
bench.add_command(bench_pipeline_cmd)
bench.add_command(bench_writer_cmd)
bench.add_command(bench_store)
bench.add_command(bench_startup)
bench.add_command(bench_phased)
bench.add_command(bench_layouts)
