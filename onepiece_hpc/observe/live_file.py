"""`<output>.d/live.json`: the latest snapshot beside the output, for readers with no endpoint.

Rank 0 rewrites it whole (files.py) every few seconds while the run goes on and once more at the
end with phase "finished". It names the endpoint, the host and the pid that wrote it, so
`onepiece status --watch` can read fresher snapshots over HTTP and can tell a run that ended
without a final word (killed) from one that is only slow. It is a view, not a record: no fsync,
and a run that starts again simply replaces it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from onepiece_hpc.errors import UserError
from onepiece_hpc.observe.files import publish_text
from onepiece_hpc.observe.live import LiveSnapshot

LIVE_NAME = "live.json"
FORMAT = 1


def live_path(output: Path) -> Path:
    from onepiece_hpc.store.schema import data_folder

    return Path(data_folder(output)) / LIVE_NAME


@dataclass(frozen=True)
class LiveRecord:
    snapshot: LiveSnapshot
    endpoint: str  # "http://host:port", "" when the run serves none
    host: str      # where rank 0 runs
    pid: int       # rank 0's process

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "endpoint": self.endpoint, "host": self.host, "pid": self.pid,
                           "snapshot": json.loads(self.snapshot.to_json())}, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> LiveRecord:
        data = json.loads(text)
        return cls(LiveSnapshot.from_json(json.dumps(data["snapshot"])), str(data.get("endpoint", "")),
                   str(data.get("host", "")), int(data.get("pid", -1)))


def write_live(path: Path, record: LiveRecord) -> None:
    publish_text(path, record.to_json(), ".live.")


def read_live(output: Path) -> LiveRecord | None:
    """The live record beside `output`, or None when there is none (never run staged, or cleaned)."""
    path = live_path(output)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror or err}); fix: check its permissions") from None
    try:
        return LiveRecord.from_json(text)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a live snapshot ({err}); fix: delete it (a running job writes it again "
                        "within seconds)") from None
