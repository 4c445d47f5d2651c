"""Run under mpiexec by test_mpi.py: many producers to many consumers, or a stalled peer."""

from __future__ import annotations

import random
import sys

import numpy as np
from mpi4py import MPI

from onepiece_hpc.transport import PeerTimeout, WaitPolicy
from onepiece_hpc.transport.balance import pick_consumer
from onepiece_hpc.transport.connect import FabricChoice, Outbound, open_channels
from onepiece_hpc.transport.fabrics.registry import build_fabrics, close_fabrics
from transport_helpers import random_tensors

MESSAGES_PER_PRODUCER = 60


def many_to_many(comm: MPI.Comm, choice: FabricChoice) -> None:
    rank, size = comm.rank, comm.size
    producers = list(range(0, size, 2))
    consumers = list(range(1, size, 2))
    fabrics = build_fabrics(comm, choice, rma_arena_bytes=8 << 20)
    policy = WaitPolicy(timeout_s=30)
    outbound = [Outbound(c, 3, 32768) for c in consumers] if rank in producers else []
    inbound = producers if rank in consumers else []
    channels = open_channels(comm, fabrics, outbound=outbound, inbound=inbound, choice=choice,
                             policy=policy, timeout_s=30)
    if rank in producers:
        rng = random.Random(rank)
        targets = list(channels.outbound)
        sent = 0
        while sent < MESSAGES_PER_PRODUCER:
            pick = pick_consumer([channels.outbound[t].producer.free_slots() for t in targets],
                                 start=sent)
            if pick is None:
                channels.outbound[targets[sent % len(targets)]].producer.send(
                    random_tensors(rng, 24000), unit_id=rank, item_ids=[sent])
            else:
                channels.outbound[targets[pick]].producer.send(
                    random_tensors(rng, 24000), unit_id=rank, item_ids=[sent])
            sent += 1
    got: list[tuple[int, int, list[tuple[str, bytes]]]] = []
    if rank in consumers:
        live = dict(channels.inbound)
        while live:
            for peer, channel in list(live.items()):
                message = channel.consumer.try_receive()
                if message is None:
                    if channel.consumer.finished:
                        del live[peer]
                    continue
                got.append((message.unit_id, message.item_ids[0],
                            [(n, a.tobytes()) for n, a in message.tensors.items()]))
                message.release()
            for channel in channels.outbound.values():
                channel.producer.free_slots()
    if rank in producers:
        for channel in channels.outbound.values():
            channel.producer.finish()
    channels.close(policy, timeout_s=30)
    all_got = comm.gather(got, root=0)
    comm.Barrier()
    close_fabrics(fabrics)
    if rank == 0:
        check(all_got, producers)


def check(all_got: list, producers: list[int]) -> None:
    """Every message once; per producer in send order; contents as regenerated."""
    received = {p: [] for p in producers}
    for got in all_got:
        for unit, item, tensors in got:
            received[unit].append((item, tensors))
    for producer, items in received.items():
        rng = random.Random(producer)
        expected = [[(t.name, t.array.tobytes()) for t in random_tensors(rng, 24000)]
                    for _ in range(MESSAGES_PER_PRODUCER)]
        items.sort(key=lambda pair: pair[0])
        assert [i for i, _ in items] == list(range(MESSAGES_PER_PRODUCER)), (producer, items)
        for (item, tensors) in items:
            assert tensors == expected[item], (producer, item)
    print(f"OK {sum(len(v) for v in received.values())} messages", flush=True)


def stalled_consumer(comm: MPI.Comm, choice: FabricChoice) -> None:
    """Rank 1 opens the channel and then never receives: rank 0 must fail within the deadline."""
    fabrics = build_fabrics(comm, choice, rma_arena_bytes=1 << 20)
    channels = open_channels(comm, fabrics, outbound=[Outbound(1, 2, 1024)] if comm.rank == 0
                             else [], inbound=[0] if comm.rank == 1 else [], choice=choice,
                             policy=WaitPolicy(timeout_s=1.5))
    if comm.rank == 0:
        producer = channels.outbound[1].producer
        try:
            for _ in range(3):
                producer.send({"x": np.ones(8, np.uint8)})
        except PeerTimeout as err:
            print(f"TIMEOUT {err}", flush=True)
    comm.Barrier()
    for channel in channels.inbound.values():
        channel.close()
    for channel in channels.outbound.values():
        channel.ring.close()
        channel.credits.close()
    close_fabrics(fabrics)


if __name__ == "__main__":
    scenario, fabric = sys.argv[1], FabricChoice(sys.argv[2])
    {"many": many_to_many, "stalled": stalled_consumer}[scenario](MPI.COMM_WORLD, fabric)
