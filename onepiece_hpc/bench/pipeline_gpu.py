"""`onepiece bench pipeline --device cuda`: the plain diffusers loop users run (the baseline),
our monolithic data-parallel and our staged runtime (adaptive and static) on the same GPUs, items
and job, plus the floor, in one call; every figure is set against the plain loop's.

Every configuration runs at its own best batch size: the plain loop at the batch its own probe
found fastest, data-parallel at the batch that minimises the whole pipeline's time per item in the
stage profile, the staged runs at the best batch of the bottleneck stage. Every configuration
warms up (one unit through its stages) before its clock starts, and writes its outputs: the
plain loop as a user's loop does (.npy files, between calls), data-parallel from a writer thread,
staged through rank 0 into HDF5. Times run from the moment every rank is ready to the last
output, so loading and warm-up are out and the tail of the batch is in:

- GPU-seconds per output: GPUs x window / outputs;
- pipeline efficiency: busy GPU-seconds (stage compute, synchronised; see `gpu_busy`) / (GPUs x window);
  where ranks share a GPU each counts the time the others' kernels hold it, so this is an upper
  bound there (the table marks it with <=);
- work efficiency: the floor / GPU-seconds per output, the share of the held GPU time the work
  itself needs at the profile's speed (a lower bound on the busy share);
- peak memory per rank: the most GPU memory torch allocated on any rank.
"""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from onepiece_hpc.bench.gpu_layout import (
    LONG_BATCH, GpuLayout, StageCost, choose_layout, evaluate, stage_costs, unit_seconds,
)
from onepiece_hpc.bench.shared_gpus import simulate_batch
from onepiece_hpc.environment import with_visible_gpus
from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime.gpus import gpu_index, memory_share_mb
from onepiece_hpc.runtime.launch import find_mpiexec, launch
from onepiece_hpc.runtime.options import RunOptions
from onepiece_hpc.store.reader import open_output
from onepiece_hpc.store.telemetry import latest_run


@dataclass(frozen=True)
class GpuBench:
    """One bench: the job, its model's stages (its topology's names, in order) and the configuration."""

    job: Path
    stages: tuple[str, ...]                   # the model's stages, in pipeline order
    gpus: int
    stage_ranks: tuple[int, ...] | None       # ranks for each of `stages`; None: chosen from the profile
    gpu_memory_gib: float | None
    offload: tuple[str, ...]                  # stages the data-parallel baseline keeps on the host
    batches: tuple[int, ...]
    policies: tuple[str, ...]
    as_root: bool
    items: int | None = None                  # the job's first N prompts; None: all of them
    repeats: int = 2                          # timed runs per stage and batch in the profile
    memory_split: str = "need"                # ranks sharing a GPU: "even" shares, or by the profile's peaks
    stage_memory: str | None = None           # the staged runs' --stage-memory, set from the profile
    mps: bool = False                         # each staged run once more under MPS (onepiece run --mps)

    def __post_init__(self) -> None:
        if self.stage_ranks is not None and len(self.stage_ranks) != len(self.stages):
            raise ValueError(f"stage ranks {self.stage_ranks} for the stages {self.stages}: one number a stage")
        if not set(self.offload) <= set(self.stages):
            raise ValueError(f"offload {self.offload}: not all of them are stages of {self.stages}")

    @property
    def env(self) -> dict[str, str]:
        """The runs' processes see only the bench's GPUs (each picks its own among them)."""
        return with_visible_gpus(self.gpus)

    @property
    def layout(self) -> tuple[int, ...]:
        if self.stage_ranks is None:
            raise RuntimeError("the layout is chosen after the stage profile (see plan_stage_ranks)")
        return self.stage_ranks


def _job_copy(bench: GpuBench, folder: Path, microbatch: int, label: str) -> Path:
    """The job with absolute paths, on cuda, with the configuration's batch and stage ranks."""
    source = bench.job.resolve()
    fields = yaml.safe_load(source.read_text(encoding="utf-8"))
    prompts = Path(fields["prompts"])
    prompts = prompts if prompts.is_absolute() else (source.parent / prompts).resolve()
    if bench.items is not None:
        prompts = _first_prompts(prompts, bench.items, folder)
    fields["prompts"] = str(prompts)
    fields.pop("output", None)
    fields.update(device="cuda", microbatch=microbatch)
    if bench.stage_ranks is not None:
        fields["stages"] = dict(zip(bench.stages, bench.stage_ranks))
    path = folder / f"{label}.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False), encoding="utf-8")
    return path


def _first_prompts(source: Path, count: int, folder: Path) -> Path:
    """A copy of the prompt file's first `count` prompt lines (blank lines skipped)."""
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) < count:
        raise UserError(f"--items {count}: {source} has only {len(lines)} prompts; fix: a smaller --items, "
                        "or a job with more prompts")
    chosen = lines[:count]
    if source.suffix.lower() == ".jsonl":  # the copy lives elsewhere: conditioning images by absolute path
        chosen = [json.dumps(_absolute_image(json.loads(line), source.parent)) for line in chosen]
    path = folder / f"first-{count}{source.suffix}"
    path.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return path


def _absolute_image(record: dict, base: Path) -> dict:
    image = record.get("image") if isinstance(record, dict) else None
    if isinstance(image, str) and not Path(image).is_absolute():
        record["image"] = str((base / image).resolve())
    return record


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _cap(bench: GpuBench) -> list[str]:
    return ["--gpu-memory-gib", str(bench.gpu_memory_gib)] if bench.gpu_memory_gib else []


def profile_stages(bench: GpuBench, folder: Path) -> dict:
    job = _job_copy(bench, folder, 1, "profile")
    done = subprocess.run(_python("onepiece_hpc.bench.stage_profile", str(job), "--batches",
                                  ",".join(map(str, bench.batches)), "--repeats", str(bench.repeats),
                                  *_cap(bench)),
                          capture_output=True, text=True, timeout=1800, env=bench.env)
    if done.returncode:
        raise UserError(f"the stage profile failed (exit {done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_batches(profile: dict) -> tuple[int, int]:
    """(data-parallel batch, staged batch) from the profile."""
    stages = profile["stages"]
    common = set.intersection(*(set(s["s_per_item"]) for s in stages.values()))
    whole = min(common, key=lambda b: sum(s["s_per_item"][b] for s in stages.values()))
    bottleneck = max(stages.values(), key=lambda s: s["best_s_per_item"])
    return int(whole), int(bottleneck["best_batch"])


NEED_MARGIN = 1.1  # a stage's share by need: its profiled peak, plus room for the allocator's blocks


def stage_needs(stages: tuple[str, ...], costs: tuple[StageCost, ...]) -> str:
    """The staged runs' --stage-memory: each stage's profiled peak with `NEED_MARGIN`, in GiB."""
    return ",".join(f"{stage}={cost.peak_memory_mb * NEED_MARGIN / 1024:.2f}" for stage, cost in zip(stages, costs))


def plan_stage_ranks(bench: GpuBench, profile: dict, batch: int, gpu_memory_mb: float) -> tuple[GpuBench, dict]:
    """The bench with its stage ranks (given, or the best fitting layout for the profile) and the
    layout model's prediction, to set beside the measurement."""
    costs = stage_costs(profile, batch, bench.stages)
    units = -(-bench.items // batch) if bench.items else None  # None: a long batch
    split = bench.memory_split
    how, chosen = "given", None
    if bench.stage_ranks is None:
        chosen = choose_layout(costs, bench.gpus, gpu_memory_mb, units=units, batch=batch, split=split)
        bench, how = replace(bench, stage_ranks=chosen.stage_ranks), "chosen from the profile"
    if split == "need":
        bench = replace(bench, stage_memory=stage_needs(bench.stages, costs))
    busiest = evaluate(bench.layout, costs, bench.gpus, gpu_memory_mb, split)
    model = {"stage_ranks": list(bench.layout), "how": how, "gpu_memory_mb": gpu_memory_mb, "fits": busiest is not None,
             "memory_split": split, "stage_memory": bench.stage_memory}
    if busiest is not None:
        predicted = GpuLayout(bench.layout, busiest, bench.gpus, sum(c.seconds_per_item for c in costs))
        run = chosen.batch if chosen else simulate_batch(bench.layout, unit_seconds(costs, batch), bench.gpus,
                                                         units or LONG_BATCH * bench.gpus)
        model.update(predicted_gpu_s_per_output=predicted.gpu_s_per_output,
                     predicted_efficiency=predicted.efficiency,
                     predicted_batch={"units": run.units, "gpu_s_per_output": run.gpu_s_per_unit / batch,
                                      "efficiency": run.efficiency})
    return bench, model


def _summarise(mode: str, gpus: int, items: int, window: float, busy: float, peak_mb: float, **extra) -> dict:
    allocated = gpus * window
    return {"mode": mode, "gpus": gpus, "items": items, "window_s": window,
            "gpu_s_per_output": allocated / items, "outputs_per_hour": items / window * 3600,
            "efficiency": busy / allocated, "busy_gpu_s": busy, "peak_memory_mb_per_rank": peak_mb, **extra}


def _rank_reports(bench: GpuBench, program: list[str], what: str) -> list[dict]:
    """Run `program` as one process a GPU under mpiexec; each rank's JSON report (`--report-dir`)."""
    with tempfile.TemporaryDirectory(prefix="onepiece-reports-") as scratch:
        done = subprocess.run(find_mpiexec().command(bench.gpus, [*program, "--report-dir", scratch], bench.as_root),
                              stdout=sys.stderr, stderr=subprocess.PIPE, text=True, env=bench.env)
        if done.returncode:
            raise UserError(f"the {what} run failed (exit {done.returncode}): {done.stderr[-3000:]}")
        return [json.loads(p.read_text()) for p in sorted(Path(scratch).glob("rank-*.json"))]


def run_plain(bench: GpuBench, job: Path, folder: Path) -> dict:
    """The plain diffusers loop: the pipeline's own call at its best batch, outputs to .npy files."""
    rows = _rank_reports(bench, _python("onepiece_hpc.bench.plain_loop", str(job), "--batches",
                                        ",".join(map(str, bench.batches)), "--repeats", str(bench.repeats),
                                        "--write-dir", str(folder / "plain-out"), *_cap(bench)), "plain loop")
    items = sum(r["items"] for r in rows)
    phases = {stage: sum(r["phases_s_per_item"][stage] for r in rows) / len(rows)
              for stage in rows[0]["phases_s_per_item"]}
    return _summarise("plain diffusers loop", bench.gpus, items, max(r["done_at_s"] for r in rows),
                      sum(r["busy_s"] + r["write_s"] for r in rows), max(r["peak_memory_mb"] for r in rows),
                      microbatch=rows[0]["batch"], write_s=sum(r["write_s"] for r in rows),
                      load_s=max(r["load_s"] for r in rows), probe_s_per_item=rows[0]["probe_s_per_item"],
                      phases_s_per_item=phases,
                      gpu_s_per_output_without_writes=bench.gpus * max(r["done_at_s"] - r["write_s"] for r in rows)
                      / items)


def run_data_parallel(bench: GpuBench, job: Path, microbatch: int, folder: Path) -> dict:
    rows = _rank_reports(bench, _python("onepiece_hpc.bench.data_parallel", str(job), "--warm-up", "--write-dir",
                                        str(folder / "dp-out"), *_cap(bench),
                                        *[arg for stage in bench.offload for arg in ("--offload", stage)]),
                         "data-parallel")
    return _summarise("monolithic data-parallel", bench.gpus, sum(r["items"] for r in rows),
                      max(r["done_at_s"] for r in rows), sum(r["busy_s"] for r in rows),
                      max(r["peak_memory_mb"] for r in rows), microbatch=microbatch,
                      offload=list(bench.offload), offload_s=sum(r["offload_s"] for r in rows),
                      load_s=max(r["load_s"] for r in rows), warm_up_s=max(r["warm_up_s"] for r in rows),
                      write_s=sum(r["write_s"] for r in rows))


def run_staged(bench: GpuBench, job: Path, microbatch: int, policy: str, folder: Path, mps: bool = False) -> dict:
    label = f"staged {policy}{' mps' if mps else ''}"
    output = folder / f"{label.replace(' ', '-')}.h5"
    ranks = 1 + sum(bench.layout)
    options = RunOptions(job=job, ranks=ranks, output=output, policy=policy, warm_up=True,
                         gpu_memory_gib=bench.gpu_memory_gib, stage_memory=bench.stage_memory, mps=mps)
    report = launch(options, bench.as_root, rank_stdout=sys.stderr, env=bench.env)
    if report["status"] != "completed":
        raise UserError(f"the {label} run failed: {report.get('error', report)}")
    with open_output(output) as view:
        record = latest_run(view)
    rows, moves = record.ranks, len(record.moves)
    stage_rows = rows[rows["rank"] > 0]
    window = float(stage_rows["elapsed_s"].min())  # from the moment the last rank was ready
    return _summarise(label, bench.gpus, int(report["summary"]["committed_now"]), window,
                      gpu_busy(stage_rows, bench.gpus, window), float(stage_rows["peak_memory_mb"].max()),
                      microbatch=microbatch, stage_ranks=list(bench.layout), moves=moves,
                      shares_gpus=sum(bench.layout) > bench.gpus,
                      send_s=float(stage_rows["send_s"].sum()), load_s=float(stage_rows["load_s"].max()),
                      stages=report["summary"]["stages"])


def gpu_busy(rows, gpus: int, window: float) -> float:
    """Busy GPU-seconds: each GPU's ranks' busy seconds, summed. Ranks that share a GPU can be busy at once, each slowed by the other, so a shared
    GPU's sum is capped at the window: an upper bound where ranks share GPUs, exact where not."""
    per_gpu = [0.0] * gpus
    for row in rows:  # one node: the Node Manager's
        per_gpu[gpu_index(int(row["rank"]), holds_manager=True, gpus=gpus)] += float(row["busy_s"])
    return sum(min(busy, window) for busy in per_gpu)


def bench_pipeline_gpu(bench: GpuBench, command: list[str], keep: Callable[[dict], None] = lambda _: None) -> dict:
    """Profile, then the plain loop, data-parallel, staged adaptive and staged static; returns the
    whole record, and hands the record so far to `keep` after each run (a long bench cut short
    keeps its part)."""
    import torch
    started = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="onepiece-bench-gpu-") as scratch:
        folder = Path(scratch)
        profile = profile_stages(bench, folder)
        dp_batch, staged_batch = best_batches(profile)
        bench, layout = plan_stage_ranks(bench, profile, staged_batch, memory_share_mb(0, bench.gpu_memory_gib))
        record = {"job": str(bench.job), "command": command, "date": started.isoformat(timespec="seconds"),
                  "host": socket.gethostname(), "device": f"{bench.gpus} x {torch.cuda.get_device_name(0)}",
                  "gpus": bench.gpus, "gpu_memory_gib": bench.gpu_memory_gib, "profile": profile,
                  "floor_gpu_s_per_output": profile["floor_s_per_item"], "layout": layout, "runs": []}

        def add(run: dict) -> None:
            record["runs"].append(run)
            record.update(against_plain(record))
            keep(record)

        add(run_plain(bench, _job_copy(bench, folder, 1, "plain"), folder))
        add(run_data_parallel(bench, _job_copy(bench, folder, dp_batch, "dp"), dp_batch, folder))
        for policy in bench.policies:
            job = _job_copy(bench, folder, staged_batch, f"staged-{policy}")
            add(run_staged(bench, job, staged_batch, policy, folder))
            if bench.mps:
                add(run_staged(bench, job, staged_batch, policy, folder, mps=True))
    return record


def against_plain(record: dict) -> dict:
    """Every run's and the floor's GPU-seconds per output over the plain loop's (the first run), and
    each stage's seconds per item (alone, and inside the staged runs) over its share of the plain call."""
    runs, profile = record["runs"], record["profile"]
    plain, floor = runs[0], profile["floor_s_per_item"]
    by_mode = {run["mode"]: run for run in runs}
    for run in runs:
        run["gpu_s_per_output_vs_plain"] = run["gpu_s_per_output"] / plain["gpu_s_per_output"]
        if "monolithic data-parallel" in by_mode:
            run["gpu_s_per_output_vs_data_parallel"] = (run["gpu_s_per_output"]
                                                        / by_mode["monolithic data-parallel"]["gpu_s_per_output"])
        run["gpu_s_per_output_vs_floor"] = run["gpu_s_per_output"] / floor
        run["work_efficiency"] = floor / run["gpu_s_per_output"]
    batch = str(plain["microbatch"])
    stages = {}
    for name, share in plain["phases_s_per_item"].items():
        alone = profile["stages"][name]["s_per_item"].get(batch, profile["stages"][name]["best_s_per_item"])
        row = {"plain_share_s_per_item": share, "alone_s_per_item": alone, "alone_vs_plain_share": alone / share}
        for run in runs:
            for stage in run.get("stages", []):
                if stage["stage"] == name and stage["units"]:
                    per_item = stage["mean_service_s"] / run["microbatch"]
                    row[f"{run['mode']}_s_per_item"] = per_item
                    row[f"{run['mode']}_vs_plain_share"] = per_item / share
        stages[name] = row
    return {"floor_vs_plain": floor / plain["gpu_s_per_output"], "plain_batch": plain["microbatch"],
            "stages_vs_plain_share": stages}


def results_path(folder: Path, record: dict) -> Path:
    name = Path(record["job"]).stem
    stamp = record["date"].replace(":", "").replace("-", "")[:15]
    return folder / f"{stamp}-{name}-{record['gpus']}gpu.json"


def table(record: dict) -> str:
    lines = [f"{record['job']} on {record['device']}"
             + (f", {record['gpu_memory_gib']} GiB a GPU" if record["gpu_memory_gib"] else ""),
             (f"floor (sum of per-stage best s/item): {record['floor_gpu_s_per_output']:.3f} GPU-s per output, "
              f"{record['floor_vs_plain']:.3f}x the plain loop"),
             _layout_line(record.get("layout")),
             (f"{'configuration':28} {'batch':>5} {'GPU-s/out':>10} {'x plain':>8} {'x floor':>8} {'out/h':>9} "
              f"{'effic.':>8} {'work eff.':>9} {'peak GiB':>9}")]
    for run in record["runs"]:
        bound = "<=" if run.get("shares_gpus") else ""
        lines.append(f"{run['mode']:28} {run['microbatch']:>5} {run['gpu_s_per_output']:>10.3f} "
                     f"{run['gpu_s_per_output_vs_plain']:>8.3f} {run['gpu_s_per_output_vs_floor']:>8.3f} "
                     f"{run['outputs_per_hour']:>9.0f} {bound + format(run['efficiency'], '.1%'):>8} "
                     f"{run['work_efficiency']:>9.1%} {run['peak_memory_mb_per_rank'] / 1024:>9.1f}")
    plain = record["runs"][0]
    lines.append(f"the plain loop without its writes: {plain['gpu_s_per_output_without_writes']:.3f} GPU-s per output "
                 f"(its .npy writes took {plain['write_s'] / plain['items']:.3f} s an output)")
    staged = [run["mode"] for run in record["runs"] if run.get("stages")]
    lines.append(f"each stage, s/item, against its share of the plain call (batch {record['plain_batch']}; "
                 "in a staged run on shared GPUs a stage's time includes the other ranks' kernels):")
    lines.append(f"{'stage':8} {'plain share':>12} {'alone':>8} {'x share':>8}"
                 + "".join(f" {mode:>16} {'x share':>8}" for mode in staged))
    for name, row in record["stages_vs_plain_share"].items():
        line = (f"{name:8} {row['plain_share_s_per_item']:>12.3f} {row['alone_s_per_item']:>8.3f} "
                f"{row['alone_vs_plain_share']:>8.3f}")
        for mode in staged:
            if f"{mode}_s_per_item" in row:
                line += f" {row[f'{mode}_s_per_item']:>16.3f} {row[f'{mode}_vs_plain_share']:>8.3f}"
        lines.append(line)
    return "\n".join(lines)


def _layout_line(layout: dict | None) -> str:
    if not layout:
        return "stage ranks: (not recorded)"
    ranks = ",".join(map(str, layout["stage_ranks"]))
    if not layout["fits"]:
        return f"stage ranks {ranks} ({layout['how']}): the profile's peaks do not fit the GPUs' memory"
    return (f"stage ranks {ranks} ({layout['how']}): the layout model predicts "
            f"{layout['predicted_gpu_s_per_output']:.3f} GPU-s per output, efficiency {layout['predicted_efficiency']:.1%}")
