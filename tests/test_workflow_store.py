"""A workflow's output keeps every store rule with its second dataset: inspect, export, verify and
merge read it; the kept images are under the items' digests (damage there is found, repaired and
generated again); a damaged file is a clear error; an output made with other keep: is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from onepiece_hpc.store.reader import view_of
from support import invoke, tamper, tree_digest
from workflow_support import PROMPTS, outputs_of, workflow_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A complete workflow output (the images kept), made once; tests copy it before changing it."""
    folder = tmp_path_factory.mktemp("made")
    job = workflow_job(folder)
    assert invoke("run", job, "--monolithic").code == 0
    return folder


def _copy(made: Path, to: Path) -> Path:
    shutil.copytree(made, to)
    return to


def test_inspect_shows_both_datasets(made):
    result = invoke("inspect", made / "out/t.h5")
    assert result.code == 0, result.err
    assert "/outputs/videos  4 x 5 x 32 x 32 x 3  uint8  (4 videos of 5 frames" in result.out
    assert "/outputs/image/images  4 x 32 x 32 x 3  uint8  (4 images of 32 x 32 px, kept from step image)" in result.out
    assert "image_encode" in result.out and "video_decode" in result.out
    info = json.loads(invoke("inspect", made / "out/t.h5", "--json").out)
    assert info["outputs"]["image/images"] == {"shape": [4, 32, 32, 3], "dtype": "uint8", "kind": "image"}
    assert info["format_version"] == 4 and info["complete"]


def test_export_writes_each_kept_step_beside_the_item(made, tmp_path):
    result = invoke("export", made / "out/t.h5", tmp_path / "x", "--format", "gif")
    assert result.code == 0, result.err
    entries = [json.loads(line) for line in (tmp_path / "x/manifest.jsonl").read_text().splitlines()]
    assert [e["prompt"] for e in entries] == PROMPTS
    images, _ = outputs_of(made / "out/t.h5")
    for entry in entries:
        assert entry["steps"] == 2 and entry["frames"] == 5, "the item's params are its last step's"
        kept = tmp_path / "x" / entry["kept"]["image"]
        assert kept.name == f"{entry['index']:06d}.image.png" and (tmp_path / "x" / entry["file"]).is_file()
        np.testing.assert_array_equal(np.asarray(Image.open(kept)), images[entry["index"]])


def test_damaged_kept_images_are_found_by_the_items_digest_and_generated_again(made, tmp_path):
    folder = _copy(made, tmp_path / "copy")
    output = folder / "out/t.h5"
    reference = outputs_of(output)
    view = view_of(output)
    with h5py.File(view.segments[0].path, "r+", locking=False) as f:
        f["outputs/image/images"][2] = 0  # the video of item 2 is intact: only its kept image is hit
    result = invoke("verify", output)
    assert result.code == 1 and "damaged    1 item(s) whose bytes fail their digest: 2" in result.out, result.out
    assert json.loads(invoke("verify", output, "--json").out)["damaged"] == [2]
    repaired = invoke("verify", output, "--repair")
    assert "repaired   1 item(s) marked to be generated again" in repaired.out, repaired.out
    again = invoke("run", folder / "job.yaml", "--monolithic")
    assert again.code == 0 and "(1 this run" in again.out, again.out + again.err
    for found, expected in zip(outputs_of(output), reference):
        np.testing.assert_array_equal(found, expected)
    assert invoke("verify", output).code == 0


def test_a_resume_redoes_an_item_whose_kept_image_was_torn(made, tmp_path):
    """A kill between a unit's bytes and its flag leaves half-written bytes: the resume's digest check
    finds them in the kept dataset as in the outputs."""
    folder = _copy(made, tmp_path / "copy")
    output = folder / "out/t.h5"
    reference = outputs_of(output)
    tamper(output, [3], done=0)  # the file is filling again, as a run in progress leaves it
    with h5py.File(view_of(output).segments[0].path, "r+", locking=False) as f:
        f["outputs/image/images"][1] = 9
    again = invoke("run", folder / "job.yaml", "--monolithic")
    assert again.code == 0 and "(2 this run" in again.out, again.out + again.err
    for found, expected in zip(outputs_of(output), reference):
        np.testing.assert_array_equal(found, expected)


def test_a_missing_kept_dataset_is_a_clear_damage_error(made, tmp_path):
    folder = _copy(made, tmp_path / "copy")
    output = folder / "out/t.h5"
    with h5py.File(view_of(output).segments[0].path, "r+", locking=False) as f:
        del f["outputs/image/images"]
    for args in (("inspect", output), ("export", output, tmp_path / "x", "--format", "gif")):
        result = invoke(*args)
        assert result.code == 2 and "is damaged: /outputs/image/images can't be read" in result.err, result.err
    verified = invoke("verify", output)
    assert verified.code == 1 and "/outputs/image/images can't be read" in verified.out
    assert "lost       4 item(s)" in verified.out
    resumed = invoke("run", folder / "job.yaml", "--monolithic")
    assert resumed.code == 2 and "is damaged: /outputs/image/images can't be read" in resumed.err


def test_an_output_made_with_other_keep_is_refused(made, tmp_path):
    folder = _copy(made, tmp_path / "copy")
    before = tree_digest(folder / "out")
    job = folder / "job.yaml"
    job.write_text(job.read_text().replace("keep: true", "keep: false"))
    result = invoke("run", job, "--monolithic")
    assert result.code == 2
    assert "holds /outputs/image/images (32x32x3) beside its outputs and this job makes no other dataset" in result.err
    assert "nothing was changed" in result.err and tree_digest(folder / "out") == before


def test_workflow_outputs_merge_into_one_view(made, tmp_path):
    other = workflow_job(tmp_path / "other", ["a boat at dawn", "a kite over a beach"])
    assert invoke("run", other, "--monolithic").code == 0
    merged = tmp_path / "all.h5"
    result = invoke("merge", made / "out/t.h5", tmp_path / "other/out/t.h5", "-o", merged)
    assert result.code == 0, result.err
    with h5py.File(merged, "r") as f:
        assert f["outputs/image/images"].shape == (6, 32, 32, 3) and f["outputs/videos"].shape[0] == 6
        np.testing.assert_array_equal(f["outputs/image/images"][:4], outputs_of(made / "out/t.h5")[0])
        np.testing.assert_array_equal(f["outputs/videos"][4:], outputs_of(tmp_path / "other/out/t.h5")[1])
    assert "/outputs/image/images  6 x 32 x 32 x 3" in invoke("inspect", merged).out
    assert invoke("verify", merged).code == 0
    plain = workflow_job(tmp_path / "plain", ["a tram"], keep=False)
    assert invoke("run", plain, "--monolithic").code == 0
    refused = invoke("merge", made / "out/t.h5", tmp_path / "plain/out/t.h5", "-o", tmp_path / "mixed.h5")
    assert refused.code == 2 and "with /outputs/image/images 32x32x3" in refused.err
    assert not (tmp_path / "mixed.h5").exists()
