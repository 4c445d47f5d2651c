"""The batch script under fake Slurm commands: drains reach every task, a run with progress is
requeued (held, or as a chain of successor jobs) and one without is not, cancelled jobs stay
cancelled, rank 0's report and the output's journal decide the exit code, a lost node is named
and left out of the requeue."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys

import pytest

from fake_slurm import ONE_LINE, SRUN, STEP, Slurm, drained_run, fake, run_script, script_file, slurm_env, wait_for
from onepiece_hpc.exit_codes import ExitCode


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM], ids=["drain-signal", "sigterm-alone"])
def test_a_drain_is_passed_to_every_task_and_a_run_with_progress_is_requeued(tmp_path, sig):
    slurm = Slurm(tmp_path, STEP.format(code=3))
    result = drained_run(tmp_path, slurm, ["--drain-signal", "USR2"], sig)
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
    result = drained_run(tmp_path, slurm, ["--requeue", "chain"], signal.SIGTERM)
    assert result.returncode == 3, result.stderr
    assert slurm.called("squeue") == ["-h -j 1 -o %T %r"]
    assert bool(slurm.called("sbatch")) == requeued
    assert ("was cancelled, so it is not requeued" in result.stderr) != requeued


def test_a_drained_run_without_progress_is_not_requeued(tmp_path):
    slurm = Slurm(tmp_path, STEP.format(code=5))
    result = drained_run(tmp_path, slurm, [], signal.SIGUSR1)
    assert result.returncode == 5
    assert "not requeued" in result.stderr and "raise slurm.time" in result.stderr
    assert slurm.called("scontrol") == [] and slurm.called("sbatch") == []


def test_requeue_none_leaves_a_drained_job_alone(tmp_path):
    slurm = Slurm(tmp_path, STEP.format(code=3))
    result = drained_run(tmp_path, slurm, ["--requeue", "none"], signal.SIGUSR1)
    assert result.returncode == 3 and "slurm.requeue: none" in result.stderr
    assert slurm.called("scontrol") == [] and slurm.called("sbatch") == []


def test_requeue_chain_submits_a_successor_of_the_same_script_and_arguments(tmp_path):
    slurm = Slurm(tmp_path, STEP.format(code=3))
    log = f"{tmp_path}/{ONE_LINE}/%j.log"
    result = drained_run(tmp_path, slurm, ["--requeue", "chain", "--successor-arg", f"--output={log}",
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
    python = fake(slurm.bin, "fakepython", gate)
    proc = subprocess.Popen(["/bin/bash", str(script_file(tmp_path)), "--python", str(python), "job.yaml"],
                            env=slurm_env(4, [slurm.bin]), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(tmp_path / "at-gate")
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
    fake(bin_dir, "scontrol", f'echo "scontrol $*" >> {shlex.quote(str(calls))}\n')
    waits = "import pathlib, signal, sys, time\n" \
            "signal.signal(signal.SIGUSR1, lambda *_: sys.exit(3))\n" \
            "pathlib.Path('step-started').touch()\n" \
            "time.sleep(30)\n"
    python = fake(bin_dir, "fakepython", f'exec {sys.executable} -c {shlex.quote(waits)}\n')
    proc = subprocess.Popen(["/bin/bash", str(script_file(tmp_path)), "--python", str(python), "job.yaml"],
                            env=slurm_env(1, [bin_dir]), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(tmp_path / "step-started")
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
    slurm.python = fake(slurm.bin, "fakepython",
                         f'if [ "$2" = onepiece_hpc.slurm.outcome ]; then {sys.executable} -c "{dump}" "$@"; exit 3; fi\n')
    result = drained_run(tmp_path, slurm, [], signal.SIGUSR1)
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
    slurm.python = fake(slurm.bin, "fakepython", ABORTING.format(report=report, python=sys.executable))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = subprocess.run(["/bin/bash", str(script_file(tmp_path)), "--python", str(slurm.python), "--mpi", "pmi2",
                             "job.yaml"], capture_output=True, text=True, timeout=60,
                            env=slurm_env(4, [slurm.bin]) | {"TMPDIR": str(tmp)}, cwd=tmp_path)
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


def _scontrol_note(slurm: Slurm) -> str:
    """The fake scontrol's line that notes its call."""
    return f'echo "scontrol $*" >> {shlex.quote(str(slurm.calls))}'


def _run_with_h3_down(tmp_path, slurm: Slurm, restarts: int = 0, cases: str = "") -> subprocess.CompletedProcess:
    """The script of a 6-task job on h[1-3], run under fake Slurm commands where Slurm finds h3 down
    and the job restarted `restarts` times; `cases`: more arms of the fake scontrol's `case`, before
    the one that notes every other call."""
    fake(slurm.bin, "sinfo", 'printf "h1 mixed\\nh2 mixed\\nh3 down*\\n"\n')
    fake(slurm.bin, "scontrol", 'case "$1 $2" in\n'
                                 f'  "show job") echo "JobId=1 Restarts={restarts} Requeue=1" ;;\n'
                                 '  "show hostnames") printf "h1\\nh2\\nh3\\n" ;;\n'
                                 f'{cases}  *) {_scontrol_note(slurm)} ;;\nesac\n')
    return subprocess.run(["/bin/bash", str(script_file(tmp_path)), "--python", str(slurm.python), "--mpi", "pmi2",
                           "job.yaml"], capture_output=True, text=True, timeout=60,
                          env=slurm_env(6, [slurm.bin]) | {"SLURM_JOB_NODELIST": "h[1-3]"}, cwd=tmp_path)


@pytest.mark.parametrize("restarts, requeued", [(1, []), (0, ["requeuehold 1", "update JobId=1 ExcNodeList=h3", "release 1"])],
                         ids=["slurm-requeues", "script-requeues-without-it"])
def test_a_step_that_lost_a_node_names_it_and_the_job_comes_back_without_it(tmp_path, restarts, requeued):
    """A host of the job died and Slurm finds its node not responding. If Slurm is requeueing the
    job already (node failure), the script names the node and does nothing more; if srun ended
    first, the script requeues the job itself, keeping the node out."""
    slurm = Slurm(tmp_path, "exit 137\n")
    result = _run_with_h3_down(tmp_path, slurm, restarts)
    assert "node(s) h3 of this job" in result.stderr, result.stderr
    assert slurm.called("scontrol") == requeued
    assert result.returncode == (137 if restarts else 3), result.stderr


#: kill -TERM a process and everything under it, found by parent through /proc, as slurmd does
#: (proctrack/linuxproc) to a job that is requeued
KILL_TREE = """import os, signal, sys
children = {}
for entry in filter(str.isdigit, os.listdir('/proc')):
    try:
        stat = open(f'/proc/{entry}/stat').read()
    except OSError:
        continue
    children.setdefault(int(stat.rsplit(')', 1)[1].split()[1]), []).append(int(entry))
todo = [int(sys.argv[1])]
while todo:
    pid = todo.pop()
    todo += children.get(pid, [])
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass
"""


def test_what_the_script_runs_after_requeueing_its_own_job_outlives_the_requeue(tmp_path):
    """`scontrol requeuehold` of the script's own job makes Slurm send SIGTERM to the script and all
    it runs, while the script has still to keep the lost node out and release the job: those calls
    must not die of it (in the suite, the release did, and the job stayed held for good). The
    controller is slow and fails the first release, as a busy one does: the script tries again."""
    slurm = Slurm(tmp_path, "exit 137\n")
    (tmp_path / "kill_tree.py").write_text(KILL_TREE)
    note = _scontrol_note(slurm)
    result = _run_with_h3_down(tmp_path, slurm, cases=(
        f'  "requeuehold 1") {note}\n'
        f'    (sleep 0.2; {shlex.quote(sys.executable)} kill_tree.py "$PPID") </dev/null >/dev/null 2>&1 & ;;\n'
        f'  "release 1") sleep 1; {note}\n'
        '    [ -e released-once ] || { touch released-once; echo "controller busy" >&2; exit 1; } ;;\n'))
    assert slurm.called("scontrol") == ["requeuehold 1", "update JobId=1 ExcNodeList=h3", "release 1", "release 1"], \
        result.stderr
    assert result.returncode == 3, result.stderr
    assert "got SIGTERM" not in result.stderr and "release 1 failed" not in result.stderr, result.stderr


def test_a_run_with_failed_items_is_not_requeued_and_says_how_to_retry(tmp_path):
    slurm = Slurm(tmp_path, "exit 4\n")
    result = run_script(tmp_path, ["--python", str(slurm.python), "--mpi", "pmi2", "job.yaml"], 4, [slurm.bin])
    assert result.returncode == 4, result.stderr
    assert "some items failed (exit 4" in result.stderr and "--retry-failed" in result.stderr
    assert slurm.called("scontrol") == [] and slurm.called("sbatch") == []


def test_the_scripts_own_node_shown_not_responding_is_not_taken_for_lost(tmp_path):
    """Under load a slurmd can miss a ping, and sinfo marks its node not responding ("*"). The batch
    script runs on that node, so the node is up: the step's own exit code stands, with no requeue
    without the node (seen in the suite: a drain that committed nothing was requeued so)."""
    slurm = Slurm(tmp_path, "exit 137\n")
    fake(slurm.bin, "sinfo", 'printf "n1 allocated*\\n"\n')
    fake(slurm.bin, "scontrol", 'case "$1 $2" in\n'
                                 '  "show job") echo "JobId=1 Restarts=0 Requeue=1" ;;\n'
                                 '  "show hostnames") echo n1 ;;\n'
                                 f'  *) echo "scontrol $*" >> {shlex.quote(str(slurm.calls))} ;;\nesac\n')
    result = subprocess.run(["/bin/bash", str(script_file(tmp_path)), "--python", str(slurm.python), "--mpi", "pmi2",
                             "job.yaml"], capture_output=True, text=True, timeout=60,
                            env=slurm_env(4, [slurm.bin]) | {"SLURM_JOB_NODELIST": "n1", "SLURMD_NODENAME": "n1"},
                            cwd=tmp_path)
    assert "lost" not in result.stderr and slurm.called("scontrol") == [], result.stderr
    assert result.returncode == 137, result.stderr
