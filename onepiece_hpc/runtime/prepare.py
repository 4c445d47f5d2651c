"""Everything checked before work starts: job file, prompts, model, sizes, output, device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from onepiece_hpc.environment import slurm_job
from onepiece_hpc.errors import UserError
from onepiece_hpc.models.base import Placement
from onepiece_hpc.models.source import ModelSource, resolve_model
from onepiece_hpc.spec.job import Job, PromptRecord, Stage
from onepiece_hpc.spec.loader import load_job
from onepiece_hpc.spec.plan import Plan, plan_job
from onepiece_hpc.store.output import OutputLayout, StoreSettings
from onepiece_hpc.store.preflight import check_writable
from onepiece_hpc.store.provenance import (
    Provenance,
    RunInfo,
    collect,
    hardware_of,
    software_versions,
)


@dataclass(frozen=True)
class Prepared:
    """A job ready to run: validated, planned, with its model and output described."""

    plan: Plan
    model: ModelSource
    placement: Placement
    layout: OutputLayout
    output: Path
    provenance: Provenance

    @property
    def job(self) -> Job:
        return self.plan.job

    @property
    def store(self) -> StoreSettings:
        """The job file's `store:` settings for a new output."""
        fields = self.job.store
        return StoreSettings(file_bytes=fields.file_mb * 2**20, sync_interval_s=fields.sync_interval_s)

    def run_info(self, mode: str) -> RunInfo:
        """This run as the output's journal records it: how it started, what software and hardware it used."""
        job_id, restarts = slurm_job()
        return RunInfo(mode=mode, slurm_job=job_id, slurm_restart=restarts, software=software_versions(),
                       hardware=hardware_of(self.placement.device.type, self.job.cpu_threads))


def _placement(job: Job, problems: list[str]) -> Placement | None:
    has_cuda = torch.cuda.is_available()
    if job.device == "cuda" and not has_cuda:
        problems.append(f"{job.where('device')}: device is cuda but no GPU is visible; "
                        "fix: use device: auto or cpu, or run on a GPU node")
        return None
    device = torch.device("cuda" if job.device == "cuda" or (job.device == "auto" and has_cuda) else "cpu")
    dtype_name = job.dtype if job.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    return Placement(device=device, dtype=getattr(torch, dtype_name))


def execution_tag(job: Job, placement: Placement) -> str:
    """What, besides the items, decides the output bits: device type, dtype, CPU thread count."""
    tag = f"{placement.device.type}/{str(placement.dtype).removeprefix('torch.')}"
    return f"{tag}/threads={job.cpu_threads}" if placement.device.type == "cpu" else tag


def _size(job: Job, model: ModelSource, problems: list[str]) -> tuple[int, int] | None:
    default_h, default_w = model.adapter.default_size()
    height = job.height or default_h
    width = job.width or default_w
    multiple = model.adapter.size_multiple()
    ok = True
    for field, value in (("height", height), ("width", width)):
        if value % multiple:
            lower = max(multiple, value - value % multiple)
            problems.append(
                f"{job.where('params.' + field)}: field 'params.{field}' is {value}, not a multiple of "
                f"{multiple} (this model's size factor); fix: use {lower} or {lower + multiple}"
            )
            ok = False
    return (height, width) if ok else None


def _frames(job: Job, model: ModelSource, problems: list[str]) -> int | None:
    """Frames per item of a video model (None for an image model, which takes no frame count)."""
    adapter = model.adapter
    if adapter.output_kind == "image":
        if job.frames is not None:
            problems.append(f"{job.where('params.frames')}: field 'params.frames' is for video models, and "
                            f"{model.ref} ({model.pipeline_class}) makes images; fix: remove it")
        return None
    frames = job.frames or adapter.default_frames()
    step = adapter.frame_step()
    if (frames - 1) % step:
        lower = frames - (frames - 1) % step
        problems.append(
            f"{job.where('params.frames')}: field 'params.frames' is {frames}, not {step}k+1 ({model.ref} packs "
            f"{step} frames into one latent frame after the first); fix: use {lower} or {lower + step}"
        )
        return None
    return frames


def _lines(records: list[PromptRecord]) -> str:
    more = f" and {len(records) - 1} more line(s)" if len(records) > 1 else ""
    return f"{records[0].line}{more}"


def _condition_images(job: Job, model: ModelSource, problems: list[str]) -> None:
    """Image-to-video models need an image for every item; other models take none."""
    prompts = job.prompts_path
    if not model.adapter.needs_image:
        if job.image is not None:
            problems.append(f"{job.where('params.image')}: field 'params.image': {model.ref} "
                            f"({model.pipeline_class}) takes no conditioning image; fix: remove it, or use an "
                            "image-to-video model")
        given = [r for r in job.records if r.image is not None]
        if given:
            problems.append(f'{prompts}:{_lines(given)}: "image" given, but {model.ref} ({model.pipeline_class}) '
                            'takes no conditioning image; fix: remove "image" from the line(s)')
        return
    lacking = [r for r in job.records if r.image is None]
    if job.image is None and lacking:
        problems.append(f"{prompts}:{_lines(lacking)}: no conditioning image, and {model.ref} "
                        f"({model.pipeline_class}) makes each video from an image; fix: add \"image\": \"PATH\" "
                        "to the line (a .jsonl prompt file), or a default params.image to the job file")


def prepare(job_path: Path, output: Path | None, cache: Path) -> Prepared:
    """Validate and plan the job; raise UserError listing every problem found."""
    problems: list[str] = []
    job = load_job(job_path, problems)
    if job is None:
        raise UserError(problems, headline=f"{job_path}: the job file has {len(problems)} problem(s):")
    out = (output.absolute() if output else job.output)
    check_writable(out, problems)
    placement = _placement(job, problems)
    model = resolve_model(job.model, cache, job.where("model"), problems)
    size = _size(job, model, problems) if model else None
    frames = _frames(job, model, problems) if model else None
    if model:
        _condition_images(job, model, problems)
    plan = None
    if model and size and placement:
        plan = plan_job(job, model.identity, size, execution_tag(job, placement), problems, frames)
    if problems or plan is None:
        raise UserError(problems, headline=f"{job_path}: {len(problems)} problem(s) found; nothing was run:")
    decode_spec = model.adapter.output_specs(Stage.DECODE, plan.items[0].params, 1, placement.dtype)[0]
    layout = OutputLayout(kind=model.adapter.output_kind, item_shape=decode_spec.shape[1:],
                          frame_rate=model.adapter.frame_rate)
    provenance = collect(job.source_text, str(job.source), model.ref, model.identity, model.config_hash,
                         model.pipeline_class)
    return Prepared(plan=plan, model=model, placement=placement, layout=layout, output=out,
                    provenance=provenance)
