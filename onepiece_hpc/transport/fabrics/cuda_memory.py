"""The CUDA calls the GPU fabrics need: device buffers shared by IPC handle, raw asynchronous
copies on a stream, and pinning of host pages. Imported only by ranks that run on a GPU; the IPC
calls need CuPy (matching the node's CUDA), the rest only torch.

Buffers are allocated with cudaMalloc directly (not through torch's caching allocator), so an IPC
handle always names the start of its own allocation. Copies go through cudaMemcpyAsync on the
producer's own copy stream with unified addressing, so writing into a peer GPU's memory opens no
CUDA context on that GPU.
"""

from __future__ import annotations

import base64
import queue
import threading
from collections.abc import Callable

import numpy as np
import torch

CUDA_MEMCPY_DEFAULT = 4                 # cudaMemcpyDefault: direction from unified addresses
CUDA_IPC_LAZY_ENABLE_PEER_ACCESS = 1    # cudaIpcMemLazyEnablePeerAccess


def _runtime():
    from cupy.cuda import runtime

    return runtime


def ipc_available() -> bool:
    """Whether CUDA IPC calls can be made here (they go through CuPy's CUDA runtime bindings)."""
    try:
        _runtime()
    except ImportError:
        return False
    return True


class _ArrayInterface:
    """A raw device pointer as torch.as_tensor reads it (__cuda_array_interface__, version 3)."""

    def __init__(self, pointer: int, nbytes: int) -> None:
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (pointer, False),
                                         "version": 3, "strides": None}


def tensor_at(pointer: int, nbytes: int, device: torch.device) -> torch.Tensor:
    """A uint8 torch tensor over `nbytes` of device memory at `pointer` (no copy, no ownership)."""
    return torch.as_tensor(_ArrayInterface(pointer, nbytes), device=device)


class DeviceBuffer:
    """Device memory this rank owns, exportable to a same-node peer by IPC handle."""

    def __init__(self, nbytes: int, device: torch.device) -> None:
        self.device, self.nbytes = device, nbytes
        runtime = _runtime()
        with torch.cuda.device(device):
            self.pointer = runtime.malloc(nbytes)
            runtime.memset(self.pointer, 0, nbytes)
            self.handle = bytes(runtime.ipcGetMemHandle(self.pointer))
        self.tensor = tensor_at(self.pointer, nbytes, device)

    def encoded_handle(self) -> str:
        return base64.b64encode(self.handle).decode("ascii")

    def close(self) -> None:
        if self.pointer:
            torch.cuda.synchronize(self.device)
            self.tensor = None
            with torch.cuda.device(self.device):
                _runtime().free(self.pointer)
            self.pointer = 0


class PeerDeviceBuffer:
    """A peer's device buffer opened from its IPC handle, for writing from this rank's GPU."""

    def __init__(self, encoded_handle: str, nbytes: int, device: torch.device) -> None:
        self.device, self.nbytes = device, nbytes
        runtime = _runtime()
        with torch.cuda.device(device):
            self.pointer = runtime.ipcOpenMemHandle(base64.b64decode(encoded_handle),
                                                    CUDA_IPC_LAZY_ENABLE_PEER_ACCESS)

    def close(self) -> None:
        if self.pointer:
            with torch.cuda.device(self.device):
                torch.cuda.synchronize(self.device)
                _runtime().ipcCloseMemHandle(self.pointer)
            self.pointer = 0


class CopyQueue:
    """Asynchronous copies from this rank's tensors on one stream of its GPU, and the stamps that
    announce them, written in order by a publisher thread once the copies before them have
    landed: the rank goes on computing while its outputs travel (overlapped copies).

    Later work on the rank's GPU waits for the copies (on the GPU, not here), so a source tensor
    is never overwritten or freed before it has been read.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        self._raw = ipc_available()
        self._copied = False
        self._queue: queue.Queue = queue.Queue()
        self._idle = threading.Condition()
        self._outstanding = 0
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._publish_in_order, name="gpu-copy-publisher", daemon=True)
        self._thread.start()

    def _after_producer(self, source: torch.Tensor) -> None:
        """The copy stream waits for the work that made `source`, which lives until it is read."""
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        source.record_stream(self.stream)
        self._copied = True

    def copy(self, destination: int, source: torch.Tensor) -> None:
        """Copy `source` (contiguous, on this GPU) to the address `destination` on any GPU (a
        peer's buffer opened by IPC handle), by unified addressing."""
        self._after_producer(source)
        _runtime().memcpyAsync(destination, source.data_ptr(), source.numel() * source.element_size(),
                               CUDA_MEMCPY_DEFAULT, self.stream.cuda_stream)

    def copy_to_host(self, target: np.ndarray, source: torch.Tensor) -> None:
        """Copy `source` (contiguous, on this GPU) into page-locked host memory, by DMA: a raw
        cudaMemcpyAsync where CuPy is there, else torch's copy on the same stream."""
        if self._raw:
            self.copy(target.ctypes.data, source)
            return
        self._after_producer(source)
        with torch.cuda.stream(self.stream):
            torch.from_numpy(target).copy_(source, non_blocking=True)

    def publish_after(self, write: Callable[[], None]) -> None:
        """Call `write` (a stamp) once every copy queued so far has landed, without waiting here."""
        self._raise_failure()
        if not self._copied and self._outstanding == 0:  # nothing in flight: write it now
            write()
            return
        event = None
        if self._copied:
            event = torch.cuda.Event()
            event.record(self.stream)
            torch.cuda.current_stream(self.device).wait_event(event)
            self._copied = False
        with self._idle:
            self._outstanding += 1
        self._queue.put((event, write))

    def wait(self) -> None:
        """Return once every stamp queued so far is written."""
        with self._idle:
            self._idle.wait_for(lambda: self._outstanding == 0)
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"a GPU copy or its stamp failed: {self._failure}") from self._failure

    def _publish_in_order(self) -> None:
        torch.cuda.set_device(self.device)
        while True:
            event, write = self._queue.get()
            try:
                if event is not None:
                    event.synchronize()
                write()
            except BaseException as err:  # seen by the rank at its next send or wait
                self._failure = err
            with self._idle:
                self._outstanding -= 1
                self._idle.notify_all()


def pin(buffer: np.ndarray) -> int:
    """Page-lock a host buffer (an mmap'd segment) so that GPU copies reach it by DMA; returns its
    address for `unpin`."""
    address = buffer.ctypes.data
    check(torch.cuda.cudart().cudaHostRegister(address, buffer.nbytes, 0), "cudaHostRegister")
    return address


def unpin(address: int) -> None:
    check(torch.cuda.cudart().cudaHostUnregister(address), "cudaHostUnregister")


def check(result, what: str) -> None:
    code = int(result.value) if hasattr(result, "value") else int(result)
    if code != 0:
        raise RuntimeError(f"{what} failed with CUDA error {code}")
