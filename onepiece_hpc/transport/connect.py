"""Channel set-up and tear-down over small MPI point-to-point messages.

All handshakes of a rank progress together (non-blocking sends, probed receives), so ranks
may open channels to each other in any order without deadlock, and the whole set-up has one
deadline. Fabric choice: `auto` takes shm when both ends share a host, else verbs when both
have an RDMA device, else mpi-rma.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from mpi4py import MPI

from onepiece_hpc.transport.consumer import Consumer
from onepiece_hpc.transport.errors import PeerInfo, SetupError, TransportError
from onepiece_hpc.transport.fabrics.base import (
    Fabric,
    FabricKind,
    OwnedRegion,
    PeerRegion,
)
from onepiece_hpc.transport.producer import Producer
from onepiece_hpc.transport.ring import CREDIT_REGION_BYTES, RingLayout
from onepiece_hpc.transport.setup_messages import SetupMessage, Step
from onepiece_hpc.transport.wait import WaitPolicy
from onepiece_hpc.transport.wire import Integrity

log = logging.getLogger(__name__)

TAG_TO_CONSUMER = 0x4F50
TAG_TO_PRODUCER = 0x4F51


class FabricChoice(str, Enum):
    """What the user asks for; AUTO resolves per peer."""

    AUTO = "auto"
    SHM = "shm"
    MPI_RMA = "mpi-rma"
    VERBS = "verbs"
    CUDA_IPC = "cuda-ipc"


class IntegrityChoice(str, Enum):
    """What a producer asks for; AUTO lets the consumer pick per fabric at set-up: HEADER where
    the fabric publishes the stamp after the payload (shm on x86-64), FULL everywhere else."""

    AUTO = "AUTO"
    FULL = "FULL"
    HEADER = "HEADER"


@dataclass(frozen=True)
class Outbound:
    """A channel this rank produces into: the consumer's rank and the ring's shape."""

    rank: int
    slots: int
    slot_bytes: int
    integrity: IntegrityChoice = IntegrityChoice.FULL


@dataclass
class OutboundChannel:
    """The producer end of an open channel and the fabric regions behind it."""

    producer: Producer
    credits: OwnedRegion
    ring: PeerRegion
    fabric: str = ""  # the fabric kind the ring crosses: shm, mpi-rma, verbs, cuda-ipc

    def close(self, timeout_s: float | None = None) -> None:
        """End of stream; waits for the consumer to release everything, then frees memory."""
        try:
            self.producer.close(timeout_s)
        finally:
            self.ring.close()
            self.credits.close()


@dataclass
class InboundChannel:
    """The consumer end of an open channel and the fabric regions behind it."""

    consumer: Consumer
    ring: OwnedRegion
    credits: PeerRegion
    fabric: str = ""

    def close(self) -> None:
        self.consumer.close()
        self.credits.close()
        self.ring.close()


@dataclass
class Channels:
    """Every channel a rank opened in one `open_channels` call, keyed by peer rank."""

    outbound: dict[int, OutboundChannel] = field(default_factory=dict)
    inbound: dict[int, InboundChannel] = field(default_factory=dict)

    def links(self) -> str:
        """Which fabric each channel crosses, by peer: "to 3 mpi-rma, to 4 shm; from 1 shm"."""
        out = ", ".join(f"to {r} {c.fabric}" for r, c in sorted(self.outbound.items()))
        into = ", ".join(f"from {r} {c.fabric}" for r, c in sorted(self.inbound.items()))
        return "; ".join(part for part in (out, into) if part)

    def close(self, policy: WaitPolicy = WaitPolicy(), timeout_s: float = 60.0) -> int:
        """Close every channel in both directions at once (no ordering deadlock between peers).

        Messages that still arrive are released unread; returns how many were dropped.
        """
        dropped = 0
        try:
            for channel in self.outbound.values():
                channel.producer.finish(timeout_s)
            deadline = time.monotonic() + timeout_s
            pause = policy.first_sleep_s
            while True:
                for channel in self.inbound.values():
                    while (message := channel.consumer.try_receive()) is not None:
                        message.release()
                        dropped += 1
                pending = [r for r, c in self.outbound.items() if not c.producer.acknowledged()]
                pending += [r for r, c in self.inbound.items() if not c.consumer.finished]
                if not pending:
                    break
                if time.monotonic() > deadline:
                    raise SetupError(f"closing channels: ranks {sorted(set(pending))} did not "
                                     f"finish within {timeout_s:.0f} s; they died or stalled")
                time.sleep(pause)
                pause = min(pause * 2, policy.max_sleep_s)
        finally:
            for out in self.outbound.values():
                out.ring.close()
                out.credits.close()
            for inn in self.inbound.values():
                inn.close()
        if dropped:
            log.warning("dropped %d messages that arrived while closing", dropped)
        return dropped


def choose_fabric(choice: FabricChoice, same_host: bool, common: set[str]) -> FabricKind:
    """The fabric for one channel; `common` holds the kinds both ends have."""
    if choice is FabricChoice.CUDA_IPC and same_host and FabricKind.CUDA_IPC.value not in common:
        return FabricKind.SHM  # one end has no GPU (rank 0): the host path
    if choice is not FabricChoice.AUTO:
        return FabricKind(choice.value)
    if same_host and FabricKind.CUDA_IPC.value in common:
        return FabricKind.CUDA_IPC
    if same_host and FabricKind.SHM.value in common:
        return FabricKind.SHM
    if FabricKind.VERBS.value in common:
        return FabricKind.VERBS
    return FabricKind.MPI_RMA


class _Handshake:
    """Progress of one channel's set-up, from either end."""

    def __init__(self, peer_rank: int, outbound: Outbound | None) -> None:
        self.peer_rank = peer_rank
        self.outbound = outbound
        self.channel_id = secrets.randbits(31)
        self.peer: PeerInfo | None = None
        self.fabric: Fabric | None = None
        self.layout: RingLayout | None = None
        self.owned: OwnedRegion | None = None
        self.attached: PeerRegion | None = None
        self.done = False

    def release(self) -> None:
        for region in (self.attached, self.owned):
            if region is not None:
                region.close()


class _Session:
    def __init__(self, comm: MPI.Comm, fabrics: Mapping[FabricKind, Fabric],
                 choice: FabricChoice, policy: WaitPolicy) -> None:
        self.comm = comm
        self.fabrics = fabrics
        self.choice = choice
        self.policy = policy
        self.me = PeerInfo(comm.Get_rank(), socket.gethostname(), os.getpid())
        self.requests: list[MPI.Request] = []
        self.buffers: list[bytes] = []

    def send(self, rank: int, tag: int, message: SetupMessage) -> None:
        raw = message.encode()
        self.buffers.append(raw)
        self.requests.append(self.comm.Isend([raw, MPI.BYTE], dest=rank, tag=tag))

    def receive(self, rank: int, tag: int) -> SetupMessage | None:
        status = MPI.Status()
        if not self.comm.Iprobe(source=rank, tag=tag, status=status):
            return None
        raw = bytearray(status.Get_count(MPI.BYTE))
        self.comm.Recv([raw, MPI.BYTE], source=rank, tag=tag)
        message = SetupMessage.decode(bytes(raw), rank)
        if message.step is Step.REFUSE:
            raise SetupError(f"rank {rank} ({message.host}) refused the channel: {message.reason}")
        return message

    def hello(self, step: Step, shake: _Handshake, **fields: object) -> SetupMessage:
        return SetupMessage(step, shake.channel_id, self.me.host, self.me.pid, **fields)

    def fabric(self, name: str, peer_rank: int) -> Fabric:
        kind = next((k for k in FabricKind if k.value == name), None)
        fabric = None if kind is None else self.fabrics.get(kind)
        if fabric is None:
            have = ", ".join(k.value for k in self.fabrics) or "none"
            raise SetupError(f"fabric {name} is not available on rank {self.me.rank} "
                             f"(have: {have}) for the channel with rank {peer_rank}; pick "
                             "another with --fabric")
        return fabric


def open_channels(comm: MPI.Comm, fabrics: Mapping[FabricKind, Fabric], *,
                  outbound: Sequence[Outbound] = (), inbound: Sequence[int] = (),
                  choice: FabricChoice = FabricChoice.AUTO, policy: WaitPolicy = WaitPolicy(),
                  timeout_s: float = 60.0) -> Channels:
    """Open every channel this rank produces into (`outbound`) and consumes from (`inbound`).

    Each peer must make the matching call; the calls may come in any order.
    """
    session = _Session(comm, fabrics, choice, policy)
    shakes = [_Handshake(o.rank, o) for o in outbound] + [_Handshake(r, None) for r in inbound]
    channels = Channels()
    try:
        for shake in shakes:
            if shake.outbound is not None:
                o = shake.outbound
                session.send(o.rank, TAG_TO_CONSUMER, session.hello(
                    Step.OFFER, shake, fabric=choice.value,
                    fabrics=tuple(k.value for k in fabrics), slots=o.slots,
                    slot_bytes=o.slot_bytes, integrity=o.integrity.value))
        deadline = time.monotonic() + timeout_s
        pause = policy.first_sleep_s
        while not all(s.done for s in shakes):
            moved = any([_step(session, s, channels) for s in shakes if not s.done])
            if time.monotonic() > deadline:
                waiting = sorted(s.peer_rank for s in shakes if not s.done)
                raise SetupError(f"rank {session.me.rank} ({session.me.host}): channel set-up with"
                                 f" ranks {waiting} did not finish within {timeout_s:.0f} s; those"
                                 " ranks died, stalled or do not open the matching channel")
            pause = policy.first_sleep_s if moved else min(pause * 2, policy.max_sleep_s)
            if not moved:
                time.sleep(pause)
        MPI.Request.Waitall(session.requests)
    except BaseException:
        for shake in shakes:
            if not shake.done:
                shake.release()
        for channel in [*channels.outbound.values(), *channels.inbound.values()]:
            channel.ring.close()
            channel.credits.close()
        raise
    return channels


def _step(session: _Session, shake: _Handshake, channels: Channels) -> bool:
    """Advance one handshake if its next message has arrived; True if it moved."""
    if shake.outbound is not None:
        return _step_producer(session, shake, channels)
    return _step_consumer(session, shake, channels)


def _step_producer(session: _Session, shake: _Handshake, channels: Channels) -> bool:
    message = session.receive(shake.peer_rank, TAG_TO_PRODUCER)
    if message is None:
        return False
    if message.step is Step.ACCEPT and shake.fabric is None:
        shake.peer = PeerInfo(shake.peer_rank, message.host, message.pid)
        shake.fabric = session.fabric(message.fabric, shake.peer_rank)
        o = shake.outbound
        agreed = Integrity[message.integrity] if message.integrity in Integrity.__members__ else None
        if agreed is None or (o.integrity is not IntegrityChoice.AUTO and agreed.name != o.integrity.value):
            raise SetupError(f"rank {shake.peer_rank} accepted integrity {message.integrity!r} where "
                             f"{o.integrity.value} was offered; are all ranks running the same onepiece version?")
        shake.layout = RingLayout(o.slots, o.slot_bytes, message.channel_id, agreed)
        shake.owned = shake.fabric.create_region(CREDIT_REGION_BYTES, shake.peer)
        shake.attached = shake.fabric.attach_region(message.region, shake.peer)
        session.send(shake.peer_rank, TAG_TO_CONSUMER, session.hello(
            Step.ATTACHED, shake, region=shake.owned.descriptor()))
        return True
    if message.step is Step.READY and shake.fabric is not None:
        shake.owned.seal()
        producer = Producer(shake.layout, shake.owned, shake.attached, shake.peer, session.policy,
                            check_alive=shake.fabric.liveness(shake.peer))
        channels.outbound[shake.peer_rank] = OutboundChannel(producer, shake.owned, shake.attached,
                                                             shake.fabric.kind.value)
        shake.done = True
        return True
    raise SetupError(f"rank {shake.peer_rank} sent {message.step.value} out of turn during "
                     "channel set-up; are all ranks running the same onepiece version?")


def _step_consumer(session: _Session, shake: _Handshake, channels: Channels) -> bool:
    message = session.receive(shake.peer_rank, TAG_TO_CONSUMER)
    if message is None:
        return False
    if message.step is Step.OFFER and shake.fabric is None:
        shake.peer = PeerInfo(shake.peer_rank, message.host, message.pid)
        try:
            shake.layout = _accept_layout(message, shake.peer)
            choice = session.choice if session.choice is not FabricChoice.AUTO else \
                next((c for c in FabricChoice if c.value == message.fabric), FabricChoice.AUTO)
            kind = choose_fabric(choice, message.host == session.me.host,
                                 set(message.fabrics) & {k.value for k in session.fabrics})
            shake.fabric = session.fabric(kind.value, shake.peer_rank)
            if message.integrity == IntegrityChoice.AUTO.value:
                chosen = Integrity.HEADER if shake.fabric.ordered_publish else Integrity.FULL
                shake.layout = replace(shake.layout, integrity=chosen)
            if shake.layout.integrity is Integrity.HEADER and not shake.fabric.ordered_publish:
                raise SetupError(f"fabric {kind.value} does not order the stamp after the payload "
                                 "here, so integrity HEADER is unsafe; use FULL")
            if shake.layout.integrity is Integrity.FULL and getattr(shake.fabric, "device_payload", False):
                raise SetupError(f"fabric {kind.value} keeps payloads in GPU memory, which the CPU "
                                 "can't checksum; use integrity AUTO or HEADER, or --fabric shm")
            shake.owned = shake.fabric.create_region(shake.layout.data_bytes, shake.peer)
        except (TransportError, ValueError) as err:
            session.send(shake.peer_rank, TAG_TO_PRODUCER,
                         session.hello(Step.REFUSE, shake, reason=str(err)))
            raise
        shake.channel_id = message.channel_id
        session.send(shake.peer_rank, TAG_TO_PRODUCER, session.hello(
            Step.ACCEPT, shake, fabric=kind.value, region=shake.owned.descriptor(),
            integrity=shake.layout.integrity.name))
        return True
    if message.step is Step.ATTACHED and shake.fabric is not None:
        shake.attached = shake.fabric.attach_region(message.region, shake.peer)
        shake.owned.seal()
        consumer = Consumer(shake.layout, shake.owned, shake.attached, shake.peer, session.policy,
                            check_alive=shake.fabric.liveness(shake.peer))
        channels.inbound[shake.peer_rank] = InboundChannel(consumer, shake.owned, shake.attached,
                                                           shake.fabric.kind.value)
        session.send(shake.peer_rank, TAG_TO_PRODUCER, session.hello(Step.READY, shake))
        shake.done = True
        return True
    raise SetupError(f"rank {shake.peer_rank} sent {message.step.value} out of turn during "
                     "channel set-up; are all ranks running the same onepiece version?")


def _accept_layout(message: SetupMessage, peer: PeerInfo) -> RingLayout:
    try:
        integrity = Integrity.FULL if message.integrity == IntegrityChoice.AUTO.value else Integrity[message.integrity]
        return RingLayout(message.slots, message.slot_bytes, message.channel_id, integrity)
    except (KeyError, ValueError) as err:
        raise SetupError(f"{peer.describe()} offered an invalid ring ({message.slots} slots of "
                         f"{message.slot_bytes} bytes, integrity {message.integrity!r}): {err}"
                         ) from err
