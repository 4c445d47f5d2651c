"""Pure pieces of the runtime: stage layouts and control messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime import messages
from onepiece_hpc.planning.layout import NODE_MANAGER, default_split, plan_layout
from onepiece_hpc.runtime.policy import Move, StageQueue
from onepiece_hpc.runtime.policy.movers import Fleet, choose_movers, fleet_input, stage_fits
from onepiece_hpc.runtime.telemetry import stage_memory_needs
from onepiece_hpc.topology import CLASSIC, DECODE, DENOISE, ENCODE
from onepiece_hpc.jobfile.loader import load_job

from support import write_job


def _job(tmp_path, **fields):
    problems: list[str] = []
    job = load_job(write_job(tmp_path, ["a"], **fields), problems)
    assert job is not None, problems
    return job


@pytest.mark.parametrize("size", [4, 5, 8, 16, 100])
def test_default_split_uses_every_rank_once(tmp_path, size):
    layout = plan_layout(_job(tmp_path, stages=None), size, CLASSIC)
    ranks = [r for stage in CLASSIC for r in layout.ranks[stage]]
    assert ranks == list(range(1, size))
    assert all(layout.ranks[stage] for stage in CLASSIC)
    assert len(layout.ranks[DENOISE]) >= max(len(layout.ranks[ENCODE]), len(layout.ranks[DECODE]))
    assert sum(default_split(CLASSIC, size - 1).values()) == size - 1


def test_spare_ranks_join_denoise_and_streams_are_wired(tmp_path):
    layout = plan_layout(_job(tmp_path, stages="{encode: 1, denoise: 1, decode: 2}"), 7, CLASSIC)
    assert layout.ranks == {ENCODE: (1,), DENOISE: (2, 3, 4), DECODE: (5, 6)}
    assert layout.upstream(ENCODE) == ()
    assert layout.downstream(DECODE) == (NODE_MANAGER,)
    assert layout.upstream(DECODE) == (2, 3, 4)


@pytest.mark.parametrize("size, words", [(3, "too few"), (4, "= 5 stage ranks")])
def test_layouts_that_do_not_fit_are_refused(tmp_path, size, words):
    with pytest.raises(UserError, match=words):
        plan_layout(_job(tmp_path, stages="{encode: 1, denoise: 3, decode: 1}"), size, CLASSIC)


def test_messages_round_trip():
    for message in (messages.WorkRequest(3), messages.WorkGrant(-1), messages.Finished(2, 7),
                    messages.Failure(1, "h", "encode", 4, "boom", peer=2),
                    messages.Heartbeat(1, "serving", "denoise", 3, 2, 1.0, 0.5, 0.1, 2.0, 0.3, 1, 100.0,
                                       [0.1, 0.9, 0.0], [1, 1, 0], [2.0, 1.0, 0.0])):
        assert messages.decode(messages.encode(message)) == message


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_garbage_control_bytes_never_become_messages(raw):
    try:
        messages.decode(raw)
    except messages.BadMessage:
        return
    data = json.loads(raw)
    assert data.get("type") in messages.MESSAGES


@settings(deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "unit", "rank", "error", "x"]),
                       st.one_of(st.integers(), st.text(max_size=5), st.floats(), st.none(), st.booleans())))
def test_wrongly_typed_fields_are_rejected(fields):
    raw = json.dumps(fields).encode()
    try:
        message = messages.decode(raw)
    except messages.BadMessage:
        return
    assert type(message).__name__ == fields["type"]


def _beat(rank: int, stage: str, memory_mb: float, limit_mb: float) -> messages.Heartbeat:
    return messages.Heartbeat(rank, "serving", stage, 0, 1, 1.0, 0.0, 0.0, 1.0, 0.1, 0, memory_mb,
                              [0.0, 0.0, 0.0], [0, 0, 0], [0.0, 0.0, 0.0], memory_limit_mb=limit_mb)


def _fleet(stages, limits=None, gpus=None, needs=(0.0, 0.0, 0.0)) -> Fleet:
    n = len(stages)
    return Fleet(ranks=tuple(range(1, n + 1)), stage=tuple(stages), moving=(False,) * n, cool_until=(0.0,) * n,
                 load=(0.0,) * n, memory_limit_mb=tuple(limits or (0.0,) * n), gpu=tuple(gpus or (None,) * n),
                 needs_mb=tuple(needs))


def _chosen(fleet: Fleet, source: int, target: int, count: int, work_left=(False, True, True)) -> list[int]:
    """The ranks the mover choice sends for a policy's Move(source -> target, count)."""
    view = fleet_input(fleet, 1.0, [StageQueue(((10, 1.0),) if left else ()) for left in work_left], (1.0,) * 3)
    return [m.rank for m in choose_movers(fleet, view, [Move(source, target, count, "test")])]


def test_a_rank_moves_only_to_a_stage_whose_memory_need_fits_its_share_of_the_gpu():
    # 14B-size at 40 GiB a GPU: encode and decode share GPU 0 (20 GiB each), denoise ranks hold a GPU each
    beats = [_beat(1, "encode", 13_000, 20_480), _beat(2, "denoise", 31_000, 40_960),
             _beat(3, "denoise", 30_500, 40_960), _beat(4, "decode", 4_800, 20_480)]
    needs = stage_memory_needs(beats)
    assert needs == {"encode": 13_000, "denoise": 31_000, "decode": 4_800}
    fleet = _fleet((0, 1, 1, 2), limits=[b.memory_limit_mb for b in beats], needs=(13_000, 31_000, 4_800))
    assert _chosen(fleet, 0, 1, 1) == []        # 31 GB into a 20 GiB share: refused
    assert _chosen(fleet, 0, 2, 1) == [1]
    assert _chosen(fleet, 1, 0, 1) == [2]
    assert stage_fits(fleet) == (True, False, True)  # no rank outside denoise can hold it: the policy hears so
    cpu = _fleet((2, 0, 1, 1), limits=(0.0, 20_480, 40_960, 40_960), needs=(13_000, 31_000, 4_800))
    assert _chosen(cpu, 2, 1, 1, work_left=(True, True, False)) == [1]  # no limit known (CPU ranks): any stage


def test_a_second_rank_of_a_stage_on_one_gpu_adds_no_compute():
    # SDXL on 4 GPUs as (1, 4, 3): every GPU runs a denoise rank, so no decode rank may become one
    gpus = [("n1", 0), ("n1", 0), ("n1", 1), ("n1", 2), ("n1", 3), ("n1", 1), ("n1", 2), ("n1", 3)]
    fleet = _fleet((0, 1, 1, 1, 1, 2, 2, 2), gpus=gpus)
    assert _chosen(fleet, 2, 1, 2) == []
    # a second node's decode ranks may join denoise, but two on one GPU only once (the first chosen counts)
    more = _fleet((0, 1, 1, 2, 2, 2), gpus=[("n1", 0), ("n1", 0), ("n1", 1), ("n2", 1), ("n2", 1), ("n1", 1)])
    assert _chosen(more, 2, 1, 3) == [4]        # ("n2", 1) runs no denoise yet; ("n1", 1) does; 5 is 4's twin
    assert _chosen(_fleet((0, 1, 1, 2, 2, 2)), 2, 1, 2) == [4, 5]  # CPU ranks: every rank is compute
