"""Model adapters: each stage loads only its components and emits exactly what it declares."""

from __future__ import annotations

import pytest
import torch

from onepiece_hpc.models.base import Placement, UnitInput
from onepiece_hpc.models.source import resolve_model
from onepiece_hpc.spec.job import GenParams, Stage

CPU = Placement(torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("model", ["builtin:tiny-sd", "builtin:tiny-pixart"])
@pytest.mark.parametrize("guidance", [1.0, 4.0], ids=["no-guidance", "guidance"])
def test_stage_outputs_match_declared_specs(model_cache, model, guidance):
    problems: list[str] = []
    source = resolve_model(model, model_cache, "test", problems)
    assert source is not None, problems
    adapter = source.adapter
    params = GenParams(steps=2, guidance=guidance, height=64, width=96)
    unit = UnitInput(unit=0, items=(0, 1), prompts=("a", "b"), negative_prompts=("", "x"), seeds=(1, 2),
                     params=params)
    tensors: dict[str, torch.Tensor] = {}
    for stage in Stage:
        runner = adapter.load(stage, CPU)
        tensors = runner(unit, tensors)
        declared = adapter.output_specs(stage, params, 2, CPU.dtype)
        assert sorted(tensors) == sorted(spec.name for spec in declared), stage
        for spec in declared:
            got = tensors[spec.name]
            assert tuple(got.shape) == spec.shape, (stage, spec.name)
            assert str(got.dtype).removeprefix("torch.") == spec.dtype, (stage, spec.name)
            assert got.numel() * got.element_size() == spec.nbytes


@pytest.mark.parametrize("model", ["builtin:tiny-sd", "builtin:tiny-pixart"])
def test_each_stage_loads_only_its_components(model_cache, model):
    problems: list[str] = []
    source = resolve_model(model, model_cache, "test", problems)
    adapter = source.adapter
    every = {name for name in source.adapter.index if not name.startswith("_")}
    for stage in Stage:
        pipe = adapter.load_pipeline(stage, CPU)
        loaded = {name for name, value in pipe.components.items() if value is not None}
        assert loaded == set(adapter.components(stage)), stage
        assert loaded < every


def test_builtin_models_are_rebuilt_identically(tmp_path, model_cache):
    from onepiece_hpc.models.builtin import builtin_folder
    from onepiece_hpc.models.source import _hashes

    rebuilt = builtin_folder("tiny-sd", tmp_path)
    original = builtin_folder("tiny-sd", model_cache)
    assert _hashes(rebuilt) == _hashes(original)
    for name in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (rebuilt / name).read_bytes() == (original / name).read_bytes()
