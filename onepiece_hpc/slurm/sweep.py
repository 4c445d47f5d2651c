"""Sweep files: a prompt source times a parameter grid, cut into shards, one job file each.

A sweep file is a job file plus `grid` (lists of models, sizes, steps, guidance scales, seeds),
`prompts_per_shard` and `parallel`; its `output` names a folder. Every grid point times every
chunk of prompts is a shard: DIR/shards/NNNNN.yaml (an ordinary job file) with its prompts in
DIR/shards/NNNNN.jsonl and its output in DIR/NNNNN.h5. Item i of the prompt source keeps seed
`seed + i` whatever the chunking, so a sweep's images do not depend on how it is cut.
"""

from __future__ import annotations

import copy
import difflib
import filecmp
import itertools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from onepiece_hpc.errors import UserError
from onepiece_hpc.jobfile.job import FIELD_HINTS, JobFields, PromptRecord, _Strict
from onepiece_hpc.jobfile.loader import load_job, read_document, resolve_path
from onepiece_hpc.jobfile.prompts import read_prompts

SHARD_SUFFIX_LEN = 6  # "-NNNNN" after the sweep's name in each shard's job name
DIMENSIONS = ("model", "size", "steps", "guidance", "seed")  # the grid's order: the last varies fastest
SWEEP_ONLY = ("grid", "prompts_per_shard", "parallel", "output")

SWEEP_HINTS = {
    "name": "use letters, digits, '.', '_' or '-' (at most 58: shards append -NNNNN)",
    "output": "write the folder that receives the shards' outputs, e.g. out/my-sweep",
    "grid.model": "write a list of models, e.g. [builtin:tiny-sd, builtin:tiny-pixart]",
    "grid.size": "write a list of HEIGHTxWIDTH sizes, e.g. [512x512, 768x512]",
    "grid.steps": "write a list of whole numbers of steps, e.g. [20, 50]",
    "grid.guidance": "write a list of numbers, e.g. [3.0, 7.5]",
    "grid.seed": "write a list of base seeds (item i gets seed + i), e.g. [0, 1000]",
    "prompts_per_shard": "use a whole number of prompts a shard, at least 1 (default: all in one)",
    "parallel": "use a whole number of array tasks that may run at once, at least 1",
}


class GridFields(_Strict):
    model: list[str] | None = Field(None, min_length=1)
    size: list[str] | None = Field(None, min_length=1)
    steps: list[int] | None = Field(None, min_length=1)
    guidance: list[float] | None = Field(None, min_length=1)
    seed: list[int] | None = Field(None, min_length=1)


class SweepFields(JobFields):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,57}$")
    output: str | None = Field(None, min_length=1)
    grid: GridFields = GridFields()
    prompts_per_shard: int | None = Field(None, ge=1)
    parallel: int | None = Field(None, ge=1)


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file: its raw fields (to copy into shards) and its prompt records."""

    source: Path
    name: str
    raw: dict
    fields: SweepFields
    records: tuple[PromptRecord, ...]
    folder: Path

    @property
    def shards_dir(self) -> Path:
        return self.folder / "shards"


@dataclass(frozen=True)
class Shard:
    index: int
    point: dict
    first_item: int
    records: tuple[PromptRecord, ...]


def _describe(path: Path, lines, error: dict) -> str:
    field = ".".join(str(p) for p in error["loc"])
    line = lines.get(field) or lines.get(field.rsplit(".", 1)[0])
    where = f"{path}:{line}" if line else str(path)
    if error["type"] == "extra_forbidden":
        parent = GridFields if field.startswith("grid.") else SweepFields
        valid = list(parent.model_fields)
        close = difflib.get_close_matches(str(error["loc"][-1]), valid, n=1)
        did_you = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{where}: unknown field '{field}'{did_you}; fix: remove it or use one of: {', '.join(valid)}"
    hint = SWEEP_HINTS.get(field) or FIELD_HINTS.get(field) or SWEEP_HINTS.get(field.rsplit(".", 1)[0])
    text = f"{where}: field '{field}': {error['msg']} (got {error.get('input')!r})"
    return f"{text}; fix: {hint}" if hint else text


def _parse_size(text: str) -> tuple[int, int] | None:
    height, sep, width = text.lower().partition("x")
    return (int(height), int(width)) if sep and height.isdigit() and width.isdigit() else None


def _check_grid(sweep_path: Path, lines, fields: SweepFields, records, problems: list[str]) -> None:
    grid = fields.grid
    for text in grid.size or ():
        if _parse_size(text) is None:
            problems.append(f"{sweep_path}:{lines.get('grid.size')}: grid size {text!r} is not HEIGHTxWIDTH; "
                            f"fix: {SWEEP_HINTS['grid.size']}")
    for dimension in ("seed", "steps", "guidance"):
        if getattr(grid, dimension) is None:
            continue
        clash = next((r for r in records if getattr(r, dimension) is not None), None)
        if clash is not None:
            problems.append(f"{fields.prompts}:{clash.line}: the prompt sets '{dimension}' and the sweep's grid "
                            f"sets {dimension} too; fix: remove one of them")


def load_sweep(path: Path) -> Sweep:
    """Validate a sweep file and its prompt source; UserError lists every problem."""
    path = Path(path).absolute()
    problems: list[str] = []
    doc = read_document(path, problems)
    if doc is None:
        raise UserError(problems)
    try:
        fields = SweepFields.model_validate(doc.data)
    except ValidationError as err:
        raise UserError([_describe(path, doc.lines, e) for e in err.errors()],
                        headline=f"{path}: the sweep file has problems:") from None
    records = read_prompts(resolve_path(path.parent, fields.prompts), problems)
    _check_grid(path, doc.lines, fields, records, problems)
    if problems:
        raise UserError(problems, headline=f"{path}: the sweep file has {len(problems)} problem(s):")
    folder = resolve_path(path.parent, fields.output or f"out/{fields.name}")
    return Sweep(path, fields.name, dict(doc.data), fields, records, folder)


def grid_points(fields: SweepFields) -> list[dict]:
    """Every combination of the grid's values, in DIMENSIONS order (the last varies fastest)."""
    given = [(d, getattr(fields.grid, d)) for d in DIMENSIONS if getattr(fields.grid, d) is not None]
    return [dict(zip([d for d, _ in given], values)) for values in itertools.product(*(v for _, v in given))]


def cut(sweep: Sweep) -> list[Shard]:
    """The shards: each grid point times each chunk of `prompts_per_shard` prompts."""
    size = sweep.fields.prompts_per_shard or max(1, len(sweep.records))
    chunks = [(start, sweep.records[start:start + size]) for start in range(0, len(sweep.records), size)]
    points = grid_points(sweep.fields)
    return [Shard(i, point, start, chunk)
            for i, (point, (start, chunk)) in enumerate(itertools.product(points, chunks))]


def shard_job(sweep: Sweep, shard: Shard) -> dict:
    """The shard's job file, as data: the sweep's fields, the grid point, its own prompts and output."""
    job = {k: copy.deepcopy(v) for k, v in sweep.raw.items() if k not in SWEEP_ONLY}
    job["name"] = f"{sweep.name}-{shard.index:05d}"
    job["prompts"] = f"{shard.index:05d}.jsonl"
    job["output"] = f"../{shard.index:05d}.h5"
    model = shard.point.get("model", sweep.fields.model)
    job["model"] = model if model.startswith("builtin:") else str(resolve_path(sweep.source.parent, model))
    params = dict(job.get("params") or {})
    if "image" in params:
        params["image"] = str(resolve_path(sweep.source.parent, params["image"]))
    if "size" in shard.point:
        params["height"], params["width"] = _parse_size(shard.point["size"])
    for name in ("steps", "guidance"):
        if name in shard.point:
            params[name] = shard.point[name]
    job["params"] = params
    job.pop("seed", None)  # every item carries its own seed in the shard's prompts
    return job


def shard_prompts(sweep: Sweep, shard: Shard) -> str:
    """The shard's .jsonl: each record with the seed it has in the whole sweep."""
    base = shard.point.get("seed", sweep.fields.seed)
    lines = []
    for offset, record in enumerate(shard.records):
        item = {"prompt": record.prompt, "seed": record.seed if record.seed is not None
                else base + shard.first_item + offset}
        for name in ("negative_prompt", "steps", "guidance"):
            if getattr(record, name) is not None:
                item[name] = getattr(record, name)
        if record.image is not None:
            item["image"] = str(record.image.path)
        if record.meta:
            item["meta"] = json.loads(record.meta)
        lines.append(json.dumps(item, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def _same_tree(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def write_shards(sweep: Sweep) -> list[Path]:
    """Write (or find, unchanged) every shard's job file; each is validated as a job file first.

    A sweep folder written by a different sweep is refused: nothing is overwritten.
    """
    shards = cut(sweep)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".shards-", dir=sweep.folder) as scratch:
        staging = Path(scratch) / "shards"
        staging.mkdir()
        for shard in shards:
            header = f"# shard {shard.index} of sweep {sweep.name}: written by onepiece sweep; do not edit\n"
            body = yaml.safe_dump(shard_job(sweep, shard), sort_keys=False, allow_unicode=True)
            (staging / f"{shard.index:05d}.yaml").write_text(header + body, encoding="utf-8")
            (staging / f"{shard.index:05d}.jsonl").write_text(shard_prompts(sweep, shard), encoding="utf-8")
        problems: list[str] = []
        for shard in shards:
            load_job(staging / f"{shard.index:05d}.yaml", problems)
        if problems:
            raise UserError(problems[:20], headline=f"{sweep.source}: its shards are not valid jobs:")
        if sweep.shards_dir.exists():
            if not _same_tree(staging, sweep.shards_dir):
                raise UserError(f"{sweep.shards_dir} holds the shards of a different sweep (or an edited one); "
                                f"nothing was changed; fix: give the sweep a new 'output' folder")
        else:
            shutil.move(str(staging), sweep.shards_dir)
    return [sweep.shards_dir / f"{s.index:05d}.yaml" for s in shards]


def shard_output(sweep: Sweep, index: int) -> Path:
    return sweep.folder / f"{index:05d}.h5"


def split_array(count: int, max_array_size: int) -> list[tuple[int, int]]:
    """(offset, tasks) per job array: task ids must stay below the cluster's MaxArraySize."""
    if count < 1 or max_array_size < 1:
        raise ValueError(f"cannot split {count} shards into arrays of at most {max_array_size}")
    return [(start, min(max_array_size, count - start)) for start in range(0, count, max_array_size)]


def array_spec(tasks: int, parallel: int | None) -> str:
    """sbatch --array value: task ids 0..tasks-1, at most `parallel` running at once."""
    return f"0-{tasks - 1}" + (f"%{parallel}" if parallel else "")
