"""What one rank 0 can handle on this CPU: the real commit path and the real control messages,
timed, so that a verdict "one writer and one manager hold up to N GPUs" rests on measured cost.

Invariant: every figure times the runtime's own code, on rank 0's side only. Commits go through
store.output.OutputWriter into a real output (data files, digests, group fsync, done flags) one
unit at a time, with the unit's ring metadata parsed as the Node Manager's commit path
(runtime/manager/commit.py) does; its fixed cost comes from tiny items, its cost per byte from
larger ones. Control messages are
encoded and decoded by runtime/messages.py; with mpi4py they also cross MPI (nonblocking sends
to this process, received by ControlPlane.poll, the manager's own receive loop); the dispatch is
the manager's: a Heartbeat goes into runtime.telemetry.Telemetry, a WorkRequest gets a WorkGrant
with its unit's prompts and seeds, encoded and sent.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from onepiece_hpc.bench.store_scale import SyntheticItems
from onepiece_hpc.runtime import messages
from onepiece_hpc.runtime.telemetry import Telemetry
from onepiece_hpc.sim.control_plane import ControlCosts
from onepiece_hpc.store.output import OutputLayout, OutputWriter, StoreSettings
from onepiece_hpc.store.provenance import Provenance, RunInfo

PROMPT = "a slow cinematic dolly shot of a lighthouse on a cliff at dusk, waves breaking below, gulls, 35 mm film"


def _provenance() -> Provenance:
    return Provenance(*([""] * 3), "synthetic", "synthetic", *([""] * 8))


def _commit_seconds(folder: Path, shape: tuple[int, ...], count: int) -> float:
    """Seconds per commit of one item of `shape` (uint8), closing the output included."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=".bench-commit-") as scratch:
        writer = OutputWriter.open(Path(scratch) / "out.h5", SyntheticItems(count), OutputLayout("image", shape),
                                   _provenance(), "bench", settings=StoreSettings(), run=RunInfo(mode="bench"))
        payload = np.random.default_rng(0).integers(0, 255, size=(1, *shape), dtype=np.uint8)
        meta = json.dumps({"stage": "decode", "timings": [0.05, 2.5, 2.4], "params": 0}).encode()
        began = time.perf_counter()
        for index in range(count):
            timings = np.array(json.loads(meta)["timings"])
            writer.commit(index, payload, np.tile(timings, (1, 1)))
        writer.close("completed")
        return (time.perf_counter() - began) / count


def _heartbeat(rank: int) -> messages.Heartbeat:
    return messages.Heartbeat(rank=rank, state="serving", stage="denoise", unit=123456, units_done=789,
                              busy_s=1234.5, wait_s=12.25, send_s=3.5, elapsed_s=1300.0, load_s=2.5, backlog=2,
                              memory_mb=40960.0, stage_busy_s=[0.0, 1234.5, 0.0], stage_units=[0, 789, 0],
                              stage_time_s=[0.0, 1300.0, 0.0], memory_limit_mb=143000.0, gpu=3)


class _Wire:
    """Messages to rank 0 and back: over MPI (to this very process) when mpi4py is there, else bytes."""

    def __init__(self) -> None:
        try:
            from mpi4py import MPI

            from onepiece_hpc.runtime.control import TAG_TO_MANAGER, ControlPlane
            from onepiece_hpc.transport.wait import WaitPolicy
        except ImportError:
            self.plane, self.how = None, "encode/decode only (no mpi4py)"
            return
        self.mpi, self.tag = MPI, TAG_TO_MANAGER
        self.plane, self.how = ControlPlane(MPI.COMM_WORLD, WaitPolicy()), "over MPI to itself (mpi4py)"
        self.pending: list = []

    def post(self, message) -> None:
        """A peer's send (not timed as rank 0's work)."""
        raw = messages.encode(message)
        if self.plane is None:
            self.pending.append(raw)
        else:
            self.pending.append(self.plane.comm.Isend([raw, self.mpi.BYTE], dest=0, tag=self.tag))

    def receive(self) -> list:
        """Rank 0's receive of everything posted: (source, typed message) pairs."""
        if self.plane is None:
            got = [(1, messages.decode(raw)) for raw in self.pending]
        else:
            got = self.plane.poll(self.tag)
            self.mpi.Request.Waitall(self.pending)
        self.pending = []
        return got

    def send(self, message) -> None:
        """Rank 0's send of a reply (timed)."""
        raw = messages.encode(message)
        if self.plane is not None:
            self.plane.comm.Isend([raw, self.mpi.BYTE], dest=0, tag=self.tag + 7).Free()

    def drain_replies(self) -> None:
        if self.plane is None:
            return
        status = self.mpi.Status()
        while self.plane.comm.Iprobe(source=0, tag=self.tag + 7, status=status):
            self.plane.comm.Recv(bytearray(status.Get_count(self.mpi.BYTE)), source=0, tag=self.tag + 7)


def _message_seconds(count: int, items_per_unit: int) -> tuple[float, float, str]:
    """Seconds rank 0 spends per heartbeat and per work request (its grant included)."""
    wire = _Wire()
    telemetry = Telemetry()
    per_beat = []
    for _ in range(3):
        for rank in range(count):
            wire.post(_heartbeat(rank))
        began = time.perf_counter()
        for _, beat in wire.receive():
            if isinstance(beat, messages.Heartbeat):
                telemetry.record(beat)
        per_beat.append((time.perf_counter() - began) / count)
    per_request = []
    for _ in range(3):
        for rank in range(count):
            wire.post(messages.WorkRequest(rank))
        began = time.perf_counter()
        for source, request in wire.receive():
            unit = request.rank
            wire.send(messages.WorkGrant(unit, start=unit * items_per_unit, params=0,
                                         prompts=[PROMPT] * items_per_unit, negative_prompts=[""] * items_per_unit,
                                         seeds=list(range(unit, unit + items_per_unit))))
        per_request.append((time.perf_counter() - began) / count)
        wire.drain_replies()
    if wire.plane is not None:
        wire.plane.close()
    return min(per_beat), min(per_request), wire.how


def measure_costs(folder: Path, quick: bool = False) -> ControlCosts:
    """Rank 0's costs on this machine: the best of three rounds for messages; commits of 8 x 8 px
    items (the fixed part) and of 1024 x 1024 px ones (the part per byte)."""
    tiny, large = (8, 8, 3), (1024, 1024, 3)
    small_s = _commit_seconds(folder, tiny, 300 if quick else 3000)
    large_s = _commit_seconds(folder, large, 20 if quick else 150)
    per_byte = max(0.0, (large_s - small_s) / (np.prod(large) - np.prod(tiny)))
    beat_s, request_s, how = _message_seconds(500 if quick else 5000, 1)
    return ControlCosts(request_s=request_s, heartbeat_s=beat_s, commit_s=small_s, commit_byte_s=float(per_byte),
                        source=f"measured here: commits into an HDF5 output in {folder}, messages {how}")
