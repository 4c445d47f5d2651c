"""Random-weight models: config-only folders, weights drawn per rank from a fixed seed."""

from __future__ import annotations

import torch

from onepiece_hpc.models.base import Placement, UnitInput
from onepiece_hpc.models.random_weights import MARKER, write_config_folder
from onepiece_hpc.models.source import WEIGHT_SUFFIXES, resolve_model
from onepiece_hpc.models.stable_diffusion import tiny as tiny_sd
from onepiece_hpc.jobfile.job import GenParams

CPU = Placement("cpu", "float32")


def _run_all_stages(source) -> torch.Tensor:
    params = GenParams(steps=2, guidance=3.0, height=64, width=64)
    unit = UnitInput(unit=0, items=(0,), prompts=("a",), negative_prompts=("",), seeds=(7,), params=params)
    tensors: dict[str, torch.Tensor] = {}
    for stage in source.adapter.topology:
        tensors = source.adapter.load(stage, CPU)(unit, tensors)
    return tensors["images"]


def test_config_folder_holds_no_weights_and_builds_the_same_model_twice(tmp_path):
    folder = write_config_folder("tiny-sd", 1, tiny_sd.build, tmp_path / "random-tiny-sd")
    assert (folder / MARKER).is_file()
    assert not [p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES]
    problems: list[str] = []
    source = resolve_model(str(folder), tmp_path, "test", problems)
    assert source is not None, problems
    first, second = _run_all_stages(source), _run_all_stages(source)
    assert first.shape == (1, 64, 64, 3) and first.dtype == torch.uint8
    assert torch.equal(first, second)


def test_each_stage_builds_only_its_components(tmp_path):
    folder = write_config_folder("tiny-sd", 1, tiny_sd.build, tmp_path / "random-tiny-sd")
    source = resolve_model(str(folder), tmp_path, "test", [])
    for stage in source.adapter.topology:
        pipe = source.adapter.load_pipeline(stage, CPU)
        built = {name for name, value in pipe.components.items() if value is not None}
        assert built == set(source.adapter.components(stage))


def test_unknown_architecture_names_the_choices(tmp_path):
    problems: list[str] = []
    assert resolve_model("builtin:random:sd9", tmp_path, "job.yaml:2", problems) is None
    assert "job.yaml:2" in problems[0] and "builtin:random:sdxl" in problems[0]
