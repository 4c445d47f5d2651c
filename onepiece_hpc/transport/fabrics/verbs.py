"""`verbs` fabric: RDMA over reliable-connected queue pairs (pyverbs), kept thin.

The consumer's data ring and the producer's credit record are memory regions registered for
remote write. Payload and header go out as RDMA WRITEs from a registered staging copy; the
stamp goes out last as RDMA WRITE WITH IMMEDIATE, whose receive completion the reader polls in
`sync()`: on RC, that completion is generated only after all earlier writes of the queue pair
are placed. The fabric still reports `ordered_publish = False`, so channels over it keep full
checksums (a stamp seen in memory before its completion is re-read, never consumed torn).

pyverbs is imported lazily: machines without it or without an RDMA device report no devices.
"""

from __future__ import annotations

import ctypes
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from onepiece_hpc.transport.errors import PeerInfo, SetupError
from onepiece_hpc.transport.fabrics.base import FabricKind, field

log = logging.getLogger(__name__)

QUEUE_DEPTH = 64


def verbs_devices() -> list[str]:
    """Names of usable RDMA devices; empty where pyverbs or devices are missing."""
    try:
        import pyverbs.device as device
    except ImportError:
        return []
    try:
        return [d.name.decode() for d in device.get_device_list()]
    except Exception as err:  # pyverbs raises PyverbsRDMAError when the kernel has no RDMA
        log.debug("no RDMA devices: %s", err)
        return []


def _memory(mr: Any, nbytes: int) -> np.ndarray:
    raw = (ctypes.c_uint8 * nbytes).from_address(mr.buf)
    return np.frombuffer(raw, dtype=np.uint8)


class _Link:
    """One RC queue pair towards one peer, with its completion queues and a staging buffer."""

    def __init__(self, fabric: VerbsFabric) -> None:
        from pyverbs.cq import CQ
        from pyverbs.qp import QP, QPCap, QPInitAttr
        import pyverbs.enums as e

        self.fabric = fabric
        self.send_cq = CQ(fabric.context, QUEUE_DEPTH)
        self.recv_cq = CQ(fabric.context, QUEUE_DEPTH)
        cap = QPCap(max_send_wr=QUEUE_DEPTH, max_recv_wr=QUEUE_DEPTH, max_send_sge=1,
                    max_recv_sge=1)
        self.qp = QP(fabric.pd, QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.send_cq,
                                           rcq=self.recv_cq, cap=cap))
        self.psn = secrets.randbelow(1 << 24)
        self.staging: Any = None
        self.staging_view = np.zeros(0, dtype=np.uint8)
        self.connected = False

    def ensure_staging(self, nbytes: int) -> None:
        """A registered copy of the peer's region layout: the source of every RDMA write."""
        from pyverbs.mr import MR
        import pyverbs.enums as e

        if len(self.staging_view) < nbytes:
            self.staging = MR(self.fabric.pd, nbytes, e.IBV_ACCESS_LOCAL_WRITE)
            self.staging_view = _memory(self.staging, nbytes)

    def endpoint(self) -> dict[str, object]:
        return {"qpn": self.qp.qp_num, "psn": self.psn, "lid": self.fabric.lid,
                "gid": self.fabric.gid}

    def connect(self, remote: Mapping[str, object], peer: PeerInfo) -> None:
        from pyverbs.addr import AHAttr, GlobalRoute
        from pyverbs.qp import QPAttr
        import pyverbs.enums as e

        if self.connected:
            return
        attr = QPAttr(qp_state=e.IBV_QPS_INIT, cur_qp_state=e.IBV_QPS_RESET)
        attr.qp_access_flags = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE
        attr.path_mtu = e.IBV_MTU_1024
        attr.dest_qp_num = int(field(remote, "qpn", int, peer))
        attr.rq_psn = int(field(remote, "psn", int, peer))
        attr.sq_psn = self.psn
        attr.max_dest_rd_atomic = 1
        attr.max_rd_atomic = 1
        attr.min_rnr_timer = 12
        attr.timeout = 14
        attr.retry_cnt = 7
        attr.rnr_retry = 7
        route = GlobalRoute(dgid=self.fabric.parse_gid(str(field(remote, "gid", str, peer))),
                            sgid_index=self.fabric.gid_index)
        attr.ah_attr = AHAttr(dlid=int(field(remote, "lid", int, peer)), port_num=self.fabric.port,
                              is_global=1, gr=route)
        self.qp.to_rts(attr)
        for _ in range(QUEUE_DEPTH):
            self._post_recv()
        self.connected = True

    def _post_recv(self) -> None:
        from pyverbs.wr import RecvWR

        self.qp.post_recv(RecvWR(num_sge=0))

    def poll_recv(self) -> None:
        count, _ = self.recv_cq.poll(QUEUE_DEPTH)
        for _ in range(count):
            self._post_recv()

    def rdma_write(self, local_offset: int, remote_addr: int, rkey: int, nbytes: int,
                   imm: int | None) -> None:
        from pyverbs.wr import SGE, SendWR
        import pyverbs.enums as e

        sge = SGE(self.staging.buf + local_offset, nbytes, self.staging.lkey)
        opcode = e.IBV_WR_RDMA_WRITE if imm is None else e.IBV_WR_RDMA_WRITE_WITH_IMM
        wr = SendWR(opcode=opcode, num_sge=1, sg=[sge], send_flags=e.IBV_SEND_SIGNALED)
        if imm is not None:
            wr.imm_data = imm
        wr.set_wr_rdma(rkey, remote_addr)
        self.qp.post_send(wr)
        while True:
            count, completions = self.send_cq.poll(1)
            if count:
                if completions[0].status != e.IBV_WC_SUCCESS:
                    raise SetupError(f"RDMA write failed with status {completions[0].status}")
                return


class VerbsRegion:
    """A registered region this rank owns; peers write it through their queue pair."""

    def __init__(self, link: _Link, nbytes: int) -> None:
        from pyverbs.mr import MR
        import pyverbs.enums as e

        self._link = link
        self.mr = MR(link.fabric.pd, nbytes, e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE)
        self._buffer = _memory(self.mr, nbytes)
        self._buffer[:] = 0
        self.nbytes = nbytes

    @property
    def buffer(self) -> np.ndarray:
        return self._buffer

    def sync(self) -> None:
        if self._link.connected:
            self._link.poll_recv()

    def descriptor(self) -> dict[str, object]:
        return {"addr": self.mr.buf, "rkey": self.mr.rkey, "nbytes": self.nbytes,
                **self._link.endpoint()}

    def seal(self) -> None:
        return None

    def close(self) -> None:
        self.mr.close()


class VerbsPeerRegion:
    """A peer's registered region, written with RDMA WRITE (WITH IMM for the publish)."""

    def __init__(self, link: _Link, addr: int, rkey: int, nbytes: int) -> None:
        self._link = link
        self._addr = addr
        self._rkey = rkey
        self._nbytes = nbytes

    def write(self, offset: int, data: np.ndarray | bytes) -> None:
        self._link.staging_view[offset: offset + len(data)] = np.frombuffer(data, dtype=np.uint8)
        self._link.rdma_write(offset, self._addr + offset, self._rkey, len(data), None)

    def publish(self, offset: int, data: bytes) -> None:
        self._link.staging_view[offset: offset + len(data)] = np.frombuffer(data, dtype=np.uint8)
        self._link.rdma_write(offset, self._addr + offset, self._rkey, len(data), offset)

    def close(self) -> None:
        return None


class VerbsFabric:
    """RDMA fabric on one device port; one RC queue pair per peer."""

    kind = FabricKind.VERBS
    ordered_publish = False

    def __init__(self, device: str | None = None, port: int = 1, gid_index: int = 0) -> None:
        names = verbs_devices()
        if not names:
            raise SetupError("no RDMA device: the verbs fabric needs pyverbs and an RDMA NIC; "
                             "use --fabric mpi-rma or auto")
        from pyverbs.device import Context
        from pyverbs.pd import PD

        self.context = Context(name=device or names[0])
        self.pd = PD(self.context)
        self.port = port
        self.gid_index = gid_index
        self.lid = self.context.query_port(port).lid
        self.gid = str(self.context.query_gid(port, gid_index))
        self._links: dict[int, _Link] = {}

    def parse_gid(self, text: str) -> Any:
        from pyverbs.addr import GID

        return GID(text)

    def create_region(self, nbytes: int, peer: PeerInfo) -> VerbsRegion:
        link = self._links.get(peer.rank)
        if link is None:
            link = _Link(self)
            self._links[peer.rank] = link
        return VerbsRegion(link, nbytes)

    def attach_region(self, descriptor: Mapping[str, object], peer: PeerInfo) -> VerbsPeerRegion:
        nbytes = int(field(descriptor, "nbytes", int, peer))
        link = self._links.get(peer.rank)
        if link is None:
            raise SetupError(f"no verbs queue pair towards {peer.describe()}: set-up must create "
                             "this rank's region before attaching to the peer's")
        link.ensure_staging(nbytes)
        link.connect(descriptor, peer)
        return VerbsPeerRegion(link, int(field(descriptor, "addr", int, peer)),
                               int(field(descriptor, "rkey", int, peer)), nbytes)

    def liveness(self, peer: PeerInfo) -> Callable[[], None] | None:
        return None

    def close(self) -> None:
        for link in self._links.values():
            link.qp.close()
        self.pd.close()
        self.context.close()
