"""What produced an output: versions, host, model identity, the job file itself."""

from __future__ import annotations

import platform
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Provenance:
    job_file: str
    job_path: str
    package_version: str
    model_ref: str
    model_identity: str
    model_config_hash: str
    pipeline_class: str
    torch_version: str
    diffusers_version: str
    transformers_version: str
    python_version: str
    host: str
    created_at: str

    def as_attrs(self) -> dict[str, str]:
        return {name: str(value) for name, value in asdict(self).items()}


def collect(job_file: str, job_path: str, model_ref: str, model_identity: str, model_config_hash: str,
            pipeline_class: str) -> Provenance:
    import diffusers
    import torch
    import transformers

    from onepiece_hpc import __version__

    return Provenance(
        job_file=job_file, job_path=job_path, package_version=__version__, model_ref=model_ref,
        model_identity=model_identity, model_config_hash=model_config_hash, pipeline_class=pipeline_class,
        torch_version=torch.__version__, diffusers_version=diffusers.__version__,
        transformers_version=transformers.__version__, python_version=platform.python_version(),
        host=socket.gethostname(), created_at=now_iso(),
    )
