"""The sbatch renderer (golden files) and the batch script's behaviour, with hostile strings."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

from onepiece_hpc.exit_codes import ExitCode
from onepiece_hpc.runtime.drain import DRAIN_SIGNALS
from onepiece_hpc.runtime.options import RunOptions
from onepiece_hpc.slurm.script import SCRIPT_EXIT_CODES, render_script, sbatch_argv, script_arguments
from onepiece_hpc.slurm.submit import successor_options
from onepiece_hpc.jobfile.job import SlurmFields
from slurm_helpers import REPO

GOLDEN = Path(__file__).parent / "golden"
HOSTILE = "it's \"q\" $(touch PWNED) `touch PWNED`; touch PWNED\nline two | & > x"
ONE_LINE = HOSTILE.replace("\n", " ")  # sbatch options are single lines; line breaks are refused there


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


def _fake(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


#: a fake srun: drops its own options (--mpi=..., --kill-on-bad-exit=1), runs the task command
SRUN = 'while [ "${1#--}" != "$1" ]; do shift; done; exec "$@"\n'


def _env(ntasks: int, path: list[Path], system: bool = True) -> dict[str, str]:
    system_dirs = ["/usr/bin", "/bin"] if system else []
    return {"PATH": os.pathsep.join([*map(str, path), *system_dirs]), "SLURM_NTASKS": str(ntasks), "SLURM_JOB_ID": "1"}


def _script(tmp_path: Path, options: SlurmFields | None = None) -> Path:
    script = tmp_path / "job.sbatch"
    script.write_text(render_script(options or SlurmFields(), "t"))
    return script


def _run_script(tmp_path: Path, args: list[str], ntasks: int, path: list[Path],
                system: bool = True) -> subprocess.CompletedProcess:
    """Run the rendered script as sbatch would, with PATH = `path` (+ the system's, without Slurm)."""
    return subprocess.run(["/bin/bash", str(_script(tmp_path)), *args], capture_output=True, text=True, timeout=30,
                          env=_env(ntasks, path, system), cwd=tmp_path)


def test_the_script_passes_hostile_arguments_on_as_data(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.json"
    dump = f"import json, sys; json.dump(sys.argv[1:], open({str(record)!r}, 'w'))"
    python = _fake(bin_dir, "fakepython", f'exec {sys.executable} -c "{dump}" "$@"\n')
    _fake(bin_dir, "srun", SRUN)
    job, out = f"{tmp_path}/{HOSTILE}/job.yaml", f"{tmp_path}/{HOSTILE}/out.h5"
    one = _run_script(tmp_path, ["--python", str(python), job, "--output", out], 1, [bin_dir])
    assert one.returncode == 0, one.stderr
    assert json.loads(record.read_text()) == ["-m", "onepiece_hpc.slurm.one_task", "--drain-signal", "USR1", job,
                                              "--output", out]
    four = _run_script(tmp_path, ["--python", str(python), "--mpi", "pmi2", "--drain-signal", "USR2",
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


@pytest.mark.parametrize("flag,value", [("--drain-signal", "KILL"), ("--requeue", "$(touch PWNED)"),
                                        ("--drain-seconds", "1;touch PWNED")])
def test_bad_drain_settings_are_refused_before_anything_runs(tmp_path, flag, value):
    result = _run_script(tmp_path, [flag, value, "job.yaml"], 1, [])
    assert result.returncode == 2 and flag in result.stderr
    assert not list(tmp_path.rglob("PWNED"))


class Slurm:
    """Fake Slurm commands that note each call (one line of arguments per call) in `calls`; the
    fake srun runs `srun_body` in place of the ranks."""

    def __init__(self, tmp_path: Path, srun_body: str, state: str = "RUNNING None") -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.calls = tmp_path / "calls"
        note = f'echo "$(basename "$0") $*" >> {shlex.quote(str(self.calls))}\n'
        _fake(self.bin, "squeue", note + f"echo {shlex.quote(state)}\n")  # the job's state and reason
        for name in ("scontrol", "scancel"):
            _fake(self.bin, name, note)
        dump = f"import json, sys; json.dump(sys.argv[1:], open({str(tmp_path / 'sbatch.json')!r}, 'w'))"
        _fake(self.bin, "sbatch", note + f'{sys.executable} -c "{dump}" "$@"; echo 77\n')
        _fake(self.bin, "srun", note + srun_body)
        self.python = _fake(self.bin, "fakepython", "exit 0\n")

    def called(self, name: str) -> list[str]:
        lines = self.calls.read_text().splitlines() if self.calls.exists() else []
        return [line.split(" ", 1)[1] if " " in line else "" for line in lines if line.split(" ", 1)[0] == name]


def _wait_for(path: Path, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while not path.exists():
        assert time.monotonic() < end, f"{path.name} did not appear within {deadline_s:.0f} s"
        time.sleep(0.02)


def _drained_run(tmp_path: Path, slurm: Slurm, script_args: list[str], sig: int,
                 options: SlurmFields | None = None) -> subprocess.CompletedProcess:
    """Start the script with a fake step that runs until the drain reaches it; signal the script
    (once the step runs) with `sig`; return how the script ended."""
    proc = subprocess.Popen(["/bin/bash", str(_script(tmp_path, options)), "--python", str(slurm.python),
                             "--mpi", "pmi2", *script_args, "job.yaml"], env=_env(4, [slurm.bin]), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path / "step-started")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


#: a step that starts, then waits until the drain (the fake scancel's call) reaches it and exits with CODE
STEP = 'touch step-started; until grep -q "^scancel" calls 2>/dev/null; do sleep 0.05; done; exit {code}\n'


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM], ids=["drain-signal", "sigterm-alone"])
def test_a_drain_is_passed_to_every_task_and_a_run_with_progress_is_requeued(tmp_path, sig):
    slurm = Slurm(tmp_path, STEP.format(code=3))
    result = _drained_run(tmp_path, slurm, ["--drain-signal", "USR2"], sig)
    assert result.returncode == 3, result.stderr
    assert f"got {signal.Signals(sig).name}: draining" in result.stderr
    # the configured drain signal, to the step's tasks through slurmctld (srun would kill them on SIGTERM)
    assert slurm.called("scancel")[0] == "--signal=USR2 1"
    assert slurm.called("scontrol") == ["requeue 1"] and "requeueing job 1" in result.stderr
    srun = slurm.called("srun")[0]
    assert "--kill-on-bad-exit=1" in srun and "--drain-signal USR2 --drain-seconds 120" in srun


@pytest.mark.parametrize("state,requeued", [("COMPLETING None", False), ("COMPLETING TimeLimit", True)],
                         ids=["scancel", "time-limit"])
def test_a_cancelled_job_is_not_brought_back(tmp_path, state, requeued):
    """scancel sends SIGTERM to the script and every task: the run drains, but the job is not
    requeued (Slurm is ending it); at the time limit it is."""
    slurm = Slurm(tmp_path, STEP.format(code=3), state=state)
    result = _drained_run(tmp_path, slurm, ["--requeue", "chain"], signal.SIGTERM)
    assert result.returncode == 3, result.stderr
    assert slurm.called("squeue") == ["-h -j 1 -o %T %r"]
    assert bool(slurm.called("sbatch")) == requeued
    assert ("was cancelled, so it is not requeued" in result.stderr) != requeued


def test_a_drained_run_without_progress_is_not_requeued(tmp_path):
    slurm = Slurm(tmp_path, STEP.format(code=5))
    result = _drained_run(tmp_path, slurm, [], signal.SIGUSR1)
    assert result.returncode == 5
    assert "not requeued" in result.stderr and "raise slurm.time" in result.stderr
    assert slurm.called("scontrol") == [] and slurm.called("sbatch") == []


def test_requeue_none_leaves_a_drained_job_alone(tmp_path):
    slurm = Slurm(tmp_path, STEP.format(code=3))
    result = _drained_run(tmp_path, slurm, ["--requeue", "none"], signal.SIGUSR1)
    assert result.returncode == 3 and "slurm.requeue: none" in result.stderr
    assert slurm.called("scontrol") == [] and slurm.called("sbatch") == []


def test_requeue_chain_submits_a_successor_of_the_same_script_and_arguments(tmp_path):
    slurm = Slurm(tmp_path, STEP.format(code=3))
    log = f"{tmp_path}/{ONE_LINE}/%j.log"
    result = _drained_run(tmp_path, slurm, ["--requeue", "chain", "--successor-arg", f"--output={log}",
                                            "--successor-arg", "--mail-type=END"], signal.SIGUSR1)
    assert result.returncode == 3, result.stderr
    assert slurm.called("scontrol") == []
    assert "submitted job 77 to resume once job 1 has ended" in result.stderr
    recorded = json.loads((tmp_path / "sbatch.json").read_text())
    script = str(tmp_path / "job.sbatch")
    assert recorded == ["--parsable", "--dependency=afternotok:1", f"--output={log}", "--mail-type=END", script,
                        "--python", str(slurm.python), "--mpi", "pmi2", "--requeue", "chain", "--successor-arg",
                        f"--output={log}", "--successor-arg", "--mail-type=END", "job.yaml"]
    assert not list(tmp_path.rglob("PWNED"))


def test_a_signal_before_the_run_starts_ends_the_script_cleanly(tmp_path):
    """The drain arrives while the script still works out the srun --mpi plugin: the script is not
    killed by it, does not start the run and does not requeue."""
    slurm = Slurm(tmp_path, "touch step-started\n")
    gate = 'if [ "$2" = onepiece_hpc.slurm.mpi ]; then touch at-gate; until [ -e open ]; do sleep 0.05; done; echo pmi2; fi\n'
    python = _fake(slurm.bin, "fakepython", gate)
    proc = subprocess.Popen(["/bin/bash", str(_script(tmp_path)), "--python", str(python), "job.yaml"],
                            env=_env(4, [slurm.bin]), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_for(tmp_path / "at-gate")
        proc.send_signal(signal.SIGUSR1)  # queued for the script before the gate opens: it arrives "early"
        (tmp_path / "open").touch()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 5, err
    assert "got SIGUSR1 before the run started: not starting it" in err
    assert not (tmp_path / "step-started").exists()
    assert slurm.called("srun") == [] and slurm.called("scontrol") == []


def test_a_one_task_run_gets_the_drain_signal_itself(tmp_path):
    """With one task there is no srun: the script signals the run's process, which stops and
    exits 3 (something committed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _fake(bin_dir, "scontrol", f'echo "scontrol $*" >> {shlex.quote(str(calls))}\n')
    waits = "import pathlib, signal, sys, time\n" \
            "signal.signal(signal.SIGUSR1, lambda *_: sys.exit(3))\n" \
            "pathlib.Path('step-started').touch()\n" \
            "time.sleep(30)\n"
    python = _fake(bin_dir, "fakepython", f'exec {sys.executable} -c {shlex.quote(waits)}\n')
    proc = subprocess.Popen(["/bin/bash", str(_script(tmp_path)), "--python", str(python), "job.yaml"],
                            env=_env(1, [bin_dir]), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_for(tmp_path / "step-started")
        proc.send_signal(signal.SIGTERM)  # SIGTERM alone: the run gets the drain signal (USR1)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    assert calls.read_text() == "scontrol requeue 1\n"


def test_a_step_killed_after_its_drain_goes_on_as_the_outputs_journal_says(tmp_path):
    """Past the drain's deadline rank 0 aborts the other ranks and srun reports them killed (137):
    the script asks the output's journal how this job's run ended and requeues as after exit 3."""
    slurm = Slurm(tmp_path, STEP.format(code=137))
    asked = tmp_path / "asked.json"
    dump = f"import json, sys; json.dump(sys.argv[1:], open({str(asked)!r}, 'w'))"
    slurm.python = _fake(slurm.bin, "fakepython",
                         f'if [ "$2" = onepiece_hpc.slurm.outcome ]; then {sys.executable} -c "{dump}" "$@"; exit 3; fi\n')
    result = _drained_run(tmp_path, slurm, [], signal.SIGUSR1)
    assert result.returncode == 3, result.stderr
    assert "ended with exit code 137; the output's journal says this run drained" in result.stderr
    asked = json.loads(asked.read_text())
    assert asked[:3] == ["-m", "onepiece_hpc.slurm.outcome", "--report"] and asked[4:] == ["job.yaml"]
    assert slurm.called("scontrol") == ["requeue 1"]


#: a fake python whose rank 0 writes REPORT where --report says, then is killed as MPI_Abort's tasks
#: are (137); everything else (the outcome module) runs on the real python
ABORTING = """if [ "$2" = onepiece_hpc.runtime.rank_main ]; then
    while [ "$#" -gt 0 ] && [ "$1" != --report ]; do shift; done
    [ "$#" -eq 0 ] || printf '%s' '{report}' > "$2"
    exit 137
fi
exec {python} "$@"
"""


@pytest.mark.parametrize("report, code, says", [
    ('{"status": "refused", "error": "the output is being written by pid 7"}', 2, "after rank 0 refused the job"),
    ('{"status": "failed", "error": "rank 0: boom"}', 1, "after rank 0 stopped the failed run"),
    ("", 137, "failed with exit code 137"),
], ids=["refused", "failed", "no-report"])
def test_a_step_rank_0_aborted_ends_with_the_code_its_report_gives(tmp_path, report, code, says):
    """A refusal (or a failure) that rank 0 alone finds ends the step by MPI_Abort, and srun says 137:
    the script reads rank 0's report, exits 2 (or 1) and is not requeued; with no report srun's code
    stands. The report is a fresh temporary file, gone when the script ends."""
    slurm = Slurm(tmp_path, SRUN)
    slurm.python = _fake(slurm.bin, "fakepython", ABORTING.format(report=report, python=sys.executable))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = subprocess.run(["/bin/bash", str(_script(tmp_path)), "--python", str(slurm.python), "--mpi", "pmi2",
                             "job.yaml"], capture_output=True, text=True, timeout=60,
                            env=_env(4, [slurm.bin]) | {"TMPDIR": str(tmp)}, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert says in result.stderr
    assert slurm.called("scontrol") == [] and slurm.called("sbatch") == []
    assert list(tmp.iterdir()) == []


def test_rank_0s_report_says_refused_or_failed_and_the_journal_comes_first(tmp_path):
    from onepiece_hpc.slurm.outcome import step_exit

    def report(text):
        path = tmp_path / f"r{len(text)}"
        path.write_text(text)
        return path

    drained = [{"slurm_job": "7", "slurm_restart": 0, "status": "preempted", "items_committed": 3}]
    refused = report('{"status": "refused"}')
    assert step_exit([], "7", 0, refused) == 2
    assert step_exit([], "7", 0, report('{"status": "failed"}')) == 1
    assert step_exit(drained, "7", 0, refused) == 3  # the output's own word first
    for unknown in (None, tmp_path / "missing", report(""), report("[1, 2]"), report('{"status": "interrupted"}')):
        assert step_exit([], "7", 0, unknown) == ExitCode.UNKNOWN


def test_the_journal_tells_a_drain_with_progress_from_one_without():
    from onepiece_hpc.slurm.outcome import drained_exit

    def run(job, restart, status, committed):
        return {"slurm_job": job, "slurm_restart": restart, "status": status, "items_committed": committed}

    runs = [run("7", 0, "preempted", 5), run("7", 1, "preempted", 0), run("8", 0, "completed", 9)]
    assert drained_exit(runs, "7", 0) == 3
    assert drained_exit(runs, "7", 1) == 5
    assert drained_exit(runs, "7", 2) == 1   # this restart left no run: not a drain
    assert drained_exit(runs, "8", 0) == 1   # completed
    assert drained_exit([run("9", 0, "running", 4)], "9", 0) == 1  # killed before it closed
    assert drained_exit(runs, "", 0) == 1


@pytest.mark.parametrize("restarts, requeued", [(1, []), (0, ["requeuehold 1", "update JobId=1 ExcNodeList=h3", "release 1"])],
                         ids=["slurm-requeues", "script-requeues-without-it"])
def test_a_step_that_lost_a_node_names_it_and_the_job_comes_back_without_it(tmp_path, restarts, requeued):
    """A host of the job died and Slurm finds its node not responding. If Slurm is requeueing the
    job already (node failure), the script names the node and does nothing more; if srun ended
    first, the script requeues the job itself, keeping the node out."""
    slurm = Slurm(tmp_path, "exit 137\n")
    _fake(slurm.bin, "sinfo", 'printf "h1 mixed\\nh2 mixed\\nh3 down*\\n"\n')
    note = f'echo "scontrol $*" >> {shlex.quote(str(slurm.calls))}\n'
    _fake(slurm.bin, "scontrol", 'case "$1 $2" in\n'
                                 f'  "show job") echo "JobId=1 Restarts={restarts} Requeue=1" ;;\n'
                                 '  "show hostnames") printf "h1\\nh2\\nh3\\n" ;;\n'
                                 f'  *) {note.strip()} ;;\nesac\n')
    result = subprocess.run(["/bin/bash", str(_script(tmp_path)), "--python", str(slurm.python), "--mpi", "pmi2",
                             "job.yaml"], capture_output=True, text=True, timeout=60,
                            env=_env(6, [slurm.bin]) | {"SLURM_JOB_NODELIST": "h[1-3]"}, cwd=tmp_path)
    assert "node(s) h3 of this job" in result.stderr, result.stderr
    assert slurm.called("scontrol") == requeued
    assert result.returncode == (137 if restarts else 3), result.stderr


def test_a_run_with_failed_items_is_not_requeued_and_says_how_to_retry(tmp_path):
    slurm = Slurm(tmp_path, "exit 4\n")
    result = _run_script(tmp_path, ["--python", str(slurm.python), "--mpi", "pmi2", "job.yaml"], 4, [slurm.bin])
    assert result.returncode == 4, result.stderr
    assert "some items failed (exit 4" in result.stderr and "--retry-failed" in result.stderr
    assert slurm.called("scontrol") == [] and slurm.called("sbatch") == []
