"""Pure pieces of the runtime: stage layouts and control messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime import messages
from onepiece_hpc.planning.layout import NODE_MANAGER, default_split, plan_layout
from onepiece_hpc.runtime.telemetry import can_hold, gpu_runs_stage, stage_memory_needs
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


def test_a_rank_moves_only_to_a_stage_whose_memory_need_fits_its_share_of_the_gpu():
    # 14B-size at 40 GiB a GPU: encode and decode share GPU 0 (20 GiB each), denoise ranks hold a GPU each
    beats = [_beat(1, "encode", 13_000, 20_480), _beat(2, "denoise", 31_000, 40_960),
             _beat(3, "denoise", 30_500, 40_960), _beat(4, "decode", 4_800, 20_480)]
    needs = stage_memory_needs(beats)
    assert needs == {"encode": 13_000, "denoise": 31_000, "decode": 4_800}
    assert not can_hold(beats[0], "denoise", needs)   # 31 GB into a 20 GiB share: refused
    assert can_hold(beats[0], "decode", needs) and can_hold(beats[1], "encode", needs)
    cpu = _beat(5, "decode", 900.0, 0.0)               # no limit known (CPU ranks): any stage
    assert can_hold(cpu, "denoise", needs) and can_hold(None, "denoise", needs)


def test_a_second_rank_of_a_stage_on_one_gpu_adds_no_compute():
    # SDXL on 4 GPUs as (1, 4, 3): every GPU runs a denoise rank, so no decode rank may become one
    denoise_gpus = [("n1", 0), ("n1", 1), ("n1", 2), ("n1", 3)]
    assert gpu_runs_stage(("n1", 1), denoise_gpus)
    assert not gpu_runs_stage(("n1", 1), [("n1", 0), ("n1", 2)])   # GPU 1 has no denoise rank yet
    assert not gpu_runs_stage(("n2", 1), denoise_gpus)              # same index, another node
    assert not gpu_runs_stage(None, denoise_gpus)                   # CPU ranks: every rank is compute
