"""The entry point of every rank of a staged run, under mpiexec or srun.

    python -m onepiece_hpc.runtime.rank_main JOB.yaml [--output OUT.h5] [--fabric auto]

Reads like its table of contents: parse the flags, start MPI, silence library chatter, run the
rank (`runtime.rank`), and turn every way a rank can end into one clear outcome: user errors
exit 2 on every rank; a failed job is reported once by rank 0, which then aborts all ranks.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
from pathlib import Path

from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime.drain import DRAIN_SIGNALS, drained_exit_code, listen, shield
from onepiece_hpc.runtime.interrupts import exit_code
from onepiece_hpc.runtime.quiet import quiet_libraries

NODE_MANAGER = 0
FINALIZE_DEADLINE_S = 60.0  # how long a rank that finished gives MPI_Finalize
log = logging.getLogger("onepiece.rank")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="onepiece-rank", description=__doc__)
    parser.add_argument("job", type=Path)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--fabric", choices=["auto", "shm", "mpi-rma", "verbs", "cuda-ipc"], default="auto")
    parser.add_argument("--gpu-memory-gib", type=float, default=None,
                        help="cap what torch may allocate on each rank's GPU (a per-process memory fraction)")
    parser.add_argument("--ring-slots", type=int, default=2, help="slots per channel (units in flight)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    parser.add_argument("--heartbeat-timeout", type=float, default=60.0,
                        help="seconds of silence after which a rank on another host counts as dead")
    parser.add_argument("--wait-timeout", type=float, default=600.0,
                        help="deadline of any single wait on a peer (credits, set-up, shutdown)")
    parser.add_argument("--report", type=Path, default=None, help="write a JSON report here (rank 0)")
    parser.add_argument("--expect-ranks", type=int, default=None,
                        help="fail unless MPI gives exactly this many ranks (catches a wrong srun --mpi)")
    parser.add_argument("--status-dir", type=Path, default=None,
                        help="keep a per-rank status file here (for a local launcher that watches)")
    parser.add_argument("--policy", choices=["static", "adaptive"], default=None,
                        help="override the job file's policy name")
    parser.add_argument("--progress", choices=["auto", "bar", "lines"], default="auto",
                        help="rank 0's progress: a live bar, plain lines, or auto (a bar on a terminal)")
    parser.add_argument("--init-timeout", type=float, default=300.0,
                        help="seconds MPI_Init may take before the rank gives up with an error")
    parser.add_argument("--warm-up", action="store_true",
                        help="each stage rank runs its stage once on zero inputs before it serves (benchmarks)")
    parser.add_argument("--mode", default="staged")
    parser.add_argument("--retry-failed", action="store_true",
                        help="generate only the items that failed in earlier runs (a plain run leaves them be)")
    parser.add_argument("--drain-signal", choices=DRAIN_SIGNALS, default=None,
                        help="under Slurm: the signal that, like SIGTERM, asks rank 0 to drain (slurm.drain_signal); "
                             "without it USR1 drains and SIGTERM stops at once")
    parser.add_argument("--drain-seconds", type=float, default=120.0,
                        help="the drain's signal window; rank 0 gives up units in flight a margin before its end")
    return parser.parse_args(argv)


def start_mpi(timeout_s: float):
    """Import mpi4py (which runs MPI_Init) with a deadline: a launcher/MPI mismatch or stale
    state can make MPI_Init wait forever, and a rank must fail, not hang."""
    started = threading.Event()

    def watchdog() -> None:
        if not started.wait(timeout_s):
            print(f"error: MPI did not start within {timeout_s:.0f} s (stuck in MPI_Init on "
                  f"{socket.gethostname()}, pid {os.getpid()}); fix: check that srun's --mpi plugin "
                  "matches the MPI mpi4py uses (pmi2 for MPICH, pmix for Open MPI)", file=sys.stderr, flush=True)
            os._exit(1)

    threading.Thread(target=watchdog, name="mpi-init-watchdog", daemon=True).start()
    from mpi4py import MPI

    started.set()
    return MPI


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    shield(args.drain_signal)  # no rank dies of a drain signal during MPI_Init; rank 0 listens once it knows it is 0
    MPI = start_mpi(args.init_timeout)

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    from onepiece_hpc.runtime.lifeline import watch_launcher
    watch_launcher(os.environ, manager=rank == NODE_MANAGER)  # a rank of `onepiece run -n N` ends with it
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    from onepiece_hpc.runtime.node_manager import JobFailed
    from onepiece_hpc.runtime.failures import EXIT_ITEMS_FAILED
    from onepiece_hpc.runtime.rank import ITEMS_FAILED, report_failed, run_rank, write_report
    from onepiece_hpc.runtime.setup import SetupFailed, SetupStopped
    from onepiece_hpc.runtime.worker import ManagerGone, ReportedFailure

    where = f"rank {rank} on {socket.gethostname()}"
    # rank 0 drains on the drain signal or SIGTERM, its writer closing in order (runtime/drain.py);
    # the other ranks outlive both and are ended by rank 0
    drain = listen(args.drain_signal, args.drain_seconds) if rank == NODE_MANAGER else None
    code = 0
    try:
        outcome = run_rank(args, comm, drain)
        drained = drained_exit_code(outcome)
        if drained is not None and rank == NODE_MANAGER:
            code = drained
        elif outcome == ITEMS_FAILED and rank == NODE_MANAGER:
            code = EXIT_ITEMS_FAILED
    except SetupStopped as stopped:  # rank 0 stopped the job during set-up, says why and aborts
        stopped.await_abort()
        os._exit(stopped.exit_code)
    except (UserError, SetupFailed) as err:
        code = err.exit_code
        text = err.render() if isinstance(err, UserError) else str(err)
        if rank == NODE_MANAGER:
            print(f"error: {text}", file=sys.stderr, flush=True)
            write_report(args.report, {"status": "refused" if code == UserError.exit_code else "failed",
                                       "error": text})
        else:  # found on this rank alone, after set-up: say so here, then end the job
            print(f"error: {where}: {text}", file=sys.stderr, flush=True)
        # the other ranks may already wait for work (a refusal found only here: the output is in use
        # or another job's); ending the whole job keeps them from waiting out their deadline
        comm.Abort(code)
    except JobFailed as err:
        report_failed(args, str(err), err.lost_hosts)
        comm.Abort(1)
    except KeyboardInterrupt as stop:
        if rank == NODE_MANAGER:
            print("interrupted; finished items are kept; run the same command again to resume",
                  file=sys.stderr, flush=True)
            write_report(args.report, {"status": "interrupted"})
            comm.Abort(exit_code(stop))
        os._exit(exit_code(stop))
    except ManagerGone as err:
        # rank 0 ended without aborting the job (an abort would have ended this rank with it)
        print(f"error: {err}; stopping (rank 0's own message, if any, says why)", file=sys.stderr, flush=True)
        os._exit(1)
    except ReportedFailure as failed:
        # this rank's error reached the Node Manager, which names it (with the root cause, if
        # another rank went first) and aborts the job; only if that doesn't come does this rank
        # say so itself and end the job
        failed.await_abort()
        print(f"error: {where}: {failed.cause} (rank 0 did not end the job)", file=sys.stderr, flush=True)
        comm.Abort(1)
    except Exception as err:
        if rank == NODE_MANAGER:
            print(f"error: rank 0 (Node Manager): {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            write_report(args.report, {"status": "failed", "error": f"rank 0: {err}"})
        else:
            print(f"error: {where}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        comm.Abort(1)
    finalize_and_exit(MPI, code)


def finalize_and_exit(mpi, code: int, deadline_s: float = FINALIZE_DEADLINE_S) -> None:
    """MPI_Finalize, under a deadline, then exit with `code`. Finalize waits on every rank (and a
    launcher's PMI layer under load has been seen to hang in it after a complete run): past the
    deadline the rank leaves anyway, with the code its run earned; its work is done."""
    def expire() -> None:
        print(f"rank {mpi.COMM_WORLD.Get_rank()}: MPI_Finalize took over {deadline_s:.0f} s; leaving without it",
              file=sys.stderr, flush=True)
        os._exit(code)

    timer = threading.Timer(deadline_s, expire)
    timer.daemon = True
    timer.start()
    mpi.Finalize()
    timer.cancel()
    sys.exit(code)


if __name__ == "__main__":
    main()
