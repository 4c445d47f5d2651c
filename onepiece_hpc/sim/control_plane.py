"""The control plane's load: what rank 0 must handle per unit and per second, in closed form and
as servers the simulator queues on (one Node Manager, or a hierarchy of node agents).

Invariant: the messages counted here are the runtime's own (runtime/worker.py, runtime/manager/,
messages.py): per unit, a WorkRequest in and a WorkGrant out at the manager that dispatches it,
and one commit (the decoded outputs, received from a ring and written); per rank and heartbeat
interval, one Heartbeat in; per move, a Routes broadcast to every rank plus a MoveOrder out and a
MoveDone in. A server is FIFO and work-conserving: a request that arrives at `now` is done at
max(now, busy until) + its cost, the cost stretched by the server's background load (heartbeats
and, in a hierarchy, the notes that reach the top). A server whose background load alone reaches
one core is saturated: nothing it serves ever finishes (`Server.saturated`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MESSAGES_PER_UNIT = 2   # WorkRequest in, WorkGrant out
MESSAGES_PER_MOVE = 2   # MoveOrder out, MoveDone in (plus a Routes broadcast per decision that moves)


@dataclass(frozen=True)
class ControlCosts:
    """Seconds of rank 0's one thread per event, measured on some CPU (sim/control_bench.py)."""

    request_s: float       # a WorkRequest received and a WorkGrant built, encoded and sent
    heartbeat_s: float     # a Heartbeat received, decoded and recorded
    commit_s: float        # a commit's fixed part (ring message, meta, digest and write of a tiny item, sync share)
    commit_byte_s: float   # a commit's part per output byte (digest, write, fsync)
    source: str = ""       # where the figures come from

    def commit_cost(self, unit_bytes: int) -> float:
        return self.commit_s + unit_bytes * self.commit_byte_s


@dataclass(frozen=True)
class Workload:
    """A steady state: GPU-seconds one unit needs over all stages, items a unit, bytes an item."""

    name: str
    gpu_s_per_unit: float
    items_per_unit: int
    item_bytes: int

    @property
    def unit_bytes(self) -> int:
        return self.items_per_unit * self.item_bytes


@dataclass(frozen=True)
class Rank0Load:
    """What one manager-and-writer on rank 0 must handle at `gpus` GPUs (every GPU busy)."""

    workload: str
    gpus: int
    commits_per_s: float
    messages_per_s: float     # control messages in and out: requests, grants, heartbeats
    heartbeats_per_s: float
    megabytes_per_s: float    # output bytes rank 0 receives and writes
    manager_share: float      # of one core: the control messages
    writer_share: float       # of one core: the commits
    busy_share: float         # both: rank 0 runs them on one thread
    max_gpus: int             # where busy_share reaches one core

    @property
    def holds(self) -> bool:
        return self.busy_share < 1.0


def rank0_load(work: Workload, gpus: int, costs: ControlCosts, heartbeat_s: float = 1.0) -> Rank0Load:
    """Closed form: units/s = gpus / GPU-seconds a unit (a perfect split; any real run is slower,
    so this is the most rank 0 will see on average)."""
    units = gpus / work.gpu_s_per_unit
    beats = gpus / heartbeat_s
    manager = units * costs.request_s + beats * costs.heartbeat_s
    writer = units * costs.commit_cost(work.unit_bytes)
    per_gpu = (manager + writer) / gpus
    return Rank0Load(workload=work.name, gpus=gpus, commits_per_s=units, messages_per_s=MESSAGES_PER_UNIT * units + beats,
                     heartbeats_per_s=beats, megabytes_per_s=units * work.unit_bytes / 1e6, manager_share=manager,
                     writer_share=writer, busy_share=manager + writer, max_gpus=int(1.0 / per_gpu))


@dataclass
class Server:
    """One thread that serves requests in arrival order; `background` is the share of its time
    taken by periodic messages (heartbeats), which stretches every other request."""

    name: str
    background: float = 0.0
    busy_until: float = 0.0
    busy_s: float = 0.0
    served: int = 0
    messages: int = 0
    commits: int = 0

    @property
    def saturated(self) -> bool:
        return self.background >= 0.999

    def serve(self, now: float, cost: float, messages: int = 0, commits: int = 0) -> float:
        """When a request of `cost` seconds that arrives at `now` is done (inf when saturated)."""
        self.served += 1
        self.messages += messages
        self.commits += commits
        if self.saturated:
            return math.inf
        took = cost / (1.0 - self.background)
        self.busy_until = max(now, self.busy_until) + took
        self.busy_s += cost
        return self.busy_until


@dataclass
class ControlModel:
    """Which server grants each rank's units and which commits its outputs.

    node_size 0: one Node Manager on rank 0 grants and commits everything (today's runtime).
    node_size n: a node agent per n ranks grants units from blocks of `lease` units it leases
    from rank 0 and aggregates its ranks' heartbeats into one note a heartbeat interval; a writer
    per node commits its ranks' outputs into its own data files and sends rank 0 one note a sync
    interval. Rank 0 then sees nodes, not ranks (the design proposed in docs/simulate-reference.md,
    "Scale-out").
    """

    ranks: int
    costs: ControlCosts
    unit_bytes: int
    heartbeat_s: float = 1.0
    node_size: int = 0
    lease: int = 64
    sync_s: float = 1.0
    top: Server = field(init=False)
    agents: list[Server] = field(init=False)
    writers: list[Server] = field(init=False)
    _granted: list[int] = field(init=False)

    def __post_init__(self) -> None:
        c = self.costs
        if not self.node_size:
            self.top = Server("rank 0", background=self.ranks / self.heartbeat_s * c.heartbeat_s)
            self.agents, self.writers = [self.top], [self.top]
            self._granted = [0]
            return
        nodes = math.ceil(self.ranks / self.node_size)
        notes = nodes / self.heartbeat_s + nodes / self.sync_s  # aggregated heartbeats, commit notes
        self.top = Server("rank 0", background=notes * c.heartbeat_s)
        self.agents = [Server(f"agent {n}", background=self.node_size / self.heartbeat_s * c.heartbeat_s)
                       for n in range(nodes)]
        self.writers = [Server(f"writer {n}") for n in range(nodes)]
        self._granted = [0] * nodes

    def _node(self, rank: int) -> int:
        """Stage ranks are dealt over the nodes round-robin, so every node holds every stage in
        proportion (the simulator numbers ranks stage by stage)."""
        return rank % len(self.agents) if self.node_size else 0

    def grant(self, now: float, rank: int) -> float:
        """When rank `rank`'s request for a unit, made at `now`, is granted."""
        node = self._node(rank)
        if self.node_size and self._granted[node] % self.lease == 0:  # the agent leases the next block
            now = self.top.serve(now, self.costs.request_s, messages=MESSAGES_PER_UNIT)
        self._granted[node] += 1
        return self.agents[node].serve(now, self.costs.request_s, messages=MESSAGES_PER_UNIT)

    def commit(self, now: float, rank: int) -> float:
        """When the unit that rank `rank` finished decoding at `now` is committed."""
        return self.writers[self._node(rank)].serve(now, self.costs.commit_cost(self.unit_bytes), commits=1)

    def top_rates(self, seconds: float) -> dict[str, float]:
        """Rank 0's load over a run of `seconds`: commits/s, messages/s (heartbeats included), busy share."""
        beats = (self.ranks if not self.node_size else len(self.agents)) / self.heartbeat_s
        notes = len(self.writers) / self.sync_s if self.node_size else 0.0
        seconds = seconds if seconds and math.isfinite(seconds) else math.inf
        busiest = max((s.busy_s / seconds + s.background for s in {id(x): x for x in
                       [self.top, *self.agents, *self.writers]}.values()), default=0.0)
        return {"commits_per_s": self.top.commits / seconds, "messages_per_s": self.top.messages / seconds + beats + notes,
                "rank0_busy_share": self.top.busy_s / seconds + self.top.background, "busiest_share": busiest}
