"""Prompt sources: .txt (one prompt a line) and .jsonl (one JSON object a line)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from onepiece_hpc.spec.images import ImageReader
from onepiece_hpc.spec.job import SEED_MAX, PromptRecord

JSONL_FIELDS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "image", "meta")
MAX_REPORTED = 20  # problems listed per file before "... and N more"


def _decode(path: Path, raw: bytes, problems: list[str]) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        problems.append(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "fix: save the file as UTF-8"
        )
        return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _record_from_json(path: Path, line: int, obj: object, images: ImageReader,
                      problems: list[str]) -> PromptRecord | None:
    where = f"{path}:{line}"
    if not isinstance(obj, dict):
        problems.append(f'{where}: expected a JSON object like {{"prompt": "..."}}, got {type(obj).__name__}')
        return None
    bad = len(problems)
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
    elif image is not None:
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


def _non_blank_lines(text: str):
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def read_prompts(path: Path, problems: list[str], images: ImageReader | None = None) -> tuple[PromptRecord, ...]:
    """Read every record of the prompt source; problems (with line numbers) go to `problems`.

    Conditioning images ("image" in a .jsonl line) are read and hashed through `images`.
    """
    images = images or ImageReader()
    start = len(problems)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        problems.append(f"{path}: prompt files must end in .txt or .jsonl, not '{suffix or '(none)'}'")
        return ()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problems.append(f"{path}: prompt file not found; fix: check the 'prompts' path (relative to the job file)")
        return ()
    except IsADirectoryError:
        problems.append(f"{path}: is a folder, not a prompt file")
        return ()
    except OSError as err:
        problems.append(f"{path}: cannot read the prompt file ({err.strerror})")
        return ()
    text = _decode(path, raw, problems)
    if text is None:
        return ()
    if text.startswith("\ufeff"):
        text = text[1:]
    records: list[PromptRecord] = []
    errors: list[str] = []
    for number, line in _non_blank_lines(text):
        if suffix == ".txt":
            records.append(PromptRecord(line=number, prompt=line.strip()))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            errors.append(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})")
            continue
        record = _record_from_json(path, number, obj, images, errors)
        if record is not None:
            records.append(record)
    problems.extend(errors[:MAX_REPORTED])
    if len(errors) > MAX_REPORTED:
        problems.append(f"{path}: ... and {len(errors) - MAX_REPORTED} more bad lines")
    if not records and len(problems) == start:
        problems.append(f"{path}: no prompts found (the file is empty or blank); fix: add one prompt a line")
    return tuple(records)
