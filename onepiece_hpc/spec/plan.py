"""Planning: items with stable keys, and work units formed once, in item order."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from onepiece_hpc.spec.job import GenParams, Job

KEY_VERSION = 1


@dataclass(frozen=True)
class Item:
    """One output to generate. `key` is what exactly-once and resume are about."""

    index: int
    key: str
    prompt: str
    negative_prompt: str
    seed: int
    params: GenParams
    meta: str
    line: int


@dataclass(frozen=True)
class Unit:
    """A work unit (microbatch): consecutive items [start, stop) that share their params."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Plan:
    """Everything decided before any rank starts; the same job always gives the same plan."""

    job: Job
    model_identity: str
    execution: str  # device, dtype and CPU threads: they change the output bits too
    items: tuple[Item, ...]
    units: tuple[Unit, ...]
    fingerprint: str

    def unit_items(self, unit: Unit) -> tuple[Item, ...]:
        return self.items[unit.start:unit.stop]


def item_key(model_identity: str, prompt: str, negative_prompt: str, seed: int, params: GenParams,
             video: bool = False) -> str:
    """sha256 of everything that determines the item's output.

    A video's frame count and conditioning image enter the key; an image's key is what it has
    always been, so outputs written before videos existed still resume.
    """
    fields = {"v": KEY_VERSION, "model": model_identity, "prompt": prompt, "negative_prompt": negative_prompt,
              "seed": seed, "steps": params.steps, "guidance": repr(float(params.guidance)),
              "height": params.height, "width": params.width}
    if video:
        fields["frames"] = params.frames
        if params.image is not None:
            fields["image"] = params.image.sha256
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def form_units(items: tuple[Item, ...], microbatch: int) -> tuple[Unit, ...]:
    """Group consecutive items with equal params, at most `microbatch` a unit, in item order."""
    units: list[Unit] = []
    start = 0
    for index in range(1, len(items) + 1):
        full = index - start == microbatch
        if index == len(items) or full or items[index].params != items[start].params:
            units.append(Unit(len(units), start, index))
            start = index
    return tuple(units)


def plan_job(job: Job, model_identity: str, size: tuple[int, int], execution: str,
             problems: list[str], frames: int | None = None) -> Plan | None:
    """Items and units of `job`; duplicate items (same key) are reported as problems.

    `frames` is the frame count of a video model's items, None for an image model.
    """
    height, width = size
    start = len(problems)
    items: list[Item] = []
    seen: dict[str, int] = {}
    for index, record in enumerate(job.records):
        params = GenParams(
            steps=record.steps if record.steps is not None else job.steps,
            guidance=record.guidance if record.guidance is not None else job.guidance,
            height=height,
            width=width,
            frames=frames or 1,
            image=record.image or job.image,
        )
        negative = record.negative_prompt if record.negative_prompt is not None else job.negative_prompt
        seed = record.seed if record.seed is not None else job.seed + index
        key = item_key(model_identity, record.prompt, negative, seed, params, video=frames is not None)
        if key in seen:
            first = job.records[seen[key]].line
            problems.append(
                f"{job.prompts_path}:{record.line}: same prompt, seed and params as line {first}, so the "
                "same output twice; fix: give it another seed or remove it"
            )
            continue
        seen[key] = index
        items.append(Item(index, key, record.prompt, negative, seed, params, record.meta, record.line))
    if len(problems) > start:
        return None
    items_t = tuple(items)
    digest = hashlib.sha256(f"{model_identity}\0{job.microbatch}\0{execution}\0".encode())
    for item in items_t:
        digest.update(item.key.encode())
    return Plan(job=job, model_identity=model_identity, execution=execution, items=items_t,
                units=form_units(items_t, job.microbatch), fingerprint=digest.hexdigest())
