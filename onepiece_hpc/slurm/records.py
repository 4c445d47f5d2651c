"""Submission records: what was submitted, kept next to the output and in a per-user index.

Next to the output, for provenance: the rendered script and DIR/JOBID.json (the exact sbatch
argument list, the job file, the outputs). In the index (CACHE/slurm-jobs/JOBID.json), so that
`onepiece status JOBID` can find the outputs of a job.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SubmissionRecord:
    job_id: str
    kind: str  # "job" or "array"
    submitted_at: float
    argv: tuple[str, ...]
    script: str
    outputs: tuple[str, ...]  # for an array: one per task, in task-id order
    job_file: str = ""
    shards: str = ""
    offset: int = 0
    extra: dict = field(default_factory=dict)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _from_json(path: Path) -> SubmissionRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["argv"], data["outputs"] = tuple(data["argv"]), tuple(data["outputs"])
        return SubmissionRecord(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def save(record: SubmissionRecord, folder: Path, index: Path) -> Path:
    """Write the record next to the outputs and into the index; returns the first path."""
    data = asdict(record)
    path = folder / f"{record.job_id}.json"
    _write_json(path, data)
    _write_json(index / f"{record.job_id}.json", data)
    return path


def by_job_id(index: Path, job_id: str) -> SubmissionRecord | None:
    return _from_json(index / f"{job_id}.json")


def slurm_folder(output: Path) -> Path:
    """Where a single job's script, records and logs live: beside its output, OUT.slurm/."""
    return output.parent / f"{output.stem}.slurm"


def latest_for_output(output: Path) -> SubmissionRecord | None:
    """The newest submission that writes `output`, from the records beside it."""
    output = output.absolute()
    candidates = [*slurm_folder(output).glob("*.json"), *(output.parent / "slurm").glob("*.json")]
    records = [r for r in map(_from_json, candidates) if r is not None and str(output) in r.outputs]
    return max(records, key=lambda r: r.submitted_at, default=None)
