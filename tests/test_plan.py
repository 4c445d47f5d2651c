"""Items, keys and work units: formed once, in item order, the same every time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hypothesis import given, settings, strategies as st

from onepiece_hpc.jobfile.job import ConditionImage, GenParams
from onepiece_hpc.jobfile.loader import load_job
from onepiece_hpc.planning.plan import item_key, key_maker, plan_job, unit_bounds

from support import write_job

P = GenParams(steps=4, guidance=5.0, height=64, width=64)


def _plan(tmp_path, lines, prompt_file="p.jsonl", **fields):
    problems: list[str] = []
    job = load_job(write_job(tmp_path, lines, prompt_file=prompt_file, prompts=prompt_file, **fields), problems)
    assert job is not None, problems
    plan = plan_job(job, "model-x", (64, 64), "cpu/float32/threads=1", problems)
    assert plan is not None, problems
    return plan


def test_seeds_are_seed_plus_position_unless_the_line_sets_one(tmp_path):
    lines = "\n".join(json.dumps(o) for o in [{"prompt": "a"}, {"prompt": "b", "seed": 99}, {"prompt": "c"}])
    plan = _plan(tmp_path, lines + "\n", seed="1000")
    assert [i.seed for i in plan.items] == [1000, 99, 1002]


def test_blank_lines_are_skipped_and_lines_are_remembered(tmp_path):
    plan = _plan(tmp_path, "first\n\n   \nsecond\n", prompt_file="p.txt")
    assert [(i.prompt, i.line) for i in plan.items] == [("first", 1), ("second", 4)]


def test_per_item_overrides_and_defaults(tmp_path):
    lines = "\n".join(json.dumps(o) for o in [
        {"prompt": "a", "steps": 50, "guidance": 7, "meta": {"tag": "x"}},
        {"prompt": "b", "negative_prompt": "ugly"},
    ]) + "\n"
    plan = _plan(tmp_path, lines, params="{steps: 4, guidance: 1.0, negative_prompt: blurry}")
    a, b = plan.items
    assert (a.params.steps, a.params.guidance, a.negative_prompt, json.loads(a.meta)) == (50, 7.0, "blurry", {"tag": "x"})
    assert (b.params.steps, b.params.guidance, b.negative_prompt) == (4, 1.0, "ugly")


def test_key_changes_with_everything_that_changes_the_output():
    base = item_key("m", "p", "n", 1, P)
    variants = [
        item_key("m2", "p", "n", 1, P), item_key("m", "p2", "n", 1, P), item_key("m", "p", "n2", 1, P),
        item_key("m", "p", "n", 2, P), item_key("m", "p", "n", 1, GenParams(5, 5.0, 64, 64)),
        item_key("m", "p", "n", 1, GenParams(4, 5.5, 64, 64)), item_key("m", "p", "n", 1, GenParams(4, 5.0, 64, 128)),
    ]
    assert base == item_key("m", "p", "n", 1, P)
    assert len({base, *variants}) == len(variants) + 1


def test_fingerprint_depends_on_microbatch_and_items(tmp_path):
    one = _plan(tmp_path / "a", "x\ny\nz\n", prompt_file="p.txt")
    same = _plan(tmp_path / "b", "x\ny\nz\n", prompt_file="p.txt")
    two = _plan(tmp_path / "c", "x\ny\nz\n", prompt_file="p.txt", microbatch="2")
    other = _plan(tmp_path / "d", "x\ny\nw\n", prompt_file="p.txt")
    assert one.fingerprint == same.fingerprint
    assert len({one.fingerprint, two.fingerprint, other.fingerprint}) == 3


@settings(deadline=None)
@given(steps=st.lists(st.sampled_from([4, 50]), min_size=1, max_size=60), microbatch=st.integers(1, 8))
def test_units_cover_every_item_once_in_order_with_equal_params(steps, microbatch):
    ids = np.array([0 if s == 4 else 1 for s in steps], dtype=np.int32)
    bounds = unit_bounds(ids, microbatch)
    units = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    assert [i for a, b in units for i in range(a, b)] == list(range(len(steps)))
    for a, b in units:
        assert 1 <= b - a <= microbatch
        assert len(set(steps[a:b])) == 1
    # each unit is as long as it may be: it ends at microbatch items or where the params change
    for (a, b), (c, _) in zip(units, units[1:]):
        assert b - a == microbatch or steps[b - 1] != steps[c]


TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(deadline=None, max_examples=300)
@given(prompt=TEXT, negative=TEXT, model=TEXT, seed=st.integers(0, 2**63 - 1), steps=st.integers(1, 10_000),
       guidance=st.floats(0, 100), video=st.booleans(), image=st.booleans())
def test_the_fast_key_is_the_key(prompt, negative, model, seed, steps, guidance, video, image):
    picture = ConditionImage(Path("/x.png"), "ab" * 32) if image else None
    params = GenParams(steps, guidance, 64, 96, frames=17 if video else 1, image=picture)
    assert key_maker(model, params, video)(prompt, negative, seed).hex() == \
        item_key(model, prompt, negative, seed, params, video)


def test_a_plan_holds_its_items_as_columns_and_gives_them_as_items(tmp_path):
    lines = [json.dumps({"prompt": f"p{i} \u00e9", **({"steps": 9} if i % 3 == 0 else {}),
                         **({"negative_prompt": "no"} if i == 4 else {}), **({"meta": {"i": i}} if i == 5 else {})})
             for i in range(10)]
    plan = _plan(tmp_path, "\n".join(lines) + "\n", microbatch="2", params="{steps: 4, negative_prompt: base}")
    assert len(plan.items) == 10 and plan.items[-1].index == 9
    assert [i.params.steps for i in plan.items] == [9, 4, 4, 9, 4, 4, 9, 4, 4, 9]
    assert [(u.start, u.stop) for u in plan.units] == [(0, 1), (1, 3), (3, 4), (4, 6), (6, 7), (7, 9), (9, 10)]
    assert plan.items[4].negative_prompt == "no" and plan.items[3].negative_prompt == "base"
    assert json.loads(plan.items[5].meta) == {"i": 5} and plan.items[6].meta == ""
    assert [i.key for i in plan.items] == [item_key("model-x", i.prompt, i.negative_prompt, i.seed, i.params)
                                          for i in plan.items]
    summary = plan.summary()
    assert (summary.items, summary.units) == (10, 7)
    assert {(summary.params[p].steps, size) for p, size in summary.shapes} == {(9, 1), (4, 2)}
    assert type(summary).from_json(json.loads(json.dumps(summary.to_json()))) == summary


def test_repeated_items_are_named_by_line(tmp_path):
    problems: list[str] = []
    seeded = "\n".join(json.dumps({"prompt": p, "seed": 1}) for p in "abaca") + "\n"
    job = load_job(write_job(tmp_path, seeded, prompt_file="p.jsonl", prompts="p.jsonl"), problems)
    assert plan_job(job, "m", (64, 64), "cpu", problems) is None
    assert [p.split(":", 2)[1:] for p in problems] == [
        [line, " same prompt, seed and params as line 1, so the same output twice; fix: give it another seed "
               "or remove it"] for line in ("3", "5")]
