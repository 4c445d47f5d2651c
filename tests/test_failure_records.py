"""Failed units as records: the rule that stops a run whose stage itself fails, and the store's
failure records (a record cut short, a recovered unit, merged views, a kill while one is written)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import invoke, runs_of

STRACE = shutil.which("strace")


def _inspect(output: Path) -> dict:
    result = invoke("inspect", output, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


# -- the rule for "the stage itself fails" ------------------------------------------------------------
def _failure(unit: int):
    from onepiece_hpc.runtime.failures import UnitFailure

    return UnitFailure(unit, unit, unit + 1, "encode", 3, f"OSError: unit {unit}")


def test_failures_are_held_until_a_unit_succeeds_and_three_at_the_start_stop_the_run():
    from onepiece_hpc.runtime.failures import FailureBudget, StageFailed

    budget = FailureBudget()
    budget.failed(_failure(0))
    budget.failed(_failure(1))
    assert [f.unit for f in budget.succeeded()] == [0, 1]
    for unit in range(2, 12):  # after a success, failures are the units' own until 32 in a row
        budget.failed(_failure(unit))
    assert [f.unit for f in budget.finish()] == list(range(2, 12))

    fresh = FailureBudget()
    fresh.failed(_failure(0))
    fresh.failed(_failure(1))
    with pytest.raises(StageFailed, match=r"the first 3 units this run tried all failed; the first: unit 0 "
                                          r"\(item 0\), stage encode on rank 3: OSError: unit 0"):
        fresh.failed(_failure(2))


def test_retried_units_that_fail_again_are_recorded_and_a_streak_stops_any_run():
    from onepiece_hpc.runtime.failures import STREAK, FailureBudget, StageFailed

    retry = FailureBudget()
    for unit in range(5):
        retry.failed(_failure(unit), again=True)
    assert len(retry.finish()) == 5, "units that failed before and fail again say nothing new about the stage"

    short = FailureBudget()
    short.failed(_failure(0))
    with pytest.raises(StageFailed, match="every unit this run tried failed"):
        short.finish()

    long = FailureBudget()
    long.succeeded()
    for unit in range(STREAK - 1):
        long.failed(_failure(unit))
    with pytest.raises(StageFailed, match=f"{STREAK} units in a row failed"):
        long.failed(_failure(STREAK))


def test_an_error_is_kept_with_its_type_and_bounded():
    from onepiece_hpc.errors import UserError
    from onepiece_hpc.runtime.failures import MAX_ERROR_CHARS, describe

    assert describe(FileNotFoundError(2, "No such file or directory", "x.png")) == \
        "FileNotFoundError: [Errno 2] No such file or directory: 'x.png'"
    assert describe(UserError("conditioning image x.png changed")) == "UserError: conditioning image x.png changed"
    assert describe(MemoryError()) == "MemoryError"
    assert len(describe(RuntimeError("y" * 10**6))) == MAX_ERROR_CHARS


def test_a_unit_failure_message_round_trips():
    from onepiece_hpc.runtime.messages import UnitFailed, decode, encode

    message = UnitFailed(rank=3, host="node-1", stage="denoise", unit=41, error="OutOfMemoryError: 2 GiB")
    assert decode(encode(message)) == message


# -- the store: records, torn lines, kills ----------------------------------------------------------
DRIVER = '''
import sys
from pathlib import Path

import numpy as np

from onepiece_hpc.bench.store_scale import SyntheticItems, _provenance
from onepiece_hpc.store.output import OutputLayout, OutputWriter, StoreSettings
from onepiece_hpc.store.provenance import RunInfo

class Items(SyntheticItems):
    """Keys of their own per item count, so that outputs of two counts merge."""

    def keys(self, start, stop):
        return [f"{self.count:08x}{i:056x}" for i in range(start, stop)]

    def rows(self, start, stop):
        table = super().rows(start, stop)
        table["key"] = np.array(self.keys(start, stop), dtype="S64")
        return table


output, retry, count = Path(sys.argv[1]), sys.argv[2] == "retry", int(sys.argv[3])
writer = OutputWriter.open(output, Items(count), OutputLayout("image", (8, 8, 3)), _provenance(), "driver",
                           settings=StoreSettings(file_bytes=1000, sync_interval_s=0.0), run=RunInfo(mode="driver"))
status = "failed"
try:
    pending = writer.pending_mask(retry)
    for item in np.flatnonzero(pending):
        if item == 2 and not retry:
            writer.record_failed(2, 3, "encode", 5, "OSError: broken data stream")
        else:
            writer.commit(int(item), np.full((1, 8, 8, 3), item * 37 % 251, dtype=np.uint8), np.zeros((1, 3)))
    status = "completed"
finally:
    writer.close(status)
'''


def _drive(script: Path, output: Path, mode: str = "plain", strace: list[str] | None = None, count: int = 6):
    """A writer run without a model: item 2 fails (unless `mode` is "retry"), the others commit."""
    return subprocess.run([*(strace or []), sys.executable, str(script), str(output), mode, str(count)],
                          capture_output=True, text=True, timeout=120)


def _assert_driven_output_reads(output: Path, scratch: Path) -> list[dict]:
    """inspect, verify and export all read what is there; returns the failed records inspect shows."""
    info = _inspect(output)
    assert invoke("verify", output).code in (0, 1)
    assert invoke("export", output, scratch).code == 0
    return info["failed"]


def test_a_failure_record_cut_short_is_skipped_and_its_unit_generated_again(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    output = tmp_path / "out/d.h5"
    assert _drive(script, output).returncode == 0
    journal = Path(f"{output}.d/journal.jsonl")
    lines = journal.read_text().splitlines(keepends=True)
    failed = next(k for k, line in enumerate(lines) if '"event": "failed"' in line)
    assert json.loads(lines[failed])["rank"] == 5
    for cut in range(1, len(lines[failed]), 23):  # as if a kill (or a full disk) cut the record's write short
        case = tmp_path / f"cut-{cut}"
        shutil.copytree(output.parent, case)
        copy = case / "d.h5"
        Path(f"{copy}.d/journal.jsonl").write_text("".join(lines[:failed]) + lines[failed][:cut])
        assert _assert_driven_output_reads(copy, case / "png") == []
        assert _drive(script, copy).returncode == 0  # its next line is a line of its own
        info = _inspect(copy)
        assert [f["start"] for f in info["failed"]] == [2] and info["items_done"] == 5
        assert [run["status"] for run in runs_of(copy)] == ["running", "completed"]
        assert any("line(s) are not records onepiece wrote" in w for w in info["warnings"])


def test_a_recovered_unit_stops_counting_and_merged_views_show_failures(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    output, other = tmp_path / "a/d.h5", tmp_path / "b/d.h5"
    assert _drive(script, output).returncode == 0
    assert _drive(script, output).returncode == 0  # a plain run: nothing pending
    assert _inspect(output)["items_failed"] == 1
    assert _drive(script, other, count=7).returncode == 0
    assert invoke("merge", output, other, "-o", tmp_path / "m.h5").code == 0
    merged = _inspect(tmp_path / "m.h5")
    assert merged["items_failed"] == 2 and [f["start"] for f in merged["failed"]] == [2, 8]

    assert _drive(script, output, "retry").returncode == 0
    info = _inspect(output)
    assert info["items_failed"] == 0 and info["items_done"] == 6
    events = [json.loads(line)["event"] for line in Path(f"{output}.d/journal.jsonl").read_text().splitlines()]
    assert events.count("failed") == 1 and events.count("recovered") == 1
    assert json.loads(invoke("verify", output, "--json").out)["failed"] == []


@pytest.mark.skipif(STRACE is None, reason="strace injects the kills (apt-get install strace)")
def test_a_kill_while_a_failure_is_recorded_leaves_a_readable_output(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    log = tmp_path / "trace.log"
    traced = _drive(script, tmp_path / "reference/d.h5",
                    strace=[STRACE, "-qq", "-s", "400", "-o", str(log), "-e", "trace=write,fsync"])
    assert traced.returncode == 0, traced.stderr
    calls = [line for line in log.read_text().splitlines() if re.match(r"(write|fsync)\(", line)]
    record = next(k for k, line in enumerate(calls) if '\\"event\\": \\"failed\\"' in line)
    for name, nth in (("write", sum(c.startswith("write(") for c in calls[:record + 1])),
                      ("fsync", sum(c.startswith("fsync(") for c in calls[:record + 1]) + 1)):
        case = tmp_path / f"{name}-{nth}"
        output = case / "d.h5"
        killed = _drive(script, output, strace=[STRACE, "-qq", "-o", "/dev/null", "-e", f"trace={name}",
                                                "-e", f"inject={name}:signal=KILL:when={nth}"])
        assert killed.returncode in (-9, 137), f"{name} #{nth}: not killed ({killed.stderr[-500:]})"
        recorded = _assert_driven_output_reads(output, case / "png")
        assert [f["start"] for f in recorded] == ([2] if name == "fsync" else [])
        assert _drive(script, output).returncode == 0
        info = _inspect(output)
        assert info["items_done"] == 5 and [f["start"] for f in info["failed"]] == [2]
        assert _drive(script, output, "retry").returncode == 0
        assert _inspect(output)["complete"]
