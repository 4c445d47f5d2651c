"""The sbatch renderer (golden files) and the batch script's behaviour, with hostile strings."""

from __future__ import annotations

import json
import re
import sys
import typing
from pathlib import Path

import pytest

from onepiece_hpc.exit_codes import ExitCode
from onepiece_hpc.runtime.drain import DRAIN_SIGNALS
from onepiece_hpc.runtime.options import RunOptions
from onepiece_hpc.slurm.script import SCRIPT_EXIT_CODES, render_script, sbatch_argv, script_arguments
from onepiece_hpc.slurm.submit import successor_options
from onepiece_hpc.jobfile.job import SlurmFields
from fake_slurm import HOSTILE, ONE_LINE, SRUN, fake, run_script
from slurm_helpers import REPO

GOLDEN = Path(__file__).parent / "golden"


def hostile_submission(folder: str) -> tuple[str, tuple[str, ...]]:
    options = SlurmFields(nodes=2, ntasks_per_node=4, gpus_per_node=4, time="1-00:00:00", partition="gpu",
                          account="proj-1", mpi="pmi2", drain_signal="USR2", drain_seconds=300, requeue="chain",
                          extra=("--mail-type=END", f"--comment={ONE_LINE}"))
    script = render_script(options, "hostile.job")
    log = f"{folder}/%j.log"
    args = [*script_arguments("/opt/venv/bin/python", options, successor_options(log, options)),
            f"{folder}/job.yaml", "--output", f"{folder}/out.h5"]
    return script, sbatch_argv(Path(folder) / "job.sbatch", log, args, options.extra)


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


def test_the_script_passes_hostile_arguments_on_as_data(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.json"
    dump = f"import json, sys; json.dump(sys.argv[1:], open({str(record)!r}, 'w'))"
    python = fake(bin_dir, "fakepython", f'exec {sys.executable} -c "{dump}" "$@"\n')
    fake(bin_dir, "srun", SRUN)
    job, out = f"{tmp_path}/{HOSTILE}/job.yaml", f"{tmp_path}/{HOSTILE}/out.h5"
    one = run_script(tmp_path, ["--python", str(python), job, "--output", out], 1, [bin_dir])
    assert one.returncode == 0, one.stderr
    assert json.loads(record.read_text()) == ["-m", "onepiece_hpc.slurm.one_task", "--drain-signal", "USR1", job,
                                              "--output", out]
    four = run_script(tmp_path, ["--python", str(python), "--mpi", "pmi2", "--drain-signal", "USR2",
                                  "--drain-seconds", "60", job, "--output", out], 4, [bin_dir])
    assert four.returncode == 0, four.stderr
    argv = json.loads(record.read_text())
    assert argv[argv.index("--report") + 1].startswith("/tmp/onepiece-report.")  # a fresh one, never a set name
    report = argv[argv.index("--report") + 1]
    del argv[argv.index("--report"):argv.index("--report") + 2]
    assert argv == ["-m", "onepiece_hpc.runtime.rank_main", "--expect-ranks", "4", "--progress", "lines",
                    "--drain-signal", "USR2", "--drain-seconds", "60", "--heartbeat-timeout", "60", job, "--output", out]
    # what the script passes is what a rank parses: its own flags and the hostile paths, as they were
    assert RunOptions.from_argv([*argv[2:], "--report", report]) == RunOptions(
        job=Path(job), output=Path(out), expect_ranks=4, progress="lines", drain_signal="USR2", drain_seconds=60.0,
        heartbeat_timeout=60.0, report=Path(report))
    assert not list(tmp_path.rglob("PWNED"))


def test_the_scripts_exit_codes_choices_and_defaults_are_rendered_from_where_they_are_defined():
    script = render_script(SlurmFields(), None)
    (readonly,) = [line for line in script.splitlines() if line.startswith("readonly EXIT_")]
    assert readonly.split()[1:] == [f"EXIT_{code.name}={int(code)}" for code in SCRIPT_EXIT_CODES]
    assert set(SCRIPT_EXIT_CODES) == set(ExitCode) - {ExitCode.UNKNOWN}
    assert not re.search(r"@[A-Z][A-Z_]*@", script)  # every placeholder filled in
    # the job file's choices are the runtime's (jobfile/job.py writes them again as Literal types)
    assert typing.get_args(SlurmFields.model_fields["drain_signal"].annotation) == DRAIN_SIGNALS
    assert f"    {'|'.join(DRAIN_SIGNALS)}) ;;" in script and "    scontrol|chain|none) ;;" in script
    defaults = SlurmFields()
    assert f"\ndrain_seconds={defaults.drain_seconds}\n" in script
    assert f"\nheartbeat_timeout={defaults.heartbeat_timeout}\n" in script


def test_the_script_names_a_missing_or_failing_srun(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = fake(bin_dir, "fakepython", "exit 0\n")
    missing = run_script(tmp_path, ["--python", str(python), "--mpi", "pmi2", "job.yaml"], 4, [bin_dir], system=False)
    assert missing.returncode == 2 and "srun not found on PATH" in missing.stderr
    fake(bin_dir, "srun", 'echo "srun: error: Couldn\'t find the specified plugin name for mpi/bogus" >&2; exit 1\n')
    failing = run_script(tmp_path, ["--python", str(python), "--mpi", "bogus", "job.yaml"], 4, [bin_dir])
    assert failing.returncode == 1
    assert "mpi/bogus" in failing.stderr and "srun --mpi=bogus failed with exit code 1" in failing.stderr


def test_shards_need_an_array_task_id_and_a_numeric_offset(tmp_path):
    result = run_script(tmp_path, ["--shards", str(tmp_path), "--offset", "a[$(touch PWNED)]"], 1, [])
    assert result.returncode == 2 and "--shards needs a job array" in result.stderr
    assert not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize("flag,value", [("--drain-signal", "KILL"), ("--requeue", "$(touch PWNED)"),
                                        ("--drain-seconds", "1;touch PWNED")])
def test_bad_drain_settings_are_refused_before_anything_runs(tmp_path, flag, value):
    result = run_script(tmp_path, [flag, value, "job.yaml"], 1, [])
    assert result.returncode == 2 and flag in result.stderr
    assert not list(tmp_path.rglob("PWNED"))
