"""`cuda-ipc` fabric: ring slots in the consumer's GPU memory, for peers on the same node.

A data ring is two memories at the same offsets: the consumer's GPU buffer holds the tensor
payloads, a shm segment holds the slot stamps and headers the CPUs poll (a payload offset of the
segment is never touched, so it costs no host memory). The producer copies each payload from its
own GPU straight into the consumer's buffer (one device-to-device copy over NVLink or PCIe) and
writes the header; the consumer gets tensors that already live on its GPU. The stamp is written by the producer's publisher thread once the copy has landed, so the
producer computes on while its outputs travel. Credit records are a few bytes the producer's CPU
polls: plain shm.

Payloads are never checksummed (the CPU can't read them); the stamp is written only after the
copy has completed, so channels use header-only integrity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from onepiece_hpc.transport.errors import PeerInfo, SetupError
from onepiece_hpc.transport.fabrics.base import FabricKind, field
from onepiece_hpc.transport.fabrics.cuda_memory import CopyQueue, DeviceBuffer, PeerDeviceBuffer
from onepiece_hpc.transport.fabrics.shm import ShmFabric, ShmPeerRegion, ShmRegion
from onepiece_hpc.transport.ring import CREDIT_REGION_BYTES, DeviceBytes


class CudaIpcRegion:
    """A data ring this rank owns: headers in shm, payloads in its GPU."""

    def __init__(self, nbytes: int, device: torch.device) -> None:
        self._host = ShmRegion(nbytes)
        try:
            self._device = DeviceBuffer(nbytes, device)
        except BaseException:
            self._host.close()
            raise

    @property
    def buffer(self) -> np.ndarray:
        return self._host.buffer

    def sync(self) -> None:
        return None

    def device_view(self, offset: int, nbytes: int) -> torch.Tensor:
        """The payload bytes at `offset` as a uint8 tensor on this rank's GPU (no copy)."""
        return self._device.tensor[offset: offset + nbytes]

    def descriptor(self) -> dict[str, object]:
        return {**self._host.descriptor(), "ipc_handle": self._device.encoded_handle(),
                "device_bytes": self._device.nbytes}

    def seal(self) -> None:
        self._host.seal()

    def close(self) -> None:
        self._device.close()
        self._host.close()


class CudaIpcPeerRegion:
    """A peer's data ring: payloads copied GPU to GPU, headers and stamps through shm."""

    accepts_device = True
    device_payloads = True  # the consumer reads every payload from its GPU: host arrays can't go here

    def __init__(self, host: ShmPeerRegion, device: PeerDeviceBuffer, copies: CopyQueue) -> None:
        self._host, self._device, self._copies = host, device, copies

    def write(self, offset: int, data) -> None:
        if type(data) is DeviceBytes:
            if offset + data.nbytes > self._device.nbytes:
                raise ValueError(f"{data.nbytes} bytes at {offset} overrun the peer's "
                                 f"{self._device.nbytes}-byte ring")
            self._copies.copy(self._device.pointer + offset, data.data)
        else:
            self._host.write(offset, data)

    def publish(self, offset: int, data: bytes) -> None:
        # written once every payload queued before it has landed; the rank does not wait
        self._copies.publish_after(lambda: self._host.publish(offset, data))

    def close(self) -> None:
        self._copies.wait()
        self._device.close()
        self._host.close()


class CudaIpcFabric:
    """Same-node fabric between ranks that each hold a GPU."""

    kind = FabricKind.CUDA_IPC
    ordered_publish = ShmFabric.ordered_publish
    device_payload = True

    def __init__(self, device: torch.device) -> None:
        self._shm = ShmFabric()
        self._device = device
        self._copies = CopyQueue(device)

    def create_region(self, nbytes: int, peer: PeerInfo):
        if nbytes <= CREDIT_REGION_BYTES:  # a credit record: polled by the producer's CPU
            return self._shm.create_region(nbytes, peer)
        return CudaIpcRegion(nbytes, self._device)

    def attach_region(self, descriptor: Mapping[str, object], peer: PeerInfo):
        host = self._shm.attach_region(descriptor, peer)
        if "ipc_handle" not in descriptor:
            return host
        handle = field(descriptor, "ipc_handle", str, peer)
        nbytes = field(descriptor, "device_bytes", int, peer)
        try:
            device = PeerDeviceBuffer(str(handle), int(nbytes), self._device)
        except Exception as err:
            host.close()
            raise SetupError(f"cannot open the GPU memory of {peer.describe()} by IPC handle ({err}); "
                             "are both ranks on one node with GPUs visible to each other? "
                             "use --fabric shm") from err
        return CudaIpcPeerRegion(host, device, self._copies)

    def liveness(self, peer: PeerInfo) -> Callable[[], None] | None:
        return self._shm.liveness(peer)

    def close(self) -> None:
        self._copies.wait()
