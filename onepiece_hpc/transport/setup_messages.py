"""Typed channel set-up messages, carried as plain JSON bytes over MPI point-to-point."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum

from onepiece_hpc.transport.errors import SetupError

MAX_SETUP_BYTES = 16 * 1024


class Step(str, Enum):
    """Set-up handshake, producer P and consumer C:
    P->C OFFER, C->P ACCEPT (or REFUSE), P->C ATTACHED, C->P READY."""

    OFFER = "offer"
    ACCEPT = "accept"
    ATTACHED = "attached"
    READY = "ready"
    REFUSE = "refuse"


@dataclass(frozen=True)
class SetupMessage:
    """One handshake message; unused fields keep their defaults."""

    step: Step
    channel_id: int
    host: str
    pid: int
    fabric: str = ""
    fabrics: tuple[str, ...] = ()
    slots: int = 0
    slot_bytes: int = 0
    integrity: str = ""
    region: dict[str, object] = field(default_factory=dict)
    reason: str = ""

    def encode(self) -> bytes:
        record = asdict(self)
        record["step"] = self.step.value
        record["fabrics"] = list(self.fabrics)
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes, sender: int) -> SetupMessage:
        """Parse and type-check a message from rank `sender`; SetupError names it otherwise."""
        def bad(why: str) -> SetupError:
            return SetupError(f"set-up message from rank {sender} is invalid ({why}); are all "
                              "ranks running the same onepiece version?")

        if len(raw) > MAX_SETUP_BYTES:
            raise bad(f"{len(raw)} bytes, limit {MAX_SETUP_BYTES}")
        try:
            record = json.loads(raw.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise bad(f"not JSON: {err}") from err
        if not isinstance(record, dict) or set(record) != set(_TYPES):
            raise bad("wrong fields")
        for name, kind in _TYPES.items():
            value = record[name]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise bad(f"field {name} is {type(value).__name__}, expected {kind.__name__}")
        if not all(isinstance(f, str) for f in record["fabrics"]):
            raise bad("fabrics must be strings")
        try:
            step = Step(record["step"])
        except ValueError as err:
            raise bad(f"unknown step {record['step']!r}") from err
        return cls(step, record["channel_id"], record["host"], record["pid"], record["fabric"],
                   tuple(record["fabrics"]), record["slots"], record["slot_bytes"],
                   record["integrity"], record["region"], record["reason"])


_TYPES: dict[str, type] = {
    "step": str, "channel_id": int, "host": str, "pid": int, "fabric": str, "fabrics": list,
    "slots": int, "slot_bytes": int, "integrity": str, "region": dict, "reason": str,
}
