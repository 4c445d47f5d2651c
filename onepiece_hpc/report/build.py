"""`onepiece report`: read an output (finished, being written, merged, or from one process), draw
it, and publish one self-contained HTML file (a temporary file beside the target, then os.replace:
a reader never sees half a report)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from onepiece_hpc.errors import UserError
from onepiece_hpc.report import sections
from onepiece_hpc.report.contact_sheet import MAX_THUMBS, contact_sheet, pick_evenly
from onepiece_hpc.report.output_data import IN_PROGRESS, read_output_facts
from onepiece_hpc.report.page import Page, note
from onepiece_hpc.report.telemetry_data import MAX_SECTIONS, staged_runs
from onepiece_hpc.report.telemetry_sections import NO_STAGED_RUN, telemetry_parts
from onepiece_hpc.store.telemetry import LIVE_EVERY_S, LIVE_FIRST_S

SUFFIX = ".report.html"


def default_target(output: Path) -> Path:
    """OUT.h5 -> OUT.report.html beside it."""
    return output.with_name(output.stem + SUFFIX)


def _no_telemetry(kind: str, state: str, shards: int) -> str:
    """Why there is no rank timeline to draw."""
    if kind == "merged":
        return (f"No staged run recorded in any of the {shards} shards: they ran in one process each (--monolithic, "
                "a sweep's usual task), so there is no rank timeline")
    if state == IN_PROGRESS:
        return (f"No telemetry record yet. A staged run writes its first live copy {LIVE_FIRST_S:.0f} s after it "
                f"starts and replaces it every {LIVE_EVERY_S:.0f} s: make the report again in a while. (A run in "
                "one process, --monolithic, records none.)")
    return NO_STAGED_RUN


def render_report(output: Path) -> str:
    """The report of the output at `output`, as HTML text."""
    from onepiece_hpc.store.reader import view_of

    view = view_of(Path(output))
    facts = read_output_facts(view)
    found = staged_runs(view)
    page = Page(f"onepiece report: {facts.job_name or facts.path.name}")
    page.section("progress", "Progress").extend(sections.progress_parts(page, facts))
    page.section("throughput", "Throughput").extend(sections.throughput_parts(page, facts, found.runs))
    page.section("latency", "Item latency").extend(sections.latency_parts(page, facts, found.runs))
    telemetry = page.section("telemetry", "Ranks and stages")
    if not found.runs:
        telemetry.append(note(_no_telemetry(view.kind, facts.state, found.shards_without)))
    else:
        if found.shards_with > len(found.runs) or (view.kind == "merged" and found.shards_without):
            telemetry.append(note(f"{found.shards_with} shard(s) recorded a staged run, {found.shards_without} did "
                                  f"not; the first {min(MAX_SECTIONS, found.shards_with)} are drawn, each its latest "
                                  "run."))
        for number, run in enumerate(found.runs):
            telemetry.extend(telemetry_parts(page, run, number))
    page.section("failed", "Failed and missing items").extend(sections.failed_parts(facts))
    picked = pick_evenly(np.flatnonzero(facts.done_mask), MAX_THUMBS)
    page.section("outputs", "Contact sheet").extend(sections.contact_sheet_parts(
        contact_sheet(view, picked), facts.progress.items_done, view.output_kind == "video"))
    page.section("provenance", "Provenance").extend(sections.provenance_parts(facts))
    return page.render(sections.header(facts))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_report(output: Path, target: Path | None = None) -> Path:
    """Write the report of `output` to `target` (default: beside it); returns where it went."""
    output = Path(output)
    target = Path(target) if target is not None else default_target(output)
    if target.resolve() == output.resolve():
        raise UserError(f"{target}: the report would replace the output itself; fix: give -o another file")
    folder = target.parent
    if not folder.is_dir():
        raise UserError(f"{target}: its folder {folder} does not exist; fix: create it or give -o another path")
    text = render_report(output)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise UserError(f"{target}: can't write in {folder} ({err.strerror}); fix: give -o a writable path") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o666 & ~_umask())  # as any file the user makes (mkstemp's is 0600)
        os.replace(temporary, target)
    except OSError as err:
        Path(temporary).unlink(missing_ok=True)
        raise UserError(f"{target}: the report could not be written ({err.strerror}); fix: free space there or "
                        "give -o another path") from None
    return target
