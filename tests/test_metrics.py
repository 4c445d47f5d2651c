"""The Prometheus exposition of a live snapshot (observe/metrics.py): it parses with the reference
parser, every number is the snapshot's, strings of any kind survive as label values, unknown
values are left out, and Prometheus' own linter finds nothing to say about the names."""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from live_support import HOSTILE, expected_samples, snapshot
from onepiece_hpc.observe.metrics import exposition

pytestmark = pytest.mark.timeout(60)


def parsed(text: str) -> dict[tuple[str, frozenset], float]:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_number_of_the_snapshot_is_exposed_as_it_is():
    s = snapshot()
    got = parsed(exposition(s, now=s.unix_time + 1.5))
    age = got.pop(("onepiece_snapshot_age_seconds", frozenset()))
    assert age == pytest.approx(1.5)
    assert got == expected_samples(s)


def test_every_family_has_help_and_a_type_and_counters_alone_end_in_total():
    s = snapshot()
    text = exposition(s, now=0)
    families = list(text_string_to_metric_families(text))
    assert {sample.name for f in families for sample in f.samples} == \
        {name for name, _ in expected_samples(s)} | {"onepiece_snapshot_age_seconds"}
    for family in families:
        assert family.documentation.strip(), family.name
        assert family.type in ("gauge", "counter"), family.name
        for sample in family.samples:
            assert sample.name.endswith("_total") == (family.type == "counter"), sample.name
            assert sample.name.startswith("onepiece_")
    assert text.count("# HELP ") == text.count("# TYPE ") == len(families)


def test_hostile_strings_survive_as_label_values():
    ranks = tuple(dataclasses.replace(r, host=HOSTILE) for r in snapshot().ranks)
    s = snapshot(output=HOSTILE, job_name=HOSTILE, slurm_job="1_2", moves_by_reason={HOSTILE: 4}, ranks=ranks)
    text = exposition(s, now=s.unix_time)
    assert all(line.startswith(("#", "onepiece_")) for line in text.splitlines()), "a newline escaped its label"
    got = parsed(text)
    got.pop(("onepiece_snapshot_age_seconds", frozenset()))
    assert got == expected_samples(s)


def test_unknown_values_are_left_out_and_a_finished_phase_is_one():
    s = snapshot(rate_items_per_s=None, rate_work_per_s=None, eta_s=None, phase="finished", moves=0,
                 moves_by_reason={},
                 stages=tuple(dataclasses.replace(st, busy_share=math.nan, mean_service_s=math.nan)
                              for st in snapshot().stages))
    got = parsed(exposition(s, now=s.unix_time))
    names = {name for name, _ in got}
    assert not names & {"onepiece_rate_items_per_second", "onepiece_rate_work_megapixel_forwards_per_second",
                        "onepiece_eta_seconds", "onepiece_stage_busy_ratio", "onepiece_stage_mean_service_seconds",
                        "onepiece_moves_by_reason_total"}
    assert all(not math.isnan(value) for value in got.values())
    assert got[("onepiece_phase", frozenset({("phase", "finished")}))] == 1
    assert got[("onepiece_phase", frozenset({("phase", "running")}))] == 0
    assert got[("onepiece_moves_total", frozenset())] == 0


def test_a_snapshot_of_no_stages_or_ranks_still_says_how_far_the_job_is():
    s = snapshot(stages=(), ranks=(), items_done=0, work_done=0.0)
    got = parsed(exposition(s, now=s.unix_time))
    assert got[("onepiece_items_done_total", frozenset())] == 0
    assert not any(name.startswith(("onepiece_stage_", "onepiece_rank_")) for name, _ in got)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_prometheus_lint_finds_nothing_in_the_names_or_types():
    text = exposition(snapshot(output=HOSTILE, job_name=HOSTILE), now=0)
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
