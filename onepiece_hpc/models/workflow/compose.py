"""A workflow's steps checked against each other, and made one model source.

Each step after the first makes its outputs from the outputs of the step before, so that step
must take a condition image (an image-to-video model), the step before must make images, and the
images it makes must be the size the next step makes its outputs at (no silent resize: the
error names the field to change and the value). The identity of the chain covers every step's
model identity and params, and the seed rule: the keys of its items change when any of them does.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from onepiece_hpc.jobfile.job import Job
from onepiece_hpc.models.source import ModelSource
from onepiece_hpc.models.workflow.adapter import Step, WorkflowAdapter
from onepiece_hpc.models.workflow.topology import stage_name
from onepiece_hpc.topology import STAGE_NAME

#: bump when the chain's bits change for the same steps (the seed rule, what passes between steps)
WORKFLOW_VERSION = 1


def _describe(step: Step) -> str:
    return f"step {step.name!r} ({step.source.ref}, {step.source.pipeline_class})"


def chain_problems(job: Job, steps: list[Step], where: Callable[[Step, str], str]) -> list[str]:
    """Why the steps can't feed each other, each naming the job file field and the fix;
    `where(step, field)` is the file:line of a step's field ("params.height")."""
    problems = []
    for step in steps:
        names = [stage_name(step.name, stage) for stage in step.adapter.topology]
        long = [name for name in names if not re.fullmatch(STAGE_NAME, name)]
        if long:
            problems.append(f"{where(step, 'name')}: the stage name {long[0]!r} (the step's name, then its model's "
                            f"stage) is longer than 32 characters; fix: give workflow[{step.index}] a shorter name")
    first = steps[0]
    if first.adapter.needs_image:
        problems.append(f"{where(first, 'model')}: {_describe(first)} makes its outputs from a condition image, "
                        "and the first step of a workflow has only the prompts; fix: begin the workflow with a "
                        "text-to-image model (e.g. builtin:tiny-sdxl)")
    for before, step in zip(steps, steps[1:]):
        label = f"workflow[{step.index}]"
        if not step.adapter.needs_image or not getattr(step.adapter, "condition_images_input", None):
            takes = ("takes its condition image from params.image alone (its adapter takes no condition images "
                     "from a stage before it)" if step.adapter.needs_image else "takes no condition image")
            problems.append(f"{where(step, 'model')}: field '{label}.model': {_describe(step)} {takes}, so the "
                            f"outputs of {_describe(before)} can't feed it; fix: use an image-to-video model there "
                            f"(e.g. builtin:tiny-wan-i2v), or end the workflow at workflow[{before.index}]")
            continue
        if before.adapter.output_kind != "image":
            problems.append(f"{where(before, 'model')}: field 'workflow[{before.index}].model': {_describe(before)} "
                            f"makes {before.adapter.output_kind}s of {before.params.frames} frames, and "
                            f"{_describe(step)} takes one condition image an item; fix: use a text-to-image model "
                            f"for workflow[{before.index}]")
            continue
        for field, extent in (("height", "high"), ("width", "wide")):
            made, wanted = getattr(before.params, field), getattr(step.params, field)
            if made != wanted:
                default = " (the model's default)" if getattr(job.workflow[step.index], field) is None else ""
                problems.append(f"{where(step, 'params.' + field)}: field '{label}.params.{field}' is "
                                f"{wanted}{default}, but {_describe(before)} makes images {made} px {extent}, which "
                                f"are this step's condition images; fix: set {label}.params.{field}: {made} (or "
                                f"workflow[{before.index}].params.{field}: {wanted})")
    return problems


def _identity(steps: list[Step]) -> str:
    """What decides a workflow's bits, besides the prompts and seeds: every step's model and params."""
    if not all(step.source.identity for step in steps):
        return ""  # a stage rank, which hashed no weights (models/source.py)
    fields = {"workflow": WORKFLOW_VERSION, "steps": [
        {"name": step.name, "model": step.source.identity, "steps": step.params.steps,
         "guidance": repr(float(step.params.guidance)), "height": step.params.height, "width": step.params.width,
         "frames": step.params.frames, "negative_prompt": step.negative_prompt} for step in steps]}
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def compose(job: Job, steps: list[Step]) -> ModelSource:
    """The workflow as one model source: its adapter chains the steps' stages (adapter.py)."""
    configs = hashlib.sha256("\0".join(f"{s.name}\0{s.source.config_hash}" for s in steps).encode()).hexdigest()
    adapter = WorkflowAdapter(tuple(steps))
    return ModelSource(ref=job.model, folder=steps[-1].source.folder,
                       pipeline_class=" -> ".join(step.source.pipeline_class for step in steps),
                       config_hash=configs, identity=_identity(steps), adapter=adapter)
