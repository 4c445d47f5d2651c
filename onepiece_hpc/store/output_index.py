"""A new output's index (its layout and the job it belongs to, published once), and whether an
existing output belongs to this job: what `OutputWriter.open` creates or checks first."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from onepiece_hpc.store import schema as s
from onepiece_hpc.store.files import AlreadyThere, no_space_error, publish, temporary_path
from onepiece_hpc.store.index import (
    DEFAULT_FILE_BYTES,
    ItemDataset,
    StoreLayout,
    choose_items_per_file,
    new_store_id,
    write_index,
)
from onepiece_hpc.store.items import ItemSource
from onepiece_hpc.store.provenance import Provenance, now_iso
from onepiece_hpc.store.reader import StoreReader


@dataclass(frozen=True)
class OutputLayout:
    """The shape of one item's output, e.g. (H, W, 3) for images, (T, H, W, 3) for video, and the
    item's extra datasets (a workflow's kept intermediate outputs), each filled by the last
    stage's tensor of its name."""

    kind: str  # "image" | "video"
    item_shape: tuple[int, ...]
    frame_rate: int | None = None  # frames per second of a video
    timing_columns: tuple[str, ...] = s.TIMING_STAGES  # the seconds each item spent in each stage, then the write
    extras: tuple[ItemDataset, ...] = ()

    @property
    def dataset(self) -> str:
        """The /outputs dataset, and the name of the decode stage's tensor that fills it."""
        return s.OUTPUT_DATASETS[self.kind]

    @property
    def tensors(self) -> tuple[str, ...]:
        """The last stage's tensors an item's commit takes: the outputs', then each extra's."""
        return (self.dataset, *(extra.name for extra in self.extras))


@dataclass(frozen=True)
class StoreSettings:
    """How a new output is laid out and how often commits are synced (the job file's `store:`)."""

    file_bytes: int = DEFAULT_FILE_BYTES
    sync_interval_s: float = 1.0


def _index_attrs(items: ItemSource, provenance: Provenance, layout: OutputLayout) -> dict:
    attrs = {"store_id": new_store_id(), "job_name": items.name, "job_fingerprint": items.fingerprint,
             "model_identity": items.model_identity, "model_ref": provenance.model_ref,
             "microbatch": items.microbatch, "execution": items.execution, "created_at": now_iso()}
    if layout.frame_rate is not None:
        attrs["frame_rate"] = layout.frame_rate
    return attrs


def create_index(path: Path, items: ItemSource, layout: OutputLayout, provenance: Provenance,
                  settings: StoreSettings) -> None:
    """Publish a new index at `path`; if another process published one first, leave it be.

    The data folder comes first: an index without its folder is then damage, never "nothing yet"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(s.data_folder(path)).mkdir(exist_ok=True)
    store = StoreLayout(len(items), 1, layout.kind, tuple(layout.item_shape), tuple(layout.timing_columns),
                        tuple(layout.extras))
    per_file = choose_items_per_file(len(items), store.item_bytes, settings.file_bytes)
    store = replace(store, items_per_file=per_file)
    with temporary_path(Path(s.data_folder(path)), ".index.") as tmp:  # in the data folder: its orphans are swept
        try:
            write_index(tmp, path, store, _index_attrs(items, provenance, layout), provenance.as_attrs())
        except OSError as err:
            if "No space" in str(err) or "errno = 28" in str(err):
                raise no_space_error(path.parent, None) from None
            raise
        os.chmod(tmp, 0o644)
        try:
            publish(tmp, path)
        except AlreadyThere:
            pass  # another process published it first: it is checked like any existing output


def describe_datasets(extras: tuple[ItemDataset, ...]) -> str:
    return ", ".join(f"/{d.path} ({'x'.join(map(str, d.item_shape))})" for d in extras) or "no other dataset"


def mismatch(reader: StoreReader, items: ItemSource) -> str | None:
    """Why the output is not this job's, or None if it is."""
    attrs, path = reader.attrs, reader.path
    if attrs.get("job_fingerprint") == items.fingerprint:
        return None
    theirs = f"job '{attrs.get('job_name')}' with {attrs.get('items_total')} items"
    if attrs.get("model_identity") != items.model_identity:
        why = ("a different model (or the same model folder with other weights; of a workflow, any step's model "
               "or params)")
    elif int(attrs.get("items_total", -1)) != len(items):
        why = f"{attrs.get('items_total')} items, this job has {len(items)}"
    elif int(attrs.get("microbatch", -1)) != items.microbatch or attrs.get("execution") != items.execution:
        why = (f"microbatch {attrs.get('microbatch')}, {attrs.get('execution')}; this job has microbatch "
               f"{items.microbatch}, {items.execution} (both change the output bits)")
    else:
        first = reader.first_key_mismatch(items)
        why = ("its items differ (prompt, seed or params)" if first is None else
               f"item {first} differs (prompt, seed or params; {items.where(first)})")
    return f"{path} holds the output of another job ({theirs}): {why}"
