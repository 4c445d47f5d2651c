"""The entry point of every rank of a staged run, under mpiexec or srun.

    python -m onepiece_hpc.runtime.rank_main [--output OUT.h5] [--fabric auto] ... [--] JOB.yaml

Reads like its table of contents: parse the flags (runtime/options.py), start MPI, silence
library chatter, run the rank (`runtime.rank`), and turn every way a rank can end into one clear
outcome: user errors exit 2 on every rank; a failed job is reported once by rank 0, which then
aborts all ranks.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading

from onepiece_hpc.errors import UserError
from onepiece_hpc.exit_codes import ExitCode
from onepiece_hpc.runtime.drain import drained_exit_code, listen, shield
from onepiece_hpc.runtime.interrupts import exit_code
from onepiece_hpc.runtime.options import RunOptions
from onepiece_hpc.runtime.quiet import quiet_environment

NODE_MANAGER = 0
FINALIZE_DEADLINE_S = 60.0  # how long a rank that finished gives MPI_Finalize
log = logging.getLogger("onepiece.rank")


def parse_args(argv: list[str] | None) -> RunOptions:
    """The rank's options (runtime/options.py); a bad flag exits 2 with the usage."""
    return RunOptions.from_argv(argv, prog="onepiece-rank", description=__doc__)


def start_mpi(timeout_s: float):
    """Import mpi4py (which runs MPI_Init) with a deadline: a launcher/MPI mismatch or stale
    state can make MPI_Init wait forever, and a rank must fail, not hang."""
    started = threading.Event()

    def watchdog() -> None:
        if not started.wait(timeout_s):
            print(f"error: MPI did not start within {timeout_s:.0f} s (stuck in MPI_Init on "
                  f"{socket.gethostname()}, pid {os.getpid()}); fix: check that srun's --mpi plugin "
                  "matches the MPI mpi4py uses (pmi2 for MPICH, pmix for Open MPI)", file=sys.stderr, flush=True)
            os._exit(ExitCode.FAILED)

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
    quiet_environment()  # the libraries are quieted in full where a stage loads (runtime/stage_runners.py)
    from onepiece_hpc.runtime.node_manager import JobFailed
    from onepiece_hpc.runtime.rank import ITEMS_FAILED, report_error, report_failed, run_rank, write_report
    from onepiece_hpc.runtime.setup import SetupFailed, SetupStopped
    from onepiece_hpc.runtime.peers import ManagerGone
    from onepiece_hpc.runtime.worker import ReportedFailure

    where = f"rank {rank} on {socket.gethostname()}"
    # rank 0 drains on the drain signal or SIGTERM, its writer closing in order (runtime/drain.py);
    # the other ranks outlive both and are ended by rank 0
    drain = listen(args.drain_signal, args.drain_seconds) if rank == NODE_MANAGER else None
    code = ExitCode.DONE
    try:
        outcome = run_rank(args, comm, drain)
        drained = drained_exit_code(outcome)
        if drained is not None and rank == NODE_MANAGER:
            code = drained
        elif outcome == ITEMS_FAILED and rank == NODE_MANAGER:
            code = ExitCode.ITEMS_FAILED
    except SetupStopped as stopped:  # rank 0 stopped the job during set-up, says why and aborts
        stopped.await_abort()
        os._exit(stopped.exit_code)
    except (UserError, SetupFailed) as err:
        code = err.exit_code
        text = err.render() if isinstance(err, UserError) else str(err)
        if rank == NODE_MANAGER:
            report_error(args, "refused" if code == ExitCode.REFUSED else "failed", text)
        else:  # found on this rank alone, after set-up: say so here, then end the job
            print(f"error: {where}: {text}", file=sys.stderr, flush=True)
        # the other ranks may already wait for work (a refusal found only here: the output is in use
        # or another job's); ending the whole job keeps them from waiting out their deadline
        comm.Abort(code)
    except JobFailed as err:
        report_failed(args, str(err), err.lost_hosts)
        comm.Abort(ExitCode.FAILED)
    except KeyboardInterrupt as stop:
        if rank == NODE_MANAGER:
            print("interrupted; finished items are kept; run the same command again to resume",
                  file=sys.stderr, flush=True)
            write_report(args.report, {"status": "interrupted"})
            comm.Abort(exit_code(stop))
        os._exit(exit_code(stop))
    except ManagerGone as err:
        if not someone_else_names_the_end(args):
            print(f"error: {err}; stopping (rank 0's own message, if any, says why)", file=sys.stderr, flush=True)
        os._exit(ExitCode.FAILED)
    except ReportedFailure as failed:
        # this rank's error reached the Node Manager, which names it (with the root cause, if
        # another rank went first) and aborts the job; only if that doesn't come does this rank
        # say so itself and end the job
        if not (failed.await_abort() and someone_else_names_the_end(args)):
            print(f"error: {where}: {failed.cause} (rank 0 did not end the job)", file=sys.stderr, flush=True)
        comm.Abort(ExitCode.FAILED)
    except Exception as err:
        if rank == NODE_MANAGER:
            report_error(args, "failed", f"rank 0 (Node Manager): {type(err).__name__}: {err}")
        else:
            print(f"error: {where}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        comm.Abort(ExitCode.FAILED)
    finalize_and_exit(MPI, code)


def someone_else_names_the_end(args) -> bool:
    """Whether a stage rank that found rank 0 gone should keep quiet: a second message would only
    bury the one that names the cause.

    - rank 0 wrote its report: it ended the job itself and said why (its abort reaches this rank
      a moment later);
    - the local launcher started the run (it keeps a status folder): it watches every rank's
      process and names the first to end, which is rank 0 itself or the rank whose death made the
      MPI runtime tear down the rest, rank 0 among them.

    Otherwise (Slurm, a bare mpiexec) rank 0 ended without a word (killed, crashed) and nobody
    else will say so."""
    return args.status_dir is not None or (args.report is not None and args.report.exists())


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
