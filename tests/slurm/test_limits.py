"""Time limits: every Slurm format parsed, and a limit that can't hold the drain plus one unit
refused before anything is queued (it would be signalled before committing, and requeue forever)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onepiece_hpc.errors import UserError
from onepiece_hpc.slurm.limits import UNIT_ESTIMATE_S, check_time_limit, time_limit_seconds
from onepiece_hpc.jobfile.job import SlurmFields
from slurm_helpers import onepiece


@pytest.mark.parametrize("text,seconds", [
    ("45", 45 * 60), ("45:30", 45 * 60 + 30), ("4:00:00", 4 * 3600), ("04:05:06", 4 * 3600 + 5 * 60 + 6),
    ("2-12", (2 * 24 + 12) * 3600), ("2-12:30", (2 * 24 + 12) * 3600 + 30 * 60),
    ("1-00:00:05", 86_400 + 5), ("0", 0),
])
def test_every_slurm_time_format_is_read(text, seconds):
    assert time_limit_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "1:2:3:4", "1-", "-5", "1h", "1-2-3"])
def test_what_is_not_a_time_limit_is_named(text):
    with pytest.raises(ValueError, match="not a Slurm time limit"):
        time_limit_seconds(text)


def _refusal(**fields) -> str:
    with pytest.raises(UserError) as err:
        check_time_limit(SlurmFields(**fields), "job.yaml:9")
    return err.value.render()


def test_a_limit_at_or_below_drain_seconds_is_refused_naming_the_fields_and_the_fix():
    text = _refusal(time="2:00", drain_seconds=120)
    assert text.startswith("job.yaml:9: slurm.time 2:00 (120 s) can't hold slurm.drain_seconds 120")
    assert f"raise slurm.time to at least 0:0{(120 + UNIT_ESTIMATE_S) // 60}:00" in text
    assert "or lower slurm.drain_seconds to at most 60" in text
    assert "lower" not in _refusal(time="1", drain_seconds=30)  # no drain_seconds could fit one minute
    _refusal(time="1:05", drain_seconds=10)  # room for the drain, not for a start and one unit


def test_a_limit_with_room_for_the_drain_and_one_unit_passes():
    check_time_limit(SlurmFields(time="3:00", drain_seconds=120), "job.yaml")
    check_time_limit(SlurmFields(time="10:00", drain_seconds=30), "job.yaml")
    check_time_limit(SlurmFields(drain_seconds=86_400), "job.yaml")  # no limit given: the partition's
    check_time_limit(SlurmFields(time="0"), "job.yaml")  # Slurm's "no limit"


def _job(folder: Path, slurm: str) -> Path:
    (folder / "prompts.txt").write_text("a red cube\n", encoding="utf-8")
    job = folder / "job.yaml"
    job.write_text("name: short\nmodel: builtin:tiny-sd\nprompts: prompts.txt\ndevice: cpu\n"
                   f"output: out/short.h5\nslurm: {slurm}\n", encoding="utf-8")
    return job


def test_submit_refuses_a_too_short_time_limit_with_exit_2(tmp_path):
    job = _job(tmp_path, '{ntasks_per_node: 1, time: "1:30", drain_seconds: 60}')
    code, out, err = onepiece("submit", job, "--dry-run")
    assert code == 2 and out == ""
    assert "slurm.time 1:30 (90 s) can't hold slurm.drain_seconds 60" in err and "fix: raise slurm.time" in err
    code, _, err = onepiece("submit", job, "--time", "5:00", "--drain-seconds", "280", "--dry-run")
    assert code == 2 and "--time 5:00 (300 s) can't hold --drain-seconds 280" in err
    assert not (tmp_path / "out").exists()


def test_sweep_and_the_python_api_refuse_it_too(tmp_path):
    from onepiece_hpc.slurm import api

    job = _job(tmp_path, '{ntasks_per_node: 1, time: "2:00", drain_seconds: 120}')
    with pytest.raises(UserError, match="can't hold slurm.drain_seconds 120"):
        api.submit(job)
    with pytest.raises(UserError, match="keyword arguments"):
        api.submit(job, time="1:00", drain_seconds=30)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: sw\nmodel: builtin:tiny-sd\nprompts: prompts.txt\ndevice: cpu\ngrid: {seed: [0, 1]}\n"
                     "output: swept\nslurm: {ntasks_per_node: 1, time: \"2:00\"}\n", encoding="utf-8")
    code, _, err = onepiece("sweep", sweep, "--dry-run")
    assert code == 2 and "can't hold slurm.drain_seconds 120" in err


def test_the_python_api_leaves_chaining_to_the_batch_script(tmp_path):
    from onepiece_hpc.slurm import api

    job = _job(tmp_path, '{ntasks_per_node: 1, time: "30:00", requeue: chain}')
    with pytest.raises(UserError, match="requeue: chain is done by the batch script"):
        api.submit(job)
