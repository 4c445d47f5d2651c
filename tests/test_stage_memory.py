"""--stage-memory: the memory of a GPU split between its ranks by their stages' needs."""

from __future__ import annotations

import pytest

from onepiece_hpc.errors import UserError
from onepiece_hpc.runtime.gpus import check_stage_memory, shares_by_need
from onepiece_hpc.runtime.options import RunOptions
from support import invoke, write_job

GIB = 1024.0
STAGES = ("encode", "denoise", "decode")


def test_named_stages_get_their_need_and_the_others_share_the_rest():
    # the 14B case under 40 GiB: a 30.3 GiB denoiser and a 4.7 GiB decoder on one GPU (even: 20 each)
    assert shares_by_need(40 * GIB, ["denoise", "decode"], {"decode": 5}) == [35 * GIB, 5 * GIB]
    assert shares_by_need(40 * GIB, ["encode", "denoise", "decode"], {"decode": 4}) == [18 * GIB, 18 * GIB, 4 * GIB]
    # every rank named: the slack goes to them in proportion, so the GPU is used whole
    assert shares_by_need(40 * GIB, ["denoise", "decode"], {"denoise": 30, "decode": 5}) == pytest.approx(
        [40 * GIB * 30 / 35, 40 * GIB * 5 / 35])
    assert shares_by_need(40 * GIB, ["denoise"], {"decode": 5}) == [40 * GIB]  # needs of stages not here


@pytest.mark.parametrize("stages, needs", [(["denoise", "decode"], {"denoise": 36, "decode": 5}),
                                           (["encode", "denoise", "decode"], {"denoise": 30, "decode": 10})])
def test_needs_that_do_not_fit_a_gpu_are_refused_naming_its_ranks(stages, needs):
    with pytest.raises(UserError, match=r"--stage-memory asks .* GiB of a GPU whose ranks \(" + ", ".join(stages)
                       + r"\) share 40.0 GiB.*fix: lower the needs"):
        shares_by_need(40 * GIB, stages, needs)


@pytest.mark.parametrize("text", ["decode", "decode=0", "decode=-2", "decode=x", "=4", "decode=1,decode=2", "a=inf"])
def test_a_malformed_stage_memory_is_refused_with_the_form_it_takes(text):
    with pytest.raises(UserError, match="--stage-memory .*: write STAGE=GIB for each stage once"):
        RunOptions(job="job.yaml", stage_memory=text)
    assert RunOptions(job="job.yaml", stage_memory=" decode=4.5 ,encode=13").stage_memory_gib() == {
        "decode": 4.5, "encode": 13.0}
    assert RunOptions(job="job.yaml").stage_memory_gib() == {}


def test_a_stage_memory_that_cannot_apply_is_refused():
    check_stage_memory({}, STAGES, "cpu", None)
    check_stage_memory({"decode": 5}, STAGES, "cuda", None)
    for needs, device, phases, words in (({"vae": 5}, "cuda", None, "names 'vae', which the job's model has not"),
                                         ({"decode": 5}, "cpu", None, "the job runs on cpu"),
                                         ({"decode": 5}, "cuda", 4, "with --phases each rank has the whole GPU")):
        with pytest.raises(UserError, match=words):
            check_stage_memory(needs, STAGES, device, phases)


def test_run_refuses_it_before_any_rank_starts(tmp_path):
    job = write_job(tmp_path, ["a fox"])
    for extra, words in ((["--stage-memory", "vae=3"], "names 'vae', which the job's model has not; fix: name "
                                                       "its stages (encode, denoise, decode)"),
                         (["--stage-memory", "decode=3"], "splits GPU memory, but the job runs on cpu"),
                         (["--stage-memory", "decode"], "write STAGE=GIB")):
        refused = invoke("run", str(job), "-n", "4", *extra)
        assert refused.code == 2 and words in refused.err, refused.err
        assert not (tmp_path / "out").exists()


def test_the_gpu_bench_gives_its_staged_runs_the_profiled_peaks_as_needs():
    from onepiece_hpc.bench.gpu_layout import StageCost
    from onepiece_hpc.bench.pipeline_gpu import stage_needs

    needs = stage_needs(STAGES, (StageCost(0.05, 13 * GIB), StageCost(13.1, 30.3 * GIB), StageCost(2.4, 4.7 * GIB)))
    assert needs == "encode=14.30,denoise=33.33,decode=5.17"
    assert RunOptions(job="job.yaml", stage_memory=needs).stage_memory_gib()["decode"] == 5.17
