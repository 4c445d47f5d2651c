"""`onepiece inspect`: what an output file holds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onepiece_hpc.store.reader import open_output
from onepiece_hpc.store.summary import summary

SHOWN = 10  # sources and runs listed in the text summary (a merge of a sweep has thousands)


def _describe_items(info: dict, shape: list[int], kind: str) -> str:
    """'3 images of 64 x 64 px' or '2 videos of 81 frames (5.1 s at 16 fps), 832 x 480 px' (width first)."""
    if kind == "video":
        count, frames, height, width = shape[:4]
        fps = info.get("frame_rate")
        timing = f" ({frames / fps:.1f} s at {fps} fps)" if fps else ""
        return f"{count} videos of {frames} frames{timing}, {width} x {height} px"
    count, height, width = shape[:3]
    return f"{count} images of {width} x {height} px"


def _render(info: dict) -> str:
    lines = [
        f"{info['file']}",
        f"  job        {info['job_name']}  ({info['provenance'].get('model_ref', '?')}, "
        f"{info['execution']}, microbatch {info['microbatch']})",
        f"  items      {info['items_done']}/{info['items_total']} done"
        + ("  (complete)" if info["complete"] else f"  ({info['items_total'] - info['items_done']} missing)"),
    ]
    lines += _failed_lines(info)
    for at, (name, ds) in enumerate(info["outputs"].items()):
        role = "" if at == 0 else f", kept from step {name.split('/')[0]}"
        lines.append(f"  outputs    /outputs/{name}  {' x '.join(map(str, ds['shape']))}  {ds['dtype']}"
                     f"  ({_describe_items(info, ds['shape'], ds.get('kind', info['output_kind']))}{role})")
    files = info["files"]
    if info["kind"] == "output":
        lines.append(f"  files      {files['created']} of {files['data_files']} data file(s) created, "
                     f"{files['items_per_file']} items each")
    for source in info["sources"][:SHOWN]:
        lines.append(f"  source     {source['path']}: items {source['offset']}..{source['offset'] + source['items'] - 1}")
    if len(info["sources"]) > SHOWN:
        lines.append(f"  source     ... and {len(info['sources']) - SHOWN} more (--json lists them all)")
    means = {k: v for k, v in info["mean_seconds_per_item"].items() if v is not None}
    if means:
        lines.append("  per item   " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in means.items()))
    if info["commit_rate_items_per_s"]:
        lines.append(f"  rate       {info['commit_rate_items_per_s']:.2f} items/s")
    prov = info["provenance"]
    lines.append(f"  made by    onepiece {prov.get('package_version')}, torch {prov.get('torch_version')}, "
                 f"diffusers {prov.get('diffusers_version')} on {prov.get('host')}")
    for t in info["telemetry"]:
        hosts = f" on {len(t['hosts'])} hosts" if len(t["hosts"]) > 1 else ""
        channels = ", ".join(f"{kind} {n}" for kind, n in t["channels"].items())
        channels = f", channels {channels}" if channels else ""
        lines.append(f"  telemetry  {t['run']}: {t['ranks']} stage ranks{hosts}{channels}, policy {t['policy']}, "
                     f"{t['moves']} moves, "
                     f"busy {t['busy_rank_s']:.1f} rank-s, idle {t['idle_rank_s']:.1f} rank-s")
    if len(info["runs"]) > SHOWN:
        lines.append(f"  run        {len(info['runs']) - SHOWN} earlier runs (--json lists them all), then:")
    for run in info["runs"][-SHOWN:]:
        software = run.get("software") or {}
        versions = f", torch {software['torch']}" if "torch" in software else ""
        gpu = (run.get("hardware") or {}).get("gpu")
        where = f"{run.get('host', '?')}" + (f" ({gpu})" if gpu else "")
        lines.append(f"  run        {run.get('started_at', '?')} .. {run.get('finished_at') or '(not closed)'}  "
                     f"{run.get('mode', '?')} on {where}{versions}: {run.get('status', '?')}, "
                     f"{run.get('items_committed', 0)} items")
    return "\n".join(lines)


def _failed_lines(info: dict) -> list[str]:
    """The failed items, unit by unit (the first SHOWN), with the error each unit raised."""
    if not info["items_failed"]:
        return []
    lines = [f"  failed     {info['items_failed']} item(s) failed when generated; a run leaves them be, "
             "`onepiece run JOB --retry-failed` generates them again"]
    for failure in info["failed"][:SHOWN]:
        start, stop = failure["start"], failure["stop"]
        items = f"item {start}" if stop - start == 1 else f"items {start}..{stop - 1}"
        rank = failure["rank"] if isinstance(failure["rank"], str) else f"rank {failure['rank']}"
        lines.append(f"  failed     {items}: {failure['stage']} on {rank}, run {failure['run']}: "
                     f"{_first_line(failure['error'])}")
    if len(info["failed"]) > SHOWN:
        lines.append(f"  failed     ... and {len(info['failed']) - SHOWN} more unit(s) (--json lists them all)")
    return lines


def _first_line(text: str, width: int = 160) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[:width - 3] + "..."


@click.command("inspect")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def inspect_cmd(output: Path, as_json: bool) -> None:
    """Summarise OUTPUT: items done, failed and missing, shapes, timings, provenance, runs."""
    with open_output(output) as view:
        info = summary(view)
    click.echo(json.dumps(info, indent=2) if as_json else _render(info))
