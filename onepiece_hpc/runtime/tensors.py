"""torch tensors <-> ring messages: the dtype mapping (bfloat16 travels as 2-byte words)."""

from __future__ import annotations

import numpy as np
import torch

from onepiece_hpc.models.base import TensorSpec as StageTensor
from onepiece_hpc.transport import DType, TensorOut, TensorSpec
from onepiece_hpc.transport.ring import DeviceBytes

TORCH_TO_WIRE = {
    torch.float32: DType.FLOAT32,
    torch.float16: DType.FLOAT16,
    torch.bfloat16: DType.BFLOAT16,
    torch.uint8: DType.UINT8,
    torch.int64: DType.INT64,
}
WIRE_TO_TORCH = {wire: dtype for dtype, wire in TORCH_TO_WIRE.items()}
#: every message between stages carries its items' seeds as this int64 tensor: a stage rank holds
#: no plan, and the stages after encode draw noise from them
SEEDS = "_seeds"


def wire_spec(spec: StageTensor) -> TensorSpec:
    """A stage's declared tensor as the transport sizes it."""
    return TensorSpec(spec.name, tuple(spec.shape), TORCH_TO_WIRE[getattr(torch, spec.dtype)])


def to_wire(tensors: dict[str, torch.Tensor], device_ok: bool = False,
            device_only: torch.device | None = None) -> list[TensorOut]:
    """The tensors in a form the ring can carry (sorted by name): GPU tensors stay where they are
    when the channel takes device memory (`device_ok`), everything else as host arrays; on a
    channel that carries device memory only, host tensors first move to `device_only`."""
    outs = []
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        if device_only is not None and not tensor.is_cuda:
            tensor = tensor.to(device_only)
        wire = TORCH_TO_WIRE[tensor.dtype]
        if device_ok and tensor.is_cuda:
            tensor = tensor.contiguous()
            raw = tensor.reshape(-1).view(torch.uint8)
            outs.append(TensorOut(name, DeviceBytes(raw, tuple(tensor.shape), raw.numel()), wire))
            continue
        tensor = tensor.to("cpu").contiguous()
        array = tensor.view(torch.int16).numpy().view(np.uint16) if wire is DType.BFLOAT16 else tensor.numpy()
        outs.append(TensorOut.of(name, array, wire))
    return outs


def from_wire(arrays: dict[str, np.ndarray], specs) -> dict[str, torch.Tensor]:
    """Zero-copy torch views of received arrays; valid until the message is released."""
    dtypes = {spec.name: spec.dtype for spec in specs}
    out = {}
    for name, array in arrays.items():
        wire = dtypes[name]
        if isinstance(array, DeviceBytes):  # already in this rank's GPU memory
            out[name] = array.data.view(WIRE_TO_TORCH[wire]).reshape(array.shape)
        elif wire is DType.BFLOAT16:
            out[name] = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        else:
            out[name] = torch.from_numpy(array)
    return out
