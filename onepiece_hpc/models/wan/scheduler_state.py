"""A scheduler's state in the middle of a denoising loop, as tensors of fixed shapes, so that the
loop can stop on one rank and go on on another exactly as if it had never stopped.

Wan2.2's high-noise expert runs the first steps and its low-noise expert the rest; between them
the scheduler's state travels in a ring slot, whose size is fixed per unit shape before the job
starts. UniPCMultistepScheduler is a multistep solver: its next step reads the converted model
outputs of the last `solver_order` steps, the sample its corrector starts from, the order of the
last step and how many lower-order warm-up steps were taken. FlowMatchEulerDiscreteScheduler keeps
only its step index. Any other scheduler is refused (`check_scheduler`): its state is unknown
here, and a guess would change the outputs without a word.

The tensors hold the state bit for bit: model outputs travel as float32 (exact for float32,
bfloat16 and float16) with a code for the dtype they had, and every "not yet" is a flag. Only
what `set_timesteps` cannot recompute travels: the receiver calls `set_timesteps` with the same
step count first, then `restore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onepiece_hpc.errors import UserError
from onepiece_hpc.models.base import TensorSpec, dtype_name

if TYPE_CHECKING:
    import torch

UNIPC, EULER = "UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler"
SUPPORTED = (UNIPC, EULER)
COUNTERS, HISTORY, LAST_SAMPLE = "scheduler_counters", "scheduler_history", "scheduler_last_sample"
#: what a dtype code means, by torch dtype name (0: no tensor yet)
DTYPES: tuple[str | None, ...] = (None, "float32", "bfloat16", "float16")
NONE = -1  # an index that is not set yet
#: UniPC's counters: step index, begin index, lower-order steps taken, the last step's order (0:
#: none yet), the dtype codes of the history and of the last sample; then per history slot a
#: presence flag, a timestep presence flag and the timestep
UNIPC_FIXED = 6


def check_scheduler(scheduler_class: str, config: dict, where: str) -> None:
    """Refuse a scheduler whose state can't be handed from one expert's stage to the other's."""
    fix = (f"fix: set the folder's scheduler to {UNIPC} (model_index.json 'scheduler' and "
           "scheduler/scheduler_config.json '_class_name'), as the Wan2.2 releases ship it")
    if scheduler_class not in SUPPORTED:
        raise UserError(f"{where}: the scheduler {scheduler_class or '(none)'} can't be split between the two "
                        f"Wan2.2 experts' stages: onepiece hands over the state of {' and '.join(SUPPORTED)} "
                        f"only; {fix}")
    if scheduler_class == EULER and config.get("stochastic_sampling"):
        raise UserError(f"{where}: {EULER} with stochastic_sampling draws noise from the process's global "
                        "random state at every step, so no two runs agree; fix: set stochastic_sampling to "
                        f"false in scheduler/scheduler_config.json, or use {UNIPC}")


def _order(config: dict) -> int:
    return int(config.get("solver_order", 2))


def state_specs(scheduler_class: str, config: dict, latent_shape: tuple[int, ...]) -> tuple[TensorSpec, ...]:
    """The tensors `capture` emits for a unit whose latents have `latent_shape` (N, C, T, H, W)."""
    if scheduler_class == EULER:
        return (TensorSpec(COUNTERS, (2,), "int64"),)
    order = _order(config)
    batch, *rest = latent_shape
    return (TensorSpec(COUNTERS, (UNIPC_FIXED + 3 * order,), "int64"),
            TensorSpec(HISTORY, (batch, order, *rest), "float32"),
            TensorSpec(LAST_SAMPLE, tuple(latent_shape), "float32"))


def _code(dtype: torch.dtype) -> int:
    name = dtype_name(dtype)
    if name not in DTYPES:
        raise ValueError(f"a scheduler tensor of {dtype} can't travel as float32 without loss")
    return DTYPES.index(name)


def _index(value: int | None) -> int:
    return NONE if value is None else int(value)


def capture(scheduler, sample: torch.Tensor) -> dict[str, torch.Tensor]:
    """The scheduler's state after the steps it has taken; `sample` is the loop's current latents
    (their shape and device size the tensors)."""
    import torch

    name = type(scheduler).__name__
    indices = [_index(scheduler.step_index), _index(scheduler.begin_index)]
    if name == EULER:
        return {COUNTERS: torch.tensor(indices, dtype=torch.int64)}
    outputs, timesteps = scheduler.model_outputs, scheduler.timestep_list
    present = [m is not None for m in outputs]
    codes = {_code(m.dtype) for m in outputs if m is not None}
    if len(codes) > 1:
        raise ValueError(f"{name}'s model outputs have mixed dtypes: {sorted(DTYPES[c] for c in codes)}")
    history = torch.stack([m if m is not None else torch.zeros_like(sample) for m in outputs], dim=1)
    last = scheduler.last_sample
    counters = [*indices, int(scheduler.lower_order_nums), int(getattr(scheduler, "this_order", 0)),
                codes.pop() if codes else 0, _code(last.dtype) if last is not None else 0,
                *map(int, present), *(int(t is not None) for t in timesteps),
                *(int(t) if t is not None else 0 for t in timesteps)]
    return {COUNTERS: torch.tensor(counters, dtype=torch.int64),
            HISTORY: history.to(torch.float32),
            LAST_SAMPLE: (last if last is not None else torch.zeros_like(sample)).to(torch.float32)}


def _set_index(value: int) -> int | None:
    return None if value == NONE else value


def restore(scheduler, state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Put the state `capture` emitted into `scheduler`, on whose `set_timesteps` (same step count)
    has just been called; the tensors are copied, so the ones given may be released after."""
    import torch

    name = type(scheduler).__name__
    counters = [int(v) for v in state[COUNTERS].tolist()]
    scheduler._step_index, scheduler._begin_index = _set_index(counters[0]), _set_index(counters[1])
    if name == EULER:
        return
    order = len(scheduler.model_outputs)
    if len(counters) != UNIPC_FIXED + 3 * order:
        raise ValueError(f"{name}: {len(counters)} state counters for solver order {order}; "
                         f"expected {UNIPC_FIXED + 3 * order}")
    lower, this_order, history_code, last_code = counters[2:UNIPC_FIXED]
    present = counters[UNIPC_FIXED:UNIPC_FIXED + order]
    has_timestep = counters[UNIPC_FIXED + order:UNIPC_FIXED + 2 * order]
    values = counters[UNIPC_FIXED + 2 * order:]
    history, history_dtype = state[HISTORY], getattr(torch, DTYPES[history_code] or "float32")
    scheduler.model_outputs = [history[:, slot].to(device=device, dtype=history_dtype, copy=True) if present[slot]
                               else None for slot in range(order)]
    scheduler.timestep_list = [scheduler.timesteps.new_tensor(value) if flag else None
                               for flag, value in zip(has_timestep, values)]
    scheduler.lower_order_nums = lower
    if this_order:
        scheduler.this_order = this_order
    scheduler.last_sample = (state[LAST_SAMPLE].to(device=device, dtype=getattr(torch, DTYPES[last_code]), copy=True)
                             if last_code else None)
