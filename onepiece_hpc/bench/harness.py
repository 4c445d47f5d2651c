"""What the benchmark programs share: how they start, their clock, their timed loop, their reports.

The per-GPU baselines (`plain_loop`, `data_parallel`) run as one MPI process a GPU and each
writes a JSON row; the one-device measurements (`stage_profile`, `stage_trace`) run alone on the
first GPU (or the CPU). Keeping their set-up and timing here means every bench measures the
same way: a GPU clock reading waits for the device (`synced_clock`), peak memory is torch's on a
GPU and the process's resident peak on CPU, and a timed loop counts compute apart from writes.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

Work = TypeVar("Work")
Out = TypeVar("Out")


def baseline_parser(prog: str) -> argparse.ArgumentParser:
    """The flags every per-GPU baseline takes; each adds its own."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("job", type=Path)
    parser.add_argument("--report-dir", type=Path, required=True, help="each rank writes rank-R.json here")
    parser.add_argument("--gpu-memory-gib", type=float, default=None, help="cap each rank's GPU memory")
    parser.add_argument("--write-dir", type=Path, default=None, help="write each output here as ITEM.npy")
    return parser


@dataclass(frozen=True)
class BaselineRank:
    """One rank of a per-GPU baseline: its communicator, the prepared job and where it runs."""

    comm: object
    rank: int
    size: int
    prepared: object   # runtime.prepare.Prepared
    placement: object  # models.base.Placement
    gpu: bool


def start_baseline_rank(job: Path, gpu_memory_gib: float | None) -> BaselineRank:
    """MPI, the prepared job and this rank's placement: its node's GPUs in turn (`place_rank`)."""
    from mpi4py import MPI

    from onepiece_hpc.runtime.quiet import quiet_libraries

    quiet_libraries()
    from onepiece_hpc import environment
    from onepiece_hpc.runtime.gpus import place_rank
    from onepiece_hpc.runtime.prepare import prepare

    comm = MPI.COMM_WORLD
    prepared = prepare(job, None, environment.cache_dir())
    placement = place_rank(prepared, comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank(), gpu_memory_gib)
    return BaselineRank(comm, comm.Get_rank(), comm.Get_size(), prepared, placement, placement.device_type == "cuda")


def start_one_device(job: Path, gpu_memory_gib: float | None = None):
    """The prepared job and its placement on this process's one device (GPU 0, capped at
    `gpu_memory_gib`, where the job runs on GPUs); returns (prepared, placement, on a GPU)."""
    from onepiece_hpc.runtime.quiet import quiet_libraries

    quiet_libraries()
    from onepiece_hpc import environment
    from onepiece_hpc.runtime.prepare import prepare

    prepared = prepare(job, None, environment.cache_dir())
    placement = prepared.placement
    gpu = placement.device_type == "cuda"
    if gpu:
        from onepiece_hpc.runtime.gpus import take_gpu

        placement = placement.on(take_gpu(0, gpu_memory_gib))
    return prepared, placement, gpu


def synced_clock(gpu: bool) -> Callable[[], float]:
    """perf_counter, read once the device has finished what it was given (on a GPU)."""
    if not gpu:
        return time.perf_counter
    import torch

    def now() -> float:
        torch.cuda.synchronize()
        return time.perf_counter()
    return now


def peak_memory_mb(gpu: bool) -> float:
    """The most memory this process held: torch's allocations on the GPU, else its resident peak."""
    if gpu:
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unit_of(items: list):
    """The unit input of consecutive plan items that share their params (one stage or pipeline call)."""
    from onepiece_hpc.models.base import UnitInput

    return UnitInput(unit=items[0].index, items=tuple(i.index for i in items), prompts=tuple(i.prompt for i in items),
                     negative_prompts=tuple(i.negative_prompt for i in items), seeds=tuple(i.seed for i in items),
                     params=items[0].params)


@dataclass(frozen=True)
class LoopTimes:
    """A timed loop's seconds: computing, writing, and from its start to its end."""

    busy_s: float
    write_s: float
    done_at_s: float


def timed_loop(work: Iterable[Work], run: Callable[[Work], Out], write: Callable[[Work, Out], None],
               finish: Callable[[], None] = lambda: None) -> LoopTimes:
    """Run and write each piece of `work` in turn; `finish` (waiting for writes still under way)
    is inside the loop's time. `run` must return once its outputs are done (synchronised)."""
    start = time.perf_counter()
    busy = written = 0.0
    for piece in work:
        t0 = time.perf_counter()
        out = run(piece)
        t1 = time.perf_counter()
        write(piece, out)
        t2 = time.perf_counter()
        busy += t1 - t0
        written += t2 - t1
    finish()
    return LoopTimes(busy, written, time.perf_counter() - start)


def write_rank_report(folder: Path, rank: int, row: dict) -> None:
    """The rank's JSON row, which the bench driver collects from `folder`."""
    (folder / f"rank-{rank}.json").write_text(json.dumps(row))
