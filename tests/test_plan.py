"""Items, keys and work units: formed once, in item order, the same every time."""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from onepiece_hpc.spec.job import GenParams
from onepiece_hpc.spec.loader import load_job
from onepiece_hpc.spec.plan import Item, form_units, item_key, plan_job

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


def _items(steps_list):
    return tuple(Item(i, str(i), "p", "", i, GenParams(s, 5.0, 64, 64), "", i + 1) for i, s in enumerate(steps_list))


@settings(deadline=None)
@given(steps=st.lists(st.sampled_from([4, 50]), min_size=1, max_size=60), microbatch=st.integers(1, 8))
def test_units_cover_every_item_once_in_order_with_equal_params(steps, microbatch):
    items = _items(steps)
    units = form_units(items, microbatch)
    covered = [i for u in units for i in range(u.start, u.stop)]
    assert covered == list(range(len(items)))
    assert [u.index for u in units] == list(range(len(units)))
    for u in units:
        assert 1 <= u.size <= microbatch
        assert len({items[i].params for i in range(u.start, u.stop)}) == 1
    assert units == form_units(items, microbatch)
