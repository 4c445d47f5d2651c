"""Everything checked before work starts: job file, prompts, model (or a workflow's models, each
and against each other), sizes, output, device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onepiece_hpc.environment import slurm_job
from onepiece_hpc.errors import UserError
from onepiece_hpc.models.base import Placement
from onepiece_hpc.models.source import ModelSource, resolve_model
from onepiece_hpc.models.workflow.adapter import Step, WorkflowAdapter
from onepiece_hpc.models.workflow.compose import chain_problems, compose
from onepiece_hpc.jobfile.job import GenParams, Job
from onepiece_hpc.jobfile.loader import load_job
from onepiece_hpc.planning.plan import Plan, plan_job
from onepiece_hpc.store.index import ItemDataset
from onepiece_hpc.store.output import OutputLayout, StoreSettings
from onepiece_hpc.store.preflight import check_writable
from onepiece_hpc.store.provenance import (
    Provenance,
    RunInfo,
    collect,
    hardware_of,
    software_versions,
)

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Prepared:
    """A job ready to run: validated, with its model and device; planned where `plan` is set.

    Only the process that writes the output plans (the Node Manager, or a one-process run): a
    stage rank's Prepared has no plan, layout or provenance and never read the prompt file.
    """

    job: Job
    model: ModelSource
    placement: Placement
    output: Path
    plan: Plan | None
    layout: OutputLayout | None
    provenance: Provenance | None

    @property
    def store(self) -> StoreSettings:
        """The job file's `store:` settings for a new output."""
        fields = self.job.store
        return StoreSettings(file_bytes=fields.file_mb * 2**20, sync_interval_s=fields.sync_interval_s)

    def run_info(self, mode: str) -> RunInfo:
        """This run as the output's journal records it: how it started, what software and hardware it used."""
        job_id, restarts = slurm_job()
        return RunInfo(mode=mode, slurm_job=job_id, slurm_restart=restarts, software=software_versions(),
                       hardware=hardware_of(self.placement.device_type, self.job.cpu_threads))


def _placement(job: Job, problems: list[str]) -> Placement | None:
    """The job's device and dtype; torch is asked only whether a GPU is visible (a CPU job, checked
    by the launcher, imports no torch)."""
    has_cuda = False
    if job.device != "cpu":
        import torch

        has_cuda = torch.cuda.is_available()
    if job.device == "cuda" and not has_cuda:
        problems.append(f"{job.where('device')}: device is cuda but no GPU is visible; "
                        "fix: use device: auto or cpu, or run on a GPU node")
        return None
    device = "cuda" if job.device == "cuda" or (job.device == "auto" and has_cuda) else "cpu"
    dtype_name = job.dtype if job.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    return Placement(device_name=device, dtype_name=dtype_name)


def execution_tag(job: Job, placement: Placement) -> str:
    """What, besides the items, decides the output bits: device type, dtype, CPU thread count."""
    tag = f"{placement.device_type}/{placement.dtype_name}"
    return f"{tag}/threads={job.cpu_threads}" if placement.device_type == "cpu" else tag


@dataclass(frozen=True)
class ModelParams:
    """A model's size and frame fields as the job file gives them: the job's params, or a
    workflow step's (`at`: their key path, "params" or "workflow.1.params"; `label`: how messages
    name it, "params" or "workflow[1].params")."""

    height: int | None
    width: int | None
    frames: int | None
    at: str = "params"
    label: str = "params"


def where_in(job: Job, path: str) -> str:
    """job.where of a field, or of its nearest parent the job file writes."""
    parts = path.split(".")
    while parts and ".".join(parts) not in job.field_lines:
        parts.pop()
    return job.where(".".join(parts))


def _size(job: Job, model: ModelSource, given: ModelParams, problems: list[str]) -> tuple[int, int] | None:
    height, width = given.height, given.width
    if not (height and width):  # a model's default may come from its pipeline's signature: an import
        default_h, default_w = model.adapter.default_size()
        height, width = height or default_h, width or default_w
    multiple = model.adapter.size_multiple()
    ok = True
    for field, value in (("height", height), ("width", width)):
        if value % multiple:
            lower = max(multiple, value - value % multiple)
            problems.append(
                f"{where_in(job, f'{given.at}.{field}')}: field '{given.label}.{field}' is {value}, not a multiple "
                f"of {multiple} (this model's size factor); fix: use {lower} or {lower + multiple}"
            )
            ok = False
    return (height, width) if ok else None


def _frames(job: Job, model: ModelSource, given: ModelParams, problems: list[str]) -> int | None:
    """Frames per item of a video model (None for an image model, which takes no frame count)."""
    adapter = model.adapter
    field, where = f"{given.label}.frames", where_in(job, f"{given.at}.frames")
    if adapter.output_kind == "image":
        if given.frames is not None:
            problems.append(f"{where}: field '{field}' is for video models, and {model.ref} ({model.pipeline_class}) "
                            "makes images; fix: remove it")
        return None
    frames = given.frames or adapter.default_frames()
    step = adapter.frame_step()
    if (frames - 1) % step:
        lower = frames - (frames - 1) % step
        problems.append(
            f"{where}: field '{field}' is {frames}, not {step}k+1 ({model.ref} packs "
            f"{step} frames into one latent frame after the first); fix: use {lower} or {lower + step}"
        )
        return None
    return frames


def _workflow(job: Job, cache: Path, problems: list[str], weights: bool) -> ModelSource | None:
    """A workflow's steps resolved and checked one by one, then against each other, as one source."""
    steps = []
    for step in job.workflow:
        source = resolve_model(step.model, cache, where_in(job, f"{step.field}.model"), problems, weights=weights)
        if source is None:
            continue
        given = ModelParams(step.height, step.width, step.frames, f"{step.field}.params", f"{step.label}.params")
        size, frames = _size(job, source, given, problems), _frames(job, source, given, problems)
        if size is not None and (frames is not None or source.adapter.output_kind == "image"):
            params = GenParams(steps=step.steps, guidance=step.guidance, height=size[0], width=size[1],
                               frames=frames or 1)
            steps.append(Step(step.index, step.name, source, params, step.negative_prompt, step.keep))
    if len(steps) < len(job.workflow):
        return None
    found = chain_problems(job, steps, lambda step, field: where_in(job, f"workflow.{step.index}.{field}"))
    problems.extend(found)
    return None if found else compose(job, steps)


def _output_size(workflow: WorkflowAdapter) -> tuple[tuple[int, int], int | None]:
    """A workflow's outputs' size and frames (None for images): its last step's."""
    last = workflow.steps[-1].params
    return (last.height, last.width), (last.frames if workflow.output_kind == "video" else None)


def _layout(model: ModelSource, params: GenParams, dtype: torch.dtype) -> OutputLayout:
    """What each item of the output holds: the last stage's outputs, and a workflow's kept steps'."""
    adapter = model.adapter
    decode_spec = adapter.output_specs(adapter.topology.last, params, 1, dtype)[0]
    extras = tuple(ItemDataset(kept.kept_name, kept.adapter.output_kind, tuple(kept.output_spec(1, dtype).shape[1:]))
                   for kept in (adapter.kept if isinstance(adapter, WorkflowAdapter) else ()))
    return OutputLayout(kind=adapter.output_kind, item_shape=decode_spec.shape[1:], frame_rate=adapter.frame_rate,
                        timing_columns=adapter.topology.timing_columns, extras=extras)


def _lines(lines) -> str:
    more = f" and {len(lines) - 1} more line(s)" if len(lines) > 1 else ""
    return f"{lines[0]}{more}"


def _condition_images(job: Job, model: ModelSource, problems: list[str]) -> None:
    """Image-to-video models need an image for every item; other models take none."""
    prompts, records = job.prompts_path, job.records
    with_image = (records.image_ids >= 0 if records.image_ids is not None
                  else np.zeros(len(records), dtype=bool))
    if not model.adapter.needs_image:
        if job.image is not None:
            problems.append(f"{job.where('params.image')}: field 'params.image': {model.ref} "
                            f"({model.pipeline_class}) takes no conditioning image; fix: remove it, or use an "
                            "image-to-video model")
        given = records.lines[with_image]
        if len(given):
            problems.append(f'{prompts}:{_lines(given)}: "image" given, but {model.ref} ({model.pipeline_class}) '
                            'takes no conditioning image; fix: remove "image" from the line(s)')
        return
    lacking = records.lines[~with_image]
    if job.image is None and len(lacking):
        problems.append(f"{prompts}:{_lines(lacking)}: no conditioning image, and {model.ref} "
                        f"({model.pipeline_class}) makes each video from an image; fix: add \"image\": \"PATH\" "
                        "to the line (a .jsonl prompt file), or a default params.image to the job file")


def prepare(job_path: Path, output: Path | None, cache: Path, plan: bool = True) -> Prepared:
    """Validate (and, with `plan`, plan) the job; raise UserError listing every problem found.

    `plan` False is a stage rank's set-up: the job file, model and device are checked as
    everywhere, but the prompt file is not read, the output not looked at and the model's
    weights not hashed (the Node Manager does all three, once).
    """
    problems: list[str] = []
    job = load_job(job_path, problems, with_prompts=plan)
    if job is None:
        raise UserError(problems, headline=f"{job_path}: the job file has {len(problems)} problem(s):")
    out = (output.absolute() if output else job.output)
    if plan:
        check_writable(out, problems)
    placement = _placement(job, problems)
    if job.workflow:
        model = _workflow(job, cache, problems, weights=plan)
        size, frames = _output_size(model.adapter) if model else (None, None)
    else:
        model = resolve_model(job.model, cache, job.where("model"), problems, weights=plan)
        given = ModelParams(job.height, job.width, job.frames)
        size = _size(job, model, given, problems) if model else None
        frames = _frames(job, model, given, problems) if model else None
        if model and plan:
            _condition_images(job, model, problems)
    planned = None
    if model and size and placement and plan:
        planned = plan_job(job, model.identity, size, execution_tag(job, placement), problems, frames)
    if problems or (plan and planned is None):
        raise UserError(problems, headline=f"{job_path}: {len(problems)} problem(s) found; nothing was run:")
    if not plan:
        return Prepared(job=job, model=model, placement=placement, output=out, plan=None, layout=None,
                        provenance=None)
    layout = _layout(model, planned.params[0], placement.dtype)
    provenance = collect(job.source_text, str(job.source), model.ref, model.identity, model.config_hash,
                         model.pipeline_class)
    return Prepared(job=job, model=model, placement=placement, output=out, plan=planned, layout=layout,
                    provenance=provenance)
