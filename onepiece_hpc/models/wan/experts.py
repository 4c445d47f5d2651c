"""Wan2.2's two denoising experts as two stages: their names, where the boundary falls, and each
one's share of an item's denoiser forwards.

A Wan2.2 A14B folder holds a high-noise expert (`transformer`) for the timesteps at or above
`boundary_ratio * num_train_timesteps` and a low-noise expert (`transformer_2`) for those below.
Its pipeline runs them in one loop; here each is a stage on ranks of its own: encode ->
denoise_high -> denoise_low -> decode. Pure data and arithmetic (no torch), so that the checks
before a job is queued name the stages as the ranks will.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from onepiece_hpc.topology import DECODE, ENCODE, StageDef, Topology, Work

#: the stage of the high-noise expert (`transformer`) and of the low-noise one (`transformer_2`)
DENOISE_HIGH, DENOISE_LOW = "denoise_high", "denoise_low"


@dataclass(frozen=True)
class ExpertSplit:
    """Where a two-expert folder switches experts, and the schedule's shift that places its steps."""

    boundary_ratio: float  # model_index.json: the share of the training timesteps the high expert covers from the top
    shift: float = 1.0     # the scheduler's flow shift (1.0: the timesteps fall evenly)

    def high_share(self) -> float:
        """The share of the denoising steps at or above the boundary (the high expert's).

        A flow schedule places step k of n at sigma = shift * s / (1 + (shift - 1) * s), s falling
        evenly from 1 towards 0, so the high expert runs while s >= s*, where sigma(s*) equals the
        boundary. This is the share in the limit of many steps; at n steps the high expert's count
        is within one step of n times it (tests/test_wan22.py checks that for the shipped shifts).
        """
        b, shift = self.boundary_ratio, self.shift
        s_star = b / (shift - (shift - 1) * b)
        return min(1.0, max(0.0, 1.0 - s_star))


def two_experts(index: dict) -> bool:
    """Whether a model_index.json describes a Wan2.2 A14B pipeline: a second transformer and a
    boundary between the two (without a boundary the pipeline never calls `transformer_2`)."""
    second = index.get("transformer_2")
    return isinstance(second, list) and bool(second) and second[0] is not None and index.get("boundary_ratio") is not None


def scheduler_shift(scheduler_class: str, config: dict) -> float:
    """The flow shift a Wan scheduler config places its timesteps with (1.0 where none applies)."""
    if scheduler_class == "UniPCMultistepScheduler" and config.get("use_flow_sigmas"):
        shift = config.get("flow_shift", 1.0)
    elif scheduler_class == "FlowMatchEulerDiscreteScheduler":
        shift = config.get("shift", 1.0)
    else:
        shift = 1.0
    return float(shift) if isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0 else 1.0


#: the ranks' shares of encode and decode when a job gives no split, as for one denoiser
ENCODE_SHARE, DECODE_SHARE = 1 / 8, 1 / 4


def expert_topology(split: ExpertSplit) -> Topology:
    """encode -> denoise_high -> denoise_low -> decode, each expert's forwards weighted by its share
    of the steps. Without a split in the job, the experts divide the ranks encode and decode leave
    in proportion to their steps (the low-noise one takes any rank the division leaves over)."""
    high = split.high_share()
    return Topology((
        StageDef(ENCODE, Work.ITEMS, ENCODE_SHARE),
        StageDef(DENOISE_HIGH, Work.FORWARDS, default_share=(1 - ENCODE_SHARE - DECODE_SHARE) * high,
                 share_of_steps=high),
        StageDef(DENOISE_LOW, Work.FORWARDS, share_of_steps=1.0 - high),
        StageDef(DECODE, Work.ITEMS, DECODE_SHARE),
    ))


#: the schedule shared by every Wan2.2 A14B built-in: UniPC on flow sigmas shifted by 3.0, as the
#: A14B diffusers folders ship it
FLOW_SHIFT = 3.0
#: the boundaries of the Wan2.2 A14B releases: text-to-video and image-to-video
T2V_BOUNDARY, I2V_BOUNDARY = 0.875, 0.9

#: the two-expert built-ins (`builtin:NAME`), so their stages are known before they are built
BUILTIN_SPLITS: dict[str, ExpertSplit] = {
    "tiny-wan22-t2v": ExpertSplit(T2V_BOUNDARY, FLOW_SHIFT),
    "tiny-wan22-i2v": ExpertSplit(I2V_BOUNDARY, FLOW_SHIFT),
    "random:wan2.2-t2v-a14b": ExpertSplit(T2V_BOUNDARY, FLOW_SHIFT),
    "random:wan2.2-i2v-a14b": ExpertSplit(I2V_BOUNDARY, FLOW_SHIFT),
}
