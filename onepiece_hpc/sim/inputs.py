"""Where a simulation's numbers come from: a profile file, an output's telemetry, a job file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import yaml

from onepiece_hpc.errors import UserError
from onepiece_hpc.sim.scenario import Scenario, StageProfile, UnitClass
from onepiece_hpc.store.reader import open_output
from onepiece_hpc.store.safe_read import read_dataset
from onepiece_hpc.store.telemetry import latest_run

PROFILE_KEYS = ("encode_s", "forward_s", "decode_s", "weights_gib", "host_gbps")


def load_profile(path: Path) -> tuple[StageProfile, tuple[float, ...] | None]:
    """A YAML profile (keys: encode_s, forward_s, decode_s, weights_gib [3], host_gbps), or an
    output file whose telemetry gives measured service and load times. Returns the profile and,
    for outputs, the measured load seconds per stage."""
    if h5py.is_hdf5(path):
        return _from_telemetry(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot read the profile ({err})") from None
    if not isinstance(data, dict) or set(data) - set(PROFILE_KEYS) or not {"encode_s", "forward_s", "decode_s",
                                                                          "weights_gib"} <= set(data):
        raise UserError(f"{path}: a profile is a YAML mapping with encode_s, forward_s, decode_s, weights_gib "
                        f"(three numbers: encoder, denoiser, VAE) and optionally host_gbps; got {data!r:.200}")
    try:
        weights = tuple(float(w) for w in data["weights_gib"])
        profile = StageProfile(float(data["encode_s"]), float(data["forward_s"]), float(data["decode_s"]),
                               weights, float(data.get("host_gbps", 2.0)))
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: profile values must be numbers ({err})") from None
    if len(weights) != 3 or min(profile.encode_s, profile.forward_s, profile.decode_s, profile.host_gbps) <= 0:
        raise UserError(f"{path}: times and host_gbps must be positive and weights_gib must list 3 sizes")
    return profile, None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_telemetry(path: Path) -> tuple[StageProfile, tuple[float, ...]]:
    with open_output(path) as view:
        record = latest_run(view)
        stages = {_text(row["stage"]): float(row["mean_service_s"]) for row in record.stages}
        ranks = record.ranks
        items = np.concatenate([read_dataset(file, "items", seg.path)[["steps", "guidance"]]
                                for seg, file in view.each() if file is not None])
        microbatch = int(view.attrs["microbatch"])
    forwards = np.mean(items["steps"] * np.where(items["guidance"] > 1, 2, 1)) * microbatch
    load = tuple(float(np.mean(ranks["load_s"][ranks["stage"] == name.encode()]) or 0.0)
                 for name in ("encode", "denoise", "decode"))
    profile = StageProfile(stages["encode"] / microbatch, stages["denoise"] / forwards,
                           stages["decode"] / microbatch, (0.0, 0.0, 0.0))
    return profile, load


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
    return Scenario(name=job.name, classes=tuple(classes), load_s=load_s or profile.load_seconds())
