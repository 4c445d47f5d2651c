"""`onepiece bench transport`: ring channels vs mpi4py Send/Recv vs memcpy, in one run."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Sequence

import click

from onepiece_hpc.errors import UserError

DEFAULT_SIZES = "64K,256K,1M,4M,16M"
DEFAULT_GPU_SIZES = "1M,4M,16M,64M"
LAUNCH_TIMEOUT_S = 1200
_UNITS = {"": 1, "K": 1 << 10, "KI": 1 << 10, "M": 1 << 20, "MI": 1 << 20, "G": 1 << 30,
          "GI": 1 << 30}


def parse_sizes(text: str) -> list[int]:
    """'64K,4M' -> byte counts (K/M/G are binary: 1K = 1024 bytes)."""
    sizes, problems = [], []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*([KMG]?I?)B?\s*", part.upper())
        if not match or int(match.group(1)) == 0 or match.group(2) not in _UNITS:
            problems.append(f"--sizes: {part.strip()!r} is not a size; write e.g. 64K, 4M, 16MiB")
            continue
        sizes.append(int(match.group(1)) * _UNITS[match.group(2)])
    if problems:
        raise UserError(problems)
    return sizes


def launched_by_mpi() -> bool:
    """Whether this process is one rank of an MPI launch (mpiexec, or a multi-task srun step)."""
    env = os.environ
    if any(k in env for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")):
        return True
    return int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1


def format_table(records: Sequence[dict[str, object]], copy_name: str = "memcpy",
                 mpi_name: str = "mpi-sendrecv") -> str:
    """A markdown table: GB/s and round trip per fabric and size, with ratios to the copy ceiling
    and to the message-passing baseline (MPI on the host, NCCL between GPUs)."""
    by_key = {(r["fabric"], r["bytes"]): r for r in records}
    copy_label, mpi_label = ("memcpy", "MPI") if copy_name == "memcpy" else ("d2d", "NCCL")
    lines = [f"| size | fabric | GB/s | x {copy_label} | x {mpi_label} | RTT us | RTT / {mpi_label} |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for size in sorted({int(r["bytes"]) for r in records}):
        copy, mpi = by_key.get((copy_name, size)), by_key.get((mpi_name, size))
        for record in (r for r in records if r["bytes"] == size):
            gbps, rtt = float(record["gbps"]), float(record["rtt_us"])
            lines.append(
                f"| {_human(size)} | {record['fabric']} | {gbps:.2f} | "
                f"{_ratio(gbps, copy and copy['gbps'])} | {_ratio(gbps, mpi and mpi['gbps'])} | "
                f"{rtt:.1f} | {_ratio(rtt, mpi and mpi['rtt_us'])} |")
    return "\n".join(lines)


def _ratio(value: float, base: object) -> str:
    return f"{value / float(base):.2f}" if base else "-"


def _human(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _launch(argv: Sequence[str]) -> None:
    from onepiece_hpc.runtime.launch import find_mpiexec

    program = [sys.executable, "-m", "onepiece_hpc.cli.main", *argv]
    command = find_mpiexec().command(2, program, as_root=os.geteuid() == 0)
    try:
        result = subprocess.run(command, timeout=LAUNCH_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        raise UserError(f"the benchmark ranks did not finish within {LAUNCH_TIMEOUT_S} s; "
                        "rerun with fewer --sizes or --trials 1") from err
    if result.returncode != 0:
        raise UserError(f"the benchmark ranks failed (exit {result.returncode}); the lines above "
                        "say why")


@click.command("transport")
@click.option("--sizes", default=None,
              help=f"Message sizes, comma-separated (K, M, G are binary units) [default: {DEFAULT_SIZES} "
                   f"on cpu, {DEFAULT_GPU_SIZES} on cuda].")
@click.option("--slots", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Slots per ring.")
@click.option("--trials", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Repeats per point; the best is kept.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON record per fabric and size instead of the table.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: GPU to GPU (ring/cuda-ipc, ring/pinned-shm, NCCL, device-to-device copy).")
def bench_transport(sizes: str | None, slots: int, trials: int, as_json: bool, device: str) -> None:
    """One-way GB/s and round-trip latency: ring/shm, ring/mpi-rma, mpi4py Send/Recv, memcpy.

    Run outside MPI it starts 2 ranks with mpiexec; under mpiexec or srun it uses the 2 ranks
    it was given: on one host, or on two (srun -N 2 -n 2: ring/mpi-rma against Send/Recv over the
    link between them; ring/shm needs one host and is left out).
    """
    sizes = sizes or (DEFAULT_GPU_SIZES if device == "cuda" else DEFAULT_SIZES)
    byte_sizes = parse_sizes(sizes)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no GPU is visible here; fix: run on a GPU node, or use --device cpu")
    if not launched_by_mpi():
        argv = ["bench", "transport", "--sizes", sizes, "--slots", str(slots), "--device", device,
                "--trials", str(trials), *(["--json"] if as_json else [])]
        _launch(argv)
        return
    from mpi4py import MPI

    if device == "cuda":
        from onepiece_hpc.bench.transport_gpu import run_gpu_benchmark as run_benchmark
    else:
        from onepiece_hpc.bench.transport import run_benchmark

    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        raise UserError(f"the transport benchmark needs exactly 2 ranks, this launch has "
                        f"{comm.Get_size()}; use mpiexec -n 2, or srun -n 2 with the --mpi "
                        "plugin that matches your MPI (pmi2 for MPICH)")
    progress = None if as_json else (lambda text: click.echo(f"measuring {text}", err=True))
    hosts = comm.allgather(socket.gethostname())
    records = run_benchmark(comm, byte_sizes, slots=slots, trials=trials, progress=progress)
    if comm.Get_rank() != 0:
        return
    if not as_json:
        click.echo(f"ranks on {hosts[0]} and {hosts[1]}" + ("" if hosts[0] == hosts[1] else
                   " (two hosts: no ring/shm; memcpy is one host's copy ceiling)"))
    rows = [{"fabric": r.fabric, "bytes": r.bytes, "gbps": round(r.gbps, 3),
             "rtt_us": round(r.rtt_us, 2), "hosts": hosts} for r in records]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
    else:
        click.echo(format_table(rows) if device == "cpu" else format_table(rows, "d2d-copy", "nccl-sendrecv"))
