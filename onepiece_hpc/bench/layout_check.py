"""The layout model and its batch model held against the GPU benchmark's records: for each staged
run of a record, the GPU-seconds per output it measured beside what the model predicts for the
same layout and batch; then the layout the model chooses for that batch, against data-parallel
in the same model (`onepiece bench layouts RECORD.json ...`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from onepiece_hpc.bench.gpu_layout import StageCost, choose_layout, stage_costs, unit_seconds
from onepiece_hpc.bench.shared_gpus import data_parallel, simulate_batch
from onepiece_hpc.errors import UserError


@dataclass(frozen=True)
class RunCheck:
    record: str
    mode: str
    gpus: int
    items: int
    layout: tuple[int, ...]
    measured: float       # GPU-s per output
    predicted: float


@dataclass(frozen=True)
class Choice:
    record: str
    gpus: int
    items: int
    layout: tuple[int, ...]
    predicted: float      # GPU-s per output, fill and drain included
    efficiency: float
    data_parallel: float  # the same model's data-parallel (the floor, in whole units a GPU)
    measured_data_parallel: float


def read_record(path: Path) -> dict:
    """A `onepiece bench pipeline --device cuda` record, or a clear error naming the file."""
    fix = "fix: name a JSON record of `onepiece bench pipeline --device cuda` (bench/results/*.json)"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such record; {fix}") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a JSON record ({type(err).__name__}: {err}); {fix}") from None
    stages = record.get("profile", {}).get("stages") if isinstance(record, dict) else None
    if not isinstance(stages, dict) or not isinstance(record.get("runs"), list) or "gpus" not in record:
        raise UserError(f"{path}: not a GPU pipeline bench record (it has no profile, runs or gpus); {fix}")
    return record


def _costs(record: dict, batch: int) -> tuple[StageCost, ...]:
    """The record's stage profile at `batch`, in the profile's stage order."""
    profile = record["profile"]
    return stage_costs(profile, batch, tuple(profile["stages"]))


def check_record(path: Path) -> tuple[list[RunCheck], Choice | None]:
    """Each staged run of the record against the model, and the model's own choice for its batch."""
    record = read_record(path)
    name, gpus = path.name, int(record["gpus"])
    # what the bench planned with; a record that kept neither is taken as uncapped
    memory = float(record.get("layout", {}).get("gpu_memory_mb") or (record.get("gpu_memory_gib") or 0) * 1024
                   or "inf")
    checks, staged = [], [run for run in record["runs"] if str(run.get("mode", "")).startswith("staged")]
    for run in staged:
        batch, layout = int(run["microbatch"]), tuple(run["stage_ranks"])
        units = -(-int(run["items"]) // batch)
        run_model = simulate_batch(layout, unit_seconds(_costs(record, batch), batch), gpus, units)
        predicted = run_model.gpu_s_per_unit / batch
        checks.append(RunCheck(name, run["mode"], gpus, int(run["items"]), layout, float(run["gpu_s_per_output"]),
                               predicted))
    dp = next((run for run in record["runs"] if "data-parallel" in str(run.get("mode", ""))), None)
    if not staged or dp is None:
        return checks, None
    batch, items = int(staged[0]["microbatch"]), int(staged[0]["items"])
    units = -(-items // batch)
    chosen = choose_layout(_costs(record, batch), gpus, memory, units=units, batch=batch)
    dp_batch = int(dp["microbatch"])
    dp_seconds = unit_seconds(_costs(record, dp_batch), dp_batch)
    dp_model = data_parallel(dp_seconds, gpus, -(-int(dp["items"]) // dp_batch)).gpu_s_per_unit / dp_batch
    return checks, Choice(name, gpus, items, chosen.stage_ranks, chosen.batch.gpu_s_per_unit / batch,
                          chosen.batch.efficiency, dp_model, float(dp["gpu_s_per_output"]))


def render(paths: list[Path]) -> str:
    """Two tables: the model against each measured staged run; the model's choice against data-parallel."""
    results = [check_record(path) for path in paths]
    lines = ["record | mode | GPUs | items | layout | measured | model | measured / model",
             "--- | --- | ---: | ---: | --- | ---: | ---: | ---:"]
    for checks, _ in results:
        for c in checks:
            lines.append(f"{c.record} | {c.mode} | {c.gpus} | {c.items} | {','.join(map(str, c.layout))} | "
                         f"{c.measured:.3f} | {c.predicted:.3f} | {c.measured / c.predicted:.3f}x")
    lines += ["", "record | GPUs | items | chosen layout | model GPU-s/output | efficiency | model data-parallel "
                  "| measured data-parallel", "--- | ---: | ---: | --- | ---: | ---: | ---: | ---:"]
    for _, choice in results:
        if choice is not None:
            lines.append(f"{choice.record} | {choice.gpus} | {choice.items} | {','.join(map(str, choice.layout))} | "
                         f"{choice.predicted:.3f} | {choice.efficiency:.3f} | {choice.data_parallel:.3f} | "
                         f"{choice.measured_data_parallel:.3f}")
    return "\n".join(lines)
