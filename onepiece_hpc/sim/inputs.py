"""Where a simulation's numbers come from: a profile file, an output's telemetry, a job file.

A profile names a pipeline's stages with their costs, for any topology:

    host_gbps: 25.0
    stages:
      - {name: encode, seconds: 0.047, weights_gib: 11.4}
      - {name: denoise, seconds: 0.625, per: forward, weights_gib: 2.8}
      - {name: decode, seconds: 2.36, weights_gib: 0.25}

(`per: forward`: seconds per denoiser forward, an item's forwards being its steps, twice with
guidance; otherwise per item.) The classic three-stage keys (encode_s, forward_s, decode_s,
weights_gib [3], host_gbps) are read too: bench/profiles/ holds measured ones.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import yaml

from onepiece_hpc.errors import UserError
from onepiece_hpc.sim.scenario import Scenario, StageCost, StageProfile, UnitClass, classic_profile
from onepiece_hpc.store.reader import open_output
from onepiece_hpc.store.safe_read import read_dataset
from onepiece_hpc.store.telemetry import latest_run
from onepiece_hpc.topology import STAGE_NAME, Work

CLASSIC_KEYS = ("encode_s", "forward_s", "decode_s", "weights_gib", "host_gbps")
STAGE_KEYS = ("name", "seconds", "weights_gib", "per")
PER = {"item": Work.ITEMS, "forward": Work.FORWARDS}


def load_profile(path: Path) -> tuple[StageProfile, tuple[float, ...] | None]:
    """A YAML profile (see the module's docstring), or an output file whose telemetry gives
    measured service and load times. Returns the profile and, for outputs, the measured load
    seconds per stage."""
    if h5py.is_hdf5(path):
        return _from_telemetry(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot read the profile ({err})") from None
    if isinstance(data, dict) and "stages" in data:
        return _stages_profile(path, data), None
    if not isinstance(data, dict) or set(data) - set(CLASSIC_KEYS) or not {"encode_s", "forward_s", "decode_s",
                                                                          "weights_gib"} <= set(data):
        raise UserError(f"{path}: a profile is a YAML mapping with `stages:` (a list of name, seconds, weights_gib "
                        f"and optionally per: forward) and optionally host_gbps; or with encode_s, forward_s, "
                        f"decode_s, weights_gib (three numbers: encoder, denoiser, VAE) and optionally host_gbps; "
                        f"got {data!r:.200}")
    try:
        weights = tuple(float(w) for w in data["weights_gib"])
        times = (float(data["encode_s"]), float(data["forward_s"]), float(data["decode_s"]))
        host = float(data.get("host_gbps", 2.0))
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: profile values must be numbers ({err})") from None
    if len(weights) != 3 or min(*times, host) <= 0:
        raise UserError(f"{path}: times and host_gbps must be positive and weights_gib must list 3 sizes")
    return classic_profile(*times, weights, host), None


def _stages_profile(path: Path, data: dict) -> StageProfile:
    """A `stages:` profile, every problem named at once."""
    problems = [f"unknown key {key!r} (keys: stages, host_gbps)" for key in data if key not in ("stages", "host_gbps")]
    rows = data["stages"]
    if not isinstance(rows, list) or not rows:
        raise UserError(f"{path}: `stages` must be a list of stages, each a mapping with name, seconds, weights_gib")
    costs = []
    for i, row in enumerate(rows):
        where = f"stages[{i}]"
        if not isinstance(row, dict) or not {"name", "seconds", "weights_gib"} <= set(row) or set(row) - set(STAGE_KEYS):
            problems.append(f"{where}: a mapping with name, seconds, weights_gib and optionally per (item or "
                            f"forward); got {row!r:.120}")
            continue
        name, per = str(row["name"]), row.get("per", "item")
        if not re.fullmatch(STAGE_NAME, name):
            problems.append(f"{where}.name {name!r}: use lowercase letters, digits and '_', starting with a letter")
        if per not in PER:
            problems.append(f"{where}.per {per!r}: choose item or forward")
        try:
            seconds, weights = float(row["seconds"]), float(row["weights_gib"])
        except (TypeError, ValueError):
            problems.append(f"{where}: seconds and weights_gib must be numbers")
            continue
        if seconds <= 0 or weights < 0:
            problems.append(f"{where}: seconds must be positive and weights_gib not negative")
        costs.append(StageCost(name, seconds, weights, PER.get(per, Work.ITEMS)))
    names = [c.name for c in costs]
    if len(set(names)) != len(names):
        problems.append(f"stage names must differ: {names}")
    try:
        host = float(data.get("host_gbps", 2.0))
        if host <= 0:
            problems.append("host_gbps must be positive")
    except (TypeError, ValueError):
        problems.append("host_gbps must be a number")
    if problems:
        raise UserError(problems, headline=f"{path}: {len(problems)} problem(s) in the profile:")
    return StageProfile(tuple(costs), host)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_telemetry(path: Path) -> tuple[StageProfile, tuple[float, ...]]:
    """Seconds per item (or per forward) of each stage of the output's last staged run, from its
    telemetry; what each stage's work grows with comes from the output's model."""
    from onepiece_hpc.models.topologies import topology_of

    with open_output(path) as view:
        record = latest_run(view)
        service = {_text(row["stage"]): float(row["mean_service_s"]) for row in record.stages}
        ranks = record.ranks
        items = np.concatenate([read_dataset(file, "items", seg.path)[["steps", "guidance"]]
                                for seg, file in view.each() if file is not None])
        microbatch = int(view.attrs["microbatch"])
        model = _text(view.attrs.get("model_ref", ""))
    topology = topology_of(model)
    if list(service) != list(topology.names):
        raise UserError(f"{path}: its telemetry has stages {', '.join(service)}, but its model {model!r} has "
                        f"{topology.describe()} (has the model folder moved?); give a profile YAML with `stages:` "
                        "instead")
    forwards = float(np.mean(items["steps"] * np.where(items["guidance"] > 1, 2, 1))) * microbatch
    costs, load = [], []
    for stage in topology.stages:
        per_unit = forwards * stage.share_of_steps if stage.work is Work.FORWARDS else microbatch
        costs.append(StageCost(stage.name, service[stage.name] / per_unit, 0.0, stage.work, stage.share_of_steps))
        mine = ranks["load_s"][ranks["stage"] == stage.name.encode()]
        load.append(float(np.mean(mine)) if len(mine) else 0.0)
    return StageProfile(tuple(costs)), tuple(load)


def job_scenario(job_path: Path, profile: StageProfile, load_s: tuple[float, ...] | None) -> Scenario:
    """The units of a job file, grouped as the runtime groups them, with the profile's costs."""
    from onepiece_hpc.jobfile.job import GenParams
    from onepiece_hpc.jobfile.loader import load_job
    from onepiece_hpc.planning.plan import plan_job

    problems: list[str] = []
    job = load_job(job_path, problems)
    plan = plan_job(job, "simulated", (64, 64), "simulated", problems) if job else None
    if plan is None:
        raise UserError(problems, headline=f"{job_path}: {len(problems)} problem(s):")
    classes: list[UnitClass] = []
    for unit in plan.units:
        params: GenParams = plan.items[unit.start].params
        seconds = tuple(s * unit.size for s in profile.item_seconds(params.steps, params.guidance > 1))
        label = f"{params.steps} steps{', guidance' if params.guidance > 1 else ''}"
        if classes and classes[-1].seconds == seconds:
            classes[-1] = replace(classes[-1], count=classes[-1].count + 1)
        else:
            classes.append(UnitClass(1, seconds, label))
    return Scenario(name=job.name, classes=tuple(classes), load_s=load_s or profile.load_seconds(),
                    topology=profile.topology)
