"""A prompt source's records as columns (`PromptTable`), built a block of rows at a time."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from onepiece_hpc.jobfile.columns import NumberBuilder, TextBuilder, TextColumn
from onepiece_hpc.jobfile.job import ConditionImage, PromptRecord


@dataclass(frozen=True)
class PromptTable:
    """Every record of a prompt source as columns: 10^7 lines cost no Python object each.

    A .txt source has line numbers and prompts only; the other columns are None there, as they
    are in a .jsonl source where no line sets that field.
    """

    lines: np.ndarray                  # int64: the line each record was read from
    prompts: TextColumn
    negatives: TextColumn | None       # rows of lines that set "negative_prompt" ("" elsewhere)
    negative_set: np.ndarray | None    # bool: the line set "negative_prompt"
    seeds: np.ndarray | None           # int64, -1 where the line sets none
    steps: np.ndarray | None           # int32, 0 where the line sets none
    guidance: np.ndarray | None        # float64, NaN where the line sets none
    image_ids: np.ndarray | None       # int32 into `images`, -1 where the line names none
    images: tuple[ConditionImage, ...]
    metas: TextColumn | None           # canonical JSON of "meta", "" where absent

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return PromptRecord(
            line=int(self.lines[index]),
            prompt=self.prompts[index],
            negative_prompt=self.negatives[index] if self.negative_set is not None and self.negative_set[index] else None,
            seed=int(self.seeds[index]) if self.seeds is not None and self.seeds[index] >= 0 else None,
            steps=int(self.steps[index]) if self.steps is not None and self.steps[index] > 0 else None,
            guidance=(float(self.guidance[index]) if self.guidance is not None
                      and not math.isnan(self.guidance[index]) else None),
            meta=self.metas[index] if self.metas is not None else "",
            image=self.images[self.image_ids[index]] if self.image_ids is not None and self.image_ids[index] >= 0 else None,
        )

    def __iter__(self) -> Iterator[PromptRecord]:
        return (self[i] for i in range(len(self)))


class TableBuilder:
    """Collects records into a PromptTable; `full` adds the columns only .jsonl lines can set.
    Rows gather in lists and reach the columns FLUSH_ROWS at a time."""

    FLUSH_ROWS = 1 << 16

    def __init__(self, full: bool) -> None:
        self.full = full
        self.lines = NumberBuilder("q")
        self.prompts = TextBuilder()
        if full:
            self.negatives, self.negative_set = TextBuilder(), NumberBuilder("b")
            self.seeds, self.steps, self.guidance = NumberBuilder("q"), NumberBuilder("i"), NumberBuilder("d")
            self.image_ids, self.metas = NumberBuilder("i"), TextBuilder()
            self.images: dict[ConditionImage, int] = {}
            self.sets = dict.fromkeys(("negative", "seed", "steps", "guidance", "image", "meta"), False)
            self._rows: list[PromptRecord] = []

    def add_prompt(self, line: int, prompt: str) -> None:
        self.lines.append(line)
        self.prompts.append(prompt)

    def add(self, record: PromptRecord) -> None:
        self._rows.append(record)
        if len(self._rows) >= self.FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return
        self.lines.extend([r.line for r in rows])
        self.prompts.extend([r.prompt for r in rows])
        negatives = [r.negative_prompt for r in rows]
        seeds = [r.seed for r in rows]
        steps = [r.steps for r in rows]
        guidance = [r.guidance for r in rows]
        images = [r.image for r in rows]
        metas = [r.meta for r in rows]
        self.negatives.extend([n or "" for n in negatives])
        self.negative_set.extend([n is not None for n in negatives])
        self.seeds.extend([-1 if v is None else v for v in seeds])
        self.steps.extend([v or 0 for v in steps])
        self.guidance.extend([math.nan if v is None else v for v in guidance])
        self.image_ids.extend([-1 if i is None else self.images.setdefault(i, len(self.images)) for i in images])
        self.metas.extend(metas)
        sets = self.sets
        sets["negative"] |= any(n is not None for n in negatives)
        sets["seed"] |= any(v is not None for v in seeds)
        sets["steps"] |= any(v is not None for v in steps)
        sets["guidance"] |= any(v is not None for v in guidance)
        sets["image"] |= any(i is not None for i in images)
        sets["meta"] |= any(metas)

    def build(self) -> PromptTable:
        if not self.full:
            return PromptTable(self.lines.build(), self.prompts.build(), None, None, None, None, None, None, (), None)
        self._flush()
        sets = self.sets
        return PromptTable(
            self.lines.build(), self.prompts.build(),
            negatives=self.negatives.build() if sets["negative"] else None,
            negative_set=self.negative_set.build().astype(bool) if sets["negative"] else None,
            seeds=self.seeds.build() if sets["seed"] else None,
            steps=self.steps.build() if sets["steps"] else None,
            guidance=self.guidance.build() if sets["guidance"] else None,
            image_ids=self.image_ids.build() if sets["image"] else None,
            images=tuple(self.images),
            metas=self.metas.build() if sets["meta"] else None,
        )


def empty_table() -> PromptTable:
    return TableBuilder(full=False).build()
