"""`onepiece bench phased`: one GPU, the plain pipeline loop (resident, and with diffusers'
offloads under a cap) against our stages in phases, each mode in a process of its own, measured
in the same call; the table gives each against the best plain figure (onepiece_hpc/bench/phased.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from onepiece_hpc.errors import UserError

PLAIN = ("resident", "capped-resident", "model-offload", "group-offload")


def parse_modes(text: str) -> list[tuple[str, int]]:
    """'resident:8 phased:8' -> [('resident', 8), ('phased', 8)]."""
    from onepiece_hpc.bench.phased import MODES

    chosen = []
    for word in text.split():
        mode, _, items = word.partition(":")
        if mode not in (*MODES, "capped-resident") or not items.isdigit() or int(items) < 1:
            raise UserError(f"--modes: {word!r} is not MODE:ITEMS; fix: MODE is one of "
                            f"{', '.join((*MODES, 'capped-resident'))} and ITEMS a count, e.g. 'resident:8 phased:8'")
        chosen.append((mode, int(items)))
    return chosen


@click.command("phased")
@click.argument("job", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--modes", default="resident:8 phased:8 group-offload:4", show_default=True,
              help="MODE:ITEMS words: resident (no cap), capped-resident (the plain call under the cap), "
                   "model-offload, group-offload, phased.")
@click.option("--gpu-memory-gib", "cap", type=click.FloatRange(1.0), default=None,
              help="The cap of every mode but resident (torch's memory fraction).")
@click.option("--phase", type=click.IntRange(1, 4096), default=8, show_default=True,
              help="Units a stage runs before the next takes the GPU.")
@click.option("--results", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep each mode's JSON record and log in this folder.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(10.0), default=1800.0, show_default=True,
              help="Seconds a mode may take before it is stopped and reported as not run.")
@click.option("--gpus", type=click.IntRange(1), default=1, show_default=True,
              help="GPUs of this node: each plain or one-process mode runs a process a GPU on its share of the "
                   "items, staged-phased a chain of stage ranks a GPU; figures are GPU-seconds per output.")
@click.option("--warm-steps", type=click.IntRange(1), default=None,
              help="Denoising steps of the unit each plain or one-process mode runs off the clock first "
                   "(default: the job's): the same shapes, for cases whose one unit takes minutes.")
@click.option("--compare", "earlier", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A JSON record of this job that an earlier call kept under --results (a mode too long to "
                   "share a call): shown in the table marked as such, and counted in the best plain figure; "
                   "repeatable.")
def bench_phased(job: Path, modes: str, cap: float | None, phase: int, results: Path | None,
                 timeout_s: float, gpus: int, warm_steps: int | None, earlier: tuple[Path, ...]) -> None:
    """GPU-seconds per output of JOB's first items on one GPU (or --gpus), five ways (see docs/gpus.md)."""
    chosen = parse_modes(modes)
    compared = [earlier_record(path, job, cap) for path in earlier]  # refused before any mode runs
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
    records = []
    for mode, items in chosen:
        click.echo(f"{mode}: {items} items on {gpus} GPU(s) ...", err=True)
        record, log, code = run_mode(job, mode, items, phase, cap, gpus, timeout_s, warm_steps)
        if results is not None:
            (results / f"{job.stem}-{mode}.log").write_text(log, encoding="utf-8")
        if record is None:
            click.echo(f"{mode}: did not finish (exit {code}); last lines:\n{log[-800:]}", err=True)
            continue
        records.append(record)
        if results is not None:
            (results / f"{job.stem}-{mode}.json").write_text(json.dumps(record) + "\n", encoding="utf-8")
    click.echo(table(records, compared))


def earlier_record(path: Path, job: Path, cap: float | None) -> dict:
    """A record that an earlier call kept, checked to be of the same job and cap (else UserError)."""
    fix = "fix: name a .json record that `onepiece bench phased --results` kept for this job"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as unreadable:
        raise UserError(f"--compare {path}: not a readable record ({unreadable}); {fix}") from None
    fields = {"label", "job", "items", "s_per_output"}
    if not isinstance(record, dict) or not fields <= record.keys():
        raise UserError(f"--compare {path}: not a record of `onepiece bench phased` (it needs the fields "
                        f"{', '.join(sorted(fields))}); {fix}")
    if Path(str(record["job"])).name != job.name:
        raise UserError(f"--compare {path}: a record of {record['job']}, not of {job}; {fix}")
    if record["label"] != "resident" and record.get("gpu_memory_gib") != cap:
        raise UserError(f"--compare {path}: measured under a cap of {record.get('gpu_memory_gib')} GiB, this call's "
                        f"is {cap} GiB; fix: compare records of the same --gpu-memory-gib")
    return {**record, "earlier": path.name}


def run_mode(job: Path, mode: str, items: int, phase: int, cap: float | None, gpus: int,
             timeout_s: float, warm_steps: int | None = None) -> tuple[dict | None, str, int | str]:
    """One mode, in processes of its own: staged-phased as one launch over `gpus` GPUs, any other as
    a process a GPU, all at once, each on its share of the items (the job's first ones). Returns the
    record (None if a process failed), the logs and the first failing exit code."""
    from onepiece_hpc.environment import with_visible_gpus

    argv = [sys.executable, "-m", "onepiece_hpc.bench.phased", str(job),
            "--mode", "resident" if mode == "capped-resident" else mode, "--phase", str(phase)]
    if cap is not None and mode != "resident":
        argv += ["--gpu-memory-gib", str(cap)]
    if warm_steps is not None and mode != "staged-phased":  # its ranks warm up on their own
        argv += ["--warm-steps", str(warm_steps)]
    if mode == "staged-phased":
        jobs = [([*argv, "--items", str(items), "--gpus", str(gpus)], with_visible_gpus(gpus))]
    else:
        share = -(-items // gpus)
        jobs = [([*argv, "--items", str(share)], with_visible_gpus(1, gpu)) for gpu in range(gpus)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for command, env in jobs]
    outs, code = [], 0
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            out, err = proc.communicate()
            err = f"stopped after {timeout_s:.0f} s\n{err}"
        outs.append((out, err))
        code = code or proc.returncode
    log = "".join(out + err for out, err in outs)
    lines = [out.strip().splitlines()[-1] for out, _ in outs if out.strip()]
    if code or len(lines) != len(procs):
        return None, log, code or "none"
    parts = [json.loads(line) for line in lines]
    if len(parts) == 1:
        return {**parts[0], "label": mode, "gpus": gpus}, log, 0
    done = sum(part["items"] for part in parts)
    window = max(part["wall_s"] for part in parts)  # every GPU is held until the last one ends
    peaks = [part["peak_gib"] for part in parts if part.get("peak_gib") is not None]
    return {**parts[0], "label": mode, "gpus": gpus, "items": done, "wall_s": window,
            "s_per_output": gpus * window / done, "peak_gib": max(peaks) if peaks else None,
            "per_gpu": parts}, log, 0


def table(records: Sequence[dict], earlier: Sequence[dict] = ()) -> str:
    """Seconds per output of each mode, and each against the best plain mode of the same call and
    of the `earlier` records (marked * and named below the table)."""
    rows = [*records, *earlier]
    plain = [r["s_per_output"] for r in rows if r["label"] in PLAIN]
    best = min(plain) if plain else None
    lines = [f"{'mode':<16} {'items':>5} {'s/output':>9} {'peak GiB':>9} {'vs best plain':>13}"]
    for r in rows:
        ratio = f"{r['s_per_output'] / best:.3f}x" if best else "-"
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "-"
        label = r["label"] + ("*" if "earlier" in r else "")
        lines.append(f"{label:<16} {r['items']:>5} {r['s_per_output']:>9.3f} {peak:>9} {ratio:>13}")
    lines += [f"* from an earlier call: {r['earlier']}" for r in earlier]
    return "\n".join(lines)
