"""Model adapters: each stage loads only its components and emits exactly what it declares."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from onepiece_hpc.models.base import ModelAdapter, Placement, UnitInput
from onepiece_hpc.models.source import resolve_model
from onepiece_hpc.jobfile.images import ImageReader
from onepiece_hpc.jobfile.job import GenParams
from onepiece_hpc.topology import ENCODE
from onepiece_hpc.store.schema import OUTPUT_DATASETS

from support import builtin_model, write_png

CPU = Placement("cpu", "float32")
MODELS = ["builtin:tiny-sd", "builtin:tiny-pixart", "builtin:tiny-sdxl", "builtin:tiny-wan-t2v",
          "builtin:tiny-wan-i2v"]


def test_a_placement_is_names_and_gives_torchs_objects():
    """Held by name (the launcher checks a job without torch), given as torch's objects."""
    gpu = Placement(torch.device("cuda", 1), torch.bfloat16)  # torch's objects are taken too
    assert (gpu.device_name, gpu.dtype_name, gpu.device_type) == ("cuda:1", "bfloat16", "cuda")
    assert gpu.device == torch.device("cuda", 1) and gpu.dtype is torch.bfloat16
    assert CPU == Placement(torch.device("cpu"), torch.float32) and CPU.dtype is torch.float32
    moved = CPU.on(torch.device("cuda", 0), memory_limit_mb=512.0)
    assert (moved.device_name, moved.dtype_name, moved.memory_limit_mb) == ("cuda:0", "float32", 512.0)


def _params(adapter: ModelAdapter, guidance: float, folder) -> GenParams:
    """Two steps at 64 x 96 px; five frames for a video model, and an image for image-to-video."""
    video = {"frames": 5} if adapter.output_kind == "video" else {}
    if adapter.needs_image:
        video["image"] = ImageReader().read(write_png(folder / "first-frame.png"), "test", "test", [])
    return GenParams(steps=2, guidance=guidance, height=64, width=96, **video)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("guidance", [1.0, 4.0], ids=["no-guidance", "guidance"])
def test_stage_outputs_match_declared_specs(tmp_path, model_cache, model, guidance):
    problems: list[str] = []
    source = resolve_model(model, model_cache, "test", problems)
    assert source is not None, problems
    adapter = source.adapter
    params = _params(adapter, guidance, tmp_path)
    unit = UnitInput(unit=0, items=(0, 1), prompts=("a", "b"), negative_prompts=("", "x"), seeds=(1, 2),
                     params=params)
    tensors: dict[str, torch.Tensor] = {}
    for stage in adapter.topology:
        runner = adapter.load(stage, CPU)
        tensors = runner(unit, tensors)
        declared = adapter.output_specs(stage, params, 2, CPU.dtype)
        assert sorted(tensors) == sorted(spec.name for spec in declared), stage
        for spec in declared:
            got = tensors[spec.name]
            assert tuple(got.shape) == spec.shape, (stage, spec.name)
            assert str(got.dtype).removeprefix("torch.") == spec.dtype, (stage, spec.name)
            assert got.numel() * got.element_size() == spec.nbytes
    assert [spec.name for spec in declared] == [OUTPUT_DATASETS[adapter.output_kind]]  # the decode stage's one tensor


@pytest.mark.parametrize("model", MODELS)
def test_each_stage_loads_only_its_components(model_cache, model):
    problems: list[str] = []
    source = resolve_model(model, model_cache, "test", problems)
    adapter = source.adapter
    every = {name for name in source.adapter.index if not name.startswith("_")}
    for stage in adapter.topology:
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


def _sdxl_negatives(folder, cache) -> dict[str, torch.Tensor]:
    """The encode stage's outputs for a unit whose first item has no negative prompt."""
    problems: list[str] = []
    source = resolve_model(str(folder), cache, "test", problems)
    assert source is not None, problems
    unit = UnitInput(unit=0, items=(0, 1), prompts=("a fox", "an owl"), negative_prompts=("", "blurry"),
                     seeds=(1, 2), params=GenParams(steps=2, guidance=5.0, height=64, width=64))
    return source.adapter.load(ENCODE, CPU)(unit, {})


def test_sdxl_item_without_negative_prompt_gets_zero_negatives_whatever_its_unit_mates_have(tmp_path, model_cache):
    zeroed = _sdxl_negatives(builtin_model(model_cache, "tiny-sdxl"), model_cache)
    for name in ("negative_prompt_embeds", "negative_pooled_prompt_embeds"):
        assert not zeroed[name][0].any(), name
        assert zeroed[name][1].abs().sum() > 0, name

    folder = tmp_path / "sdxl-no-zeros"
    shutil.copytree(builtin_model(model_cache, "tiny-sdxl"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(index | {"force_zeros_for_empty_prompt": False}))
    encoded = _sdxl_negatives(folder, model_cache)
    for name in ("negative_prompt_embeds", "negative_pooled_prompt_embeds"):
        assert encoded[name][0].abs().sum() > 0, name  # the empty prompt, encoded
        assert torch.equal(encoded[name][1], zeroed[name][1]), name


def test_sdxl_real_size_architecture_has_the_published_parameter_counts():
    from onepiece_hpc.models.sdxl.real_size import BUILDERS

    with torch.device("meta"):
        pipe = BUILDERS["sdxl"]()
    published = {"unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840,
                 "vae": 83_653_863}
    for name, expected in published.items():
        module = getattr(pipe, name)
        assert {p.device.type for p in module.parameters()} == {"meta"}, f"{name} materialised weights"
        assert sum(p.numel() for p in module.parameters()) == pytest.approx(expected, rel=0.01), name
    assert pipe.unet.config.cross_attention_dim == 2048 and pipe.text_encoder.config.vocab_size == 49408
    assert pipe.vae.config.scaling_factor == 0.13025 and pipe.vae.config.force_upcast


#: parameters of the published Wan2.1 components, from their configs (the UMT5-XXL encoder's
#: embedding counts once: it is shared with the encoder's input embedding)
WAN_PUBLISHED = {
    "wan2.1-t2v-1.3b": {"transformer": 1_418_996_800, "text_encoder": 5_680_910_336, "vae": 126_892_531},
    "wan2.1-t2v-14b": {"transformer": 14_288_491_584, "text_encoder": 5_680_910_336, "vae": 126_892_531},
    "wan2.1-i2v-14b-480p": {"transformer": 16_394_878_784, "text_encoder": 5_680_910_336, "vae": 126_892_531,
                            "image_encoder": 630_766_080},
}


@pytest.mark.parametrize("name", sorted(WAN_PUBLISHED))
def test_wan_real_size_architectures_have_the_published_parameter_counts(name):
    import inspect

    from diffusers import AutoencoderKLWan

    from onepiece_hpc.models.wan.real_size import BUILDERS, LATENTS_MEAN, LATENTS_STD

    with torch.device("meta"):
        pipe = BUILDERS[name]()
    for component, expected in WAN_PUBLISHED[name].items():
        module = getattr(pipe, component)
        assert {p.device.type for p in module.parameters()} == {"meta"}, f"{component} materialised weights"
        assert sum(p.numel() for p in module.parameters()) == pytest.approx(expected, rel=0.01), component
    assert pipe.text_encoder.config.vocab_size == 256_384 and pipe.transformer.config.text_dim == 4096
    assert pipe.scheduler.config.prediction_type == "flow_prediction" and pipe.scheduler.config.flow_shift == 3.0
    defaults = inspect.signature(AutoencoderKLWan.__init__).parameters  # diffusers ships the published statistics
    assert LATENTS_MEAN == defaults["latents_mean"].default and LATENTS_STD == defaults["latents_std"].default
