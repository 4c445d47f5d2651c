"""GPU smoke test, for a machine with GPUs (CI has none):

    python tests/gpu/smoke.py [--keep DIR]

Runs the tiny job on GPUs in bfloat16: once in one process on one GPU, twice staged on up to
two GPUs with the cuda-ipc fabric (rank 0 manages; encode and decode share GPU 0, denoise runs on
GPU 1), once staged on pinned shm, once staged under MPS (its own daemon, `--mps`), and once more
on one GPU. Every output must be bit-identical to the first: the same
job gives the same outputs run to run and whatever the placement. Exit code 0 when all agree.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
JOB = """\
name: gpu-smoke
model: builtin:tiny-sd
prompts: {prompts}
params: {{steps: 4, guidance: 5.0, height: 64, width: 64}}
seed: 99
microbatch: {microbatch}
stages: {{encode: 1, denoise: 1, decode: 1}}
device: cuda
"""


def run(args: list[str]) -> None:
    command = [sys.executable, "-m", "onepiece_hpc.cli.main", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, timeout=600)


def images(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as file:
        assert file["done"][...].all(), f"{path}: not every item is done"
        return file["outputs/images"][...]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, default=None, help="keep the outputs in this folder")
    parser.add_argument("--quick", action="store_true",
                        help="microbatch 1 only: one GPU, staged on cuda-ipc, on pinned shm, under MPS")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no GPU visible: this smoke test runs on a GPU machine", file=sys.stderr)
        return 2
    folder = args.keep or Path(tempfile.mkdtemp(prefix="onepiece-gpu-smoke-"))
    folder.mkdir(parents=True, exist_ok=True)
    prompts = folder / "prompts.txt"
    prompts.write_text("".join(f"a lighthouse in a storm, study {i}\n" for i in range(12)))
    results = {}
    for microbatch in ((1,) if args.quick else (1, 2)):
        job = folder / f"smoke-mb{microbatch}.yaml"
        job.write_text(JOB.format(prompts=prompts, microbatch=microbatch))
        runs = {
            "one GPU": ["run", str(job), "--monolithic"],
            "staged, cuda-ipc": ["run", str(job), "-n", "4", "--fabric", "cuda-ipc"],
            "staged, cuda-ipc, again": ["run", str(job), "-n", "4", "--fabric", "cuda-ipc"],
            "staged, pinned shm": ["run", str(job), "-n", "4", "--fabric", "shm"],
            "staged, under MPS": ["run", str(job), "-n", "4", "--mps"],
            "one GPU, again": ["run", str(job), "--monolithic"],
        }
        if args.quick:
            runs = {label: runs[label] for label in ("one GPU", "staged, cuda-ipc", "staged, pinned shm", "staged, under MPS")}
        reference = None
        for label, command in runs.items():
            output = folder / f"mb{microbatch}-{label.replace(' ', '').replace(',', '-')}.h5"
            run([*command, "-o", str(output)])
            got = images(output)
            if reference is None:
                reference = got
            same = np.array_equal(got, reference)
            worst = int(np.abs(got.astype(np.int16) - reference.astype(np.int16)).max())
            results[(microbatch, label)] = same
            print(f"microbatch {microbatch}, {label}: {'identical' if same else f'DIFFERS (max {worst})'}",
                  flush=True)
    print(f"GPUs visible: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    failed = [key for key, same in results.items() if not same]
    print("smoke test:", "passed" if not failed else f"FAILED for {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
