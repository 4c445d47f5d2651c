"""`onepiece status`: a Slurm job's (or array's) state with the progress of its outputs; with
--watch, one running output followed live (observe/watch.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from onepiece_hpc import environment
from onepiece_hpc.errors import UserError


def _record_and_outputs(target: str | None):
    """(record, job id to ask Slurm about, outputs to read) for a job id, an output, or the latest job."""
    from onepiece_hpc.slurm import records

    index = environment.slurm_index_dir()
    if target is None:
        found = sorted(index.glob("*.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError("no submission recorded yet; fix: give a job id or an output file")
        target = found[-1].stem
    if target.lower().endswith((".h5", ".hdf5")) or Path(target).exists():
        output = Path(target).absolute()
        record = records.latest_for_output(output)
        if record is None:
            return None, None, [output]
        task = record.job_id
        if record.kind == "array":
            task = f"{record.job_id}_{record.outputs.index(str(output))}"
        return record, task, [output]
    record = records.by_job_id(index, target.partition("_")[0])
    if record is None:
        return None, target, []
    outputs = [Path(p) for p in record.outputs]
    if "_" in target and record.kind == "array":
        outputs = [outputs[int(target.partition("_")[2])]]
    return record, target, outputs


def _job_file(record, output: Path) -> Path:
    if record.kind == "array":
        return Path(record.shards) / f"{output.stem}.yaml"
    return Path(record.job_file)


@click.command()
@click.argument("target", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", is_flag=True, help="Follow the running job live until it finishes (Ctrl-C to stop).")
@click.option("--every", type=click.FloatRange(min=0.1), default=2.0, show_default=True, metavar="S",
              help="With --watch: seconds between refreshes.")
def status(target: str | None, as_json: bool, watch: bool, every: float) -> None:
    """Show TARGET's Slurm state and progress (done/total, rate, ETA).

    TARGET is a job id (an array's id covers all its tasks), an output .h5 file, or nothing for
    the latest submission. With --watch, the live view of one running output: items, work, rate,
    ETA, each stage's ranks, busy share, backlog and service time, moves, failures and memory.
    """
    from onepiece_hpc.slurm.status import format_eta, job_tasks, output_progress, overall_state

    record, job_id, outputs = _record_and_outputs(target)
    if watch:
        if as_json:
            raise UserError("--json and --watch: choose one (--json prints once, --watch follows the run)")
        _watch(outputs, every)
        return
    tasks, notes = job_tasks(job_id) if job_id else ([], [])
    if job_id and record is None:
        notes.append(f"no submission record for job {job_id} (not submitted with onepiece submit or sweep "
                     "from this account): progress unknown")
    if job_id is None:
        notes.append(f"no submission record beside {outputs[0]}: Slurm state unknown")
    totals = [None if p.exists() or record is None else _expected(record, p) for p in outputs]
    together, each = output_progress(outputs, totals)
    state = overall_state(tasks) if tasks else "UNKNOWN"
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task.state] = counts.get(task.state, 0) + 1
    info = {
        "job_id": job_id, "state": state, "task_states": counts,
        "tasks": [{"task": t.task, "state": t.state, "elapsed": t.elapsed, "detail": t.detail} for t in tasks],
        "items_done": together.items_done, "items_total": together.items_total, "complete": together.complete,
        "work_done": together.work_done, "work_total": together.work_total,
        "rate_items_per_s": together.rate_items_per_s, "rate_work_per_s": together.rate_work_per_s,
        "eta_s": together.eta_s if state not in ("PENDING",) else None,
        "outputs": [{"file": str(p), "items_done": e.items_done if e else 0, "items_total": e.items_total if e else None}
                    for p, e in zip(outputs, each)],
        "notes": notes,
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    spread = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) if len(tasks) > 1 else ""
    click.echo(f"job {job_id or '?'}: {state}" + (f" ({len(tasks)} tasks: {spread})" if spread else ""))
    share = f" ({together.work_share:.0%} of the work)" if together.items_total else ""
    rate = f", {together.rate_items_per_s:.2f} items/s" if together.rate_items_per_s else ""
    eta = f", ETA {format_eta(info['eta_s'])}" if not together.complete and state == "RUNNING" else ""
    click.echo(f"  items {together.items_done}/{together.items_total} done{share}{rate}{eta}")
    by_task = {t.task: t for t in tasks}
    for number, (path, each_progress) in enumerate(zip(outputs, each)):
        task = f"{record.job_id}_{number}" if record is not None and record.kind == "array" and len(outputs) > 1 else job_id
        line = by_task.get(task)
        where = f"{each_progress.items_done}/{each_progress.items_total}" if each_progress else "not started"
        click.echo(f"  {task or '-'}  {line.state if line else '?':<10} {where:>11}  {path}")
    for note in notes:
        click.echo(f"  note: {note}")


def _expected(record, output: Path) -> int | None:
    from onepiece_hpc.slurm.status import expected_items

    return expected_items(_job_file(record, output))


def _watch(outputs: list[Path], every: float) -> None:
    from onepiece_hpc.observe.watch import sight, watch
    from onepiece_hpc.slurm.status import output_progress

    if len(outputs) != 1:
        listed = ", ".join(str(p) for p in outputs[:4]) + (", ..." if len(outputs) > 4 else "")
        raise UserError(f"--watch follows one output, and this target has {len(outputs)} ({listed or 'none'}); "
                        "fix: give one output .h5 file, or an array task id such as 1234_5")
    output = outputs[0]
    first = sight(output)
    if first is None:
        click.echo(f"no live snapshot for {output} (the run finished before live snapshots, ran monolithic, "
                   "or has not started): its progress from the file")
        if not output.exists():
            click.echo("  the output does not exist yet")
            return
        together, _ = output_progress([output], [None])
        share = f" ({together.work_share:.0%} of the work)" if together.items_total else ""
        click.echo(f"  items {together.items_done}/{together.items_total} done{share}")
        return
    try:
        watch(output, every, environment.is_interactive(sys.stdout), click.echo, first)
    except KeyboardInterrupt:
        return
