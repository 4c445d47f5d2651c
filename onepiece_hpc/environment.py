"""The one place that reads environment variables; everything below receives plain values."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where built-in models are written once: $ONEPIECE_CACHE, else the XDG cache folder."""
    explicit = os.environ.get("ONEPIECE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onepiece-hpc"


def is_interactive(stream) -> bool:
    """True when progress can be drawn live (a terminal), False for log files and pipes."""
    return hasattr(stream, "isatty") and stream.isatty() and os.environ.get("TERM") != "dumb"


def slurm_index_dir() -> Path:
    """Where `onepiece submit` and `sweep` note each job id's outputs, for `onepiece status JOBID`."""
    return cache_dir() / "slurm-jobs"


def with_visible_gpus(count: int, first: int = 0) -> dict[str, str]:
    """This process's environment for a child that may see only `count` of the GPUs this process
    sees (all of the machine's, or those CUDA_VISIBLE_DEVICES already names), from the `first`-th on."""
    given = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    chosen = given[first:first + count] if given else [str(i) for i in range(first, first + count)]
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(chosen)}


def slurm_job() -> tuple[str, int]:
    """This process's Slurm job id ("" outside Slurm) and how often Slurm has restarted it (a requeue)."""
    job = os.environ.get("SLURM_JOB_ID", "")
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        restarts = 0
    return job, restarts


def metrics_discovery_dir() -> Path | None:
    """ONEPIECE_METRICS_DISCOVERY_DIR: where a run with a metrics port writes its Prometheus
    service-discovery entry when the job file names no metrics.discovery_dir (docs/monitoring.md)."""
    value = os.environ.get("ONEPIECE_METRICS_DISCOVERY_DIR", "").strip()
    return Path(value).absolute() if value else None
