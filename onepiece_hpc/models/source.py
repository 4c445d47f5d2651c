"""Model references -> a validated pipeline folder, its adapter, and its identity hash.

The identity covers the bytes of every file a pipeline could load: each non-hidden file under
the folder (symlinked folders and files followed), whatever its suffix. So two folders with the
same names and sizes but other weights (a fine-tune) never share an identity, and a resume can't
mix their outputs. The digests of all but the small config files are cached under the onepiece
cache, keyed by (device, inode, size, mtime_ns, ctime_ns): any write, or a copy that restores
mtime, changes ctime.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from onepiece_hpc.models.base import ModelAdapter
from onepiece_hpc.models.builtin import BUILTINS, RANDOM_PREFIX, builtin_folder, random_folder, real_size_builders
from onepiece_hpc.models.pixart.adapter import PixArtAdapter
from onepiece_hpc.models.plugins import plugin_adapters
from onepiece_hpc.models.sdxl.adapter import StableDiffusionXLAdapter
from onepiece_hpc.models.stable_diffusion.adapter import StableDiffusionAdapter
from onepiece_hpc.models.wan.adapter import WanAdapter, WanImageToVideoAdapter

log = logging.getLogger(__name__)

ADAPTERS: tuple[type[ModelAdapter], ...] = (StableDiffusionAdapter, PixArtAdapter, StableDiffusionXLAdapter,
                                           WanAdapter, WanImageToVideoAdapter)
CONFIG_SUFFIXES = (".json", ".txt", ".model")  # configs, vocab/merges, sentencepiece models
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")  # what weight files end in
DIGEST_CACHE = "file-digests.json"  # in the onepiece cache: {"version": 1, "files": {path: [*stat key, sha256]}}
DIGEST_CACHE_VERSION = 1
READ_BLOCK = 8 << 20  # bytes per read while hashing: constant memory, few system calls
#: a file changed this recently is hashed but not cached: a write within the same clock tick as
#: our stat would leave its ctime as we saw it
SETTLE_NS = 100_000_000


@dataclass(frozen=True)
class ModelSource:
    """A pipeline folder that passed validation, with what identifies it."""

    ref: str          # as the job file says it: "builtin:tiny-sd" or an absolute path
    folder: Path
    pipeline_class: str
    config_hash: str  # sha256 of every config, tokenizer and scheduler file
    identity: str     # config_hash plus the contents of every other file (weights and the rest)
    adapter: ModelAdapter


def adapter_types() -> tuple[type[ModelAdapter], ...]:
    """The built-in adapters, then those installed packages add (models/plugins.py)."""
    return ADAPTERS + plugin_adapters()


def supported_pipelines() -> list[str]:
    """Every pipeline class some adapter runs."""
    return [name for adapter in adapter_types() for name in adapter.pipeline_classes]


def _sha256(fd: int) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(READ_BLOCK)
    view = memoryview(buffer)
    with open(fd, "rb", buffering=0, closefd=False) as f:
        while count := f.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


class DigestCache:
    """sha256 of files, reused while a file's (device, inode, size, mtime_ns, ctime_ns) is unchanged.

    A missing, damaged or foreign cache file counts as empty; it is JSON, never pickle, and is
    replaced atomically (a private temporary file, then os.replace), so a reader never sees half.
    """

    def __init__(self, folder: Path | None) -> None:
        self.path = folder / DIGEST_CACHE if folder is not None else None
        self.entries = self._load()
        self.fresh: dict[str, list] = {}

    def _load(self) -> dict[str, list]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != DIGEST_CACHE_VERSION:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}

    def digest(self, path: Path) -> str:
        """The sha256 of the file at `path`, read only if its stat key is not in the cache."""
        real = os.path.realpath(path)
        # opened before the stat: NFS revalidates on open, and the stat and the bytes are of one file
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            key = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
            entry = self.entries.get(real)
            if isinstance(entry, list) and len(entry) == 6 and entry[:5] == key and isinstance(entry[5], str):
                return entry[5]
            value = _sha256(fd)
        finally:
            os.close(fd)
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > SETTLE_NS:
            self.fresh[real] = self.entries[real] = [*key, value]
        return value

    def save(self) -> None:
        """Write the digests computed since loading, merged into the file's current contents."""
        if self.path is None or not self.fresh:
            return
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            files = self._load() | self.fresh
            fd, tmp = tempfile.mkstemp(prefix=f".{DIGEST_CACHE}-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": DIGEST_CACHE_VERSION, "files": files}, f)
            os.replace(tmp, self.path)
        except OSError as err:
            log.warning("could not save the model file digests to %s (%s); the next start hashes again",
                        self.path, err)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        self.fresh = {}


def _model_files(folder: Path, rel: str = "",
                 ancestors: frozenset[tuple[int, int]] = frozenset()) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every non-hidden file under `folder`; symlinked folders are followed,
    except into a folder that contains them (a loop)."""
    st = os.stat(folder)
    here = (st.st_dev, st.st_ino)
    if here in ancestors:
        return
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                yield from _model_files(Path(entry.path), f"{rel}{entry.name}/", ancestors | {here})
            elif entry.is_file():
                yield f"{rel}{entry.name}", Path(entry.path)


def _hashes(folder: Path, cache: Path | None = None, weights: bool = True) -> tuple[str, str]:
    """(config hash, identity) of the pipeline folder; `cache` holds the digest cache (None: no cache).
    `weights` False hashes the configs only and gives "" for the identity."""
    configs = hashlib.sha256()
    others = hashlib.sha256()
    digests = DigestCache(cache if weights else None)
    try:
        for rel, path in _model_files(folder):
            if path.suffix in CONFIG_SUFFIXES:
                configs.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
            elif weights:
                others.update(f"{rel}\0{digests.digest(path)}\0".encode())
    finally:
        if weights:
            digests.save()
    config_hash = configs.hexdigest()
    if not weights:
        return config_hash, ""
    return config_hash, hashlib.sha256((config_hash + others.hexdigest()).encode()).hexdigest()


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
    needed = {name for stage in adapter.topology for name in adapter.components(stage)}
    return sorted(name for name in needed if not (folder / name).is_dir() or index.get(name) in (None, [None, None]))


def _adapter_type(ref: str, cache: Path, where: str,
                  problems: list[str]) -> tuple[Path, dict, type[ModelAdapter]] | None:
    """The model's folder, its model_index.json and the adapter class for it."""
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
    adapter_type = next((a for a in adapter_types() if class_name in a.pipeline_classes), None)
    if adapter_type is None:
        problems.append(f"{where}: pipeline class '{class_name}' in {folder} is not supported yet; "
                        f"supported: {', '.join(supported_pipelines())}")
        return None
    return folder, index, adapter_type


def resolve_model(ref: str, cache: Path, where: str, problems: list[str], weights: bool = True) -> ModelSource | None:
    """Validate the model reference; problems name `where` (the job file line) and the fix.

    `weights` False skips hashing the weight files: the identity is then "" (a stage rank, which
    loads the model but keys no item)."""
    found = _adapter_type(ref, cache, where, problems)
    if found is None:
        return None
    folder, index, adapter_type = found
    class_name = index.get("_class_name", "")
    adapter = adapter_type(folder, index)
    missing = _missing_components(folder, index, adapter)
    if missing:
        problems.append(f"{where}: {folder} lacks the component folder(s) {', '.join(missing)} that "
                        f"{class_name} needs; fix: save the complete pipeline")
        return None
    try:
        config_hash, identity = _hashes(folder, cache, weights)
    except OSError as err:
        problems.append(f"{where}: cannot read {err.filename or folder} ({err.strerror}); "
                        "fix: make every file of the model folder readable")
        return None
    return ModelSource(ref=ref, folder=folder, pipeline_class=class_name, config_hash=config_hash,
                       identity=identity, adapter=adapter)
