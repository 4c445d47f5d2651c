"""Model references -> a validated pipeline folder, its adapter, and its identity hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from onepiece_hpc.models.base import ModelAdapter
from onepiece_hpc.models.builtin import BUILTINS, RANDOM_PREFIX, builtin_folder, random_folder, real_size_builders
from onepiece_hpc.models.pixart.adapter import PixArtAdapter
from onepiece_hpc.models.sdxl.adapter import StableDiffusionXLAdapter
from onepiece_hpc.models.stable_diffusion.adapter import StableDiffusionAdapter
from onepiece_hpc.models.wan.adapter import WanAdapter, WanImageToVideoAdapter
from onepiece_hpc.spec.job import Stage

ADAPTERS: tuple[type[ModelAdapter], ...] = (StableDiffusionAdapter, PixArtAdapter, StableDiffusionXLAdapter,
                                           WanAdapter, WanImageToVideoAdapter)
CONFIG_SUFFIXES = (".json", ".txt", ".model")  # configs, vocab/merges, sentencepiece models
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class ModelSource:
    """A pipeline folder that passed validation, with what identifies it."""

    ref: str          # as the job file says it: "builtin:tiny-sd" or an absolute path
    folder: Path
    pipeline_class: str
    config_hash: str  # sha256 of every config, tokenizer and scheduler file
    identity: str     # config_hash plus the names and sizes of the weight files
    adapter: ModelAdapter


def supported_pipelines() -> list[str]:
    return [name for adapter in ADAPTERS for name in adapter.pipeline_classes]


def _hashes(folder: Path) -> tuple[str, str]:
    configs = hashlib.sha256()
    weights = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        if path.suffix in CONFIG_SUFFIXES:
            configs.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
        elif path.suffix in WEIGHT_SUFFIXES:
            weights.update(f"{rel}\0{path.stat().st_size}\0".encode())
    config_hash = configs.hexdigest()
    return config_hash, hashlib.sha256((config_hash + weights.hexdigest()).encode()).hexdigest()


def _read_index(folder: Path, where: str, problems: list[str]) -> dict | None:
    if not folder.exists():
        problems.append(f"{where}: model folder {folder} does not exist; fix: give the path of a "
                        "diffusers pipeline folder (one with model_index.json) or builtin:tiny-sd")
        return None
    if not folder.is_dir():
        problems.append(f"{where}: model {folder} is a file, not a pipeline folder")
        return None
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        problems.append(f"{where}: {folder} is not a diffusers pipeline folder (no model_index.json); "
                        "fix: save the pipeline with save_pretrained() and point 'model' at that folder")
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(f"{index_path}: not valid JSON ({err}); the pipeline folder is damaged")
        return None
    if not isinstance(index, dict):
        problems.append(f"{index_path}: expected a JSON object")
        return None
    return index


def _missing_components(folder: Path, index: dict, adapter: ModelAdapter) -> list[str]:
    needed = {name for stage in Stage for name in adapter.components(stage)}
    return sorted(name for name in needed if not (folder / name).is_dir() or index.get(name) in (None, [None, None]))


def resolve_model(ref: str, cache: Path, where: str, problems: list[str]) -> ModelSource | None:
    """Validate the model reference; problems name `where` (the job file line) and the fix."""
    if ref.startswith("builtin:" + RANDOM_PREFIX):
        name = ref.removeprefix("builtin:" + RANDOM_PREFIX)
        architectures = real_size_builders()
        if name not in architectures:
            choices = ", ".join(f"builtin:{RANDOM_PREFIX}{n}" for n in sorted(architectures))
            problems.append(f"{where}: unknown real-size architecture '{ref}'; fix: use one of {choices}")
            return None
        folder = random_folder(name, cache)
    elif ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        if name not in BUILTINS:
            choices = ", ".join(f"builtin:{n}" for n in BUILTINS)
            problems.append(f"{where}: unknown built-in model '{ref}'; fix: use one of {choices}")
            return None
        folder = builtin_folder(name, cache)
    else:
        folder = Path(ref)
    index = _read_index(folder, where, problems)
    if index is None:
        return None
    class_name = index.get("_class_name", "")
    adapter_type = next((a for a in ADAPTERS if class_name in a.pipeline_classes), None)
    if adapter_type is None:
        problems.append(f"{where}: pipeline class '{class_name}' in {folder} is not supported yet; "
                        f"supported: {', '.join(supported_pipelines())}")
        return None
    adapter = adapter_type(folder, index)
    missing = _missing_components(folder, index, adapter)
    if missing:
        problems.append(f"{where}: {folder} lacks the component folder(s) {', '.join(missing)} that "
                        f"{class_name} needs; fix: save the complete pipeline")
        return None
    config_hash, identity = _hashes(folder)
    return ModelSource(ref=ref, folder=folder, pipeline_class=class_name, config_hash=config_hash,
                       identity=identity, adapter=adapter)
