"""What produced an output: versions, host, model identity, the job file itself; and per run,
the software and hardware that could change its bits."""

from __future__ import annotations

import platform
import socket
from dataclasses import asdict, dataclass, field
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
    versions = software_versions()
    return Provenance(
        job_file=job_file, job_path=job_path, package_version=versions["onepiece"], model_ref=model_ref,
        model_identity=model_identity, model_config_hash=model_config_hash, pipeline_class=pipeline_class,
        torch_version=versions["torch"], diffusers_version=versions["diffusers"],
        transformers_version=versions["transformers"], python_version=versions["python"],
        host=socket.gethostname(), created_at=now_iso(),
    )


@dataclass(frozen=True)
class RunInfo:
    """One run as the journal records it: how it was started and what it ran on."""

    mode: str
    slurm_job: str = ""
    slurm_restart: int = 0
    software: dict[str, str] = field(default_factory=dict)  # package -> version
    hardware: dict[str, str] = field(default_factory=dict)  # device, GPU model, CUDA, CPU threads


#: what may change an item's bits between runs of one job, beyond the job's execution tag
BIT_RELEVANT = ("torch", "diffusers", "transformers", "numpy", "cuda", "cudnn", "gpu")


def software_versions() -> dict[str, str]:
    """The versions of what makes the bits, read from the installed packages' metadata: importing
    diffusers and transformers for their version would cost every rank seconds."""
    from importlib.metadata import version

    from onepiece_hpc import __version__

    packages = ("torch", "diffusers", "transformers", "numpy")
    return {"onepiece": __version__, **{name: version(name) for name in packages}, "python": platform.python_version()}


def hardware_of(device_type: str, cpu_threads: int) -> dict[str, str]:
    import torch

    found = {"device": device_type, "cpu": platform.processor() or platform.machine(), "host": socket.gethostname()}
    if device_type == "cuda" and torch.cuda.is_available():
        found |= {"gpu": torch.cuda.get_device_name(), "cuda": str(torch.version.cuda),
                  "cudnn": str(torch.backends.cudnn.version())}
    else:
        found["cpu_threads"] = str(cpu_threads)
    return found


def changes_between(before: dict, after: dict) -> list[str]:
    """'torch 2.13.0 -> 2.14.1'-style lines for what differs and may change output bits."""
    merged_before = {**before.get("software", {}), **before.get("hardware", {})}
    merged_after = {**after.get("software", {}), **after.get("hardware", {})}
    return [f"{name} {merged_before.get(name, '(none)')} -> {merged_after.get(name, '(none)')}"
            for name in BIT_RELEVANT if merged_before.get(name) != merged_after.get(name)
            and (name in merged_before or name in merged_after)]
