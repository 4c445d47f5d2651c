"""Torch helpers kept outside the pure protocol: tensors in, zero-copy tensor views out."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from onepiece_hpc.transport.consumer import ReceivedMessage
from onepiece_hpc.transport.ring import TensorOut
from onepiece_hpc.transport.wire import DType

_DTYPES = {torch.float32: DType.FLOAT32, torch.float16: DType.FLOAT16,
           torch.bfloat16: DType.BFLOAT16, torch.uint8: DType.UINT8, torch.int64: DType.INT64}
_TORCH = {v: k for k, v in _DTYPES.items()}


def tensors_out(tensors: Mapping[str, torch.Tensor]) -> list[TensorOut]:
    """CPU tensors as message parts (bfloat16 travels as its raw 2-byte words)."""
    outs = []
    for name, tensor in tensors.items():
        dtype = _DTYPES.get(tensor.dtype)
        if dtype is None:
            valid = ", ".join(str(t) for t in _DTYPES)
            raise TypeError(f"tensor {name!r} has dtype {tensor.dtype}; valid: {valid}")
        flat = tensor.detach().cpu().contiguous()
        array = flat.view(torch.uint16).numpy() if dtype is DType.BFLOAT16 else flat.numpy()
        outs.append(TensorOut(name, np.ascontiguousarray(array), dtype))
    return outs


def to_torch(message: ReceivedMessage) -> dict[str, torch.Tensor]:
    """Torch views on the slot; valid until the message is released."""
    views = {}
    for spec in message.specs:
        tensor = torch.from_numpy(message.tensors[spec.name])
        views[spec.name] = tensor.view(torch.bfloat16) if spec.dtype is DType.BFLOAT16 else tensor
    return views
