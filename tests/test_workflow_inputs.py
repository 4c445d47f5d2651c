"""A workflow job file that can't run is refused before anything runs: exit 2, every problem at
once, each naming the file:line, the field (workflow[k]....) and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onepiece_hpc.errors import UserError
from support import invoke
from workflow_support import IMAGE, VIDEO, workflow_job

pytestmark = pytest.mark.timeout(300)


def _refused(job: Path, *expected: str) -> str:
    """Run the job; it must exit 2 with every `expected` text in its error and leave no output."""
    result = invoke("run", job, "--monolithic")
    assert result.code == 2, result.err + result.out
    for text in expected:
        assert text in result.err, f"{text!r} not in:\n{result.err}"
    assert "Traceback" not in result.err
    assert not (job.parent / "out").exists(), "nothing may be written"
    return result.err


def _line_of(job: Path, text: str) -> int:
    return next(n for n, line in enumerate(job.read_text().splitlines(), 1) if text in line)


def test_a_size_the_next_step_does_not_take_names_the_field_and_the_value(tmp_path):
    job = workflow_job(tmp_path, video={**VIDEO, "height": 48})
    line = _line_of(job, "height: 48")
    _refused(job, f"job.yaml:{line}: field 'workflow[1].params.height' is 48",
             "makes images 32 px high", "fix: set workflow[1].params.height: 32 (or workflow[0].params.height: 48)")


def test_a_size_left_to_the_model_is_named_as_its_default(tmp_path):
    job = workflow_job(tmp_path, video={k: v for k, v in VIDEO.items() if k != "width"})
    _refused(job, "field 'workflow[1].params.width' is 832 (the model's default)",
             "fix: set workflow[1].params.width: 32")


def test_frames_are_checked_per_step(tmp_path):
    job = workflow_job(tmp_path, image={**IMAGE, "frames": 5}, video={**VIDEO, "frames": 6})
    _refused(job, "field 'workflow[0].params.frames' is for video models", "builtin:tiny-sdxl",
             "field 'workflow[1].params.frames' is 6, not 4k+1", "fix: use 5 or 9")


def test_a_second_model_that_takes_no_image_names_both_models(tmp_path):
    job = workflow_job(tmp_path, video_model="builtin:tiny-wan-t2v")
    _refused(job, f"job.yaml:{_line_of(job, 'tiny-wan-t2v')}: field 'workflow[1].model'",
             "builtin:tiny-wan-t2v, WanPipeline) takes no condition image",
             "the outputs of step 'image' (builtin:tiny-sdxl, StableDiffusionXLPipeline) can't feed it",
             "fix: use an image-to-video model there")


def test_a_video_can_not_condition_the_next_step(tmp_path):
    job = workflow_job(tmp_path, image={**IMAGE, "frames": 5}, image_model="builtin:tiny-wan-t2v")
    _refused(job, "field 'workflow[0].model': step 'image' (builtin:tiny-wan-t2v, WanPipeline) makes videos of 5 "
             "frames", "takes one condition image an item", "fix: use a text-to-image model for workflow[0]")


def test_a_first_step_that_needs_an_image_is_refused(tmp_path):
    job = workflow_job(tmp_path, image={**VIDEO}, image_model="builtin:tiny-wan-i2v")
    _refused(job, "makes its outputs from a condition image, and the first step of a workflow has only the prompts")


def test_unknown_fields_of_a_step_are_named_with_their_line(tmp_path):
    job = workflow_job(tmp_path)
    text = job.read_text().replace("    keep: true\n", "    keep: true\n    modle: x\n")
    text = text.replace("height: 32, width: 32, frames", "height: 32, widht: 32, frames")
    job.write_text(text)
    _refused(job, f"job.yaml:{_line_of(job, 'modle')}: unknown field 'workflow[0].modle' (did you mean 'model'?)",
             "use one of: name, model, params, keep",
             f"job.yaml:{_line_of(job, 'widht')}: unknown field 'workflow[1].params.widht' (did you mean 'width'?)")


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace("workflow:\n", "model: builtin:tiny-sd\nworkflow:\n"),
     ["fields 'model' and 'workflow' are both given"]),
    (lambda t: t.replace("workflow:\n", "params: {steps: 3}\nworkflow:\n"),
     ["field 'params' is per step in a workflow job", "workflow[0].params"]),
    (lambda t: t[:t.index("  - name: video")],
     ["field 'workflow': list should have at least 2 items"]),
    (lambda t: t.replace("name: video", "name: image"),
     ["workflow[1] is named 'image', as workflow[0] is"]),
    (lambda t: t.replace("name: video", "name: videos"),
     ["field 'workflow[1].name' is 'videos', the name of the outputs' own dataset"]),
    (lambda t: t.replace("name: video", "name: Video"),
     ["field 'workflow[1].name': string should match pattern"]),
    (lambda t: t + "    keep: true\n",
     ["field 'workflow[1].keep': the last step's outputs are the job's outputs"]),
], ids=["model-and-workflow", "top-level-params", "one-step", "same-name", "reserved-name", "bad-name",
        "keep-last"])
def test_job_file_rules_of_a_workflow(tmp_path, edit, expected):
    job = workflow_job(tmp_path)
    job.write_text(edit(job.read_text()))
    _refused(job, *expected)


def test_prompt_lines_give_no_params_in_a_workflow(tmp_path):
    job = workflow_job(tmp_path)
    lines = [{"prompt": "a fox"}, {"prompt": "an owl", "steps": 3, "negative_prompt": "x"}, {"prompt": "y" * 5000}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    _refused(job, 'p.jsonl:2: "steps" given, but in a workflow job the params are the steps\'',
             'p.jsonl:2: "negative_prompt" given', "p.jsonl:3: the prompt is longer than 4096 bytes")


def test_every_problem_is_reported_at_once(tmp_path):
    job = workflow_job(tmp_path, image={**IMAGE, "height": 30}, video={**VIDEO, "frames": 6})
    err = _refused(job, "2 problem(s) found; nothing was run")
    assert "field 'workflow[0].params.height' is 30, not a multiple of 8" in err
    assert "field 'workflow[1].params.frames' is 6" in err


def test_stage_names_and_rank_counts_are_the_chains(tmp_path):
    job = workflow_job(tmp_path, stages="{denoise: 2}")
    result = invoke("run", job, "-n", "7")
    assert result.code == 2, result.err
    assert ("field 'stages' names 'denoise', which the model image: builtin:tiny-sdxl -> video: builtin:tiny-wan-i2v "
            "has not (did you mean 'video_denoise'?); fix: use its stages: image_encode, image_denoise, image_decode, "
            "video_encode, video_denoise, video_decode") in result.err
    few = workflow_job(tmp_path / "few")
    result = invoke("run", few, "-n", "4")
    assert result.code == 2 and "the staged runtime needs at least 7" in result.err and "fix: -n 7" in result.err


def test_submit_checks_the_chains_stages_before_anything_is_queued(tmp_path):
    """`onepiece submit`'s check (no torch, no weights) names the stages the ranks will have."""
    from onepiece_hpc.jobfile.job import SlurmFields
    from onepiece_hpc.jobfile.loader import load_job
    from onepiece_hpc.models.workflow.topology import workflow_topology
    from onepiece_hpc.runtime.prepare import prepare
    from onepiece_hpc.slurm.submit import check_ranks
    from onepiece_hpc import environment

    path = workflow_job(tmp_path)
    job = load_job(path, [])
    ranks = prepare(path, None, environment.cache_dir(), plan=False).model.adapter.topology
    assert workflow_topology(job) == ranks
    check_ranks(job, SlurmFields(nodes=1, ntasks_per_node=7))
    with pytest.raises(UserError, match="needs at least 7") as refused:
        check_ranks(job, SlurmFields(nodes=2, ntasks_per_node=2))
    assert "video_decode" in str(refused.value)


def test_the_example_workflow_job_is_valid():
    from onepiece_hpc import environment
    from onepiece_hpc.runtime.prepare import prepare
    from support import REPO

    prepared = prepare(REPO / "jobs/workflow-tiny.yaml", None, environment.cache_dir())
    assert prepared.model.adapter.topology.describe() == ("image_encode -> image_denoise -> image_decode -> "
                                                          "video_encode -> video_denoise -> video_decode")
    assert [d.name for d in prepared.layout.extras] == ["image/images"]
    assert prepared.layout.item_shape == (17, 48, 64, 3) and len(prepared.plan.items) == 8


def test_a_sweep_file_takes_no_workflow(tmp_path):
    from onepiece_hpc.slurm.sweep import load_sweep

    job = workflow_job(tmp_path)
    job.write_text(job.read_text() + "grid: {seed: [1, 2]}\n")
    with pytest.raises(UserError, match="unknown field 'workflow'"):
        load_sweep(job)
