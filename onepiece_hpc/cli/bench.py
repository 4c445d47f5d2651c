"""`onepiece bench ...`: benchmarks that report ratios against a baseline measured in the same run."""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Measure throughput against a baseline taken in the same run."""
