"""Every option of a run, typed, with its default, choices, bounds and help written once.

`RunOptions` is what `onepiece run` takes and what each rank of a staged run is started with.
The click options of `onepiece run` (`run_command_options`), the rank's command line
(`to_argv` / `from_argv`, and rank_main's --help) and docs/options.md (`options_table`) are all
derived from its fields, so a choice list, a default or a bound can't differ between them. Each
field's scope says where it appears: RUN options are flags of `onepiece run` only, RANK options
reach the ranks only (the launcher, the batch script or the Python API sets them), BOTH are
flags of `onepiece run` that it passes on to every rank.

A value reaches a rank as one argument each (`--flag=value`, the job file last after `--`), so
paths with spaces, quotes, line breaks or a leading dash arrive as they were.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime.drain import DRAIN_SIGNALS
from onepiece_hpc.runtime.policy.model import POLICIES
from onepiece_hpc.transport.fabrics.base import FabricKind

if TYPE_CHECKING:
    import argparse

#: how stage ranks pass tensors: auto picks per pair of ranks (transport/connect.py)
FABRICS = ("auto", *(kind.value for kind in FabricKind))
#: rank 0's progress display
PROGRESS = ("auto", "bar", "lines")


class Scope(enum.Flag):
    """Where an option appears: a flag of `onepiece run`, an argument of every rank, or both."""

    RUN = enum.auto()
    RANK = enum.auto()
    BOTH = RUN | RANK


@dataclass(frozen=True)
class Spec:
    """What a field of RunOptions says about itself beyond its type and default."""

    help: str
    scope: Scope = Scope.BOTH
    choices: tuple[str, ...] = ()
    low: float | None = None    # inclusive bounds of a number
    high: float | None = None
    short: str | None = None    # e.g. "-n"


def _option(default: object, help: str, **spec) -> typing.Any:
    return field(default=default, metadata={"spec": Spec(help, **spec)})


@dataclass(frozen=True)
class RunOptions:
    """One run's options; valid by construction (a bad value raises UserError naming its flag)."""

    job: Path = field(metadata={"spec": Spec("The job file.")})
    monolithic: bool = _option(False, "Run every stage in this one process (the reference path).", scope=Scope.RUN)
    ranks: int | None = _option(None, "Run staged on this many local MPI ranks (rank 0 manages; the rest serve "
                                      "stages).", scope=Scope.RUN, short="-n")
    output: Path | None = _option(None, "Output .h5 file (default: the job file's 'output').", short="-o")
    fabric: str = _option("auto", "How stage ranks pass tensors (auto: cuda-ipc between GPUs of a node, else shm "
                                  "on a node, else verbs or mpi-rma).", choices=FABRICS)
    gpu_memory_gib: float | None = _option(None, "Cap what each rank may allocate on its GPU, in GiB.", low=1.0)
    stage_memory: str | None = _option(None, "Split each GPU's memory between its ranks by need, as "
                                             "STAGE=GIB[,STAGE=GIB...] (e.g. decode=5): a rank of a named stage "
                                             "gets that many GiB, the others share what is left evenly (default: "
                                             "even shares).")
    mps: bool = _option(False, "Run the ranks under NVIDIA MPS, so that the ranks sharing a GPU run their kernels "
                               "at once instead of taking turns (a daemon of the run's own unless one runs already; "
                               "docs/gpus.md).", scope=Scope.RUN)
    ring_slots: int = _option(2, "Units in flight per channel.", low=1, high=64)
    policy: str | None = _option(None, "Override the job file's policy: static never moves ranks, adaptive moves "
                                       "them by load.", choices=POLICIES)
    wait_timeout: float = _option(600.0, "Deadline, in seconds, of any single wait on a peer.", low=1.0)
    heartbeat_timeout: float = _option(60.0, "Seconds rank 0 waits to hear from a rank (heartbeat or pulse) "
                                             "before it calls it dead.", low=5.0, high=86_400.0)
    phases: int | None = _option(None, "Run the stages in phases of this many units: one stage's weights on the "
                                       "GPU at a time, the others in page-locked host memory, for a GPU that "
                                       "can't hold the whole pipeline (same outputs). Staged: one rank of every "
                                       "stage a GPU, taking turns (no rank moves).", low=1, high=4096)
    metrics_port: int | None = _option(None, "Rank 0 serves Prometheus metrics on this port (0: any free port) "
                                             "and writes a service-discovery entry (docs/monitoring.md); "
                                             "overrides the job file's metrics.port.", low=0, high=65_535)
    retry_failed: bool = _option(False, "Generate only the items that failed in earlier runs (a plain run leaves "
                                        "them be).")
    heartbeat: float = _option(1.0, "Seconds between a stage rank's heartbeats.", scope=Scope.RANK)
    report: Path | None = _option(None, "Rank 0 writes how the run ended here, as JSON.", scope=Scope.RANK)
    expect_ranks: int | None = _option(None, "Fail unless MPI gives exactly this many ranks (catches a wrong srun "
                                             "--mpi).", scope=Scope.RANK)
    status_dir: Path | None = _option(None, "Each rank keeps a status file here (for a local launcher that "
                                            "watches).", scope=Scope.RANK)
    progress: str = _option("auto", "Rank 0's progress: a live bar, plain lines, or auto (a bar on a terminal).",
                            scope=Scope.RANK, choices=PROGRESS)
    init_timeout: float = _option(300.0, "Seconds MPI_Init may take before the rank gives up with an error.",
                                  scope=Scope.RANK)
    warm_up: bool = _option(False, "Each stage rank runs its stage once on zero inputs before it serves "
                                   "(benchmarks).", scope=Scope.RANK)
    mode: str = _option("staged", "The run's mode as its record in the output names it (with ' -n N' added).",
                        scope=Scope.RANK)
    drain_signal: str | None = _option(None, "Under Slurm: the signal that, like SIGTERM, asks rank 0 to drain "
                                             "(slurm.drain_signal); without it USR1 drains and SIGTERM stops at "
                                             "once.", scope=Scope.RANK, choices=DRAIN_SIGNALS)
    drain_seconds: float = _option(120.0, "The drain's signal window; rank 0 gives up units in flight a margin "
                                          "before its end.", scope=Scope.RANK)

    def __post_init__(self) -> None:
        for option in OPTIONS:
            value = getattr(self, option.name)
            if option.kind is Path and isinstance(value, str):
                object.__setattr__(self, option.name, value := Path(value))
            if option.kind is float and type(value) is int:
                object.__setattr__(self, option.name, value := float(value))
            problem = option.problem(value)
            if problem:
                raise UserError(f"{option.label} {value!r}: {problem}")
        self.stage_memory_gib()  # a malformed --stage-memory is refused here, naming the fix

    def stage_memory_gib(self) -> dict[str, float]:
        """--stage-memory as {stage: GiB} (empty without it)."""
        if self.stage_memory is None:
            return {}
        needs: dict[str, float] = {}
        for part in self.stage_memory.split(","):
            stage, _, number = part.strip().partition("=")
            try:
                gib = float(number)
            except ValueError:
                gib = -1.0
            if not stage.strip() or not gib > 0 or gib == float("inf") or stage.strip() in needs:
                raise UserError(f"--stage-memory {self.stage_memory!r}: write STAGE=GIB for each stage once, "
                                f"separated by commas, with GiB above 0 (e.g. decode=5,encode=13); {part.strip()!r} "
                                "is not")
            needs[stage.strip()] = gib
        return needs

    def to_argv(self) -> list[str]:
        """A rank's arguments for these options: every RANK option that differs from its default,
        then the job file after `--`. `from_argv` reads them back as they were."""
        argv = []
        for option in OPTIONS:
            value = getattr(self, option.name)
            if option.positional or Scope.RANK not in option.scope or value == option.default:
                continue
            argv.append(option.flag if option.kind is bool else f"{option.flag}={option.argument(value)}")
        return [*argv, "--", str(self.job)]

    @classmethod
    def from_argv(cls, argv: Sequence[str] | None, prog: str = "onepiece-rank",
                  description: str | None = None) -> RunOptions:
        """Parse a rank's arguments (argparse: a bad one exits 2 with the usage); None: sys.argv."""
        return cls(**vars(rank_parser(prog, description).parse_args(argv)))

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> RunOptions:
        """From keyword values named as the fields (click's, for one)."""
        return cls(**values)


@dataclass(frozen=True)
class Option:
    """One field of RunOptions, resolved: its name, type and default, and its Spec."""

    name: str
    kind: type        # bool, int, float, str or Path
    optional: bool    # None is allowed (and means: not given)
    default: object
    spec: Spec

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        """How messages and tables name it."""
        return "JOB_FILE" if self.positional else self.flag

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.spec.short, self.flag) if self.spec.short else (self.flag,)

    @property
    def scope(self) -> Scope:
        return self.spec.scope

    @property
    def positional(self) -> bool:
        return self.name == "job"

    def argument(self, value: object) -> str:
        """`value` as the text after `--flag=`. A path is written so that argparse can't take it for
        the end of the options ("--" alone, which it drops): ./-x reads back as the path -x."""
        text = str(value)
        return f"./{text}" if self.kind is Path and text.startswith("-") else text

    def problem(self, value: object) -> str | None:
        """What is wrong with `value` for this option, or None."""
        if value is None:
            return None if self.optional else "a value is needed"
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            return f"expected {self.kind.__name__}"
        if value == "--":
            return "'--' can't reach a rank as a value: it ends a command line's options"
        if self.spec.choices and value not in self.spec.choices:
            return f"choose one of {', '.join(self.spec.choices)}"
        if (self.spec.low is not None and value < self.spec.low) or (self.spec.high is not None
                                                                      and value > self.spec.high):
            return f"not in the range {self.bounds}"
        return None

    @property
    def bounds(self) -> str:
        """The range as click writes it: x>=1.0, 1<=x<=64."""
        low, high = self.spec.low, self.spec.high
        if low is not None and high is not None:
            return f"{self._number(low)}<=x<={self._number(high)}"
        return f"x>={self._number(low)}" if low is not None else f"x<={self._number(high)}" if high is not None else ""

    def _number(self, bound: float) -> str:
        return str(int(bound) if self.kind is int else float(bound))


def _resolve() -> tuple[Option, ...]:
    hints = typing.get_type_hints(RunOptions)
    resolved = []
    for item in fields(RunOptions):
        args = typing.get_args(hints[item.name])
        optional = type(None) in args
        kind = next(a for a in args if a is not type(None)) if optional else hints[item.name]
        resolved.append(Option(item.name, kind, optional, item.default, item.metadata["spec"]))
    return tuple(resolved)


#: every option, in RunOptions' order (the order of --help and of docs/options.md)
OPTIONS = _resolve()
BY_NAME = {option.name: option for option in OPTIONS}


# -- the rank's command line (argparse) --------------------------------------------------------------------
def _bounded(option: Option) -> Callable[[str], object]:
    """argparse's `type` for a number with bounds: the value, or the range it must lie in."""
    import argparse

    def parse(text: str) -> object:
        try:
            value = option.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {option.kind.__name__}") from None
        if option.problem(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not in the range {option.bounds}")
        return value
    return parse


def rank_parser(prog: str = "onepiece-rank", description: str | None = None) -> argparse.ArgumentParser:
    """argparse for a rank's arguments: the RANK options, with the same choices, bounds and help."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for option in OPTIONS:
        if Scope.RANK not in option.scope:
            continue
        help = option.spec.help.replace("%", "%%")
        if option.positional:
            parser.add_argument(option.name, type=option.kind, help=help)
        elif option.kind is bool:
            parser.add_argument(*option.flags, dest=option.name, action="store_true", help=help)
        else:
            parser.add_argument(*option.flags, dest=option.name, default=option.default, help=help,
                                type=_bounded(option) if option.bounds else option.kind,
                                choices=option.spec.choices or None)
    return parser


# -- the flags of `onepiece run` (click) ------------------------------------------------------------------
def click_option(name: str, help: str | None = None):
    """The click option (or, for the job file, argument) of field `name`; `help` overrides its text
    where another command uses the same option for its own purpose."""
    import click

    option = BY_NAME[name]
    if option.positional:
        return click.argument(name, metavar="JOB_FILE", type=click.Path(path_type=Path))
    text = help or option.spec.help
    if option.kind is bool:
        return click.option(*option.flags, name, is_flag=True, help=text)
    return click.option(*option.flags, name, type=_click_type(option), default=option.default, help=text,
                        show_default=option.default is not None)


def _click_type(option: Option):
    import click

    low, high = option.spec.low, option.spec.high
    if option.spec.choices:
        return click.Choice(list(option.spec.choices))
    if option.kind is Path:
        return click.Path(path_type=Path)
    if low is not None or high is not None:
        return (click.IntRange if option.kind is int else click.FloatRange)(low, high)
    return option.kind


def run_command_options(command):
    """Decorate a click command with the RUN options (the job file as its argument), in order."""
    for option in reversed(OPTIONS):
        if Scope.RUN in option.scope:
            command = click_option(option.name)(command)
    return command


# -- docs/options.md ---------------------------------------------------------------------------------------
_WHERE = {Scope.RUN: "`onepiece run`", Scope.RANK: "each rank", Scope.BOTH: "`onepiece run`, each rank"}


def options_table() -> str:
    """Every run option as a Markdown table: flag, where it is taken, type, default, values, meaning."""
    rows = ["| option | taken by | type | default | values | meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for option in OPTIONS:
        flag = option.label if option.positional else ", ".join(f"`{f}`" for f in option.flags)
        default = "(required)" if option.positional else "off" if option.kind is bool else (
            "-" if option.default is None else f"`{option.default}`")
        values = ", ".join(f"`{c}`" for c in option.spec.choices) or option.bounds or "-"
        kind = "flag" if option.kind is bool else {Path: "path"}.get(option.kind, option.kind.__name__)
        meaning = option.spec.help.replace("|", "\\|")
        rows.append(f"| {flag} | {_WHERE[option.scope]} | {kind} | {default} | {values} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":  # docs/options.md's table of options
    print(options_table())
