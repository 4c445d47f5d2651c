"""Scale-out figures: what rank 0 must handle at 64 to 4,096 GPUs, whether one manager and one
writer hold, what a hierarchy changes, how close adaptive comes to the lower bound, and how long
the policy takes to decide at 10^5 ranks. `onepiece simulate --scale` prints them.

Invariant: every figure is computed or simulated from named inputs (the GPU profiles in
bench/profiles/, the SDXL record in bench/results/, the costs measured by sim/control_bench.py)
and the rows say which; nothing here is typed in from a previous run.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from onepiece_hpc.runtime.policy import PolicyInput, PolicySettings, StageQueue, make_policy
from onepiece_hpc.sim.bound import makespan_bound
from onepiece_hpc.sim.compare import start_split
from onepiece_hpc.sim.control_plane import ControlCosts, ControlModel, Workload, rank0_load
from onepiece_hpc.sim.engine import Simulation
from onepiece_hpc.sim.inputs import load_profile
from onepiece_hpc.sim.scenario import Scenario, StageProfile, UnitClass, workload_shift
from onepiece_hpc.sim.workflows import SDXL_1024_H200

VIDEO_BYTES = 81 * 480 * 832 * 3   # a decoded Wan2.1 480p video of 81 frames, uint8
IMAGE_BYTES = 1024 * 1024 * 3      # an SDXL 1024 px image, uint8
NODE_GPUS = 8



@dataclass(frozen=True)
class Case:
    """A workload at steady state: its profile, steps, guidance, items a unit, bytes an item."""

    name: str
    profile: StageProfile
    steps: int
    guidance: bool
    microbatch: int
    item_bytes: int

    def unit_seconds(self) -> tuple[float, ...]:
        return tuple(s * self.microbatch for s in self.profile.item_seconds(self.steps, self.guidance))

    def workload(self) -> Workload:
        return Workload(self.name, sum(self.unit_seconds()), self.microbatch, self.item_bytes)

    def scenario(self, ranks: int, units_per_rank: int) -> Scenario:
        return Scenario(self.name, (UnitClass(ranks * units_per_rank, self.unit_seconds(), self.name),),
                        load_s=self.profile.load_seconds(), topology=self.profile.topology)


def cases(profiles: Path) -> list[Case]:
    """Wan2.1 1.3B and 14B (4 steps, no guidance: the highest commit rate) and SDXL (30 steps, guidance, batch 4)."""
    wan13, _ = load_profile(profiles / "wan13b-h200.yaml")
    wan14, _ = load_profile(profiles / "wan14b-h200.yaml")
    return [Case("wan-1.3b 4-step", wan13, 4, False, 1, VIDEO_BYTES),
            Case("wan-14b 4-step", wan14, 4, False, 1, VIDEO_BYTES),
            Case("sdxl-1024 b4", SDXL_1024_H200, 30, True, 4, IMAGE_BYTES)]


def load_rows(found: list[Case], gpus: list[int], costs: ControlCosts, heartbeat_s: float) -> list[dict]:
    """Closed form, one manager and writer on rank 0 vs. a node agent and a writer per node."""
    rows = []
    for case in found:
        work = case.workload()
        node = rank0_load(work, NODE_GPUS, costs, heartbeat_s)
        for n in gpus:
            one = rank0_load(work, n, costs, heartbeat_s)
            nodes = math.ceil(n / NODE_GPUS)
            top_msgs = nodes / heartbeat_s + nodes + 2 * one.commits_per_s / 64  # notes, commit notes, leases
            top_share = (nodes / heartbeat_s + nodes) * costs.heartbeat_s + one.commits_per_s / 64 * costs.request_s
            rows.append({"workload": case.name, "gpus": n, "commits_per_s": one.commits_per_s,
                         "messages_per_s": one.messages_per_s, "mb_per_s": one.megabytes_per_s,
                         "manager_share": one.manager_share, "writer_share": one.writer_share,
                         "rank0_share": one.busy_share, "one_rank0_holds": one.holds,
                         "max_gpus_one_manager": int(1 / ((one.manager_share) / n)),
                         "max_gpus_one_writer": int(1 / (one.writer_share / n)),
                         "hier_top_messages_per_s": top_msgs, "hier_top_share": top_share,
                         "hier_node_writer_share": node.writer_share, "hier_node_agent_share": node.manager_share,
                         "hier_holds": top_share < 1 and node.writer_share < 1 and node.manager_share < 1})
    return rows


def simulated_rows(found: list[Case], gpus: list[int], costs: ControlCosts, heartbeat_s: float,
                   units_per_rank: int = 6) -> list[dict]:
    """The same workloads simulated with rank 0's servers: none (free control), one, or a hierarchy."""
    rows = []
    for case in found:
        for n in gpus:
            scenario = case.scenario(n, units_per_rank)
            split = start_split(scenario, n)
            unit_bytes = case.workload().unit_bytes
            free = Simulation(scenario, split, None, "free").run().makespan_s
            record = {"workload": case.name, "gpus": n, "units": scenario.units, "free_s": free}
            for name, node_size in (("one", 0), ("hier", NODE_GPUS)):
                model = ControlModel(n, costs, unit_bytes, heartbeat_s=heartbeat_s, node_size=node_size)
                result = Simulation(scenario, split, None, name, control=model).run()
                record |= {f"{name}_s": result.makespan_s, f"{name}_slowdown": result.makespan_s / free,
                           **{f"{name}_{k}": v for k, v in result.control.items()}}
            rows.append(record)
    return rows


def bound_rows(profiles: Path, ranks: list[int], settings: PolicySettings, seed: int = 0) -> list[dict]:
    """Adaptive against the lower bound on the workload-shift scenario, H100 costs and the two Wan profiles."""
    shapes = [("workload-shift (Wan 1.3B, H100)", None)]
    for label, file in (("workload-shift (Wan 1.3B, H200)", "wan13b-h200.yaml"),
                        ("workload-shift (Wan 14B, H200)", "wan14b-h200.yaml")):
        shapes.append((label, load_profile(profiles / file)[0]))
    rows = []
    for label, profile in shapes:
        for n in ranks:
            scenario = workload_shift(n, profile) if profile else workload_shift(n)
            bound = makespan_bound(scenario.service_times(seed), n)
            result = Simulation(scenario, start_split(scenario, n), make_policy(settings), "adaptive",
                                interval_s=settings.interval_s, cooldown_s=settings.cooldown_s, seed=seed).run()
            rows.append({"scenario": label, "ranks": n, "bound_s": bound.seconds, "binding": bound.binding,
                         "adaptive_s": result.makespan_s, "adaptive_over_bound": result.makespan_s / bound.seconds,
                         "moves": result.moves, "idle_rank_s": result.idle_rank_s,
                         "decision_ms_max": result.decision_ms_max})
    return rows


def decision_rows(settings: PolicySettings, ranks: int = 100_000, runs: int = 3_000_000) -> list[dict]:
    """The policy's decision time at `ranks` ranks: in a simulation (the workload shift, 2 units a
    rank: every tick's decision timed) and alone on a view whose queues have `runs` distinct costs."""
    scenario = workload_shift(ranks, items_per_rank=2)
    result = Simulation(scenario, start_split(scenario, ranks), make_policy(settings), "adaptive",
                        interval_s=settings.interval_s, cooldown_s=settings.cooldown_s).run()
    rows = [{"case": f"simulated, {ranks} ranks, {scenario.units} units", "decisions": result.decisions,
             "decision_ms_mean": result.decision_ms_mean, "decision_ms_max": result.decision_ms_max}]
    rng = random.Random(0)
    queues = tuple(StageQueue(tuple((1, base * (1 + rng.random())) for _ in range(runs))) for base in (0.03, 10.0, 2.0))
    view = PolicyInput(0.0, (1, ranks - 1000, 999), (1, ranks - 1000, 999), queues, (5.7, 1.4, 0.13), (True,) * 3)
    policy = make_policy(settings)
    began = time.perf_counter()
    policy(view)
    took_ms = (time.perf_counter() - began) * 1000
    rows.append({"case": f"policy alone, {ranks} ranks, every unit its own cost ({runs} runs a stage)",
                 "decisions": 1, "decision_ms_mean": took_ms, "decision_ms_max": took_ms})
    return rows
