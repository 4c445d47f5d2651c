"""`onepiece verify`: is every done item intact, and what is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command("verify")
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--repair", is_flag=True,
              help="Mark damaged items to be generated again (the next run of the job makes them); files that "
                   "can't be read are moved aside, never deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def verify(output: Path, repair: bool, as_json: bool) -> None:
    """Check every done item of OUTPUT against its digest; name damaged and missing items.

    Exit code 0: complete and intact; 1: something is damaged, lost or not generated yet.
    """
    from onepiece_hpc.store.verify import ranges, verify_output

    report = verify_output(output, repair=repair)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        lines = [f"{output}: {report.done_ok} of {report.items_total} items done and intact"]
        if report.damaged:
            lines.append(f"  damaged    {len(report.damaged)} item(s) whose bytes fail their digest: "
                         f"{ranges(report.damaged)}")
        for problem in report.unreadable:
            lines.append(f"  unreadable {problem}")
        if report.lost:
            lines.append(f"  lost       {len(report.lost)} item(s) in files that are gone or damaged: "
                         f"{ranges(report.lost)}")
        if report.unchecked:
            lines.append(f"  unchecked  {report.unchecked} done item(s) carry no digest (written by format 2)")
        for problem in report.duplicates:
            lines.append(f"  duplicate  {problem}")
        if report.not_done:
            lines.append(f"  not done   {report.not_done} item(s) not generated yet")
        if report.failed:
            lines.append(f"  failed     {len(report.failed)} of them failed when generated: {ranges(report.failed)}; "
                         "fix: onepiece run JOB --retry-failed")
        if report.repaired:
            lines.append(f"  repaired   {report.repaired} item(s) marked to be generated again; run the job "
                         "again to make them")
        for aside in report.moved_aside:
            lines.append(f"  moved      a damaged file aside to {aside}")
        if not report.clean and not repair:
            lines.append("  fix: onepiece verify --repair OUTPUT, then run the job again")
        click.echo("\n".join(lines))
    sys.exit(0 if report.complete else 1)
