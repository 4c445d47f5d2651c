"""shm fabric: permissions, names, cleanup after exit, error and kill -9; a dead peer's error."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from onepiece_hpc.transport import PeerDied, PeerInfo, RingLayout, WaitPolicy
from onepiece_hpc.transport.consumer import Consumer
from onepiece_hpc.transport.errors import SetupError
from onepiece_hpc.transport.fabrics.shm import PREFIX, SHM_DIR, ShmFabric, ShmPeerRegion
from onepiece_hpc.transport.ring import CREDIT_REGION_BYTES

pytestmark = pytest.mark.timeout(60)
ME = PeerInfo(0, socket.gethostname(), os.getpid())


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            text=True)


def test_segments_are_private_unguessable_and_unlinked_once_sealed() -> None:
    region = ShmFabric().create_region(4096, ME)
    path = os.path.join(SHM_DIR, region.name)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert region.name.startswith(f"{PREFIX}-{os.getpid()}-") and len(region.name) > 40
    region.seal()
    assert not os.path.exists(path)
    region.buffer[:4] = 7  # still mapped after the name is gone
    region.close()


def test_attaching_refuses_foreign_names() -> None:
    with pytest.raises(SetupError, match="not a onepiece segment name"):
        ShmPeerRegion("../../etc/passwd", 4096, ME)


def test_unsealed_segment_is_unlinked_at_normal_exit() -> None:
    child = _child("""
        import os, socket
        from onepiece_hpc.transport.errors import PeerInfo
        from onepiece_hpc.transport.fabrics.shm import ShmFabric
        region = ShmFabric().create_region(4096, PeerInfo(0, socket.gethostname(), 0))
        print(region.name, flush=True)
    """)
    name = child.communicate(timeout=30)[0].strip()
    assert name.startswith(PREFIX) and not os.path.exists(os.path.join(SHM_DIR, name))


def test_kill_9_leftovers_are_removed_by_the_next_run() -> None:
    child = _child("""
        import os, socket, time
        from onepiece_hpc.transport.errors import PeerInfo
        from onepiece_hpc.transport.fabrics.shm import ShmFabric
        region = ShmFabric().create_region(4096, PeerInfo(0, socket.gethostname(), 0))
        print(region.name, flush=True)
        time.sleep(60)
    """)
    name = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert os.path.exists(os.path.join(SHM_DIR, name))
    ShmFabric()  # the next run sweeps segments whose owner is dead
    assert not os.path.exists(os.path.join(SHM_DIR, name))


def test_killed_producer_gives_peer_died_naming_rank_within_deadline() -> None:
    fabric = ShmFabric()
    layout = RingLayout(2, 1024)
    data = fabric.create_region(layout.data_bytes, ME)
    child = _child(f"""
        import os, socket, time
        import numpy as np
        from onepiece_hpc.transport import PeerInfo, RingLayout
        from onepiece_hpc.transport.fabrics.shm import ShmFabric
        from onepiece_hpc.transport.ring import CREDIT_REGION_BYTES
        from onepiece_hpc.transport.producer import Producer
        fabric = ShmFabric()
        me = PeerInfo(5, socket.gethostname(), os.getppid())
        credits = fabric.create_region(CREDIT_REGION_BYTES, me)
        ring = fabric.attach_region({data.descriptor()!r}, me)
        producer = Producer(RingLayout(2, 1024), credits, ring, me)
        producer.send({{"x": np.arange(10, dtype=np.int64)}})
        print(credits.name, flush=True)
        time.sleep(60)
    """)
    credit_name = child.stdout.readline().strip()
    data.seal()
    credits = fabric.attach_region({"name": credit_name, "nbytes": CREDIT_REGION_BYTES}, ME)
    peer = PeerInfo(5, socket.gethostname(), child.pid)
    consumer = Consumer(layout, data, credits, peer, WaitPolicy(timeout_s=20),
                        check_alive=fabric.liveness(peer))
    with consumer.receive(timeout_s=5) as message:
        np.testing.assert_array_equal(message.tensors["x"], np.arange(10))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    ShmFabric()  # sweep the credit segment the killed child never unlinked
    start = time.monotonic()
    with pytest.raises(PeerDied, match=f"rank 5 .*pid {child.pid}.*exited"):
        consumer.receive()
    assert time.monotonic() - start < 2
    credits.close()
    data.close()
