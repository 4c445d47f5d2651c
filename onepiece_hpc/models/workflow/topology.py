"""A workflow's stages: each step's own, in order, named STEP_STAGE (image_encode, image_denoise,
image_decode, video_encode, ...). Pure data, no torch: `onepiece submit` checks a job's `stages:`
against them before anything is queued, as the ranks will."""

from __future__ import annotations

from collections.abc import Sequence

from onepiece_hpc.errors import UserError
from onepiece_hpc.jobfile.job import Job
from onepiece_hpc.topology import StageDef, Topology


def stage_name(step: str, stage: str) -> str:
    return f"{step}_{stage}"


def chain_topology(names: Sequence[str], topologies: Sequence[Topology]) -> Topology:
    """The steps' topologies as one chain, each stage prefixed with its step's name. A stage's
    default share of the ranks is split over the steps (every step has its encode and decode);
    raises ValueError naming a stage whose prefixed name is too long."""
    count = len(topologies)
    return Topology(tuple(StageDef(stage_name(name, s.name), s.work, s.default_share / count, s.share_of_steps)
                          for name, topology in zip(names, topologies) for s in topology.stages))


def workflow_topology(job: Job) -> Topology:
    """The stages of a workflow job, from each step's model_index.json (models/topologies.py)."""
    from onepiece_hpc.models.topologies import topology_of

    try:
        return chain_topology([step.name for step in job.workflow], [topology_of(step.model) for step in job.workflow])
    except ValueError as err:
        raise UserError(f"{job.where('workflow')}: {err}; fix: give the step a shorter name:") from None
