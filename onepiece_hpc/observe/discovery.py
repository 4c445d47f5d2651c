"""Service discovery: one Prometheus `file_sd_configs` entry per running job, in a folder that
Prometheus watches (on a cluster, a folder on the shared filesystem).

    [{"targets": ["node17:39051"], "labels": {"onepiece_job": "...", "onepiece_output": "...", ...}}]

The entry is named after the Slurm job id (or the host, outside Slurm) and a digest of the output
path, so a requeued job replaces its own entry and two jobs never share one; it is published
whole (files.py) and removed when the run closes. An entry left by a run that was killed (its
`__onepiece_pid` no longer lives on its `onepiece_host`) is harmless: Prometheus finds nothing
listening there, shows the target as down (`up == 0`), and the file may be deleted at any time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from onepiece_hpc.errors import UserError
from onepiece_hpc.observe.files import check_writable, publish_text

log = logging.getLogger(__name__)

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
PREFIX = "onepiece-"
#: the caller's names for the entry's own labels (a snapshot's field names)
OWN_LABELS = {"job_name": "onepiece_job", "output": "onepiece_output", "slurm_job": "onepiece_slurm_job",
              "host": "onepiece_host"}


def entry_name(output: str, slurm_job: str, host: str) -> str:
    """The entry's file name: `onepiece-<slurm job or host>-<digest of the output>.json`."""
    owner = re.sub(r"[^A-Za-z0-9_.-]", "_", slurm_job or host) or "local"
    digest = hashlib.sha256(output.encode("utf-8")).hexdigest()[:12]
    return f"{PREFIX}{owner}-{digest}.json"


def entry_labels(labels: dict[str, str]) -> dict[str, str]:
    """The caller's labels as the entry's: `job_name`, `output`, `slurm_job` and `host` set the
    entry's own `onepiece_*` labels; any other must be a Prometheus label name that Prometheus does
    not reserve, and is added as it is."""
    named = {OWN_LABELS.get(name, name): str(value) for name, value in labels.items()}
    problems = [f"metrics label {name!r}: not a Prometheus label name; fix: use letters, digits and "
                "underscores, not starting with a digit or with two underscores"
                for name in labels if not LABEL_NAME.fullmatch(name) or name.startswith("__")]
    if problems:
        raise UserError(problems)
    return named


def target_labels(output: str, job_name: str, slurm_job: str, host: str, pid: int,
                  extra: dict[str, str]) -> dict[str, str]:
    """The entry's labels; `extra` (from `entry_labels`) has the last word. `__onepiece_pid` is
    dropped by Prometheus after relabelling; it is there to tell a stale entry from a live one."""
    return {"onepiece_job": job_name, "onepiece_output": output, "onepiece_slurm_job": slurm_job,
            "onepiece_host": host, **extra, "__onepiece_pid": str(pid)}


class DiscoveryEntry:
    """This run's entry in `folder`: checked writable when made, written by `write`, gone after `remove`."""

    def __init__(self, folder: Path, name: str) -> None:
        why = check_writable(folder)
        if why is not None:
            raise UserError(f"metrics discovery dir {folder}: cannot write there ({why}); fix: choose a folder "
                            "you can write (metrics: discovery_dir: in the job file, or "
                            "ONEPIECE_METRICS_DISCOVERY_DIR), or leave it unset")
        self.path = folder / name
        self.written: tuple[str, dict[str, str]] | None = None

    def write(self, target: str, labels: dict[str, str]) -> None:
        """Publish the entry if it differs from the one written last."""
        if self.written == (target, labels):
            return
        text = json.dumps([{"targets": [target], "labels": labels}], indent=2) + "\n"
        publish_text(self.path, text, f".{PREFIX}")
        self.written = (target, dict(labels))

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:
            log.warning("could not remove the metrics discovery entry %s: %s", self.path, err)
