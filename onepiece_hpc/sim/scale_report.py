"""The text (or JSON lines) `onepiece simulate --scale` prints: measure rank 0, then each table.

Invariant: the capacity figures come from this run's own measurement on this machine
(sim/control_bench.py), and every table names its inputs, so the file a run writes stands alone.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from onepiece_hpc.runtime.policy import PolicySettings
from onepiece_hpc.sim.control_bench import measure_costs
from onepiece_hpc.sim.scale import NODE_GPUS, bound_rows, cases, decision_rows, load_rows, simulated_rows


def _yes(flag: bool) -> str:
    return "holds" if flag else "NO"


def scale_report(profiles: Path, gpus: list[int], settings: PolicySettings, heartbeat_s: float,
                 folder: Path | None, quick: bool, as_json: bool) -> Iterator[str]:
    with tempfile.TemporaryDirectory(dir=folder, prefix=".scale-") as scratch:
        costs = measure_costs(Path(scratch), quick=quick)
    found = cases(profiles)
    tables = {"costs": [costs.__dict__], "load": load_rows(found, gpus, costs, heartbeat_s),
              "simulated": simulated_rows(found, gpus, costs, heartbeat_s)}
    tables["bound"] = bound_rows(profiles, gpus, settings)
    tables["decision"] = decision_rows(settings, ranks=10_000 if quick else 100_000, runs=30_000 if quick else 3_000_000)
    if as_json:
        for name, rows in tables.items():
            for row in rows:
                yield json.dumps({"table": name, **row})
        return
    yield "rank 0's measured costs on this machine (the best of 3 rounds; " + costs.source + "):"
    yield (f"  work request + grant {costs.request_s * 1e6:.0f} us   heartbeat {costs.heartbeat_s * 1e6:.0f} us   "
           f"commit {costs.commit_s * 1e3:.2f} ms + {costs.commit_byte_s * 1e9:.2f} ns/byte "
           f"({1 / costs.commit_byte_s / 1e6 if costs.commit_byte_s else float('inf'):.0f} MB/s)")
    yield ""
    yield (f"closed form, every GPU busy, heartbeats every {heartbeat_s:g} s; share = of one core of rank 0; "
           f"hierarchy = a node agent and a writer per {NODE_GPUS} GPUs:")
    yield (f"  {'workload':<16} {'GPUs':>5} {'commits/s':>9} {'msgs/s':>8} {'MB/s':>8} {'manager':>8} {'writer':>8} "
           f"{'one rank 0':>10} {'max GPUs mgr/writer':>19} | {'top msgs/s':>10} {'top':>6} {'node writer':>11} {'hier':>5}")
    for r in tables["load"]:
        yield (f"  {r['workload']:<16} {r['gpus']:>5} {r['commits_per_s']:>9.1f} {r['messages_per_s']:>8.0f} "
               f"{r['mb_per_s']:>8.0f} {r['manager_share']:>8.3f} {r['writer_share']:>8.2f} "
               f"{_yes(r['one_rank0_holds']):>10} {r['max_gpus_one_manager']:>10}/{r['max_gpus_one_writer']:<8} | "
               f"{r['hier_top_messages_per_s']:>10.0f} {r['hier_top_share']:>6.3f} {r['hier_node_writer_share']:>11.2f} "
               f"{_yes(r['hier_holds']):>5}")
    yield ""
    yield ("simulated with those costs (static balanced split, 6 units a rank): makespan over free control, "
           "and what rank 0 handled:")
    yield (f"  {'workload':<16} {'GPUs':>5} {'free s':>8} | {'one: s':>8} {'x':>6} {'commits/s':>9} {'msgs/s':>7} "
           f"{'busy':>5} | {'hier: s':>8} {'x':>6} {'top msgs/s':>10} {'top busy':>8} {'busiest':>7}")
    for r in tables["simulated"]:
        yield (f"  {r['workload']:<16} {r['gpus']:>5} {r['free_s']:>8.1f} | {r['one_s']:>8.1f} {r['one_slowdown']:>6.2f} "
               f"{r['one_commits_per_s']:>9.1f} {r['one_messages_per_s']:>7.0f} {r['one_rank0_busy_share']:>5.2f} | "
               f"{r['hier_s']:>8.1f} {r['hier_slowdown']:>6.2f} {r['hier_messages_per_s']:>10.0f} "
               f"{r['hier_rank0_busy_share']:>8.3f} {r['hier_busiest_share']:>7.2f}")
    yield ""
    yield (f"adaptive against the lower bound (interval {settings.interval_s:g} s, cooldown {settings.cooldown_s:g} s, "
           "30 items a rank):")
    yield f"  {'scenario':<34} {'ranks':>5} {'bound s':>8} {'adaptive s':>10} {'ratio':>6} {'moves':>6} {'dec ms max':>10}"
    for r in tables["bound"]:
        yield (f"  {r['scenario']:<34} {r['ranks']:>5} {r['bound_s']:>8.1f} {r['adaptive_s']:>10.1f} "
               f"{r['adaptive_over_bound']:>6.3f} {r['moves']:>6} {r['decision_ms_max']:>10.2f}")
    yield ""
    yield "the policy's decision time:"
    for r in tables["decision"]:
        yield (f"  {r['case']:<72} {r['decisions']:>4} decisions   {r['decision_ms_mean']:8.2f} ms mean   "
               f"{r['decision_ms_max']:8.2f} ms max")
