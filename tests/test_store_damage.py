"""Damaged and hostile files: every command that reads an output (inspect, export, merge, verify,
and a run resuming it) gives exit 2 naming the damaged file, never a traceback; verify names the
damage in its report; verify --repair plus a run regenerates exactly the damaged item."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from support import invoke, run_cli, tamper, write_job

PROMPTS = ["a lighthouse at dusk", "a red bicycle", "three green apples"]
COMMANDS = ("inspect", "export", "merge", "verify", "run")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A job folder (job.yaml, prompts.txt) with its complete output out/t.h5."""
    folder = tmp_path_factory.mktemp("finished")
    assert invoke("run", write_job(folder, PROMPTS, name="whole"), "--monolithic").code == 0
    return folder


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    """The complete output of another job (its data file is planted into the first)."""
    folder = tmp_path_factory.mktemp("other")
    assert invoke("run", write_job(folder, ["a blue door", "a cat", "a kite"], name="other"), "--monolithic").code == 0
    return folder / "out/t.h5"


def copy_job(finished: Path, where: Path) -> tuple[Path, Path]:
    """A copy of the job folder and its output, to damage: (job file, output)."""
    where.mkdir(parents=True, exist_ok=True)
    for name in ("job.yaml", "prompts.txt"):
        shutil.copy(finished / name, where / name)
    (where / "out").mkdir()
    shutil.copy(finished / "out/t.h5", where / "out/t.h5")
    shutil.copytree(finished / "out/t.h5.d", where / "out/t.h5.d")
    return where / "job.yaml", where / "out/t.h5"


def data_file(output: Path) -> Path:
    return Path(f"{output}.d/data-00000.h5")


def truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def not_an_output(path: Path) -> None:
    path.unlink()
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((3, 4, 4, 3), dtype=np.uint8)
        f.attrs["description"] = "someone else's HDF5 file"


def plant_other_data(output: Path, other: Path) -> None:
    shutil.copy(data_file(other), data_file(output))


#: damage -> (what it does to a copied output, the path the error must name)
DAMAGE = {
    "truncated data file": (lambda out, other: truncate(data_file(out), 0.5), data_file),
    "data file cut to its first bytes": (lambda out, other: truncate(data_file(out), 0.02), data_file),
    "truncated index": (lambda out, other: truncate(out, 0.5), lambda out: out),
    "foreign HDF5 file": (lambda out, other: not_an_output(out), lambda out: out),
    "not HDF5": (lambda out, other: out.write_text("name,prompt\nx,y\n"), lambda out: out),
    "empty file": (lambda out, other: out.write_bytes(b""), lambda out: out),
    "missing data folder": (lambda out, other: shutil.rmtree(f"{out}.d"), lambda out: Path(f"{out}.d")),
    "another output's data file": (plant_other_data, data_file),
    "data file not HDF5": (lambda out, other: data_file(out).write_bytes(b"\x00" * 4096), data_file),
    "data file gone": (lambda out, other: data_file(out).unlink(), data_file),
}


def command_args(command: str, job: Path, output: Path) -> list:
    return {"inspect": ["inspect", output], "export": ["export", output, output.parent / "png"],
            "merge": ["merge", output, "-o", output.parent / "merged.h5"], "verify": ["verify", output],
            "run": ["run", job, "--monolithic"]}[command]


def assert_refused(command: str, code: int, out: str, err: str, named: Path) -> None:
    allowed = (1, 2) if command == "verify" else (2,)
    assert code in allowed, f"{command}: exit {code}\n{out}\n{err}"
    assert "Traceback" not in err
    assert str(named) in out + err, f"{command} did not name {named}:\n{out}\n{err}"


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_output_is_named_by_every_command(finished, other, tmp_path, damage):
    job, output = copy_job(finished, tmp_path / "copy")
    harm, named = DAMAGE[damage]
    harm(output, other)
    for command in COMMANDS:
        result = invoke(*command_args(command, job, output))
        assert_refused(command, result.code, result.out, result.err, named(output))
    assert not (output.parent / "png").exists() or not any((output.parent / "png").iterdir())
    assert not (output.parent / "merged.h5").exists()


@pytest.mark.parametrize("damage", ["truncated data file", "another output's data file"])
def test_damage_in_a_real_process_gives_no_traceback(finished, other, tmp_path, damage):
    job, output = copy_job(finished, tmp_path / "copy")
    harm, named = DAMAGE[damage]
    harm(output, other)
    for command in COMMANDS:
        proc = run_cli(*command_args(command, job, output))
        assert_refused(command, proc.returncode, proc.stdout, proc.stderr, named(output))


def facts(output: Path, export_to: Path) -> dict:
    """What a user reads back from an output: its summary, its verify report, its exported files."""
    info = invoke("inspect", output, "--json")
    assert info.code == 0, info.err
    summary = json.loads(info.out)
    summary.pop("file")
    report = invoke("verify", output, "--json")
    verified = json.loads(report.out)
    verified.pop("file")
    assert invoke("export", output, export_to).code == 0
    exported = {p.name: p.read_bytes() for p in sorted(export_to.iterdir())}
    return {"summary": summary, "verify": (report.code, verified), "exported": exported}


#: bytes of the index's superblock (0-95), its root group's object header and symbol table, and
#: the object headers of its datasets and attributes further on
INDEX_OFFSETS = [0, 4, 8, 9, 13, 16, 24, 32, 40, 48, 56, 64, 80, 96, 100, 104, 120, 136, 160, 200, 400, 800, 1000,
                 1500, 2000]


def test_bit_flips_in_the_index_are_named_or_change_nothing(finished, tmp_path):
    """HDF5 (format 0 superblock, version 1 object headers) keeps no checksum, so a flipped bit that
    nothing reads can't be seen; any flip must either be named as damage or leave every answer as
    it was, and never give a traceback."""
    job, output = copy_job(finished, tmp_path / "copy")
    clean = output.read_bytes()
    expected = facts(output, tmp_path / "png-clean")
    silent = []
    for offset in INDEX_OFFSETS:
        output.write_bytes(clean)
        flip(output, offset)
        results = {command: invoke(*command_args(command, job, output)) for command in ("inspect", "verify")}
        if all(r.code == 0 for r in results.values()):
            if facts(output, tmp_path / f"png-{offset}") != expected:
                silent.append(offset)
            continue
        for command in COMMANDS:
            result = invoke(*command_args(command, job, output))
            assert_refused(command, result.code, result.out, result.err, output)
            shutil.rmtree(output.parent / "png", ignore_errors=True)
    assert not silent, f"flips at offsets {silent} changed what the output reads as, and nothing said so"


def test_a_flipped_bit_in_an_index_attribute_is_named(finished, tmp_path):
    """A flip inside an attribute's value (here the job fingerprint, still 64 hex digits) leaves a file
    HDF5 opens; verify must still see that the index no longer says what it said."""
    job, output = copy_job(finished, tmp_path / "copy")
    with h5py.File(output, "r") as f:
        fingerprint = f.attrs["job_fingerprint"].encode()
    data = output.read_bytes()
    assert data.count(fingerprint) == 1
    changed = fingerprint[:10] + (b"0" if fingerprint[10:11] != b"0" else b"1") + fingerprint[11:]
    output.write_bytes(data.replace(fingerprint, changed))
    for command in ("inspect", "verify"):
        result = invoke(*command_args(command, job, output))
        assert_refused(command, result.code, result.out, result.err, output)


def test_journal_garbage_lines_are_named_and_the_outputs_still_read(finished, tmp_path):
    """The journal records runs; the outputs don't need it (issue 12: readers open the outputs even
    when the run records are damaged), so its unreadable lines are named, and skipped."""
    job, output = copy_job(finished, tmp_path / "copy")
    journal = Path(f"{output}.d/journal.jsonl")
    with open(journal, "ab") as f:
        f.write(b"garbage\n\x00\xff\xfe binary \x01\n{\"event\": \"run\", \"run\": 0, \"sta\n[1, 2]\n\"text\"\nnull\n"
                b"{\"event\": 7}\n{\"event\": \"file\", \"file\": \"zz\"}\n")
    for command in ("inspect", "export", "merge", "run"):
        proc = run_cli(*command_args(command, job, output))
        assert proc.returncode == 0, proc.stderr
        assert str(journal) in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("verify", output)
    assert proc.returncode == 1 and str(journal) in proc.stdout and "3 of 3 items done and intact" in proc.stdout


def test_journal_records_of_the_wrong_types_are_skipped_like_garbage(finished, tmp_path):
    job, output = copy_job(finished, tmp_path / "copy")
    journal = Path(f"{output}.d/journal.jsonl")
    with open(journal, "ab") as f:
        f.write(b"{\"event\": \"run\", \"run\": \"q\"}\n{\"event\": \"end\", \"run\": [1]}\n"
                b"{\"event\": \"run\", \"run\": 9, \"software\": 5, \"hardware\": \"gpu\", \"items_committed\": \"x\"}\n")
    for command in ("inspect", "export", "merge", "run"):
        result = invoke(*command_args(command, job, output))
        assert result.code == 0, f"{command}: {result.err}"


def test_a_journal_that_is_not_a_file_is_named(finished, tmp_path):
    job, output = copy_job(finished, tmp_path / "copy")
    journal = Path(f"{output}.d/journal.jsonl")
    journal.unlink()
    journal.mkdir()
    for command in COMMANDS:
        result = invoke(*command_args(command, job, output))
        assert_refused(command, result.code, result.out, result.err, journal)


def test_verify_repair_then_run_regenerates_exactly_the_damaged_item(finished, tmp_path):
    job, output = copy_job(finished, tmp_path / "copy")
    with h5py.File(finished / "out/t.h5", "r") as f:
        original = f["outputs/images"][...]
        committed = f["committed_at"][...]
    tamper(output, [1], pixels=7)
    found = invoke("verify", output)
    assert found.code == 1 and "damaged    1 item(s) whose bytes fail their digest: 1" in found.out, found.out
    repaired = invoke("verify", "--repair", output, "--json")
    report = json.loads(repaired.out)
    assert repaired.code == 1 and report["damaged"] == [1] and report["repaired"] == 1, repaired.out
    after = json.loads(invoke("verify", output, "--json").out)
    assert after["damaged"] == [] and after["not_done"] == 1 and after["done_ok"] == 2
    rerun = invoke("run", job, "--monolithic")
    assert rerun.code == 0 and "3/3 items done (1 this run" in rerun.out, rerun.out + rerun.err
    with h5py.File(output, "r") as f:
        np.testing.assert_array_equal(f["outputs/images"][...], original)
        again = f["committed_at"][...]
    assert again[0] == committed[0] and again[2] == committed[2] and again[1] != committed[1]
    assert invoke("verify", output).code == 0
