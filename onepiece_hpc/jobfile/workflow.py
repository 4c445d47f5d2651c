"""A job file's `workflow:`: models chained in one job, each step with its own params.

The rules a job file of several models keeps, checked when it is read:
- `workflow:` replaces `model:` and the top-level `params:` (each step has its own);
- a step's name prefixes its stages (image -> image_encode, image_denoise, ...); without one it
  is step1, step2, ... by position; names differ, and are not "images" or "videos" (the names of
  the outputs' dataset, beside which a kept step's dataset /outputs/STEP/images lies);
- `keep: true` stores a step's outputs too; the last step's are the job's outputs, stored anyway;
- a prompt line gives the item's prompt, seed and meta only: its steps, guidance, negative prompt
  and image are the steps' params, and later steps' images are the outputs of the step before;
- a prompt is at most MAX_PROMPT_BYTES of UTF-8: every step after the first reads it, so it
  travels with the unit between the stages, in room sized before the prompts are read.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onepiece_hpc.jobfile.job import JobFields, WorkflowJobFields, WorkflowStep
from onepiece_hpc.jobfile.prompt_table import PromptTable
from onepiece_hpc.jobfile.prompt_text import text_problem

#: a workflow item's prompt travels with its unit in a tensor of this many bytes
MAX_PROMPT_BYTES = 4096
#: names a step may not have: the datasets of the outputs themselves
RESERVED_NAMES = ("images", "videos")
#: the fields a prompt line of a workflow job may not set, and where they belong instead
LINE_FIELDS = ("steps", "guidance", "negative_prompt", "image")


def _lines(lines: np.ndarray) -> str:
    more = f" and {len(lines) - 1} more line(s)" if len(lines) > 1 else ""
    return f"{lines[0]}{more}"


def workflow_steps(fields: JobFields, given: set[str], where: Callable[[str], str], resolve: Callable[[str], str],
                   problems: list[str]) -> tuple[WorkflowStep, ...]:
    """The steps of a job file's validated fields (`given`: the top-level keys it writes), () for a
    job of one model, the problems noted; `resolve` makes a model reference absolute (a folder
    against the job file's), `where(field)` names a field's file:line."""
    if not isinstance(fields, WorkflowJobFields):
        return ()
    if "model" in given:
        problems.append(f"{where('model')}: fields 'model' and 'workflow' are both given; fix: keep model: for a job "
                        "of one model, or workflow: for a chain of models (each step names its own model)")
    if "params" in given:
        problems.append(f"{where('params')}: field 'params' is per step in a workflow job; fix: move it under each "
                        "step, as workflow[0].params, workflow[1].params, ...")
    last = len(fields.workflow) - 1
    steps, seen = [], {}
    for index, step in enumerate(fields.workflow):
        name = step.name or f"step{index + 1}"
        at = f"workflow.{index}"
        if name in RESERVED_NAMES:
            problems.append(f"{where(at + '.name')}: field 'workflow[{index}].name' is {name!r}, the name of the "
                            "outputs' own dataset; fix: choose another name, e.g. the model's role (image, video)")
        elif name in seen:
            problems.append(f"{where(at + '.name')}: workflow[{index}] is named {name!r}, as workflow[{seen[name]}] "
                            "is (a name prefixes the step's stages); fix: give each step a name of its own")
        seen.setdefault(name, index)
        if step.keep and index == last:
            problems.append(f"{where(at + '.keep')}: field 'workflow[{index}].keep': the last step's outputs are the "
                            "job's outputs, always stored; fix: remove keep (it is for the steps before)")
        params = step.params
        refused = text_problem(params.negative_prompt)
        if refused is not None:
            field = f"workflow[{index}].params.negative_prompt"
            problems.append(f"{where(at + '.params.negative_prompt')}: field '{field}' {refused}")
        steps.append(WorkflowStep(index=index, name=name, model=resolve(step.model), steps=params.steps,
                                  guidance=float(params.guidance), height=params.height, width=params.width,
                                  frames=params.frames, negative_prompt=params.negative_prompt, keep=step.keep))
    return tuple(steps)


def describe(steps: tuple[WorkflowStep, ...]) -> str:
    """The chain as messages and the output's provenance name it: "image: builtin:tiny-sdxl -> video: ..."."""
    return " -> ".join(f"{step.name}: {step.model}" for step in steps)


def line_problems(records: PromptTable, path) -> list[str]:
    """What a workflow job's prompt lines may not say (see the module docstring), each naming the lines."""
    problems = []
    set_by = {
        "steps": records.steps > 0 if records.steps is not None else None,
        "guidance": ~np.isnan(records.guidance) if records.guidance is not None else None,
        "negative_prompt": records.negative_set,
        "image": records.image_ids >= 0 if records.image_ids is not None else None,
    }
    for name in LINE_FIELDS:
        lines = records.lines[set_by[name]] if set_by[name] is not None else records.lines[:0]
        if len(lines):
            where = "the step's images come from the step before" if name == "image" else \
                f"set it per step, as workflow[k].params.{name}"
            problems.append(f'{path}:{_lines(lines)}: "{name}" given, but in a workflow job the params are the '
                            f'steps\' ({where}); fix: remove "{name}" from the line(s)')
    if len(records):
        long = records.lines[np.diff(records.prompts.offsets) > MAX_PROMPT_BYTES]
        if len(long):
            problems.append(f"{path}:{_lines(long)}: the prompt is longer than {MAX_PROMPT_BYTES} bytes of UTF-8, the "
                            "most a workflow passes on to its later steps (their text encoders read far fewer "
                            "tokens); fix: shorten it")
    return problems
