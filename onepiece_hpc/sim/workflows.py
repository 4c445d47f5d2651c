"""The built-in scenarios of `onepiece simulate --scenario`, and the measured costs they use.

- workload-shift: encode -> denoise -> decode (or the stages of a `--profile`), 30 items a rank,
  the first half 50 steps with guidance, the second 4 steps without.
- keyframe-video: a five-stage workflow, text_encode -> image_denoise -> image_decode ->
  video_denoise -> video_decode: a keyframe image per prompt, then a video from it; the batch's
  first half are 4-step drafts of the video, the second half 20-step finals with guidance.

Every cost is a measurement named where it is defined (bench/profiles/, bench/results/), so a
figure the simulator prints can be traced to the runs it rests on.
"""

from __future__ import annotations

from collections.abc import Callable

from onepiece_hpc.errors import UserError
from onepiece_hpc.sim.scenario import (
    WAN_1_3B_H100, Scenario, StageCost, StageProfile, UnitClass, classic_profile, workload_shift,
)
from onepiece_hpc.topology import Work

#: SDXL-size UNet at 1024 px on an H200, per item at batch 4 (bench/results/20261201T100204-sdxl-1024-1gpu.json,
#: profile.stages.*.best_s_per_item: 30 steps with guidance = 60 forwards); weights: CLIP-L + bigG, UNet, VAE in bf16
SDXL_1024_H200 = classic_profile(encode_s=0.00853, forward_s=1.08344 / 60, decode_s=0.07754,
                                 weights_gib=(1.53, 4.78, 0.16), host_gbps=25.0)
#: Wan2.1-T2V-1.3B at 480x832x81 on an H200, bf16 (bench/profiles/wan13b-h200.yaml, where it is measured)
WAN_1_3B_H200 = classic_profile(encode_s=0.047, forward_s=0.625, decode_s=2.36, weights_gib=(11.4, 2.8, 0.25),
                                host_gbps=25.0)


def keyframe_video_profile(image: StageProfile = SDXL_1024_H200, video: StageProfile = WAN_1_3B_H200) -> StageProfile:
    """The five stages, each with its model's measured cost (each at its own benchmark size: the
    keyframe at 1024 px, the video at 480x832x81). One text stage holds both text encoders (the
    image model's CLIPs and the video model's UMT5); the keyframe's encoding for the video
    model is not modelled (a VAE encode of one frame, small next to these)."""
    text_i, denoise_i, decode_i = image.stages
    text_v, denoise_v, decode_v = video.stages
    return StageProfile((StageCost("text_encode", text_i.seconds + text_v.seconds, text_i.weights_gib + text_v.weights_gib),
                         StageCost("image_denoise", denoise_i.seconds, denoise_i.weights_gib, Work.FORWARDS),
                         StageCost("image_decode", decode_i.seconds, decode_i.weights_gib),
                         StageCost("video_denoise", denoise_v.seconds, denoise_v.weights_gib, Work.FORWARDS),
                         StageCost("video_decode", decode_v.seconds, decode_v.weights_gib)), image.host_gbps)


KEYFRAME_VIDEO_H200 = keyframe_video_profile()


def _item_seconds(profile: StageProfile, image_forwards: int, video_forwards: int) -> tuple[float, ...]:
    forwards = {"image_denoise": image_forwards, "video_denoise": video_forwards}
    return tuple(s.seconds * forwards.get(s.name, 1) for s in profile.stages)


def keyframe_video(ranks: int, items_per_rank: int = 30, profile: StageProfile = KEYFRAME_VIDEO_H200) -> Scenario:
    """The keyframe-video scenario: keyframes at 30 steps with guidance throughout; videos as
    4-step drafts (no guidance) for the first half of the batch, 20-step finals with guidance
    for the second: the video denoiser's share of the work grows tenfold midway."""
    total = items_per_rank * ranks
    first = total // 2
    return Scenario(
        name="keyframe-video",
        classes=(UnitClass(first, _item_seconds(profile, 60, 4), "keyframe 30 steps + guidance, video 4-step draft"),
                 UnitClass(total - first, _item_seconds(profile, 60, 40),
                           "keyframe 30 steps + guidance, video 20 steps + guidance")),
        load_s=profile.load_seconds(), topology=profile.topology,
    )


def _workload_shift(ranks: int, items_per_rank: int, profile: StageProfile | None) -> Scenario:
    return workload_shift(ranks, profile or WAN_1_3B_H100, items_per_rank)


def _keyframe_video(ranks: int, items_per_rank: int, profile: StageProfile | None) -> Scenario:
    wanted = KEYFRAME_VIDEO_H200.topology
    if profile is not None and profile.topology.names != wanted.names:
        raise UserError(f"the keyframe-video scenario runs {wanted.describe()}; the profile has "
                        f"{profile.topology.describe()}: give a profile with those stages, or no --profile")
    return keyframe_video(ranks, items_per_rank, profile or KEYFRAME_VIDEO_H200)


#: name -> (ranks, items a rank, a profile or None for the built-in costs) -> Scenario
SCENARIOS: dict[str, Callable[[int, int, StageProfile | None], Scenario]] = {
    "workload-shift": _workload_shift,
    "keyframe-video": _keyframe_video,
}
