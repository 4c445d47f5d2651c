"""Job file -> Job: read safely, validate every field, report every problem together."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from onepiece_hpc.jobfile.images import ImageReader
from onepiece_hpc.jobfile.job import FIELD_HINTS, SEED_MAX, Job, JobFields, PolicySettings, WorkflowJobFields
from onepiece_hpc.jobfile.prompt_table import PromptTable, empty_table
from onepiece_hpc.jobfile.prompt_text import text_problem
from onepiece_hpc.jobfile.prompts import read_prompts
from onepiece_hpc.jobfile.workflow import describe, line_problems, workflow_steps
from onepiece_hpc.jobfile.yaml_source import YamlDocument, parse_yaml

OUTPUT_SUFFIXES = (".h5", ".hdf5")
MAX_GOT = 120  # characters of a bad value an error repeats


def _model_in(annotation) -> type[BaseModel] | None:
    """The model class a field holds, itself or as the items of a list (`X | None` included)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_in, typing.get_args(annotation))), None)


def _fields_of(model: type[BaseModel], path: tuple) -> list[str]:
    for part in path:
        if isinstance(part, int):
            continue  # an item of a list: the model is its items'
        annotation = model.model_fields.get(str(part))
        model = _model_in(annotation.annotation) if annotation is not None else None
        if model is None:
            return []
    return list(model.model_fields)


def field_name(loc: tuple) -> str:
    """A field's path as messages write it: "params.height", "workflow[1].params.height"."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _hint(loc: tuple) -> str | None:
    """FIELD_HINTS for a field; a workflow step's params are hinted as a job's."""
    key = ".".join(str(part) for part in loc if not isinstance(part, int))
    if key.startswith("workflow.params."):
        key = key.removeprefix("workflow.")
    return FIELD_HINTS.get(key) or FIELD_HINTS.get(str(loc[0]))


def _describe(doc: YamlDocument, schema: type[JobFields], error: dict) -> str:
    loc = tuple(error["loc"])
    field = field_name(loc)
    line = doc.line_of(".".join(map(str, loc)))
    where = f"{doc.path}:{line}" if line else str(doc.path)
    kind = error["type"]
    if kind == "missing":
        hint = _hint(loc) or "see the job file reference, docs/job-file.md"
        return f"{where}: required field '{field}' is missing; fix: add it ({hint})"
    if kind == "extra_forbidden":
        valid = _fields_of(schema, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        did_you = f" (did you mean '{close[0]}'?)" if close else ""
        return (f"{where}: unknown field '{field}'{did_you}; fix: remove it or use one of: "
                f"{', '.join(valid)}")
    got = repr(error.get("input"))
    got = got if len(got) <= MAX_GOT else got[:MAX_GOT - 3] + "..."  # a whole list of steps says little
    hint = _hint(loc)
    msg = error["msg"]
    text = f"{where}: field '{field}': {msg[:1].lower()}{msg[1:]} (got {got})"
    return f"{text}; fix: {hint}" if hint else text


def read_document(path: Path, problems: list[str]) -> YamlDocument | None:
    """A YAML mapping file (a job or a sweep) with its line map, or None with the problem noted."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problems.append(f"{path}: job file not found")
        return None
    except IsADirectoryError:
        problems.append(f"{path}: is a folder; give the path of a job file (.yaml)")
        return None
    except OSError as err:
        problems.append(f"{path}: cannot read the job file ({err.strerror})")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{path}: not UTF-8 text; fix: save the job file as UTF-8")
        return None
    try:
        doc = parse_yaml(path, text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        reason = getattr(err, "problem", None) or str(err)
        problems.append(f"{path}{line}: not valid YAML ({reason}); fix the syntax at that line")
        return None
    if not isinstance(doc.data, dict):
        problems.append(f"{path}: a job file must be a YAML mapping (name: ..., model: ..., prompts: ...)")
        return None
    return doc


def resolve_path(base: Path, value: str) -> Path:
    """`value` as written in a file of folder `base`: `~` expanded, relative paths against `base`."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def load_job(path: Path, problems: list[str], with_prompts: bool = True) -> Job | None:
    """Validate the job file at `path`; every problem found is appended to `problems`.

    `with_prompts` False leaves the prompt source unread (`records` empty): a stage rank gets
    what each unit needs from the Node Manager, which alone reads and plans the prompts.
    """
    path = Path(path).absolute()
    start = len(problems)
    doc = read_document(path, problems)
    if doc is None:
        return None
    schema = WorkflowJobFields if "workflow" in doc.data else JobFields
    try:
        fields = schema.model_validate(doc.data)
    except ValidationError as err:
        errors = sorted(err.errors(), key=lambda e: doc.line_of(".".join(map(str, e["loc"]))) or 0)
        problems.extend(_describe(doc, schema, e) for e in errors)
        fields = None
    base = path.parent
    images = ImageReader()
    prompts_value = doc.data.get("prompts")
    records: PromptTable = empty_table()
    if with_prompts and isinstance(prompts_value, str) and prompts_value:
        records = read_prompts(resolve_path(base, prompts_value), problems, images)
    if fields is None:
        return None

    def place(field: str) -> str:
        return f"{doc.path}:{doc.line_of(field)}" if doc.line_of(field) else str(doc.path)

    def model_path(ref: str) -> str:
        return ref if ref.startswith("builtin:") else str(resolve_path(base, ref))

    workflow = workflow_steps(fields, set(doc.data), place, model_path, problems)
    if workflow:
        problems.extend(line_problems(records, resolve_path(base, fields.prompts)))
    negative_problem = text_problem(fields.params.negative_prompt)
    if negative_problem is not None:
        problems.append(f"{doc.path}:{doc.line_of('params.negative_prompt')}: field 'params.negative_prompt' "
                        f"{negative_problem}")
    image = None
    if fields.params.image is not None:
        where = f"{doc.path}:{doc.line_of('params.image')}: field 'params.image'"
        image = images.read(resolve_path(base, fields.params.image), where, f"the job file's folder {base}", problems)
    if records and fields.seed + len(records) - 1 > SEED_MAX:
        problems.append(
            f"{doc.path}:{doc.line_of('seed')}: seed {fields.seed} + {len(records)} items passes {SEED_MAX}; "
            "fix: use a smaller seed"
        )
    output = resolve_path(base, fields.output or f"out/{fields.name}.h5")
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        where = f"{doc.path}:{doc.line_of('output')}" if fields.output else str(doc.path)
        problems.append(f"{where}: field 'output': '{output.name}' must end in .h5 or .hdf5")
    if len(problems) > start:
        return None
    model = describe(workflow) if workflow else model_path(fields.model)
    params = fields.params
    if workflow:  # the plan's items record the last step's params: its outputs are the job's
        last = workflow[-1]
        params = params.model_copy(update={"steps": last.steps, "guidance": last.guidance, "height": last.height,
                                           "width": last.width, "frames": last.frames})
    return Job(
        source=path,
        source_text=doc.text,
        name=fields.name,
        model=model,
        prompts_path=resolve_path(base, fields.prompts),
        records=records,
        steps=params.steps,
        guidance=params.guidance,
        height=params.height,
        width=params.width,
        frames=params.frames,
        image=image,
        negative_prompt=params.negative_prompt,
        seed=fields.seed,
        microbatch=fields.microbatch,
        output=output,
        stages=dict(fields.stages),
        device=fields.device,
        dtype=fields.dtype,
        cpu_threads=fields.cpu_threads,
        policy=PolicySettings(**fields.policy.model_dump()),
        description=fields.description,
        field_lines=dict(doc.lines),
        slurm=fields.slurm,
        store=fields.store,
        metrics_port=fields.metrics.port,
        metrics_discovery_dir=(resolve_path(base, fields.metrics.discovery_dir)
                               if fields.metrics.discovery_dir else None),
        workflow=workflow,
    )
