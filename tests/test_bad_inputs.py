"""Invariant 5: bad input gets a clear message naming the problem, exit code 2, no traceback,
and every file that existed before is left exactly as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from support import invoke, run_cli, tree_digest, write_job, write_png

GOOD = ["a cat", "a dog", "a bird"]


def _other_job_output(folder: Path) -> None:
    """An output of a different job, at the path the test job will want."""
    other = write_job(folder / "other", ["something else entirely"], output="../out/t.h5")
    assert invoke("run", other, "--monolithic").code == 0


def _pipeline_folder_of_unknown_class(folder: Path) -> str:
    (folder / "weird").mkdir()
    (folder / "weird/model_index.json").write_text(json.dumps({"_class_name": "MysteryPipeline"}))
    return "weird"


VIDEO = "{steps: 2, height: 32, width: 32, frames: 9}"


def _video_job(folder: Path, model: str, lines: str = '{"prompt": "a fox"}\n', params: str = VIDEO) -> Path:
    return write_job(folder, lines, prompt_file="p.jsonl", prompts="p.jsonl", model=f"builtin:{model}", params=params)


def _with_image(path: str) -> str:
    return VIDEO[:-1] + f", image: {path}}}"


def _wan22_folder(folder: Path) -> Path:
    """A Wan folder with a boundary but no second expert to switch to below it."""
    from onepiece_hpc.models.builtin import builtin_folder

    shutil.copytree(builtin_folder("tiny-wan-t2v", Path(os.environ["ONEPIECE_CACHE"])), folder / "wan22")
    index = json.loads((folder / "wan22/model_index.json").read_text())
    (folder / "wan22/model_index.json").write_text(json.dumps(index | {"boundary_ratio": 0.875}))
    return write_job(folder, GOOD, model="wan22", params=VIDEO)


def _not_an_image(folder: Path) -> Path:
    (folder / "fake.png").write_text("these are words, not pixels")
    return _video_job(folder, "tiny-wan-i2v", '{"prompt": "a fox", "image": "fake.png"}\n')


def _too_many_pixels(folder: Path) -> Path:
    from PIL import Image

    Image.new("1", (14_000, 14_000)).save(folder / "huge.png")  # twice Pillow's safety limit, 2 MB on disk
    return _video_job(folder, "tiny-wan-i2v", '{"prompt": "a fox", "image": "huge.png"}\n')


# (id, how to build the case in folder -> job path, words the message must contain)
CASES = [
    ("missing-field", lambda d: write_job(d, GOOD, model=None), ["required field 'model' is missing"]),
    ("unknown-field", lambda d: write_job(d, GOOD, stagez="{encode: 1}"), ["unknown field 'stagez'", "stages"]),
    ("unknown-nested-field", lambda d: write_job(d, GOOD, params="{steps: 2, widht: 64}"),
     ["unknown field 'params.widht'", "did you mean 'width'"]),
    ("wrong-type", lambda d: write_job(d, GOOD, params="{steps: four}"), ["params.steps", "valid integer"]),
    ("steps-zero", lambda d: write_job(d, GOOD, params="{steps: 0}"), ["params.steps", "greater than or equal to 1"]),
    ("microbatch-zero", lambda d: write_job(d, GOOD, microbatch="0"), ["microbatch"]),
    ("seed-negative", lambda d: write_job(d, GOOD, seed="-1"), ["field 'seed'"]),
    ("seed-too-large", lambda d: write_job(d, GOOD, seed=str(2**63 - 2)), ["seed", "passes"]),
    ("bad-name", lambda d: write_job(d, GOOD, name="'a b; rm -rf /'"), ["field 'name'"]),
    ("height-not-multiple", lambda d: write_job(d, GOOD, params="{steps: 2, height: 60}"),
     ["params.height", "not a multiple of 8", "use 56 or 64"]),
    ("width-not-multiple-pixart", lambda d: write_job(d, GOOD, model="builtin:tiny-pixart",
                                                      params="{steps: 2, width: 72}"),
     ["params.width", "not a multiple of 16"]),
    ("empty-prompt-file", lambda d: write_job(d, "\n  \n"), ["no prompts found"]),
    ("non-utf8-prompt-file", lambda d: (write_job(d, GOOD), (d / "prompts.txt").write_bytes(b"ok\n\xff\xfebad\n"))[0],
     ["prompts.txt:2", "not UTF-8"]),
    ("missing-prompt-file", lambda d: write_job(d, None, prompts="nope.txt"), ["nope.txt", "not found"]),
    ("prompt-file-suffix", lambda d: write_job(d, "a,b\n", prompt_file="p.csv", prompts="p.csv"), [".txt or .jsonl"]),
    ("bad-jsonl-line", lambda d: write_job(d, '{"prompt": "ok"}\n{"prompt": oops}\n', prompt_file="p.jsonl",
                                           prompts="p.jsonl"), ["p.jsonl:2", "not valid JSON"]),
    ("jsonl-missing-prompt", lambda d: write_job(d, '{"seed": 3}\n', prompt_file="p.jsonl", prompts="p.jsonl"),
     ["p.jsonl:1", '"prompt" must be a non-empty string']),
    ("jsonl-unknown-key", lambda d: write_job(d, '{"prompt": "x", "colour": 1}\n', prompt_file="p.jsonl",
                                              prompts="p.jsonl"), ["unknown key(s) 'colour'", "meta"]),
    ("jsonl-seed-out-of-range", lambda d: write_job(d, '{"prompt": "x", "seed": -5}\n', prompt_file="p.jsonl",
                                                    prompts="p.jsonl"), ['"seed" must be a whole number']),
    ("duplicate-item", lambda d: write_job(d, '{"prompt": "x", "seed": 1}\n{"prompt": "x", "seed": 1}\n',
                                           prompt_file="p.jsonl", prompts="p.jsonl"),
     ["p.jsonl:2", "same prompt, seed and params as line 1"]),
    ("heartbeat-timeout-too-short", lambda d: write_job(d, GOOD, slurm="{heartbeat_timeout: 2}"),
     ["slurm.heartbeat_timeout", "from 5 to 86400"]),
    ("missing-model-folder", lambda d: write_job(d, GOOD, model="models/nowhere"), ["does not exist"]),
    ("folder-not-a-pipeline", lambda d: ((d / "empty").mkdir(), write_job(d, GOOD, model="empty"))[1],
     ["not a diffusers pipeline folder", "model_index.json"]),
    ("unsupported-pipeline", lambda d: write_job(d, GOOD, model=_pipeline_folder_of_unknown_class(d)),
     ["MysteryPipeline", "not supported", "StableDiffusionPipeline"]),
    ("unknown-builtin", lambda d: write_job(d, GOOD, model="builtin:huge"), ["unknown built-in model", "tiny-sd"]),
    ("unwritable-output", lambda d: ((d / "afile").write_text("x"), write_job(d, GOOD, output="afile/t.h5"))[1],
     ["cannot create it", "not a folder"]),
    ("output-suffix", lambda d: write_job(d, GOOD, output="out/t.png"), ["must end in .h5"]),
    ("output-not-hdf5", lambda d: ((d / "out").mkdir(), (d / "out/t.h5").write_text("precious"),
                                   write_job(d, GOOD))[2], ["is not an HDF5 file", "nothing was changed"]),
    ("output-of-another-job", lambda d: (_other_job_output(d), write_job(d, GOOD))[1],
     ["holds the output of another job", "nothing was changed"]),
    ("resume-with-other-thread-count", lambda d: (write_job(d, GOOD), invoke("run", d / "job.yaml", "--monolithic"),
                                                  write_job(d, GOOD, cpu_threads="2"))[2],
     ["holds the output of another job", "threads=1", "threads=2"]),
    ("yaml-syntax", lambda d: (write_job(d, GOOD), (d / "job.yaml").write_text("name: [unclosed\nmodel: x\n"))[0],
     ["job.yaml:", "not valid YAML"]),
    ("job-file-missing", lambda d: d / "missing.yaml", ["job file not found"]),
    ("job-not-a-mapping", lambda d: (write_job(d, GOOD), (d / "job.yaml").write_text("- a\n- b\n"))[0],
     ["must be a YAML mapping"]),
    ("cuda-without-gpu", lambda d: write_job(d, GOOD, device="cuda"), ["device is cuda but no GPU"]),
    ("frames-not-4k+1", lambda d: _video_job(d, "tiny-wan-t2v", params=VIDEO.replace("frames: 9", "frames: 10")),
     ["job.yaml:", "field 'params.frames' is 10, not 4k+1", "use 9 or 13"]),
    ("frames-on-image-model", lambda d: write_job(d, GOOD, params="{steps: 2, frames: 9}"),
     ["job.yaml:", "'params.frames' is for video models", "builtin:tiny-sd", "remove it"]),
    ("image-not-found", lambda d: _video_job(d, "tiny-wan-i2v", '{"prompt": "a"}\n{"prompt": "b", "image": "no.png"}'),
     ["p.jsonl:2", "conditioning image", "no.png not found", "relative path is read from the prompt file's folder"]),
    ("image-not-an-image", _not_an_image, ["p.jsonl:1", "fake.png is not an image"]),
    ("image-with-too-many-pixels", _too_many_pixels, ["p.jsonl:1", "huge.png has too many pixels"]),
    ("image-is-a-folder", lambda d: ((d / "pics").mkdir(),
                                     _video_job(d, "tiny-wan-i2v", params=_with_image("pics")))[1],
     ["job.yaml:", "field 'params.image'", "is a folder", "relative path is read from the job file's folder"]),
    ("image-key-not-a-path", lambda d: _video_job(d, "tiny-wan-i2v", '{"prompt": "a fox", "image": 7}\n'),
     ["p.jsonl:1", '"image" must be the path of an image file']),
    ("image-on-text-to-video", lambda d: (write_png(d / "f.png"),
                                          _video_job(d, "tiny-wan-t2v", params=_with_image("f.png")))[1],
     ["field 'params.image'", "builtin:tiny-wan-t2v (WanPipeline) takes no conditioning image", "remove it"]),
    ("image-on-image-model", lambda d: (write_png(d / "f.png"),
                                        write_job(d, '{"prompt": "a"}\n{"prompt": "b", "image": "f.png"}\n',
                                                  prompt_file="p.jsonl", prompts="p.jsonl"))[1],
     ["p.jsonl:2", '"image" given, but builtin:tiny-sd', 'remove "image"']),
    ("image-missing-for-image-to-video", lambda d: _video_job(d, "tiny-wan-i2v", '{"prompt": "a"}\n{"prompt": "b"}\n'),
     ["p.jsonl:1 and 1 more line(s)", "no conditioning image", "WanImageToVideoPipeline", "params.image"]),
    ("wan-boundary-without-second-expert", _wan22_folder, ["boundary_ratio is set", "no transformer_2", "fix:"]),
]


@pytest.mark.parametrize("case_id, build, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_clear_message(tmp_path, case_id, build, words):
    if case_id == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so device: cuda is valid here")
    job = build(tmp_path)
    before = tree_digest(tmp_path)
    result = invoke("run", job, "--monolithic")
    assert result.code == 2, result.out + result.err
    message = result.err
    for word in words:
        assert word in message, f"{word!r} not in:\n{message}"
    assert "Traceback" not in message
    assert tree_digest(tmp_path) == before, "a bad input changed files"


def test_every_problem_is_reported_together(tmp_path):
    job = write_job(tmp_path, GOOD, seed="-3", microbatch="x", params="{steps: 0, height: 61}", colour="red")
    result = invoke("run", job, "--monolithic")
    assert result.code == 2
    for word in ("seed", "microbatch", "params.steps", "colour"):
        assert word in result.err
    assert "job.yaml:" in result.err and "4 problem(s)" in result.err


def test_output_in_read_only_folder(tmp_path):
    job = write_job(tmp_path, GOOD, output="ro/t.h5")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    if os.geteuid() == 0:  # permissions don't stop root: a read-only file system does
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True, timeout=30)
    try:
        result = invoke("run", job, "--monolithic")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(folder)], timeout=30)
    assert result.code == 2 and "not writable" in result.err


def test_real_process_prints_no_traceback(tmp_path):
    job = write_job(tmp_path, GOOD, params="{steps: 0}")
    proc = run_cli("run", job, "--monolithic")
    assert proc.returncode == 2
    assert "params.steps" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("target", ["missing.h5", "notes.txt", "folder", "foreign.h5"])
def test_inspect_and_export_refuse_what_is_not_an_output(tmp_path, target):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "folder").mkdir()
    import h5py

    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = [1, 2, 3]
    before = tree_digest(tmp_path)
    for args in (("inspect", tmp_path / target), ("export", tmp_path / target, tmp_path / "png")):
        result = invoke(*args)
        assert result.code == 2 and "error:" in result.err, result.err
    assert tree_digest(tmp_path) == before
    shutil.rmtree(tmp_path / "folder")


def test_a_conditioning_image_changed_after_planning_is_refused_when_encoded(tmp_path):
    from onepiece_hpc.errors import UserError
    from onepiece_hpc.jobfile.images import ImageReader, open_condition_image

    planned = ImageReader().read(write_png(tmp_path / "first.png"), "test", "test", [])
    assert open_condition_image(planned).size == (40, 48)
    write_png(tmp_path / "first.png", shift=1)
    with pytest.raises(UserError, match="first.png changed after the job was planned"):
        open_condition_image(planned)
