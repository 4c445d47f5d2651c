"""The job description: what a job file may say, and the immutable Job built from it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SEED_MAX = 2**63 - 1  # seeds are stored as int64 in HDF5 and fed to torch.Generator.manual_seed
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Stage(str, enum.Enum):
    """The pipeline stages a rank can serve, in data-flow order."""

    ENCODE = "encode"
    DENOISE = "denoise"
    DECODE = "decode"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ParamsFields(_Strict):
    steps: int = Field(30, ge=1, le=10_000)
    guidance: float = Field(5.0, ge=0.0, le=100.0)
    height: int | None = Field(None, ge=8, le=16_384)
    width: int | None = Field(None, ge=8, le=16_384)
    negative_prompt: str = ""


class StagesFields(_Strict):
    encode: int = Field(1, ge=1, le=100_000)
    denoise: int = Field(1, ge=1, le=100_000)
    decode: int = Field(1, ge=1, le=100_000)


class JobFields(_Strict):
    """The job file's fields, as written (paths not yet resolved)."""

    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(min_length=1)
    prompts: str = Field(min_length=1)
    params: ParamsFields = ParamsFields()
    seed: int = Field(0, ge=0, le=SEED_MAX)
    microbatch: int = Field(1, ge=1, le=1024)
    output: str | None = Field(None, min_length=1)
    stages: StagesFields = StagesFields()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    cpu_threads: int = Field(1, ge=1, le=1024)
    description: str = ""


FIELD_HINTS: dict[str, str] = {
    "name": "use letters, digits, '.', '_' or '-' (at most 64), starting with a letter or digit",
    "model": "write builtin:tiny-sd, builtin:tiny-pixart, or the path of a diffusers pipeline folder",
    "prompts": "write the path of a .txt (one prompt a line) or .jsonl file",
    "seed": f"use a whole number from 0 to {SEED_MAX}",
    "microbatch": "use a whole number from 1 to 1024 (items per work unit)",
    "output": "write the path of an .h5 file, e.g. out/NAME.h5",
    "device": "write auto, cpu or cuda",
    "dtype": "write auto, float32, bfloat16 or float16 (auto: float32 on CPU, bfloat16 on GPU)",
    "cpu_threads": "use a whole number of torch threads per rank on CPU, at least 1",
    "params.steps": "use a whole number of denoising steps, at least 1",
    "params.guidance": "use a number from 0 to 100 (values above 1 enable classifier-free guidance)",
    "params.height": "use a whole number of pixels, a multiple of the model's size factor",
    "params.width": "use a whole number of pixels, a multiple of the model's size factor",
    "params.negative_prompt": "write a string (quote it if it has ':' or '#')",
    "stages.encode": "use a whole number of ranks, at least 1",
    "stages.denoise": "use a whole number of ranks, at least 1",
    "stages.decode": "use a whole number of ranks, at least 1",
}


@dataclass(frozen=True)
class GenParams:
    """Generation parameters shared by every item of a work unit."""

    steps: int
    guidance: float
    height: int
    width: int


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


@dataclass(frozen=True)
class Job:
    """A validated job: every path absolute, every field checked."""

    source: Path
    source_text: str
    name: str
    model: str  # "builtin:NAME" or an absolute folder path
    prompts_path: Path
    records: tuple[PromptRecord, ...]
    steps: int
    guidance: float
    height: int | None
    width: int | None
    negative_prompt: str
    seed: int
    microbatch: int
    output: Path
    stages: dict[Stage, int]
    device: str
    dtype: str
    cpu_threads: int
    description: str
    field_lines: dict[str, int]

    def where(self, field: str) -> str:
        """'job.yaml:LINE' for a field (or the file alone), for error messages."""
        line = self.field_lines.get(field)
        return f"{self.source}:{line}" if line else str(self.source)
