"""Chaos for the staged runtime: a kill -9 of a random rank (rank 0 included), of the launcher or of
the whole process tree, at a random moment of a tiny staged run; then a resume. Each round holds if
every process of the run ended by itself within seconds, the resume generated exactly the items
that were not done, and the output is complete, intact and bit-identical to an uninterrupted run.

    python tests/chaos.py --rounds 20 --seed 1        # stops at the first round that fails

The tests reuse its pieces (process trees, waiting for their end, the checks after a resume).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from support import done_count, run_cli, running, runs_of, write_job

#: every process of a run must end this long after a kill at the latest: rank 0 closes in about a second
#: (at most lifeline.CLOSE_DEADLINE_S); a run that needs the stage ranks' own grace fails
END_BOUND_S = 15.0
#: a launcher whose rank was killed must report it within this long
REPORT_BOUND_S = 120.0
#: no run of a round may take longer than this (a hang fails the round)
RUN_BOUND_S = 240.0
#: what is compared with the uninterrupted run, dataset by dataset
COMPARED = ("outputs/images", "digest", "items")
VICTIMS = ("rank", "launcher", "tree")


@dataclass(frozen=True)
class Process:
    """One process of a run, told apart from a later one with the same pid by its start time."""

    pid: int
    started: int
    role: str  # "launcher", "mpiexec", "rank 3", or the program's name

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[2] == self.started and stat[1] not in "ZX"


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks after boot) of `pid`, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return int(fields[1]), fields[0], int(fields[19])


def _role(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    name = os.path.basename(cmdline[0].decode(errors="replace"))
    if name.startswith(("mpiexec", "mpirun")):
        return "mpiexec"
    if b"onepiece_hpc.runtime.rank_main" in cmdline:
        for var in environ:
            if var.startswith((b"PMI_RANK=", b"OMPI_COMM_WORLD_RANK=")):
                return f"rank {int(var.split(b'=')[1])}"
        return "rank ?"
    return name


def process_tree(root: int) -> list[Process]:
    """`root` (the launcher) and every process below it, as /proc shows them now."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            started[int(entry.name)] = stat[2]
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in started:
            found.append(Process(pid, started[pid], "launcher" if pid == root else _role(pid)))
            todo += children.get(pid, [])
    return found


def processes_naming(marker: str) -> list[Process]:
    """Every process whose command line holds `marker` (a run's job file names all of its ranks)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and (stat := _stat(int(entry.name))) is not None:
            found.append(Process(int(entry.name), stat[2], _role(int(entry.name))))
    return found


def wait_ended(known: list[Process], marker: str, bound_s: float) -> tuple[float, list[Process]]:
    """Wait until none of `known` and no process naming `marker` is alive; returns the seconds that
    took and, if `bound_s` ran out first, the processes still alive (then killed, so none outlives the
    caller)."""
    begun = time.monotonic()
    while True:
        alive = {p.pid: p for p in known if p.alive()} | {p.pid: p for p in processes_naming(marker) if p.alive()}
        if not alive:
            return time.monotonic() - begun, []
        if time.monotonic() - begun > bound_s:
            for process in alive.values():
                _kill(process)
            return time.monotonic() - begun, sorted(alive.values(), key=lambda p: p.pid)
        time.sleep(0.05)


def _kill(process: Process) -> None:
    if process.alive():
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def chaos_job(folder: Path, items: int = 40, steps: int = 6, quick: int = 0) -> Path:
    """A tiny staged job (one rank a stage; a fifth rank joins denoise) long enough to cut midway.
    The first `quick` items take 2 steps: their commits come fast, and a cut made after them lands
    while most of the slower items are not even dispatched, however fast the machine is."""
    lines = [{"prompt": f"chaos item {i}: a {('red', 'blue', 'green', 'white')[i % 4]} boat at dawn",
              **({"steps": 2} if i < quick else {})} for i in range(items)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return write_job(folder, prompt_file="prompts.jsonl",
                     params=f"{{steps: {steps}, guidance: 4.0, height: 64, width: 64}}",
                     stages="{encode: 1, denoise: 1, decode: 1}")


def output_of(job: Path) -> Path:
    return job.parent / "out/t.h5"


def read_compared(output: Path) -> dict[str, np.ndarray]:
    with h5py.File(output, "r", locking=False) as f:
        return {name: f[name][...] for name in COMPARED} | {"done": f["done"][...]}


def reference_of(folder: Path, make_job: Callable[[Path], Path]) -> dict[str, np.ndarray]:
    """What an uninterrupted run of the job gives (the single-process reference path: the staged
    runtime must equal it bit for bit)."""
    job = make_job(folder)
    done = run_cli("run", job, "--monolithic")
    if done.returncode != 0:
        raise AssertionError(f"the reference run failed: {done.stderr[-3000:]}")
    return read_compared(output_of(job))


def check_resumed(job: Path, ranks: int, reference: dict[str, np.ndarray]) -> str:
    """Resume the job staged and check the output; returns a failure's description, or "" if it holds:
    the resume generates exactly the items not yet done (none twice, none lost), and the output is
    complete, intact (`verify`) and bit-identical to `reference`."""
    output = output_of(job)
    kept = done_count(output)
    again = run_cli("run", job, "-n", ranks, "--wait-timeout", "60")
    if again.returncode != 0:
        return f"the resume exited {again.returncode}: {again.stderr[-3000:]}"
    total = len(reference["done"])
    summary = re.search(r"(\d+)/(\d+) items done \((\d+) this run", again.stdout)
    if summary is None or [int(n) for n in summary.groups()] != [total, total, total - kept]:
        return (f"{kept} items were done before the resume, so it should have made {total - kept} of {total}; "
                f"it says: {summary and summary.group(0)!r}")
    found = read_compared(output)
    if not found["done"].all():
        return f"items not done after the resume: {np.flatnonzero(found['done'] == 0).tolist()}"
    for name in COMPARED:
        if not np.array_equal(found[name], reference[name]):
            return f"{name} differs from the uninterrupted run"
    last = runs_of(output)[-1]
    if last["status"] != "completed" or int(last["items_committed"]) != total - kept:
        return f"the resume's run record says {last['status']}, {last['items_committed']} committed"
    verify = run_cli("verify", output)
    if verify.returncode != 0:
        return f"verify exited {verify.returncode}: {verify.stdout[-2000:]}{verify.stderr[-2000:]}"
    return ""


@dataclass(frozen=True)
class Cut:
    """Where a round strikes: `victim` ("rank", "launcher" or "tree"; `rank` for the first) once
    `items` are committed, or `delay_s` after the launcher starts if `items` is None (set-up)."""

    victim: str
    ranks: int
    rank: int = -1
    items: int | None = None
    delay_s: float = 0.0

    def describe(self) -> str:
        who = f"rank {self.rank}" if self.victim == "rank" else self.victim
        when = f"after {self.items} committed items" if self.items is not None else f"{self.delay_s:.1f} s in"
        return f"kill -9 of the {who} of -n {self.ranks}, {when}"


def draw_cut(rng: random.Random, victim: str, items: int) -> Cut:
    """A random moment: in three rounds of ten during set-up (within the first 15 s, before the
    first commit on this machine), else after a random number of committed items."""
    ranks = rng.choice((4, 5))
    rank = rng.randrange(ranks) if victim == "rank" else -1
    if rng.random() < 0.3:
        return Cut(victim, ranks, rank, delay_s=rng.uniform(0.0, 15.0))
    return Cut(victim, ranks, rank, items=rng.randrange(items))


@dataclass
class Round:
    cut: Cut
    struck: bool = False       # False: the run ended before the moment came
    kept: int = 0              # items done when every process had ended
    ended_in_s: float = 0.0    # from the kill until every process had ended
    failure: str = ""


def _await_moment(proc: subprocess.Popen, cut: Cut, output: Path) -> bool:
    """Wait for the cut's moment; False if the run ended first."""
    started = time.monotonic()
    while proc.poll() is None:
        if cut.items is None and time.monotonic() - started >= cut.delay_s:
            return True
        if cut.items is not None and done_count(output) >= cut.items:
            return True
        if time.monotonic() - started > RUN_BOUND_S:
            raise TimeoutError(f"no {cut.items} committed items within {RUN_BOUND_S:.0f} s")
        time.sleep(0.02)
    return False


def _victims(proc: subprocess.Popen, cut: Cut) -> list[Process]:
    """The processes to kill now: the whole tree, the launcher, or one rank (waited for in set-up)."""
    deadline = time.monotonic() + REPORT_BOUND_S
    while True:
        tree = process_tree(proc.pid)
        if cut.victim == "tree":
            return sorted(tree, key=lambda p: p.role == "launcher")  # the launcher last, as it would notice
        if cut.victim == "launcher":
            return [p for p in tree if p.role == "launcher"]
        chosen = [p for p in tree if p.role == f"rank {cut.rank}"]
        if chosen or proc.poll() is not None or time.monotonic() > deadline:
            return chosen
        time.sleep(0.02)


def strike(job: Path, cut: Cut) -> Round:
    """Run the job staged and kill as `cut` says; wait until every process of the run has ended."""
    result = Round(cut)
    with running("run", job, "-n", cut.ranks, "--wait-timeout", "60") as proc:
        try:
            result.failure = _strike(proc, job, cut, result)
        finally:  # nothing of the run outlives the round, whatever happened
            wait_ended(process_tree(proc.pid) if proc.poll() is None else [], str(job), 0.0)
    result.kept = done_count(output_of(job))
    return result


def _strike(proc: subprocess.Popen, job: Path, cut: Cut, result: Round) -> str:
    try:
        came = _await_moment(proc, cut, output_of(job))
    except TimeoutError as late:
        return str(late)
    victims = _victims(proc, cut) if came else []
    if not victims:  # the run ended before the moment (or before the rank to kill showed up)
        return _unstruck(proc)
    known = process_tree(proc.pid)
    for victim in victims:
        _kill(victim)
    result.struck = True
    killed_at = time.monotonic()
    try:
        code = proc.wait(timeout=REPORT_BOUND_S)
    except subprocess.TimeoutExpired:
        return f"the launcher was still running {REPORT_BOUND_S:.0f} s after the kill"
    elapsed, left = wait_ended(known, str(job), END_BOUND_S)
    result.ended_in_s = time.monotonic() - killed_at
    if left:
        return f"{', '.join(f'{p.role} (pid {p.pid})' for p in left)} still running {elapsed:.0f} s after the kill"
    if cut.victim == "rank" and code == 0 and runs_of(output_of(job))[-1]["status"] == "completed":
        return ""  # the kill landed after rank 0 had committed the last unit and closed the output
    if cut.victim == "rank" and code != 1:
        return f"the launcher exited {code} after a rank was killed (1 expected): {proc.stderr.read()[-3000:]}"
    return ""


def _unstruck(proc: subprocess.Popen) -> str:
    """A run that ended before its moment must have completed."""
    try:
        _, err = proc.communicate(timeout=REPORT_BOUND_S)
    except subprocess.TimeoutExpired:
        return f"the run neither ended nor showed the rank to kill within {RUN_BOUND_S:.0f} s"
    return "" if proc.returncode == 0 else f"the run failed on its own ({proc.returncode}): {err[-3000:]}"


def chaos_round(folder: Path, cut: Cut, reference: dict[str, np.ndarray],
                make_job: Callable[[Path], Path] = chaos_job) -> Round:
    """One round in `folder`: strike, then resume and check."""
    job = make_job(folder)
    result = strike(job, cut)
    if not result.failure:
        result.failure = check_resumed(job, cut.ranks, reference)
    return result


def run_rounds(work: Path, rounds: int, seed: int, make_job: Callable[[Path], Path] = chaos_job,
               say: Callable[[str], None] = lambda line: None,
               reference: dict[str, np.ndarray] | None = None, victims: tuple[str, ...] = VICTIMS) -> list[Round]:
    """Rounds in a row until one fails; the kinds of `victims` take turns in a random order (each
    len(victims) rounds cover every kind). `reference`: what an uninterrupted run of `make_job`'s
    job gives (made here if not given)."""
    rng = random.Random(seed)
    if reference is None:
        reference = reference_of(work / "reference", make_job)
    items = len(reference["done"])
    done: list[Round] = []
    for index in range(rounds):
        if index % len(victims) == 0:
            turns = rng.sample(victims, len(victims))
        cut = draw_cut(rng, turns[index % len(victims)], items)
        result = chaos_round(work / f"round-{index + 1:02d}", cut, reference, make_job)
        done.append(result)
        outcome = "FAILED: " + result.failure if result.failure else "held"
        strike_note = (f"{result.kept} items kept, every process ended {result.ended_in_s:.1f} s after the kill"
                       if result.struck else "the run ended before the moment")
        say(f"round {index + 1}/{rounds}: {cut.describe()}: {strike_note}; {outcome}")
        if result.failure:
            break
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a "
                        "temporary folder, removed at the end)")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        done = run_rounds(args.keep, args.rounds, args.seed, say=say)
    else:
        with tempfile.TemporaryDirectory(prefix="onepiece-chaos-") as work:
            done = run_rounds(Path(work), args.rounds, args.seed, say=say)
    held = sum(1 for r in done if not r.failure)
    say(f"{held} of {args.rounds} rounds held in a row (seed {args.seed})")
    return 0 if held == args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
