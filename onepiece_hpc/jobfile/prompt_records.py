"""One line of a .jsonl prompt file, decoded: its record, or what is wrong with it (file:line,
the field, the fix). `plain_record` takes the common line (only plain, valid fields) fast;
`record_from_json` checks any line field by field."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

from onepiece_hpc.jobfile.images import ImageReader
from onepiece_hpc.jobfile.job import SEED_MAX, PromptRecord
from onepiece_hpc.jobfile.prompt_text import text_problem

JSONL_FIELDS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "image", "meta")


def _strings(value: object) -> Iterator[str]:
    """Every string in a decoded JSON value: itself, or the keys and values it holds."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_PLAIN_FIELDS = frozenset(("prompt", "negative_prompt", "seed", "steps", "guidance"))


def plain_record(line: int, obj: object) -> PromptRecord | None:
    """The record of a line with only plain, valid fields (no image, no meta), or None: then
    record_from_json checks it field by field and says what is wrong. The common case, fast."""
    if type(obj) is not dict or not _PLAIN_FIELDS.issuperset(obj):
        return None
    prompt, negative = obj.get("prompt"), obj.get("negative_prompt")
    seed, steps, guidance = obj.get("seed"), obj.get("steps"), obj.get("guidance")
    if (type(prompt) is not str or not prompt.strip() or (negative is not None and type(negative) is not str)
            or (seed is not None and not (type(seed) is int and 0 <= seed <= SEED_MAX))
            or (steps is not None and not (type(steps) is int and 1 <= steps <= 10_000))
            or (guidance is not None and not (type(guidance) in (int, float) and 0 <= guidance <= 100))):
        return None
    return PromptRecord(line=line, prompt=prompt.strip(), negative_prompt=negative, seed=seed, steps=steps,
                        guidance=float(guidance) if guidance is not None else None)


def record_from_json(path: Path, line: int, obj: object, images: ImageReader,
                      problems: list[str], escaped: bool = True) -> PromptRecord | None:
    """The record of one decoded line; `escaped` False says the line held no backslash, so its
    strings are its own characters, which the line's check has already held to the text rule."""
    where = f"{path}:{line}"
    if not isinstance(obj, dict):
        problems.append(f'{where}: expected a JSON object like {{"prompt": "..."}}, got {type(obj).__name__}')
        return None
    bad = len(problems)
    refused = set()
    for field in JSONL_FIELDS if escaped else ():
        problem = next(filter(None, map(text_problem, _strings(obj.get(field)))), None)
        if problem is not None:
            refused.add(field)
            problems.append(f'{where}: "{field}" {problem}')
    unknown = sorted(set(obj) - set(JSONL_FIELDS))
    if unknown:
        problems.append(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(JSONL_FIELDS)} "
            '(put your own fields under "meta")'
        )
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append(f'{where}: "prompt" must be a non-empty string; fix: add "prompt": "..."')
    negative = obj.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        problems.append(f'{where}: "negative_prompt" must be a string')
    seed = obj.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= SEED_MAX):
        problems.append(f'{where}: "seed" must be a whole number from 0 to {SEED_MAX}, got {seed!r}')
    steps = obj.get("steps")
    if steps is not None and (not _is_int(steps) or not 1 <= steps <= 10_000):
        problems.append(f'{where}: "steps" must be a whole number from 1 to 10000, got {steps!r}')
    guidance = obj.get("guidance")
    if guidance is not None and (
        not isinstance(guidance, (int, float)) or isinstance(guidance, bool)
        or not math.isfinite(guidance) or not 0 <= guidance <= 100
    ):
        problems.append(f'{where}: "guidance" must be a number from 0 to 100, got {guidance!r}')
    meta = obj.get("meta")
    if meta is not None and not isinstance(meta, dict):
        problems.append(f'{where}: "meta" must be a JSON object')
    image = obj.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        problems.append(f'{where}: "image" must be the path of an image file, got {image!r}')
    elif image is not None and "image" not in refused:
        image = images.read(path.parent / image, where, f"the prompt file's folder {path.parent}", problems)
    if len(problems) > bad:
        return None
    return PromptRecord(
        line=line,
        prompt=prompt.strip(),
        negative_prompt=negative,
        seed=seed,
        steps=steps,
        guidance=float(guidance) if guidance is not None else None,
        meta=json.dumps(meta, sort_keys=True, ensure_ascii=False) if meta is not None else "",
        image=image,
    )
