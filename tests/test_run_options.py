"""The run options (runtime/options.py): one typed object from which `onepiece run`'s flags, a
rank's command line and docs/options.md are derived, read back exactly, hostile paths included."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onepiece_hpc.cli.run import run
from onepiece_hpc.errors import UserError
from onepiece_hpc.exit_codes import ExitCode, after_signal
from onepiece_hpc.runtime.options import FABRICS, OPTIONS, PROGRESS, RunOptions, Scope, rank_parser
from onepiece_hpc.runtime.policy.model import POLICIES
from onepiece_hpc.transport.connect import FabricChoice
from support import REPO

HOSTILE = ["it's \"q\" $(touch PWNED) `x`; y", "line one\nline two", "-starts-with-a-dash.yaml", "--output=x.h5",
           "a=b=c", "  spaced  ", "ünïcødé/日本.yaml", "--", "-", "*?[]{}~!#&|<>", "\t\r"]

#: a path as an argument of a process can be: any text without NUL or unpaired surrogates
paths = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1).map(Path)


def _rank_fields() -> st.SearchStrategy[RunOptions]:
    """Any valid RunOptions whose launcher-only (RUN) fields keep their defaults."""
    values = {}
    for option in OPTIONS:
        if Scope.RANK not in option.scope:
            continue
        if option.name == "stage_memory":  # STAGE=GIB,...: its own form, read by RunOptions.stage_memory_gib
            base = st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True),
                                   st.floats(0.5, 1000.0), min_size=1, max_size=4).map(
                lambda needs: ",".join(f"{stage}={gib!r}" for stage, gib in needs.items()))
        elif option.spec.choices:
            base = st.sampled_from(option.spec.choices)
        elif option.kind is bool:
            base = st.booleans()
        elif option.kind is Path:
            base = paths
        elif option.kind is int:
            base = st.integers(int(option.spec.low if option.spec.low is not None else -10**6),
                               int(option.spec.high if option.spec.high is not None else 10**6))
        elif option.kind is float:
            base = st.floats(option.spec.low if option.spec.low is not None else -1e9,
                             option.spec.high if option.spec.high is not None else 1e9, allow_nan=False)
        else:
            base = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")).filter(
                lambda text: text != "--")  # refused: see test_options_built_in_python_are_checked_too
        values[option.name] = (st.none() | base) if option.optional else base
    return st.fixed_dictionaries(values).map(lambda given: RunOptions(**given))


@settings(max_examples=300, deadline=None)
@given(_rank_fields())
def test_a_rank_reads_back_exactly_the_options_it_was_given(options):
    assert RunOptions.from_argv(options.to_argv()) == options


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_paths_reach_a_rank_as_they_were(text):
    options = RunOptions(job=Path(text), output=Path(text), report=Path(text), status_dir=Path(text),
                         mode=text if text != "--" else "staged")
    argv = options.to_argv()
    assert RunOptions.from_argv(argv) == options
    assert argv[-2:] == ["--", text]  # the job file last, after the end of the options


def test_hostile_paths_reach_a_real_rank_process_as_they_were(tmp_path):
    """Through a real exec (no shell), as mpiexec starts the ranks: the argv survives the kernel."""
    options = RunOptions(job=Path(HOSTILE[0]), output=Path(HOSTILE[1]), fabric="shm", retry_failed=True)
    code = ("import sys; from onepiece_hpc.runtime.options import RunOptions; "
            "print(repr(RunOptions.from_argv(sys.argv[1:])))")
    done = subprocess.run([sys.executable, "-c", code, *options.to_argv()], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr(options)
    assert not list(tmp_path.iterdir())


def test_only_what_differs_from_the_defaults_is_passed_and_the_launchers_own_options_never():
    assert RunOptions(job=Path("j.yaml")).to_argv() == ["--", "j.yaml"]
    argv = RunOptions(job=Path("j.yaml"), monolithic=True, ranks=5, ring_slots=4, warm_up=True).to_argv()
    assert argv == ["--ring-slots=4", "--warm-up", "--", "j.yaml"]


@pytest.mark.parametrize("flag,value,says", [
    ("--ring-slots", "0", "not in the range 1<=x<=64"), ("--ring-slots", "x", "not a valid int"),
    ("--heartbeat-timeout", "1", "not in the range 5.0<=x<=86400.0"), ("--fabric", "carrier-pigeon", "invalid choice"),
    ("--policy", "oracle", "invalid choice"), ("--progress", "fancy", "invalid choice"),
])
def test_a_rank_refuses_a_bad_value_with_the_usage_and_exit_2(capsys, flag, value, says):
    with pytest.raises(SystemExit) as stop:
        RunOptions.from_argv([f"{flag}={value}", "j.yaml"])
    assert stop.value.code == ExitCode.REFUSED
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("field,value,says", [
    ("ring_slots", 65, "--ring-slots 65: not in the range 1<=x<=64"), ("fabric", "x", "choose one of auto, shm"),
    ("wait_timeout", "600", "--wait-timeout '600': expected float"), ("ranks", True, "expected int"),
    ("mode", "--", "'--' can't reach a rank"),
])
def test_options_built_in_python_are_checked_too(field, value, says):
    with pytest.raises(UserError, match=says.replace("(", r"\(").replace("[", r"\[")):
        RunOptions(job=Path("j.yaml"), **{field: value})


def test_onepiece_runs_flags_are_the_run_options_with_the_same_choices_and_defaults():
    params = {p.name: p for p in run.params}
    assert list(params) == [o.name for o in OPTIONS if Scope.RUN in o.scope]
    for option in OPTIONS:
        if Scope.RUN not in option.scope or option.positional:
            continue
        param = params[option.name]
        assert tuple(param.opts) == option.flags
        assert param.is_flag if option.kind is bool else param.default == option.default
        if option.spec.choices:
            assert tuple(param.type.choices) == option.spec.choices
        if option.spec.low is not None:
            assert (param.type.min, param.type.max) == (option.spec.low, option.spec.high)
    with pytest.raises(click.BadParameter):
        params["ring_slots"].type.convert("65", params["ring_slots"], None)


def test_a_ranks_flags_are_the_rank_options():
    flags = {action.dest for action in rank_parser()._actions if action.dest != "help"}
    assert flags == {o.name for o in OPTIONS if Scope.RANK in o.scope}


def test_the_choice_lists_are_the_ones_their_owners_define():
    assert FABRICS == tuple(choice.value for choice in FabricChoice)
    assert RunOptions.__dataclass_fields__["policy"].metadata["spec"].choices == POLICIES
    assert PROGRESS == ("auto", "bar", "lines")


def test_the_run_of_a_launcher_adds_only_what_the_launcher_knows():
    from onepiece_hpc.runtime.launch import stopped_exit_code

    options = RunOptions(job=Path("j.yaml"), ranks=4, policy="adaptive")
    each = replace(options, report=Path("/r.json"), status_dir=Path("/s"), expect_ranks=4)
    assert each.to_argv() == ["--policy=adaptive", "--report=/r.json", "--expect-ranks=4", "--status-dir=/s",
                              "--", "j.yaml"]
    assert stopped_exit_code(KeyboardInterrupt()) == after_signal(2) == 130


def test_every_exit_code_is_distinct_and_has_a_meaning():
    assert len({int(code) for code in ExitCode}) == len(ExitCode)
    assert all(code.meaning for code in ExitCode)
    assert UserError.exit_code is ExitCode.REFUSED


def _generated(page: str, command: str) -> str:
    start = page.index(f"<!-- generated: {command} -->\n") + len(f"<!-- generated: {command} -->\n")
    return page[start:page.index("<!-- end of generated table -->", start)].strip()


def test_docs_options_lists_every_option_and_exit_code_as_the_code_defines_them():
    from onepiece_hpc.exit_codes import exit_codes_table
    from onepiece_hpc.runtime.options import options_table

    page = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    fix = "regenerate the table with: python -m {}"
    assert _generated(page, "python -m onepiece_hpc.runtime.options") == options_table(), \
        fix.format("onepiece_hpc.runtime.options")
    assert _generated(page, "python -m onepiece_hpc.exit_codes") == exit_codes_table(), \
        fix.format("onepiece_hpc.exit_codes")
    assert all(f"`{option.flag}`" in page for option in OPTIONS if not option.positional)
