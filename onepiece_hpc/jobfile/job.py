"""The job description: what a job file may say, and the immutable Job built from it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from onepiece_hpc.topology import STAGE_NAME

if TYPE_CHECKING:
    from onepiece_hpc.jobfile.prompt_table import PromptTable

SEED_MAX = 2**63 - 1  # seeds are stored as int64 in HDF5 and fed to torch.Generator.manual_seed
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class StepParamsFields(_Strict):
    """A workflow step's params: a job's, but the conditioning image (a later step's images are the
    outputs of the step before it)."""

    steps: int = Field(30, ge=1, le=10_000)
    guidance: float = Field(5.0, ge=0.0, le=100.0)
    height: int | None = Field(None, ge=8, le=16_384)
    width: int | None = Field(None, ge=8, le=16_384)
    frames: int | None = Field(None, ge=1, le=10_000)
    negative_prompt: str = ""


class ParamsFields(StepParamsFields):
    image: str | None = Field(None, min_length=1)


#: a workflow step's name: it prefixes the step's stages (image -> image_encode, image_denoise, ...)
#: and names the dataset of its kept outputs (/outputs/image/images)
STEP_NAME = r"^[a-z][a-z0-9_]{0,15}$"
MAX_WORKFLOW_STEPS = 8


class WorkflowStepFields(_Strict):
    """One model of a workflow, with its own params; `keep` also stores its outputs (not the last
    step's: those are the job's outputs)."""

    name: str | None = Field(None, pattern=STEP_NAME)
    model: str = Field(min_length=1)
    params: StepParamsFields = StepParamsFields()
    keep: bool = False


#: ranks a stage may be given (the stage names are the model's: checked against its topology)
StageRanks = Annotated[int, Field(ge=1, le=100_000)]


class PolicyFields(_Strict):
    """How the Node Manager moves ranks between stages while the job runs."""

    name: Literal["static", "adaptive"] = "static"
    interval_s: float = Field(2.0, gt=0, le=3600)
    cooldown_s: float = Field(10.0, ge=0, le=86_400)
    window: float = Field(4.0, gt=0, le=1000)
    margin: float = Field(1.5, ge=0, le=1000)
    max_move_share: float = Field(0.25, gt=0, le=1)


@dataclass(frozen=True)
class PolicySettings:
    """The job file's `policy:` section, validated (see PolicyFields for the ranges)."""

    name: str = "static"
    interval_s: float = 2.0       # seconds between decisions
    cooldown_s: float = 10.0      # a rank that moved stays put at least this long
    window: float = 4.0           # look ahead this many units per rank
    margin: float = 1.5           # a move must save this many times its own duration
    max_move_share: float = 0.25  # at most this share of the ranks moves in one decision


SLURM_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SLURM_TIME_PATTERN = r"^(\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2})$"
SLURM_MEM_PATTERN = r"^\d+[KMGT]?$"
SLURM_CONSTRAINT_PATTERN = r"^[A-Za-z0-9._&|*\[\]()!:,-]{1,256}$"
SLURM_OPTION_PATTERN = r"^--[a-z][a-z0-9-]*(=[^\n\r]*)?$"
DRAIN_SECONDS_MIN = 10


class StoreFields(_Strict):
    """How a new output is laid out on disk and how often commits reach stable storage."""

    file_mb: int = Field(4096, ge=1, le=1_048_576)
    sync_interval_s: float = Field(1.0, gt=0, le=3600)


class MetricsFields(_Strict):
    """Live metrics of a staged run (docs/monitoring.md): rank 0 serves Prometheus's text format
    on `port` (0: any free port) and writes a service-discovery entry into `discovery_dir`."""

    port: int | None = Field(None, ge=0, le=65_535)
    discovery_dir: str | None = Field(None, min_length=1)


class SlurmFields(_Strict):
    """How `onepiece submit` asks Slurm for resources. Every value here reaches an #SBATCH line,
    so each is held to a pattern with no spaces, quotes or line breaks; `extra` options go to
    sbatch's command line as separate arguments and never into the script."""

    nodes: int = Field(1, ge=1, le=100_000)
    ntasks_per_node: int = Field(4, ge=1, le=1024)
    gpus_per_node: int | None = Field(None, ge=1, le=64)
    cpus_per_task: int | None = Field(None, ge=1, le=1024)
    mem: str | None = Field(None, pattern=SLURM_MEM_PATTERN)
    time: str | None = Field(None, pattern=SLURM_TIME_PATTERN)
    partition: str | None = Field(None, pattern=SLURM_NAME_PATTERN)
    account: str | None = Field(None, pattern=SLURM_NAME_PATTERN)
    qos: str | None = Field(None, pattern=SLURM_NAME_PATTERN)
    constraint: str | None = Field(None, pattern=SLURM_CONSTRAINT_PATTERN)
    drain_seconds: int = Field(120, ge=DRAIN_SECONDS_MIN, le=86_400)
    drain_signal: Literal["USR1", "USR2", "TERM"] = "USR1"
    requeue: Literal["scontrol", "chain", "none"] = "scontrol"
    heartbeat_timeout: int = Field(60, ge=5, le=86_400)
    mpi: str = Field("auto", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    extra: tuple[str, ...] = ()

    @field_validator("extra", mode="before")
    @classmethod
    def _options_only(cls, value):
        if isinstance(value, list):
            value = tuple(value)
        for option in value if isinstance(value, tuple) else ():
            if not isinstance(option, str) or not re.fullmatch(SLURM_OPTION_PATTERN, option):
                raise ValueError(f"{option!r} is not one sbatch option written --name or --name=value")
        return value


class JobFields(_Strict):
    """The job file's fields, as written (paths not yet resolved)."""

    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(min_length=1)
    prompts: str = Field(min_length=1)
    params: ParamsFields = ParamsFields()
    seed: int = Field(0, ge=0, le=SEED_MAX)
    microbatch: int = Field(1, ge=1, le=1024)
    output: str | None = Field(None, min_length=1)
    stages: dict[Annotated[str, Field(pattern=STAGE_NAME)], StageRanks] = {}
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    cpu_threads: int = Field(1, ge=1, le=1024)
    policy: PolicyFields = PolicyFields()
    description: str = ""
    slurm: SlurmFields = SlurmFields()
    store: StoreFields = StoreFields()
    metrics: MetricsFields = MetricsFields()


class WorkflowJobFields(JobFields):
    """A job file that chains models: `workflow:` in place of `model:` (jobfile/workflow.py says
    the rules; a `model:` given beside it is named there, with the fix)."""

    model: str | None = None
    workflow: list[WorkflowStepFields] = Field(min_length=2, max_length=MAX_WORKFLOW_STEPS)


FIELD_HINTS: dict[str, str] = {
    "name": "use letters, digits, '.', '_' or '-' (at most 64), starting with a letter or digit",
    "model": ("write a built-in (builtin:tiny-sd, tiny-pixart, tiny-sdxl, tiny-wan-t2v, tiny-wan-i2v), a "
              "real-size random-weight architecture for benchmarks (builtin:random:sdxl, "
              "builtin:random:wan2.1-t2v-1.3b, ...), or the path of a diffusers pipeline folder; or, in its "
              "place, a workflow: of models chained in one job (docs/workflows.md)"),
    "workflow": (f"write a list of 2 to {MAX_WORKFLOW_STEPS} steps, each with model: and its own params: "
                 "(and name:, keep: if you like); see docs/workflows.md"),
    "workflow.name": "write a lowercase name of at most 16 letters, digits or '_', starting with a letter "
                     "(it prefixes the step's stages: image -> image_encode)",
    "workflow.model": "write a built-in (e.g. builtin:tiny-sdxl, builtin:tiny-wan-i2v) or the path of a diffusers "
                      "pipeline folder",
    "workflow.keep": "write true (also store this step's outputs) or false",
    "prompts": "write the path of a .txt (one prompt a line) or .jsonl file",
    "seed": f"use a whole number from 0 to {SEED_MAX}",
    "microbatch": "use a whole number from 1 to 1024 (items per work unit)",
    "output": "write the path of an .h5 file, e.g. out/NAME.h5",
    "device": "write auto, cpu or cuda",
    "dtype": "write auto, float32, bfloat16 or float16 (auto: float32 on CPU, bfloat16 on GPU)",
    "policy.name": "write static (never move ranks) or adaptive (move ranks by load)",
    "cpu_threads": "use a whole number of torch threads per rank on CPU, at least 1",
    "params.steps": "use a whole number of denoising steps, at least 1",
    "params.guidance": "use a number from 0 to 100 (values above 1 enable classifier-free guidance)",
    "params.height": "use a whole number of pixels, a multiple of the model's size factor",
    "params.width": "use a whole number of pixels, a multiple of the model's size factor",
    "params.frames": "use a whole number of frames per video (Wan: 4k+1, e.g. 81); leave it out for image models",
    "params.image": "write the path of the conditioning image (PNG or JPEG, relative to the job file) "
                    "for image-to-video models",
    "params.negative_prompt": "write a string (quote it if it has ':' or '#')",
    "stages": "map stage names to whole numbers of ranks, e.g. {encode: 1, denoise: 6, decode: 1}",
    "slurm.nodes": "use a whole number of nodes, at least 1",
    "slurm.ntasks_per_node": "use a whole number of ranks a node (one a GPU where there are GPUs), at least 1",
    "slurm.gpus_per_node": "use a whole number of GPUs a node, at least 1 (leave it out for CPU nodes)",
    "slurm.cpus_per_task": "use a whole number of CPUs a rank, at least 1",
    "slurm.mem": "write memory a node as Slurm does, e.g. \"64G\" or \"4000M\"",
    "slurm.time": "write a quoted Slurm time limit, e.g. \"30:00\", \"4:00:00\" or \"1-00:00:00\" "
                  "(unquoted, YAML reads 30:00 as a number)",
    "slurm.partition": "write a partition name: letters, digits, '.', '_' or '-'",
    "slurm.account": "write an account name: letters, digits, '.', '_' or '-'",
    "slurm.qos": "write a QOS name: letters, digits, '.', '_' or '-'",
    "slurm.constraint": "write a Slurm constraint without spaces or quotes, e.g. a100&ib",
    "slurm.drain_seconds": "use a whole number of seconds from 10 to 86400: how long before the end "
                           "Slurm signals the job to commit and requeue",
    "slurm.drain_signal": "write USR1, USR2 or TERM: the signal Slurm sends drain_seconds before the end "
                          "(USR2 where the MPI or NCCL uses USR1)",
    "slurm.requeue": "write scontrol (requeue the job itself), chain (submit a successor job, for sites "
                     "that forbid scontrol requeue) or none (submit again by hand)",
    "slurm.heartbeat_timeout": "use a whole number of seconds from 5 to 86400: how long rank 0 waits for a "
                               "rank's heartbeat before it ends the job naming that rank, or its host",
    "slurm.mpi": "write auto (detected from mpi4py's MPI) or an srun --mpi plugin such as pmi2 or pmix",
    "store.file_mb": "use a whole number of megabytes a data file holds, from 1 to 1048576 (default 4096)",
    "store.sync_interval_s": "use a number of seconds between syncs of committed outputs, above 0 (default 1)",
    "slurm.extra": "write a list of sbatch options, each --name=value, e.g. [--mail-type=END]",
}


@dataclass(frozen=True)
class ConditionImage:
    """An image an item is generated from (image-to-video): where it lies and the sha256 of its bytes."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class GenParams:
    """Generation parameters shared by every item of a work unit.

    A unit shares its conditioning image too, so that a unit is one diffusers call (the pipelines
    take one image a call).
    """

    steps: int
    guidance: float
    height: int
    width: int
    frames: int = 1  # frames per item: 1 for image models
    image: ConditionImage | None = None


@dataclass(frozen=True)
class PromptRecord:
    """One line of the prompt source, before seeds and defaults are applied."""

    line: int
    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    meta: str = ""  # canonical JSON of the line's "meta" object, "" when absent
    image: ConditionImage | None = None


@dataclass(frozen=True)
class WorkflowStep:
    """One validated step of a workflow: its model and params as the job file gives them (sizes
    and frames the model's defaults where not given, decided when the model is resolved)."""

    index: int         # 0 for the first step
    name: str
    model: str         # "builtin:NAME" or an absolute folder path
    steps: int
    guidance: float
    height: int | None
    width: int | None
    frames: int | None
    negative_prompt: str
    keep: bool

    @property
    def field(self) -> str:
        """The step's key path in the job file's line map, e.g. "workflow.1"."""
        return f"workflow.{self.index}"

    @property
    def label(self) -> str:
        """The step as messages name its fields, e.g. "workflow[1]"."""
        return f"workflow[{self.index}]"


@dataclass(frozen=True)
class Job:
    """A validated job: every path absolute, every field checked."""

    source: Path
    source_text: str
    name: str
    model: str  # "builtin:NAME" or an absolute folder path
    prompts_path: Path
    records: PromptTable  # empty when the job was loaded without its prompts (a stage rank)
    steps: int
    guidance: float
    height: int | None
    width: int | None
    frames: int | None  # None: the model's own default
    image: ConditionImage | None  # the default conditioning image of every prompt line
    negative_prompt: str
    seed: int
    microbatch: int
    output: Path
    stages: dict[str, int]  # ranks asked for by stage name, as the job file says (empty: not said)
    device: str
    dtype: str
    cpu_threads: int
    policy: PolicySettings
    description: str
    field_lines: dict[str, int]
    slurm: SlurmFields = SlurmFields()
    store: StoreFields = StoreFields()
    metrics_port: int | None = None           # metrics.port
    metrics_discovery_dir: Path | None = None  # metrics.discovery_dir, absolute
    #: a workflow's steps, in order (empty for a job of one model); `model` then describes the
    #: chain, and steps, guidance, height, width and frames are the last step's (its outputs are the job's)
    workflow: tuple[WorkflowStep, ...] = ()

    def where(self, field: str) -> str:
        """'job.yaml:LINE' for a field (or the file alone), for error messages."""
        line = self.field_lines.get(field)
        return f"{self.source}:{line}" if line else str(self.source)
