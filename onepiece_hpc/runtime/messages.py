"""Control-plane messages between the Node Manager and the stage ranks: typed, encoded as JSON.

Nothing that crosses a rank boundary is unpickled: every message is a small JSON object with a
"type" field, decoded back into its dataclass with its fields checked.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, fields


class RankState(str, enum.Enum):
    """A stage rank's life: loading its components, serving units, draining its rings, done."""

    LOADING = "loading"
    SERVING = "serving"
    DRAINING = "draining"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class WorkRequest:
    """An encode rank has room for one more unit."""

    rank: int


@dataclass(frozen=True)
class WorkGrant:
    """The Node Manager's answer: a unit (-1 when no work is left) with everything its first stage
    needs, so that no stage rank holds the plan: items [start, start + len(seeds)), their params
    (an index into the plan summary's) and texts."""

    unit: int
    start: int = 0
    params: int = 0
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Heartbeat:
    """Telemetry a stage rank sends at a fixed interval (and proof that it is alive)."""

    rank: int
    state: str
    stage: str
    unit: int          # the unit in hand, -1 when none
    units_done: int
    busy_s: float      # seconds spent running the stage
    wait_s: float      # seconds spent waiting for input or for credits
    send_s: float      # seconds spent moving data into rings
    elapsed_s: float   # seconds since the rank started serving
    load_s: float      # seconds spent loading components
    backlog: int       # messages this rank has queued in the next stage's rings
    memory_mb: float   # resident memory (on GPUs: the peak GPU memory torch has allocated)
    stage_busy_s: list[float]    # busy seconds in each stage, in the pipeline's order
    stage_units: list[int]       # units done in each stage
    stage_time_s: list[float]    # seconds spent serving each stage
    memory_limit_mb: float = 0.0  # the most GPU memory this rank may take (0: no limit known, e.g. CPU)
    gpu: int = -1                 # the node-local GPU this rank runs on (-1: none)
    weights_s: float = 0.0        # seconds moving its stage's weights in and out between phases
    links: str = ""               # the fabric of each of its channels (Channels.links); first heartbeat only


@dataclass(frozen=True)
class Failure:
    """A stage rank raised: what, where, on which unit; `peer` names a rank blamed by the error."""

    rank: int
    host: str
    stage: str
    unit: int
    error: str
    peer: int = -1


@dataclass(frozen=True)
class UnitFailed:
    """A stage rank could not run one unit and goes on serving: the Node Manager records the unit's
    items as failed, or stops the job when the stage itself is failing (runtime/failures.py)."""

    rank: int
    host: str
    stage: str
    unit: int
    error: str


@dataclass(frozen=True)
class Routes:
    """Which ranks take each stage's input now, by stage name (version grows with every change)."""

    version: int
    ranks: dict[str, list[int]]

    def of(self, stage: str) -> list[int]:
        return self.ranks[stage]


@dataclass(frozen=True)
class MoveOrder:
    """Node Manager -> rank: drain your stage, then serve `to`."""

    to: str
    reason: str


@dataclass(frozen=True)
class MoveDone:
    """Rank -> Node Manager: drained, loaded, ready to serve `to`."""

    rank: int
    source: str
    to: str
    drain_s: float
    load_s: float


@dataclass(frozen=True)
class PhaseTurn:
    """Node Manager -> rank of a phased run: the GPU is yours for `units` units (a first stage asks
    for up to that many; a later one runs that many from its ring); 0: load your stage (and warm
    it up) and give the GPU back."""

    units: int


@dataclass(frozen=True)
class TurnDone:
    """Rank -> Node Manager: its turn is over and its weights are back in host memory; `passed`
    units went on to the next stage, `failed` could not be run, moving the weights in and out
    took `weights_s`."""

    rank: int
    passed: int
    failed: int
    weights_s: float


@dataclass(frozen=True)
class SetupReport:
    """Stage rank -> Node Manager, once, before serving: set-up went well ("ok") or not
    ("user-error", "error", with the error), and what must agree across ranks (JSON)."""

    rank: int
    host: str
    outcome: str
    error: str
    agreement: str


@dataclass(frozen=True)
class SetupVerdict:
    """Node Manager -> every stage rank: serve this plan (`summary`, JSON), or stop (`summary` "")."""

    summary: str
    reason: str = ""
    exit_code: int = 0  # with a stop: the job's exit code (2 for user errors), every rank exits with it


@dataclass(frozen=True)
class Shutdown:
    """Node Manager -> every rank: every unit is committed (or the run drains); close and exit."""

    reason: str


@dataclass(frozen=True)
class Finished:
    """A stage rank drained everything and closed its outbound channels."""

    rank: int
    units_done: int


MESSAGES = {cls.__name__: cls for cls in (WorkRequest, WorkGrant, Heartbeat, Failure, Finished, Routes, MoveOrder,
                                          MoveDone, Shutdown, SetupReport, SetupVerdict, UnitFailed, PhaseTurn,
                                          TurnDone)}
_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "list[int]": lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
    "list[float]": lambda v: isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                        for x in v),
    "dict[str, list[int]]": lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(x, list) and all(isinstance(r, int) and not isinstance(r, bool) for r in x)
        for k, x in v.items()),
}
MAX_BYTES = 16 * 2**20  # a grant carries its unit's prompts: up to 1,024 of them


class BadMessage(ValueError):
    """A control message that is not one of ours (corrupt, truncated, or from elsewhere)."""


def encode(message) -> bytes:
    return json.dumps({"type": type(message).__name__, **asdict(message)}, separators=(",", ":")).encode()


def decode(raw: bytes):
    """The typed message in `raw`; BadMessage if it is anything else."""
    if len(raw) > MAX_BYTES:
        raise BadMessage(f"control message of {len(raw)} bytes is larger than {MAX_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadMessage(f"control message is not JSON: {err}") from None
    cls = MESSAGES.get(data.pop("type", None)) if isinstance(data, dict) else None
    if cls is None:
        raise BadMessage(f"unknown control message: {str(raw[:80])}")
    try:
        message = cls(**data)
    except TypeError as err:
        raise BadMessage(f"{cls.__name__}: {err}") from None
    for declared in fields(cls):
        value = getattr(message, declared.name)
        if not _CHECKS[declared.type](value):
            raise BadMessage(f"{cls.__name__}.{declared.name} should be {declared.type}, got {value!r}")
    return message
