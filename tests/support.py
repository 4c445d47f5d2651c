"""Helpers the tests share: job-file writers, ways to call the CLI, tree digests."""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
CLI_TIMEOUT = 240  # seconds; a CLI call that takes longer fails the test instead of hanging CI


def builtin_model(cache: Path, name: str) -> Path:
    """The folder of a built-in model, built into the test cache if needed."""
    from onepiece_hpc.models.builtin import builtin_folder

    return builtin_folder(name, cache)


@dataclass
class Result:
    code: int
    out: str
    err: str


def invoke(*args: str) -> Result:
    """Run `onepiece ARGS` in this process (fast: models and imports are shared)."""
    from onepiece_hpc.cli.main import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


def run_cli(*args: str, timeout: float = CLI_TIMEOUT, **kwargs) -> subprocess.CompletedProcess:
    """Run `onepiece ARGS` as a real process, bounded in time."""
    return subprocess.run([sys.executable, "-m", "onepiece_hpc.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=os.environ.copy(), **kwargs)


def write_job(folder: Path, lines: list[str] | str | None = None, prompt_file: str = "prompts.txt",
              **fields) -> Path:
    """A job file in `folder` with sensible tiny defaults; `fields` override or add YAML lines."""
    folder.mkdir(parents=True, exist_ok=True)
    if lines is not None:
        text = lines if isinstance(lines, str) else "\n".join(lines) + "\n"
        (folder / prompt_file).write_text(text, encoding="utf-8")
    values = {"name": "t", "model": "builtin:tiny-sd", "prompts": prompt_file,
              "params": "{steps: 2, guidance: 5.0, height: 64, width: 64}", "seed": "7",
              "microbatch": "1", "output": "out/t.h5", "device": "cpu"}
    values.update(fields)
    body = "\n".join(f"{key}: {value}" for key, value in values.items() if value is not None)
    path = folder / "job.yaml"
    path.write_text(textwrap.dedent(body) + "\n", encoding="utf-8")
    return path


def shm_segments() -> set[str]:
    """Our shared-memory segments in /dev/shm now (named onepiece-PID-TOKEN by the creating process)."""
    from onepiece_hpc.transport.fabrics.shm import PREFIX, SHM_DIR

    return {n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX + "-")} if os.path.isdir(SHM_DIR) else set()


def leaked_segments(before: set[str]) -> set[str]:
    """Segments that appeared since `before` and that nobody will remove: their creator is gone, or
    is this process (in-process fabrics). A live creator's segment belongs to a run still going:
    the suite runs tests side by side, and another test's run is not this test's leak."""
    leaked = set()
    for name in shm_segments() - before:
        creator = int(name.split("-")[1]) if name.split("-")[1].isdigit() else -1
        if creator == os.getpid() or not Path(f"/proc/{creator}").exists():
            leaked.add(name)
    return leaked


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, to prove that nothing was changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@contextmanager
def running(*args: str, env: dict | None = None):
    """A real `onepiece ARGS` process in a session of its own; if the test fails, it and every
    rank it started are killed, so nothing outlives the test."""
    proc = subprocess.Popen([sys.executable, "-m", "onepiece_hpc.cli.main", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or os.environ.copy(), start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until(proc: subprocess.Popen, condition, what: str, deadline_s: float = 180.0):
    """Poll `condition` until it returns something true; fail if `proc` ends first or time runs out."""
    deadline = time.monotonic() + deadline_s
    while not (found := condition()):
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {deadline_s:.0f} s")
        time.sleep(0.02)
    return found


def done_count(path: Path) -> int:
    """Committed items of an output that another process may be writing (0 before it exists)."""
    import h5py

    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(f["done"][...].sum())
    except (OSError, KeyError):
        return 0


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def write_png(path: Path, height: int = 48, width: int = 40, shift: int = 0) -> Path:
    """A small deterministic RGB image (a conditioning image for image-to-video jobs)."""
    import numpy as np
    from PIL import Image

    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack([rows * 5 + shift, cols * 7 + 2 * shift, (rows + cols) * 3 + 3 * shift], axis=-1) % 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype("uint8")).save(path)
    return path


def undecodable_png(path: Path) -> Path:
    """A PNG whose chunks (and their CRCs) are sound but whose pixel data is not a zlib stream: it passes the
    job's checks (Pillow's verify) and fails when the encode stage decodes it."""
    raw = write_png(path).read_bytes()
    at = raw.index(b"IDAT") - 4
    length = struct.unpack(">I", raw[at:at + 4])[0]
    data = bytes(b ^ 0x5A if 2 <= k < length - 4 else b for k, b in enumerate(raw[at + 8:at + 8 + length]))
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + data) & 0xFFFFFFFF)
    path.write_bytes(raw[:at + 8] + data + crc + raw[at + 12 + length:])
    return path


TINY_VIDEO = "{steps: 2, height: 32, width: 32, frames: 9}"  # the params of a tiny video job


def i2v_job(folder: Path, count: int, images: dict[int, str] | None = None, microbatch: int = 1) -> Path:
    """An image-to-video job of `count` items, all from one conditioning image but those in `images`."""
    import json

    write_png(folder / "frame.png")
    lines = [json.dumps({"prompt": f"a fox number {i}", "image": (images or {}).get(i, "frame.png")})
             for i in range(count)]
    return write_job(folder, lines, prompt_file="p.jsonl", prompts="p.jsonl", model="builtin:tiny-wan-i2v",
                     params=TINY_VIDEO, microbatch=str(microbatch))


def rank_pids(marker: str) -> dict[int, int]:
    """rank -> pid of the running ranks whose command line mentions `marker`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"onepiece_hpc.runtime.rank_main" in cmdline and marker.encode() in b" ".join(cmdline):
            for var in environ:
                if var.startswith((b"PMI_RANK=", b"OMPI_COMM_WORLD_RANK=")):
                    found[int(var.split(b"=")[1])] = int(entry.name)
    return found


def runs_of(output: Path) -> list[dict]:
    """The output's run records, oldest first (status, items_committed, mode, ...)."""
    from onepiece_hpc.store.reader import view_of

    return view_of(Path(output)).runs


def telemetry_of(output: Path):
    """The last staged run's telemetry record (ranks, samples, stages, moves)."""
    from onepiece_hpc.store.reader import view_of
    from onepiece_hpc.store.telemetry import latest_run

    return latest_run(view_of(Path(output)))


def tamper(output: Path, items: list[int], *, done: int | None = None, pixels: int | None = None) -> None:
    """Change items in their data files as a fault would (a lost flag, damaged bytes); never through the
    index, whose virtual datasets are for reading."""
    import h5py

    from onepiece_hpc.store.reader import view_of

    view = view_of(Path(output))
    for item in items:
        seg = next(seg for seg in view.segments if seg.start <= item < seg.start + seg.count)
        with h5py.File(seg.path, "r+", locking=False) as f:
            if done is not None:
                f["done"][item - seg.start] = done
            if pixels is not None:
                f[view.dataset][item - seg.start] = pixels


def hold_the_interpreter(seconds: int) -> None:
    """A C call that keeps the GIL for `seconds`, as an HDF5 flush to a stalled file system does:
    no other thread of this process runs meanwhile."""
    import ctypes

    ctypes.PyDLL(None).sleep(seconds)


@contextmanager
def pulsing(listener, ranks: list[int], every_s: float = 0.05):
    """`ranks` pulse to `listener` from another process (one the test's holds don't stop)."""
    code = ("import time; from onepiece_hpc.runtime.pulse import PulseSender\n"
            f"for rank in {list(ranks)!r}:\n"
            f"    PulseSender(rank, 'localhost', {listener.port}, bytes.fromhex({listener.token.hex()!r}), "
            f"{every_s}).start()\n"
            "time.sleep(120)\n")
    sender = subprocess.Popen([sys.executable, "-c", code])
    try:
        yield sender
    finally:
        sender.kill()
        sender.wait(timeout=30)
