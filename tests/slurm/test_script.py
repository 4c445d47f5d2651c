"""The sbatch renderer (golden files) and the batch script's behaviour, with hostile strings."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from onepiece_hpc.slurm.script import render_script, sbatch_argv, script_arguments
from onepiece_hpc.spec.job import SlurmFields
from slurm_helpers import REPO

GOLDEN = Path(__file__).parent / "golden"
HOSTILE = "it's \"q\" $(touch PWNED) `touch PWNED`; touch PWNED\nline two | & > x"
ONE_LINE = HOSTILE.replace("\n", " ")  # sbatch options are single lines; line breaks are refused there


def hostile_submission(folder: str) -> tuple[str, tuple[str, ...]]:
    options = SlurmFields(nodes=2, ntasks_per_node=4, gpus_per_node=4, time="1-00:00:00", partition="gpu",
                          account="proj-1", extra=("--mail-type=END", f"--comment={ONE_LINE}"))
    script = render_script(options, "hostile.job")
    args = [*script_arguments("/opt/venv/bin/python", "pmi2"), f"{folder}/job.yaml", "--output", f"{folder}/out.h5"]
    return script, sbatch_argv(Path(folder) / "job.sbatch", f"{folder}/%j.log", args, options.extra)


def test_renderer_matches_golden_files_and_keeps_hostile_strings_out_of_the_script():
    folder = f"/data/{HOSTILE}"
    script, argv = hostile_submission(folder)
    assert script == (GOLDEN / "hostile.sbatch").read_text(encoding="utf-8")
    assert list(argv) == json.loads((GOLDEN / "hostile.argv.json").read_text(encoding="utf-8"))
    for fragment in ("PWNED", "line two", "\"q\""):
        assert fragment not in script
    assert f"{folder}/job.yaml" in argv and f"--comment={ONE_LINE}" in argv


def test_the_template_in_slurm_is_the_renderer_with_defaults():
    assert (REPO / "slurm" / "onepiece.sbatch").read_text(encoding="utf-8") == render_script(SlurmFields(), None)


@pytest.mark.parametrize("field,value", [("partition", "gpu\n#SBATCH --uid=0"), ("time", "1:00;rm"),
                                         ("account", "a b"), ("mem", "$(id)"), ("constraint", "a100 b"),
                                         ("extra", ["--x=1\n--y"])])
def test_values_that_could_break_out_of_an_sbatch_line_are_refused(field, value):
    with pytest.raises(ValueError):
        SlurmFields.model_validate({field: value})


def _fake(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _run_script(tmp_path: Path, args: list[str], ntasks: int, path: list[Path],
                system: bool = True) -> subprocess.CompletedProcess:
    """Run the rendered script as sbatch would, with PATH = `path` (+ the system's, without Slurm)."""
    script = tmp_path / "job.sbatch"
    script.write_text(render_script(SlurmFields(), "t"))
    system_dirs = ["/usr/bin", "/bin"] if system else []
    env = {"PATH": os.pathsep.join([*map(str, path), *system_dirs]), "SLURM_NTASKS": str(ntasks), "SLURM_JOB_ID": "1"}
    return subprocess.run(["/bin/bash", str(script), *args], capture_output=True, text=True, timeout=30, env=env,
                          cwd=tmp_path)


def test_the_script_passes_hostile_arguments_on_as_data(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.json"
    dump = f"import json, sys; json.dump(sys.argv[1:], open({str(record)!r}, 'w'))"
    python = _fake(bin_dir, "fakepython", f'exec {sys.executable} -c "{dump}" "$@"\n')
    _fake(bin_dir, "srun", 'shift; exec "$@"\n')  # drops --mpi=..., runs the rank command
    job, out = f"{tmp_path}/{HOSTILE}/job.yaml", f"{tmp_path}/{HOSTILE}/out.h5"
    one = _run_script(tmp_path, ["--python", str(python), job, "--output", out], 1, [bin_dir])
    assert one.returncode == 0, one.stderr
    assert json.loads(record.read_text()) == ["-m", "onepiece_hpc.cli.main", "run", "--monolithic", job, "--output", out]
    four = _run_script(tmp_path, ["--python", str(python), "--mpi", "pmi2", job, "--output", out], 4, [bin_dir])
    assert four.returncode == 0, four.stderr
    assert json.loads(record.read_text()) == ["-m", "onepiece_hpc.runtime.rank_main", "--expect-ranks", "4",
                                              "--progress", "lines", job, "--output", out]
    assert not list(tmp_path.rglob("PWNED"))


def test_the_script_names_a_missing_or_failing_srun(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = _fake(bin_dir, "fakepython", "exit 0\n")
    missing = _run_script(tmp_path, ["--python", str(python), "--mpi", "pmi2", "job.yaml"], 4, [bin_dir], system=False)
    assert missing.returncode == 2 and "srun not found on PATH" in missing.stderr
    _fake(bin_dir, "srun", 'echo "srun: error: Couldn\'t find the specified plugin name for mpi/bogus" >&2; exit 1\n')
    failing = _run_script(tmp_path, ["--python", str(python), "--mpi", "bogus", "job.yaml"], 4, [bin_dir])
    assert failing.returncode == 1
    assert "mpi/bogus" in failing.stderr and "srun --mpi=bogus failed with exit code 1" in failing.stderr


def test_shards_need_an_array_task_id_and_a_numeric_offset(tmp_path):
    result = _run_script(tmp_path, ["--shards", str(tmp_path), "--offset", "a[$(touch PWNED)]"], 1, [])
    assert result.returncode == 2 and "--shards needs a job array" in result.stderr
    assert not list(tmp_path.rglob("PWNED"))
