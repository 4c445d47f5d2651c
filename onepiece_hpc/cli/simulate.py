"""`onepiece simulate`: static-best, adaptive and oracle on a scenario of any topology, at any
rank count, against the lower bound on its makespan; `--scale`: the scale-out figures (sim/scale.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from onepiece_hpc.errors import UserError
from onepiece_hpc.sim.workflows import SCENARIOS

PROFILES = Path("bench/profiles")


def _line(r) -> str:
    util = " ".join(f"{k} {v:.0%}" for k, v in r.utilisation.items())
    return (f"  {r.policy:<12} makespan {r.makespan_s:9.1f} s   {r.throughput:8.2f} units/s   efficiency "
            f"{r.efficiency:4.0%}   util {util}   idle {r.idle_rank_s:12.0f} rank-s   moves {r.moves:5d}   "
            f"decision {r.decision_ms_mean:.3f} ms mean, {r.decision_ms_max:.3f} ms max   start {r.split_start}")


def _routes(r) -> str:
    return "  " + " " * 14 + "moved: " + ", ".join(f"{route} x{n}" for route, n in r.routes_moved().items())


@click.command("simulate")
@click.option("--scenario", type=click.Choice(list(SCENARIOS)), default=None,
              help="A built-in scenario: workload-shift (Wan2.1-T2V-1.3B costs on an H100, or a --profile's "
                   "stages), keyframe-video (five stages: a keyframe image, then a video from it; H200 costs).")
@click.option("--profile", "profile_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="Stage costs: a YAML profile (any stages), or an output .h5 with telemetry.")
@click.option("--job", "job_path", type=click.Path(path_type=Path), default=None,
              help="Simulate this job file's units (with --profile, or the built-in Wan profile).")
@click.option("-r", "--ranks", "ranks_list", type=click.IntRange(4), multiple=True, default=(64,),
              show_default=True, help="Stage ranks; repeat for several sizes.")
@click.option("--items-per-rank", type=click.IntRange(1), default=30, show_default=True,
              help="With --scenario: the batch's size, in items a rank.")
@click.option("--interval", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Seconds between policy decisions.")
@click.option("--cooldown", type=click.FloatRange(0.0), default=30.0, show_default=True,
              help="Seconds a moved rank stays put (adaptive).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the service-time noise.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per policy and rank count.")
@click.option("--scale", is_flag=True,
              help="Scale-out figures at 64, 512, 4,096 GPUs (or the -r given): rank 0's load, measured capacity, "
                   "a hierarchy, adaptive vs. the bound, decision time at 10^5 ranks.")
@click.option("--profiles", "profiles", type=click.Path(path_type=Path, file_okay=False), default=None,
              help=f"With --scale: where the GPU profiles are (default: {PROFILES}).")
@click.option("--heartbeat", type=click.FloatRange(0.01), default=1.0, show_default=True,
              help="With --scale: seconds between a rank's heartbeats (the runtime's default).")
@click.option("--dir", "folder", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="With --scale: where the commit benchmark writes (default: a temporary folder).")
@click.option("--quick", is_flag=True, help="With --scale: smaller benchmarks and no 10^5-rank simulation.")
def simulate_cmd(scenario, profile_path, job_path, ranks_list, items_per_rank, interval, cooldown, seed, as_json,
                 scale, profiles, heartbeat, folder, quick) -> None:
    """Run the runtime's own policy and mover choice in a discrete-event simulation of the staged
    pipeline, over any chain of stages.

    Prints makespan, throughput, the pipeline's efficiency (busy share of all rank-seconds),
    per-stage utilisation, idle rank-seconds, moves (by route) and the policy's decision time
    for static-best (the best fixed split, searched), adaptive and oracle, and the lower bound no
    schedule can beat (sim/bound.py).
    """
    from onepiece_hpc.runtime.policy import PolicySettings

    settings = PolicySettings(name="adaptive", interval_s=interval, cooldown_s=cooldown)
    if scale:
        from onepiece_hpc.sim.scale_report import scale_report

        profiles = profiles or PROFILES
        if not profiles.is_dir():
            raise UserError(f"--profiles {profiles}: no such folder; give the folder of the GPU profiles "
                            f"(the repository's {PROFILES})")
        ranks = list(ranks_list) if ranks_list != (64,) else [64, 512, 4096]
        for line in scale_report(profiles, ranks, settings, heartbeat, folder, quick, as_json):
            click.echo(line)
        return
    from onepiece_hpc.sim.bound import makespan_bound
    from onepiece_hpc.sim.compare import compare
    from onepiece_hpc.sim.inputs import job_scenario, load_profile
    from onepiece_hpc.sim.scenario import WAN_1_3B_H100

    if (scenario is None) == (job_path is None):
        raise UserError(f"say what to simulate: --scenario {' or '.join(SCENARIOS)}, or --job JOB.yaml "
                        "[--profile FILE]")
    profile, load_s = load_profile(profile_path) if profile_path else (None, None)
    for ranks in ranks_list:
        case = (SCENARIOS[scenario](ranks, items_per_rank, profile) if scenario
                else job_scenario(job_path, profile or WAN_1_3B_H100, load_s))
        if ranks < len(case.topology):
            raise UserError(f"-r {ranks}: {case.name} has {len(case.topology)} stages ({case.topology.describe()}); "
                            f"give at least {len(case.topology)} ranks")
        results = compare(case, ranks, settings, seed=seed)
        bound = makespan_bound(case.service_times(seed), ranks)
        static_s, adaptive_s, oracle_s = (r.makespan_s for r in results)
        captured = (static_s - adaptive_s) / (static_s - oracle_s) if static_s != oracle_s else float("nan")
        if as_json:
            for r in results:
                record = {k: v for k, v in asdict(r).items() if k != "move_log"}
                record.update(scenario=case.name, stages=list(case.stages), throughput=r.throughput,
                              efficiency=r.efficiency, routes_moved=r.routes_moved(),
                              adaptive_over_oracle=adaptive_s / oracle_s, gain_captured=captured,
                              bound_s=bound.seconds, bound_binding=bound.binding,
                              adaptive_over_bound=adaptive_s / bound.seconds, over_bound=r.makespan_s / bound.seconds)
                click.echo(json.dumps(record))
            continue
        click.echo(f"{case.name}: {ranks} stage ranks, {case.units} units, {case.topology.describe()}")
        for r in results:
            click.echo(_line(r))
            if r.moves:
                click.echo(_routes(r))
        click.echo(f"  lower bound  makespan {bound.seconds:9.1f} s   ({bound.binding}: no schedule on {ranks} ranks "
                   "finishes sooner)")
        click.echo(f"  adaptive/oracle {adaptive_s / oracle_s:.3f}   gain captured (static-adaptive)/(static-oracle) "
                   f"{captured:.2f}   adaptive/bound {adaptive_s / bound.seconds:.3f}")
