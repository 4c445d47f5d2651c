"""`onepiece inspect`: what an output file holds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onepiece_hpc.store.reader import open_output, summary


def _describe_items(info: dict, shape: list[int]) -> str:
    """'3 images of 64 x 64 px' or '2 videos of 81 frames (5.1 s at 16 fps), 832 x 480 px' (width first)."""
    if info["output_kind"] == "video":
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
    for name, ds in info["outputs"].items():
        lines.append(f"  outputs    /outputs/{name}  {' x '.join(map(str, ds['shape']))}  {ds['dtype']}"
                     f"  ({_describe_items(info, ds['shape'])})")
    means = {k: v for k, v in info["mean_seconds_per_item"].items() if v is not None}
    if means:
        lines.append("  per item   " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in means.items()))
    if info["commit_rate_items_per_s"]:
        lines.append(f"  rate       {info['commit_rate_items_per_s']:.2f} items/s")
    prov = info["provenance"]
    lines.append(f"  made by    onepiece {prov.get('package_version')}, torch {prov.get('torch_version')}, "
                 f"diffusers {prov.get('diffusers_version')} on {prov.get('host')}")
    for t in info["telemetry"]:
        lines.append(f"  telemetry  {t['run']}: {t['ranks']} stage ranks, policy {t['policy']}, {t['moves']} moves, "
                     f"busy {t['busy_rank_s']:.1f} rank-s, idle {t['idle_rank_s']:.1f} rank-s")
    for run in info["runs"]:
        lines.append(f"  run        {run['started_at']} .. {run['finished_at'] or '(not closed)'}  "
                     f"{run['mode']} on {run['host']}: {run['status']}, {run['items_committed']} items")
    return "\n".join(lines)


@click.command("inspect")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def inspect_cmd(output: Path, as_json: bool) -> None:
    """Summarise OUTPUT: items done and missing, shapes, timings, provenance, runs."""
    with open_output(output) as file:
        info = summary(file, output)
    click.echo(json.dumps(info, indent=2) if as_json else _render(info))
