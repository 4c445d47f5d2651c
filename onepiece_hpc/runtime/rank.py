"""One rank of a staged run: prepare, learn the peers, open channels, serve, close."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch

from onepiece_hpc import environment
from onepiece_hpc.errors import UserError
from onepiece_hpc.exit_codes import ExitCode
from onepiece_hpc.runtime.control import ControlPlane
from onepiece_hpc.runtime.drain import PREEMPTED, Drain, drained_exit_code, explain, leave_now, run_outcome, shield
from onepiece_hpc.runtime.failures import failed_items_summary
from onepiece_hpc.runtime.gpus import check_stage_memory, gpu_index, memory_share_mb, shares_by_need, take_gpu
from onepiece_hpc.planning.layout import NODE_MANAGER, plan_layout
from onepiece_hpc.runtime.liveness import Verdict
from onepiece_hpc.runtime.node_manager import NodeManager, initial_routes
from onepiece_hpc.runtime.options import RunOptions
from onepiece_hpc.runtime.peers import exchange_peers, me
from onepiece_hpc.runtime.prepare import Prepared, prepare
from onepiece_hpc.runtime.pulse import PulseListener, PulseSender
from onepiece_hpc.runtime.setup import (
    SetupStopped, agreement, check_thread_level, deadline, manager_setup, stage_setup, stop_stage_ranks,
)
from onepiece_hpc.runtime.status import RankStatus, StatusFile
from onepiece_hpc.runtime.progress import ProgressReporter
from onepiece_hpc.runtime.telemetry import summary_table
from onepiece_hpc.runtime.tensors import SEEDS, wire_spec
from onepiece_hpc.runtime.phased_worker import PhasedStageWorker
from onepiece_hpc.runtime.worker import StageWorker
from onepiece_hpc.planning.plan import PlanSummary
from onepiece_hpc.transport import DType, TensorSpec, WaitPolicy, slot_bytes_for
from onepiece_hpc.transport.connect import FabricChoice, IntegrityChoice, Outbound, open_channels
from onepiece_hpc.transport.fabrics.registry import build_fabrics, close_fabrics

def slot_bytes(prepared: Prepared, summary: PlanSummary, stage: str) -> int:
    """Room for the largest message `stage` emits over every distinct unit shape of the job."""
    adapter, dtype = prepared.model.adapter, prepared.placement.dtype
    room = 0
    for params_id, size in summary.shapes:
        specs = [wire_spec(s) for s in adapter.output_specs(stage, summary.params[params_id], size, dtype)]
        specs.append(TensorSpec(SEEDS, (size,), DType.INT64))
        room = max(room, slot_bytes_for(specs, max_items=prepared.job.microbatch))
    return room


def with_policy(prepared: Prepared, name: str | None) -> Prepared:
    """The job with its policy's name replaced (the policy never changes any output bit)."""
    if name is None:
        return prepared
    job = replace(prepared.job, policy=replace(prepared.job.policy, name=name))
    return replace(prepared, job=job, plan=replace(prepared.plan, job=job) if prepared.plan else None)


def run_policy(args: RunOptions) -> str | None:
    """The policy the run uses: --policy, else the job file's; a run in phases moves no ranks (its
    GPUs' turns are its moves), so it is static."""
    return "static" if args.phases else args.policy


def channel_plan(prepared: Prepared, summary: PlanSummary, layout, rank: int, size: int,
                 slots: int, phase: int | None = None, chain: tuple[int, ...] | None = None
                 ) -> tuple[list[Outbound], list[int]]:
    """Which channels this rank opens. A static job wires each stage to the next; an elastic one
    wires every stage rank to every other (any rank may serve any stage after a move) and to
    rank 0, with slots sized for the largest message a rank of any stage sends there. A run in
    phases wires each rank to the next of its `chain` only, with room for a whole turn's units
    between stages (the next stage runs them in its own turn)."""
    elastic = prepared.job.policy.name != "static"
    workers = list(range(1, size))
    if rank == NODE_MANAGER:
        return [], (workers if elastic else list(layout.ranks[layout.topology.last]))
    stage = layout.stage_of(rank)

    def ring(peer: int, room: int, count: int = slots) -> Outbound:
        return Outbound(peer, slots=count, slot_bytes=room, integrity=IntegrityChoice.AUTO)

    if chain is not None:
        at = chain.index(rank)
        to = [ring(chain[at + 1], slot_bytes(prepared, summary, stage), max(slots, phase))] if at + 1 < len(chain) \
            else [ring(NODE_MANAGER, slot_bytes(prepared, summary, stage))]
        return to, [chain[at - 1]] if at else []

    if not elastic:
        room = slot_bytes(prepared, summary, stage)
        return [ring(r, room) for r in layout.downstream(stage)], list(layout.upstream(stage))
    between = max(slot_bytes(prepared, summary, s) for s in layout.topology.names[:-1]) if len(layout.topology) > 1 else 0
    others = [r for r in workers if r != rank]
    return ([ring(r, between) for r in others] + [ring(NODE_MANAGER, slot_bytes(prepared, summary, layout.topology.last))],
            others)


def bind_device(prepared: Prepared, comm, gpu_memory_gib: float | None = None,
                chains: tuple[tuple[int, ...], ...] | None = None, stage: str | None = None,
                needs_gib: dict[str, float] | None = None) -> Prepared:
    """One stage rank per GPU (rank 0 stays on the CPU); on CPU, fix the thread count.
    `gpu_memory_gib` caps what torch may allocate on each GPU, split evenly between the ranks
    that share it, or by their stages' `needs_gib` (`gpus.shares_by_need`: every rank checks
    every GPU, so a GPU whose needs don't fit is refused on all ranks alike); in a run in phases
    (`chains`), whose ranks of a GPU take turns on it, each may take the whole cap in its turn,
    and each GPU must hold exactly one chain. Every rank takes part in the collectives, whatever
    its device, so that ranks that see different devices never wait for each other here."""
    from mpi4py import MPI

    placement = prepared.placement
    cuda = placement.device_type == "cuda"
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    manager = comm.Get_rank() == NODE_MANAGER
    holds_manager = node.allreduce(int(manager)) > 0
    index = -1 if manager or not cuda else gpu_index(node.Get_rank(), holds_manager, torch.cuda.device_count())
    node.Free()
    total = memory_share_mb(index, gpu_memory_gib) if index >= 0 else 0.0
    places = comm.allgather((socket.gethostname(), index, stage, total))  # every rank's GPU, stage and memory
    gpus: dict[tuple[str, int], tuple[float, list[str | None]]] = {}  # (host, GPU) -> its memory, its ranks' stages
    for host, gpu, rank_stage, room in places:
        if gpu >= 0:
            gpus.setdefault((host, gpu), (room, []))[1].append(rank_stage)
    mine = places[comm.Get_rank()][:2]
    if chains is not None:
        if cuda:
            check_chain_gpus(chains, [place[:2] for place in places])
    elif needs_gib and cuda:
        shares = {gpu: shares_by_need(room, stages, needs_gib) for gpu, (room, stages) in gpus.items()}
    if not cuda:
        torch.set_num_threads(prepared.job.cpu_threads)
        return prepared
    if manager:
        return replace(prepared, placement=placement.on("cpu"))
    room, stages = gpus[mine]
    share, capped = (room if chains is not None else room / len(stages)), gpu_memory_gib is not None
    if needs_gib and chains is None:  # split by need, and held to it (uncapped, the usable memory is split)
        share, capped = shares[mine][stages.index(stage)], True
    return replace(prepared, placement=placement.on(take_gpu(index, share_mb=share if capped else None),
                                                    memory_limit_mb=share))


def check_chain_gpus(chains: tuple[tuple[int, ...], ...], places: list[tuple[str, int]]) -> None:
    """Each chain of a run in phases on one GPU of one host, and no GPU with two chains: the
    turns are per chain, so two chains on a GPU would hold it at once."""
    held = [{places[rank] for rank in chain} for chain in chains]
    if any(len(gpus) > 1 for gpus in held) or len(set().union(*held)) < len(chains):
        where = ", ".join(f"rank {r} on {places[r][0]} GPU {places[r][1]}" for chain in chains for r in chain)
        raise UserError(f"--phases needs each GPU to run one rank of every stage (a chain), but the ranks sit as "
                        f"{where}; fix: on one node of G GPUs, G ranks a stage (stages: {{encode: G, ...}}, -n with "
                        "1 + G ranks a stage); to use several nodes, run a job (or an array task) a node")


def write_report(path: Path | None, report: dict) -> None:
    """Rank 0's word on how its run ended, for whoever started it (the batch script reads it when
    srun's code can't say). Best effort: it is called on the way out of failures, which a report
    that can't be written must not turn into another."""
    if path is None:
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # never a predictable name
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(report, indent=1, default=str))
        os.replace(tmp, path)
    except OSError as err:
        print(f"warning: could not write the run's report {path}: {err.strerror or err}", file=sys.stderr, flush=True)


#: rank 0's outcome of a run that went through with some items failed (exit 4, runtime/failures.py)
ITEMS_FAILED = "items failed"


def say_error(args: RunOptions, text: str) -> None:
    """Rank 0's one error line, said before it ends the job. Under the local launcher (which
    watches a status folder and reads the report) the launcher says it, from the report, once
    every rank has ended: the MPI abort that follows this line can end the forwarding of this
    process's stderr before the line gets out, and it did under load."""
    if args.status_dir is None or args.report is None:
        print(f"error: {text}", file=sys.stderr, flush=True)
        wait_taken(sys.stderr)


def wait_taken(stream, deadline_s: float = 2.0, grace_s: float = 0.2) -> None:
    """Where `stream` is a pipe (to mpiexec's or srun's forwarder), wait until its reader has taken
    what was written (FIONREAD: the bytes still in the pipe), at most `deadline_s`, then a moment
    for the forwarder to pass it on: the abort that follows may end the forwarding."""
    import array
    import fcntl
    import stat
    import termios
    import time

    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
        left, end = array.array("i", [0]), time.monotonic() + deadline_s
        while time.monotonic() < end:
            fcntl.ioctl(fd, termios.FIONREAD, left, True)
            if left[0] == 0:
                break
            time.sleep(0.01)
        time.sleep(grace_s)
    except (OSError, ValueError):
        return


def report_error(args: RunOptions, status: str, message: str, **more) -> None:
    """Rank 0's report of a run it ends with an error ("failed" or "refused"), then its one error line."""
    write_report(args.report, {"status": status, "error": message, **more})
    say_error(args, message)


def report_failed(args: RunOptions, message: str, lost_hosts: tuple[str, ...] = ()) -> None:
    """Rank 0's one error line of a failed run, and its report (lost hosts for the batch script)."""
    report_error(args, "failed", message, lost_hosts=list(lost_hosts))


def open_publisher(prepared, args: RunOptions):
    """Where rank 0's live snapshots go (observe/publish.py): the live JSON beside the output, and
    the metrics endpoint when a port is given (--metrics-port, or the job file's metrics.port) or
    a discovery directory is (metrics.discovery_dir, or ONEPIECE_METRICS_DISCOVERY_DIR: then on a
    free port), with its service-discovery entry there."""
    from onepiece_hpc.observe.publish import LivePublisher

    job = prepared.job
    port = args.metrics_port if args.metrics_port is not None else job.metrics_port
    discovery = job.metrics_discovery_dir or environment.metrics_discovery_dir()
    slurm_id, _ = environment.slurm_job()
    labels = {"job_name": job.name, "output": str(prepared.output), "slurm_job": slurm_id}
    return LivePublisher.open(output=prepared.output, metrics_port=port, discovery_dir=discovery, labels=labels)


def serve_manager(prepared, layout, channels, control, peers, policy, args, drain: Drain,
                  pulse: PulseListener | None = None) -> str:
    interactive = args.progress == "bar" or (args.progress == "auto" and environment.is_interactive(sys.stderr))

    def progress(meter) -> ProgressReporter:
        return ProgressReporter(meter, prepared.job.name, sys.stderr, interactive)

    def blocked(verdict: Verdict, blocked_s: float) -> None:  # from the watch's thread: the loop can't
        try:
            report_failed(args, f"rank 0's main loop has not come round for {blocked_s:.0f} s (blocked in a call "
                                f"that does not return: to a dead peer, or a stalled file system), so its watch "
                                f"ends the job: {verdict.message}", verdict.lost_hosts)
        finally:
            leave_now(ExitCode.FAILED, control.comm.Abort)

    publisher = open_publisher(prepared, args)
    manager = NodeManager(prepared, layout, channels, control, peers, policy, args.heartbeat_timeout,
                          mode=f"{args.mode} -n {len(peers)}", on_blocked=blocked, retry_failed=args.retry_failed,
                          heartbeat_s=args.heartbeat, pulse=pulse, publisher=publisher, phase=args.phases)
    manager.drain = drain
    try:
        summary = manager.run(progress)
    finally:
        shield(args.drain_signal)  # a Python handler would be reset to "die" as the interpreter exits
        publisher.close(manager.snapshot("finished"))
    if summary.status == PREEMPTED:
        print(explain(drain, summary.items_total - summary.items_done, summary.committed_now), file=sys.stderr)
    print(f"{prepared.output}: {summary.items_done}/{summary.items_total} items done "
          f"({summary.committed_now} this run, {summary.seconds:.1f} s); {layout.describe()}")
    print(summary_table(summary.stages))
    if summary.moves:
        print(f"{summary.moves} rank moves (see /telemetry/run<N>/moves in the output)")
    if summary.phase_turns:
        print(f"in phases of {args.phases} units: {summary.phase_turns} turns, "
              f"{summary.weights_s:.1f} s moving weights in and out")
    if summary.items_failed:
        for line in failed_items_summary(prepared.plan, list(summary.failures), summary.items_failed):
            print(line, file=sys.stderr)
    write_report(args.report, {"status": summary.status, "items_failed": summary.items_failed,
                               "summary": asdict(summary)})
    ended = run_outcome(summary.status, summary.committed_now)
    if ended == "completed" and summary.items_failed:
        return ITEMS_FAILED
    if summary.status == PREEMPTED and drain.expired():
        leave_now(drained_exit_code(ended), control.comm.Abort)  # no goodbyes with ranks that may be stuck
    return ended


def _set_up(args: RunOptions, comm, control: ControlPlane, peers, mine) -> tuple[Prepared, PlanSummary]:
    """Rank 0 plans; every other rank checks the job and waits for its word (runtime/setup.py)."""
    from mpi4py import MPI

    size = comm.Get_size()
    if mine.rank == NODE_MANAGER:
        try:
            check_thread_level(MPI)
            prepared = with_policy(prepare(args.job, args.output, environment.cache_dir()), run_policy(args))
            layout = plan_layout(prepared.job, size, prepared.model.adapter.topology)
            if args.phases:
                layout.chains()  # a layout that can't run in phases is refused here, naming the fix
            check_stage_memory(args.stage_memory_gib(), layout.topology.names, prepared.placement.device_type,
                               args.phases)
        except BaseException as err:
            stop_stage_ranks(control, peers, "rank 0's set-up failed", getattr(err, "exit_code", 1))
            raise
        return prepared, manager_setup(control, peers, args.wait_timeout, prepared,
                                       agreement(prepared, layout.describe(), size))

    def checks() -> tuple[Prepared, dict[str, str]]:
        check_thread_level(MPI)
        prepared = with_policy(prepare(args.job, args.output, environment.cache_dir(), plan=False), run_policy(args))
        return prepared, agreement(prepared, plan_layout(prepared.job, size, prepared.model.adapter.topology).describe(), size)

    return stage_setup(control, peers, mine, args.wait_timeout, checks)


def run_rank(args: RunOptions, comm, drain: Drain | None = None) -> str:
    """Serve this rank's role to the end; returns rank 0's outcome: "completed", or after `drain`
    "preempted" (or "no-progress" when it committed nothing)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    if args.expect_ranks is not None and size != args.expect_ranks:
        raise UserError(f"MPI started {size} ranks where {args.expect_ranks} were expected: the launcher and "
                        "the MPI library do not match (e.g. srun --mpi=pmix with an MPICH build); fix: use "
                        "the --mpi plugin of your MPI (pmi2 for MPICH, pmix for Open MPI) or its mpiexec")
    mine = me(rank)
    pulse = PulseListener.open(mine.host) if rank == NODE_MANAGER else None
    if pulse is not None:
        mine = replace(mine, pulse_port=pulse.port, pulse_token=pulse.token.hex())
    limit = args.wait_timeout
    with deadline("exchanging every rank's host and pid (MPI_Allgather)", limit, mine):
        peers = exchange_peers(comm, mine)
    rank0 = peers[NODE_MANAGER]
    sender = (PulseSender(rank, rank0.host, rank0.pulse_port, bytes.fromhex(rank0.pulse_token), args.heartbeat).start()
              if rank != NODE_MANAGER and rank0.pulse_port else None)
    policy = WaitPolicy(timeout_s=args.wait_timeout)
    with deadline("creating the control plane (MPI_Comm_dup)", limit, mine):
        control = ControlPlane(comm, policy, peers)
    prepared, summary = _set_up(args, comm, control, peers, mine)
    layout = plan_layout(prepared.job, size, prepared.model.adapter.topology)
    chains = layout.chains() if args.phases else None
    chain = next((c for c in chains if rank in c), None) if chains else None  # this rank's; rank 0 has none
    stage = layout.stage_of(rank)
    with deadline("placing the ranks on devices (a collective of each node's ranks)", limit, mine):
        try:
            prepared = bind_device(prepared, comm, args.gpu_memory_gib, chains, stage, args.stage_memory_gib())
        except UserError as refused:  # found alike on every rank: rank 0 says it, the others wait for its abort
            if rank == NODE_MANAGER:
                raise
            raise SetupStopped(refused.exit_code, peers[NODE_MANAGER], mine) from refused
    status = (StatusFile(args.status_dir, RankStatus(rank, mine.host, mine.pid, stage or "manager"))
              if args.status_dir else None)
    gpu = prepared.placement.device if prepared.placement.device_type == "cuda" else None
    with deadline("opening the transport (every rank builds its fabrics together)", limit, mine):
        fabrics = build_fabrics(comm, FabricChoice(args.fabric), gpu=gpu)
    outbound, inbound = channel_plan(prepared, summary, layout, rank, size, args.ring_slots, args.phases, chain)
    with deadline("opening the channels between stages", limit + 30.0, mine):
        channels = open_channels(comm, fabrics, outbound=outbound, inbound=inbound,
                                 choice=FabricChoice(args.fabric), policy=policy, timeout_s=args.wait_timeout)
    outcome = "completed"
    if rank == NODE_MANAGER:
        outcome = serve_manager(prepared, layout, channels, control, peers, policy, args, drain or Drain(), pulse)
    else:
        worker, extra = (PhasedStageWorker, {"chain": chain}) if chain else (StageWorker, {})
        worker(mine, stage, prepared, summary, initial_routes(layout), channels, control, peers, policy,
               args.heartbeat, status, warm_up=args.warm_up, **extra).run()
    channels.close(policy, timeout_s=args.wait_timeout)
    close_fabrics(fabrics)
    control.close()
    for end in (pulse, sender):
        if end is not None:
            end.close()
    return outcome
