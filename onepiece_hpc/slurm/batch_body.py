"""The batch script's body, as bash: the same for every job (`script.render_body` fills in each
@NAME@ from where the value is defined; script.py says why no job's string can run as shell code)."""

BODY = r"""@EARLY_TRAPS@
# onepiece-hpc batch script. Submit it as it is or let `onepiece submit` / `onepiece sweep` do it:
#
#   sbatch [OPTIONS] onepiece.sbatch [SCRIPT OPTIONS] JOB.yaml [--output OUT.h5]
#   sbatch --array=0-N%K [OPTIONS] onepiece.sbatch [SCRIPT OPTIONS] --shards DIR --offset M
#
# SCRIPT OPTIONS: --python PY, --mpi PLUGIN, --drain-signal @DRAIN_SIGNALS@ and --drain-seconds N
# (as in the --signal line above), --requeue @REQUEUE_MODES@, --successor-arg OPTION (an sbatch
# option for a chained successor; repeatable), --heartbeat-timeout N (seconds rank 0 waits for a
# rank's heartbeat).
#
# The body is the same for every job: what to run arrives as arguments and is only passed on,
# quoted, never evaluated. One task runs the whole pipeline in one process; four or more run the
# staged runtime under srun, one rank a task (one a GPU where there are GPUs). With --shards,
# array task T runs the job file DIR/NNNNN.yaml, NNNNN = M + T.
#
# The line above traps the drain signals first of all, so that one arriving at any moment is
# kept, never fatal. Slurm sends the drain signal drain_seconds before the time limit; SIGTERM (a
# preemption) means the same. The script passes it on to the run (again each second until the run
# ends, so that a rank still starting can't miss it): rank 0 takes no new work, commits what is in
# flight until a deadline inside the window, closes the output and exits DRAINED if this run
# committed something, NO_PROGRESS if not. After DRAINED the job goes on as --requeue says: scontrol
# requeues this job, chain submits a successor (this script, these arguments) that starts once this
# job has ended, none leaves it to you. After NO_PROGRESS it is not requeued: a job whose time limit
# can't hold one unit would requeue forever. A signal that comes before the run started ends the
# job at once (NO_PROGRESS).
#
# Exit codes (onepiece_hpc/exit_codes.py):
@EXIT_CODE_LINES@
# any other: the run failed (see the log).
set -euo pipefail
@EXIT_CODES@

say() { echo "onepiece.sbatch: $*" >&2; }

signals=0   # drain requests so far (each one cuts a wait short)
requested=  # the first one's signal
on_signal() {
    signals=$((signals + 1))
    if [ -z "$requested" ]; then
        requested=$1
        say "got SIG$1: draining: the run takes no new work and commits what is in flight"
    fi
}
@SIGNAL_TRAPS@
[ -z "${early:-}" ] || on_signal "$early"

python=python3
mpi=auto
shards=
offset=0
drain_signal=@DEFAULT_DRAIN_SIGNAL@
drain_seconds=@DEFAULT_DRAIN_SECONDS@
requeue=@DEFAULT_REQUEUE@
heartbeat_timeout=@DEFAULT_HEARTBEAT_TIMEOUT@
successor=()
script_args=("$@")  # a chained successor gets them as they are
while [ $# -gt 0 ]; do
    case "$1" in
        --python) python="$2"; shift 2 ;;
        --mpi) mpi="$2"; shift 2 ;;
        --shards) shards="$2"; shift 2 ;;
        --offset) offset="$2"; shift 2 ;;
        --drain-signal) drain_signal="$2"; shift 2 ;;
        --drain-seconds) drain_seconds="$2"; shift 2 ;;
        --requeue) requeue="$2"; shift 2 ;;
        --heartbeat-timeout) heartbeat_timeout="$2"; shift 2 ;;
        --successor-arg) successor+=("$2"); shift 2 ;;
        *) break ;;
    esac
done
case "$drain_signal" in
    @DRAIN_SIGNALS@) ;;
    *) say "--drain-signal must be @DRAIN_SIGNALS_TEXT@"; exit "$EXIT_REFUSED" ;;
esac
case "$requeue" in
    @REQUEUE_MODES@) ;;
    *) say "--requeue must be @REQUEUE_MODES_TEXT@"; exit "$EXIT_REFUSED" ;;
esac
if ! [[ "$drain_seconds" =~ ^[0-9]+$ ]]; then
    say "--drain-seconds must be a whole number of seconds"
    exit "$EXIT_REFUSED"
fi
if ! [[ "$heartbeat_timeout" =~ ^[0-9]+$ ]]; then
    say "--heartbeat-timeout must be a whole number of seconds"
    exit "$EXIT_REFUSED"
fi

if [ -n "$shards" ]; then
    if ! [[ "$offset" =~ ^[0-9]+$ && "${SLURM_ARRAY_TASK_ID:-}" =~ ^[0-9]+$ ]]; then
        say "--shards needs a job array (sbatch --array=...) and a whole-number --offset"
        exit "$EXIT_REFUSED"
    fi
    printf -v job '%s/%05d.yaml' "$shards" "$((10#$offset + 10#$SLURM_ARRAY_TASK_ID))"
    set -- "$job"
fi
if [ $# -eq 0 ]; then
    say "no job file given; usage: sbatch onepiece.sbatch JOB.yaml [--output OUT.h5]"
    exit "$EXIT_REFUSED"
fi
if ! command -v "$python" >/dev/null; then
    say "'$python' not found; fix: activate the environment that has onepiece-hpc before sbatch, or pass --python PATH"
    exit "$EXIT_REFUSED"
fi

ntasks="${SLURM_NTASKS:-1}"
if [ "$ntasks" != 1 ]; then
    if ! command -v srun >/dev/null; then
        say "srun not found on PATH; fix: submit this script with sbatch on a Slurm cluster"
        exit "$EXIT_REFUSED"
    fi
    if [ "$mpi" = auto ]; then
        mpi="$("$python" -m onepiece_hpc.slurm.mpi)" || { say "fix: pass --mpi PLUGIN (see srun --mpi=list)"; exit "$EXIT_REFUSED"; }
    fi
fi
if [ -n "$requested" ]; then
    say "got SIG$requested before the run started: not starting it; nothing was committed, so the job is not requeued (exit $EXIT_NO_PROGRESS); submit it again to go on"
    exit "$EXIT_NO_PROGRESS"
fi

set -m  # job control: the run gets a process group of its own and keeps the signals it is sent
if [ "$ntasks" = 1 ]; then
    step_name="onepiece run --monolithic"
    # the run ignores the drain signal and SIGTERM until its own handlers are in place
    ( trap '' "$drain_signal" TERM; exec "$python" -m onepiece_hpc.slurm.one_task --drain-signal "$drain_signal" "$@" ) &
    step=$!
else
    step_name="srun --mpi=$mpi"
    # rank 0 (task 0, on this node) writes how its run ended here: a refusal or a failure that it
    # alone found ends the step by MPI_Abort, which srun reports as killed tasks, not as 2 or 1
    report=()
    if made="$(mktemp "${TMPDIR:-/tmp}/onepiece-report.XXXXXXXX")"; then
        report=(--report "$made")
        trap 'rm -f "$made"' EXIT
    fi
    # every rank ignores the drain signal and SIGTERM until rank 0's handlers are in place;
    # --kill-on-bad-exit: a rank that fails, or rank 0 leaving after a drain, ends the whole step
    srun --mpi="$mpi" --kill-on-bad-exit=1 /bin/bash -c 'trap "" "$1" TERM; shift; exec "$@"' onepiece-rank \
        "$drain_signal" "$python" -m onepiece_hpc.runtime.rank_main --expect-ranks "$ntasks" --progress lines \
        --drain-signal "$drain_signal" --drain-seconds "$drain_seconds" --heartbeat-timeout "$heartbeat_timeout" \
        "${report[@]}" "$@" &
    step=$!
fi

pass_on() {  # the drain request, to the run
    if [ "$ntasks" = 1 ]; then
        kill -s "$drain_signal" "$step" 2>/dev/null || true
    else
        # to every task of the step, not through srun (srun turns its own SIGTERM into a kill)
        scancel --signal="$drain_signal" "$SLURM_JOB_ID" 2>/dev/null || true
    fi
}

rc=
while [ -z "$rc" ]; do
    if [ -n "$requested" ] && kill -0 "$step" 2>/dev/null; then
        sleep 1 & wait "$!" || true  # first a moment, for a run started just now to ignore the signal
        ! kill -0 "$step" 2>/dev/null || pass_on
        continue
    fi
    seen=$signals
    status=0
    wait "$step" || status=$?
    [ "$seen" != "$signals" ] || rc=$status  # a wait cut short by a signal says nothing of the run
done
if [ "$ntasks" != 1 ] && ! [[ "$rc" =~ ^($EXIT_DONE|$EXIT_REFUSED|$EXIT_DRAINED|$EXIT_ITEMS_FAILED|$EXIT_NO_PROGRESS)$ ]]; then
    # rank 0 ended the step with MPI_Abort (after a drain past its deadline, a refusal or a failure
    # only it found), and srun reports the tasks killed: the output's journal says whether this
    # job's run drained, and with what; else rank 0's report whether it refused the job or failed
    known=0
    reported_lost="$("$python" -m onepiece_hpc.slurm.outcome "${report[@]}" "$@")" || known=$?
    case "$known" in
        "$EXIT_DRAINED"|"$EXIT_NO_PROGRESS")
            say "$step_name ended with exit code $rc; the output's journal says this run drained: going on as after exit $known"
            rc=$known ;;
        "$EXIT_REFUSED")
            say "$step_name ended with exit code $rc after rank 0 refused the job (see above)"
            rc=$EXIT_REFUSED ;;
        "$EXIT_FAILED")
            say "$step_name ended with exit code $rc after rank 0 stopped the failed run (see above)"
            rc=$EXIT_FAILED ;;
    esac
fi

lost_nodes() {  # this job's nodes that Slurm finds down, failing or not responding, and those rank 0 lost
    # (never this script's own node: it runs here, and a slurmd slow to answer a ping under load
    # shows its node as not responding)
    [ -n "${SLURM_JOB_NODELIST:-}" ] || return 0
    local mine
    mine="$(scontrol show hostnames "$SLURM_JOB_NODELIST" 2>/dev/null | paste -sd, -)" || mine=""
    {
        sinfo -h -N -n "$SLURM_JOB_NODELIST" -o '%N %T' 2>/dev/null |
            awk -v here="${SLURMD_NODENAME:-}" '$2 ~ /down|fail|[*]$/ && $1 != here {print $1}'
        tr ',' '\n' <<<"${reported_lost:-}" | grep -Fx -f <(tr ',' '\n' <<<"$mine") 2>/dev/null
    } | sort -u | paste -sd, - || true
}
slurm_requeues() {  # Slurm is already requeueing this job (a node failure): its restart count went up
    local restarts
    restarts="$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2)" || return 1
    [ "${restarts:-0}" -gt "${SLURM_RESTART_COUNT:-0}" ]
}
exclude=
if [ "$ntasks" != 1 ] && [ "$rc" != "$EXIT_DONE" ] && [ "$rc" != "$EXIT_REFUSED" ]; then
    lost="$(lost_nodes)"
    if [ -n "$lost" ]; then
        if slurm_requeues; then
            say "$step_name ended with exit code $rc: node(s) $lost of this job failed; every finished item is kept; Slurm requeues the job (node failure), and the requeued job resumes the output on other nodes"
            exit "$rc"
        fi
        # srun can end before Slurm declares the node failed, and the job would then just end:
        # bring it back as after a drain, without the lost nodes
        say "$step_name ended with exit code $rc: node(s) $lost of this job are lost (rank 0's message above names the host and its ranks); every finished item is kept; going on as after a drain, without them"
        exclude=$lost
        rc=$EXIT_DRAINED
    fi
fi

release_held() {  # let the held, requeued job go; a busy controller may fail a call: try again (a
    # release of a job that is not held succeeds, so a call that failed after it took effect is harmless)
    local pause
    for pause in 0 1 2 4; do
        sleep "$pause"
        scontrol release "$SLURM_JOB_ID" && return 0
    done
    return 1
}

cancelled() {  # Slurm ends this job for another reason than its time limit (scancel): don't bring it back
    local state
    state="$(squeue -h -j "$SLURM_JOB_ID" -o '%T %r' 2>/dev/null)" || return 1
    [[ "$state" =~ ^(COMPLETING|CANCELLED)\  ]] && [[ "$state" != *" TimeLimit" ]]
}

chain() {  # submit a successor: this script and its arguments, starting once this job has ended
    local array=() next
    [ -z "${SLURM_ARRAY_TASK_ID:-}" ] || array=(--array="$SLURM_ARRAY_TASK_ID")
    [ -z "$exclude" ] || array+=(--exclude="$exclude")
    if next="$(sbatch --parsable --dependency=afternotok:"$SLURM_JOB_ID" "${array[@]}" "${successor[@]}" \
            "$0" "${script_args[@]}")"; then
        say "stopped early; every finished item is committed; submitted job ${next%%;*} to resume once job $SLURM_JOB_ID has ended (slurm.requeue: chain)"
    else
        say "sbatch of a successor job failed (see above); fix: submit the same job again to resume"
    fi
}

case "$rc" in
    "$EXIT_DONE")
        [ -z "$requested" ] || say "the run finished every item before the drain had to stop it"
        exit "$EXIT_DONE" ;;
    "$EXIT_REFUSED")
        say "$step_name refused the job (exit $EXIT_REFUSED, see above); not requeued"
        exit "$EXIT_REFUSED" ;;
    "$EXIT_ITEMS_FAILED")
        say "the run went through, but some items failed (exit $EXIT_ITEMS_FAILED, named above); not requeued; fix their cause, then run the job with --retry-failed"
        exit "$EXIT_ITEMS_FAILED" ;;
    "$EXIT_DRAINED")
        if cancelled; then
            say "stopped early; every finished item is committed; job $SLURM_JOB_ID was cancelled, so it is not requeued; submit the same job again to resume"
            exit "$EXIT_DRAINED"
        fi
        case "$requeue" in
            scontrol)
                say "stopped early; every finished item is committed; requeueing job $SLURM_JOB_ID to resume${exclude:+, without node(s) $exclude}"
                # a requeue ends this job at once: Slurm sends SIGTERM to this script and to all it
                # runs (SIGKILL after KillWait), and what follows the requeue must still run
                trap '' TERM
                if [ -n "$exclude" ]; then  # only a pending job takes ExcNodeList: requeue it held, then let it go
                    if scontrol requeuehold "$SLURM_JOB_ID"; then
                        scontrol update JobId="$SLURM_JOB_ID" ExcNodeList="$exclude" \
                            || say "could not keep node(s) $exclude out of the requeued job (see above)"
                        release_held || say "scontrol release $SLURM_JOB_ID failed (see above), and the requeued job is held; fix: scontrol release $SLURM_JOB_ID"
                        exit "$EXIT_DRAINED"
                    fi
                fi
                scontrol requeue "$SLURM_JOB_ID" || say "scontrol requeue $SLURM_JOB_ID failed (see above); fix: set slurm.requeue: chain where requeueing is not allowed, or submit the same job again to resume" ;;
            chain) chain ;;
            none) say "stopped early; every finished item is committed; not requeued (slurm.requeue: none); submit the same job again to resume" ;;
        esac
        exit "$EXIT_DRAINED" ;;
    "$EXIT_NO_PROGRESS")
        say "drained before this run committed anything (exit $EXIT_NO_PROGRESS, see above); not requeued, so that a job whose time limit can't hold one unit does not requeue forever; fix: raise slurm.time or lower slurm.drain_seconds, then submit it again"
        exit "$EXIT_NO_PROGRESS" ;;
esac
if [ -n "$requested" ]; then
    say "$step_name ended with exit code $rc after SIG$requested (see above); not requeued; finished items are kept; submit the same job again to resume"
else
    say "$step_name failed with exit code $rc (see above); finished items are kept; submit the same job again to resume"
fi
exit "$rc"
"""
