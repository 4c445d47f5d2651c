"""Planning: items with stable keys, and work units formed once, in item order.

A plan holds its items as columns (jobfile/columns.py): 10^7 items cost about 130 bytes each and no
Python object, and are keyed at about a microsecond each. `plan.items[i]` and `plan.units[u]`
build one Item or Unit when asked. Only the Node Manager (or a one-process run) plans; a stage
rank gets a PlanSummary, and each unit's prompts and seeds with its work.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepiece_hpc.jobfile.columns import ConstantText, TextBuilder, TextColumn, Texts
from onepiece_hpc.jobfile.job import ConditionImage, GenParams, Job

KEY_VERSION = 1
KEY_CHUNK = 1 << 16  # items keyed (and their text decoded) at a time
MAX_REPORTED = 20    # duplicate lines listed before "... and N more"


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
class ItemTable:
    """The planned items as columns, row i being item i."""

    keys: np.ndarray       # (n, 32) uint8: the sha256 of each item's key fields
    seeds: np.ndarray      # int64
    param_ids: np.ndarray  # int32 into Plan.params
    lines: np.ndarray      # int64: the prompt file line of each item
    prompts: TextColumn
    negatives: Texts
    metas: Texts

    def __len__(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class Plan:
    """Everything decided before any rank starts; the same job always gives the same plan."""

    job: Job
    model_identity: str
    execution: str  # device, dtype and CPU threads: they change the output bits too
    params: tuple[GenParams, ...]  # the distinct params of the job's items
    table: ItemTable
    bounds: np.ndarray  # int64: unit u holds items [bounds[u], bounds[u + 1])
    fingerprint: str

    @property
    def items(self) -> Sequence[Item]:
        return _Built(len(self.table), self.item)

    @property
    def units(self) -> Sequence[Unit]:
        return _Built(self.unit_count, self.unit)

    @property
    def unit_count(self) -> int:
        return len(self.bounds) - 1

    def item(self, index: int) -> Item:
        t = self.table
        return Item(index, self.hex_keys(index, index + 1)[0].decode(), t.prompts[index], t.negatives[index],
                    int(t.seeds[index]), self.params[int(t.param_ids[index])], t.metas[index], int(t.lines[index]))

    def unit(self, index: int) -> Unit:
        return Unit(index, int(self.bounds[index]), int(self.bounds[index + 1]))

    def unit_items(self, unit: Unit) -> tuple[Item, ...]:
        return tuple(self.item(i) for i in range(unit.start, unit.stop))

    def unit_params(self, unit: Unit) -> GenParams:
        return self.params[int(self.table.param_ids[unit.start])]

    def unit_param_ids(self) -> np.ndarray:
        """The params id of each unit (int32)."""
        return self.table.param_ids[self.bounds[:-1]]

    def unit_sizes(self) -> np.ndarray:
        return np.diff(self.bounds)

    def param_work(self) -> np.ndarray:
        """The work of one item of each params (planning/work.py), indexed by params id."""
        return self._param_work

    @functools.cached_property
    def _param_work(self) -> np.ndarray:  # once a plan: rank 0 asks at every commit
        from onepiece_hpc.planning.work import item_work

        p = self.params
        return item_work([x.steps for x in p], [x.guidance for x in p], [x.height for x in p],
                         [x.width for x in p], [x.frames for x in p])

    def work_of(self, mask: np.ndarray | None = None) -> float:
        """The work of the items where `mask` (a bool per item) is set, or of every item."""
        ids = self.table.param_ids if mask is None else self.table.param_ids[np.asarray(mask, dtype=bool)]
        return float(np.bincount(ids, minlength=len(self.params)) @ self.param_work())

    def unit_work(self, unit: Unit) -> float:
        return float(unit.size * self.param_work()[int(self.table.param_ids[unit.start])])

    def pending_units(self, done: np.ndarray) -> np.ndarray:
        """The units with an item not `done` (a bool per item), in order (int64 unit indices)."""
        if not self.unit_count:
            return np.zeros(0, dtype=np.int64)
        unit_done = np.logical_and.reduceat(np.asarray(done, dtype=bool), self.bounds[:-1])
        return np.flatnonzero(~unit_done).astype(np.int64)

    def hex_keys(self, start: int, stop: int) -> np.ndarray:
        """The keys of items [start, stop) as 64 hex digits each (dtype S64)."""
        raw = np.ascontiguousarray(self.table.keys[start:stop])
        return np.frombuffer(binascii.hexlify(raw.tobytes()), dtype="S64")

    def summary(self) -> PlanSummary:
        span = int(self.job.microbatch) + 1  # a unit holds at most microbatch items
        pairs = np.unique(self.unit_param_ids().astype(np.int64) * span + self.unit_sizes())  # 1-D: fast
        return PlanSummary(fingerprint=self.fingerprint, execution=self.execution, items=len(self.table),
                           units=self.unit_count, params=self.params,
                           shapes=tuple((int(pair // span), int(pair % span)) for pair in pairs))


class _Built(Sequence):
    """A read-only sequence of `count` rows, each built by `build(i)` when asked for (an Item or a
    Unit of the plan: nothing is held per row)."""

    def __init__(self, count: int, build: Callable[[int], object]) -> None:
        self._count, self._build = count, build

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self._build(i) for i in range(*index.indices(self._count)))
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return self._build(index % self._count)


@dataclass(frozen=True)
class PlanSummary:
    """What a stage rank needs of the plan: its identity, and every params and unit size it will
    see (to size its rings and warm up); small whatever the item count."""

    fingerprint: str
    execution: str
    items: int
    units: int
    params: tuple[GenParams, ...]
    shapes: tuple[tuple[int, int], ...]  # (params id, unit size) of every distinct unit shape

    def to_json(self) -> dict:
        return {"fingerprint": self.fingerprint, "execution": self.execution, "items": self.items,
                "units": self.units, "params": [params_to_json(p) for p in self.params],
                "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_json(cls, data: dict) -> PlanSummary:
        return cls(fingerprint=str(data["fingerprint"]), execution=str(data["execution"]),
                   items=int(data["items"]), units=int(data["units"]),
                   params=tuple(params_from_json(p) for p in data["params"]),
                   shapes=tuple((int(p), int(s)) for p, s in data["shapes"]))


def params_to_json(params: GenParams) -> dict:
    image = params.image
    return {"steps": params.steps, "guidance": params.guidance, "height": params.height, "width": params.width,
            "frames": params.frames, "image": [str(image.path), image.sha256] if image else None}


def params_from_json(data: dict) -> GenParams:
    image = data["image"]
    return GenParams(steps=int(data["steps"]), guidance=float(data["guidance"]), height=int(data["height"]),
                     width=int(data["width"]), frames=int(data["frames"]),
                     image=ConditionImage(Path(image[0]), str(image[1])) if image else None)


def item_key(model_identity: str, prompt: str, negative_prompt: str, seed: int, params: GenParams,
             video: bool = False) -> str:
    """sha256 of everything that determines the item's output (the definition; see key_maker).

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


def key_maker(model_identity: str, params: GenParams, video: bool) -> Callable[[str, str, int], bytes]:
    """item_key for one params, as a function of (prompt, negative prompt, seed) returning the raw
    digest: the canonical JSON is assembled around the three (sorted field names, as item_key
    writes it), five times faster than building it anew."""
    quote = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes for a str
    head = "{"
    if video:
        head += f'"frames":{params.frames},'
    head += f'"guidance":{quote(repr(float(params.guidance)))},"height":{params.height},'
    if video and params.image is not None:
        head += f'"image":{quote(params.image.sha256)},'
    head += f'"model":{quote(model_identity)},"negative_prompt":'
    tail = f',"steps":{params.steps},"v":{KEY_VERSION},"width":{params.width}}}'
    sha256 = hashlib.sha256

    def key(prompt: str, negative: str, seed: int) -> bytes:
        return sha256(f'{head}{quote(negative)},"prompt":{quote(prompt)},"seed":{seed}{tail}'.encode()).digest()

    return key


def unit_bounds(param_ids: np.ndarray, microbatch: int) -> np.ndarray:
    """Unit boundaries: consecutive items with equal params, at most `microbatch` a unit, in order."""
    n = len(param_ids)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    run_starts = np.concatenate([[0], np.flatnonzero(np.diff(param_ids)) + 1])
    marker = np.zeros(n, dtype=np.int64)
    marker[run_starts] = run_starts
    run_of = np.maximum.accumulate(marker)  # where each item's run of equal params starts
    starts = np.flatnonzero((np.arange(n, dtype=np.int64) - run_of) % microbatch == 0)
    return np.append(starts, n).astype(np.int64)


def _texts_of(table, start: int, stop: int) -> list[str]:
    """Rows [start, stop) of a text column, decoding an all-ASCII stretch in one call."""
    if isinstance(table, ConstantText):
        return table.rows(start, stop)
    offsets = table.offsets[start:stop + 1]
    raw = table.data[int(offsets[0]):int(offsets[-1])]
    if raw.isascii():
        text = raw.decode("ascii")
        cuts = (offsets - offsets[0]).tolist()
        return [text[a:b] for a, b in zip(cuts, cuts[1:])]
    return table.rows(start, stop)


def _params_of(job: Job, records, size: tuple[int, int], frames: int | None) -> tuple[tuple[GenParams, ...], np.ndarray]:
    """The distinct params of the items and each item's index into them."""
    height, width = size
    n = len(records)
    if records.steps is None and records.guidance is None and records.image_ids is None:  # no line sets params
        only = GenParams(steps=job.steps, guidance=float(job.guidance), height=height, width=width,
                         frames=frames or 1, image=job.image)
        return (only,), np.zeros(n, dtype=np.int32)
    steps = np.full(n, job.steps, dtype=np.int64) if records.steps is None else \
        np.where(records.steps > 0, records.steps, job.steps)
    guidance = np.full(n, job.guidance, dtype=np.float64) if records.guidance is None else \
        np.where(np.isnan(records.guidance), job.guidance, records.guidance)
    guidance = guidance + 0.0  # -0.0 is 0.0, as GenParams compares them
    images = (job.image, *records.images)  # 0: the job's default image (or none)
    same = {image: at for at, image in reversed(list(enumerate(images)))}  # an image given twice is one
    canonical = np.array([same[image] for image in images], dtype=np.int64)
    image_ids = (np.zeros(n, dtype=np.int64) if records.image_ids is None
                 else canonical[records.image_ids.astype(np.int64) + 1])
    combos, inverse = np.unique(np.stack([steps, guidance.view(np.int64), image_ids]), axis=1, return_inverse=True)
    params = tuple(GenParams(steps=int(s), guidance=float(np.int64(g).view(np.float64)), height=height, width=width,
                             frames=frames or 1, image=images[int(i)])
                   for s, g, i in combos.T)
    return params, inverse.reshape(-1).astype(np.int32)


def _negatives_of(job: Job, records) -> Texts:
    if records.negative_set is None:
        return ConstantText(job.negative_prompt, len(records))
    builder = TextBuilder()
    for row in range(len(records)):
        builder.append(records.negatives[row] if records.negative_set[row] else job.negative_prompt)
    return builder.build()


def _duplicates(job: Job, keys: np.ndarray, lines: np.ndarray) -> list[str]:
    """A problem for every item whose key an earlier item has (found by sorting, not by a set)."""
    prefix = np.ascontiguousarray(keys[:, :8]).view("<u8").reshape(-1)
    order = np.argsort(prefix)
    ordered = prefix[order]
    close = np.flatnonzero(ordered[1:] == ordered[:-1])
    found: dict[int, int] = {}  # later item -> the first item with its key
    for value in np.unique(ordered[close]):  # each prefix that two or more items share (rare)
        group = sorted(order[ordered == value].tolist())
        for at, later in enumerate(group):
            first = next((g for g in group[:at] if np.array_equal(keys[g], keys[later])), None)
            if first is not None:
                found[later] = found.get(first, first)
    problems = [f"{job.prompts_path}:{lines[later]}: same prompt, seed and params as line {lines[first]}, so the "
                "same output twice; fix: give it another seed or remove it"
                for later, first in sorted(found.items(), key=lambda pair: lines[pair[0]])]
    if len(problems) > MAX_REPORTED:
        problems = problems[:MAX_REPORTED] + [f"{job.prompts_path}: ... and {len(problems) - MAX_REPORTED} more "
                                              "repeated items"]
    return problems


def plan_job(job: Job, model_identity: str, size: tuple[int, int], execution: str,
             problems: list[str], frames: int | None = None) -> Plan | None:
    """Items and units of `job`; duplicate items (same key) are reported as problems.

    `frames` is the frame count of a video model's items, None for an image model.
    """
    records = job.records
    n = len(records)
    params, param_ids = _params_of(job, records, size, frames)
    positions = np.arange(n, dtype=np.int64)
    seeds = job.seed + positions if records.seeds is None else \
        np.where(records.seeds >= 0, records.seeds, job.seed + positions)
    negatives = _negatives_of(job, records)
    makers = [key_maker(model_identity, p, video=frames is not None) for p in params]
    keys = bytearray()
    for start in range(0, n, KEY_CHUNK):
        stop = min(start + KEY_CHUNK, n)
        ids, seed_values = param_ids[start:stop].tolist(), seeds[start:stop].tolist()
        prompts, negative_texts = _texts_of(records.prompts, start, stop), _texts_of(negatives, start, stop)
        for row in range(stop - start):
            keys += makers[ids[row]](prompts[row], negative_texts[row], seed_values[row])
    key_array = np.frombuffer(keys, dtype=np.uint8).reshape(n, 32)
    repeated = _duplicates(job, key_array, records.lines)
    if repeated:
        problems.extend(repeated)
        return None
    table = ItemTable(keys=key_array, seeds=seeds.astype(np.int64), param_ids=param_ids, lines=records.lines,
                      prompts=records.prompts, negatives=negatives,
                      metas=records.metas if records.metas is not None else ConstantText("", n))
    digest = hashlib.sha256(f"{model_identity}\0{job.microbatch}\0{execution}\0".encode())
    for start in range(0, n, KEY_CHUNK):
        digest.update(binascii.hexlify(key_array[start:start + KEY_CHUNK].tobytes()))
    return Plan(job=job, model_identity=model_identity, execution=execution, params=params, table=table,
                bounds=unit_bounds(param_ids, job.microbatch), fingerprint=digest.hexdigest())
