"""Prompt sources: .txt (one prompt a line) and .jsonl (one JSON object a line).

The rule for prompt text, the same in both formats, so that one line is one item and every error
names the line an editor shows:
- lines end at "\n" only (a "\r\n" ending is accepted); nothing else splits a line, so a line
  number is the count of "\n" before it plus one;
- a line, blank or not, may not hold a control character other than tab (U+0000-U+001F,
  U+007F-U+009F: NUL, a lone CR, form feed, U+0085 ...), U+2028 or U+2029 (line and paragraph
  separators, which other tools split on), or a surrogate (U+D800-U+DFFF: not a character, and
  not writable as UTF-8); the file is refused naming file:line, the character as U+XXXX and the fix;
- in .jsonl the same holds for every string after JSON escapes are decoded ("prompt",
  "negative_prompt", "image", and the keys and values under "meta"), since "\u2028" or "\ud800"
  in JSON is valid there (the job file's params.negative_prompt is held to it too);
- everything else is kept as written (tabs, emoji, joiners, other scripts); a prompt only loses
  its leading and trailing whitespace.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepiece_hpc.jobfile.columns import NumberBuilder, TextBuilder, TextColumn
from onepiece_hpc.jobfile.images import ImageReader
from onepiece_hpc.jobfile.job import SEED_MAX, ConditionImage, PromptRecord

JSONL_FIELDS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "image", "meta")
MAX_REPORTED = 20  # problems listed per file before "... and N more"
#: what prompt text may not hold (see the module docstring): controls but tab, U+2028/9, surrogates
REFUSED = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: the same over many lines at once: line ends ("\n", "\r\n") pass, everything else REFUSED holds does not
REFUSED_IN_LINES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]|\r(?!\n)")
CHUNK_BYTES = 8 << 20  # a .txt prompt file is read this many bytes (whole lines) at a time
#: the bytes an ASCII line may hold: printable characters and tab (and the line's "\n")
_ASCII_ALLOWED = bytes(range(0x20, 0x7F)) + b"\t\n"


def text_problem(text: str) -> str | None:
    """What the prompt-text rule refuses in `text` (the character as U+XXXX, where, the fix), or None."""
    found = REFUSED.search(text)
    if found is None:
        return None
    char = found.group()
    if unicodedata.category(char) == "Cs":
        what, fix = "a lone surrogate, not a character", "write the character itself or its full \\u pair"
    elif char == "\r":
        what, fix = "a carriage return", "save the file with \\n or \\r\\n line endings"
    else:
        what = unicodedata.name(char, "a control character")
        fix = "delete it or put a space there (prompt text is one line of plain text)"
    return f"holds U+{ord(char):04X} ({what}) at character {found.start() + 1}; fix: {fix}"


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


_PLAIN_FIELDS = frozenset(("prompt", "negative_prompt", "seed", "steps", "guidance"))


def _plain_record(line: int, obj: object) -> PromptRecord | None:
    """The record of a line with only plain, valid fields (no image, no meta), or None: then
    _record_from_json checks it field by field and says what is wrong. The common case, fast."""
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


def _record_from_json(path: Path, line: int, obj: object, images: ImageReader,
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


def _lines(path: Path, text: str, problems: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, line) of each non-blank line that keeps the prompt-text rule; the others go to problems."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        problem = text_problem(line)
        if problem is not None:
            problems.append(f"{path}:{number}: the line {problem}")
        elif line.strip():
            yield number, line


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


class _TableBuilder:
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
    return _TableBuilder(full=False).build()


def _chunks(raw: bytes) -> Iterator[tuple[int, bytes]]:
    """(byte offset, bytes) of whole-line pieces of about CHUNK_BYTES."""
    start = 0
    while start < len(raw):
        end = raw.find(b"\n", min(start + CHUNK_BYTES, len(raw)))
        end = len(raw) if end < 0 else end + 1
        yield start, raw[start:end]
        start = end


def _keeps_the_rule(chunk: bytes, text: str) -> bool:
    """Whether every line of a chunk keeps the prompt-text rule (fast for ASCII: a byte deletion)."""
    if chunk.isascii():
        rest = chunk.translate(None, _ASCII_ALLOWED)  # what is left is refused, or a "\r"
        return not rest or (rest.count(b"\r") == len(rest) and chunk.count(b"\r") == chunk.count(b"\r\n"))
    return REFUSED_IN_LINES.search(text) is None


def _read_text_lines(path: Path, raw: bytes, table: _TableBuilder, errors: list[str]) -> bool:
    """The records of a .txt source, a chunk at a time; False if it is not UTF-8."""
    first_line = 1
    for offset, chunk in _chunks(raw):
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as err:
            at = offset + err.start
            line = raw[:at].count(b"\n") + 1
            errors.append(f"{path}:{line}: not UTF-8 text (byte 0x{raw[at]:02x} at offset {at}); "
                          "fix: save the file as UTF-8")
            return False
        if offset == 0 and text.startswith("\ufeff"):
            text = text[1:]
        pieces = text.split("\n")
        if chunk.endswith(b"\n"):
            pieces.pop()  # the empty piece after the chunk's last line end
        if _keeps_the_rule(chunk, text):  # the common case: every line does
            stripped = [line.strip() for line in pieces]
            kept = [at for at, prompt in enumerate(stripped) if prompt]
            table.lines.extend([first_line + at for at in kept])
            table.prompts.extend(stripped if len(kept) == len(stripped) else [stripped[at] for at in kept])
        else:
            for number, line in enumerate(pieces, start=first_line):
                line = line.removesuffix("\r")
                problem = text_problem(line)
                if problem is not None:
                    errors.append(f"{path}:{number}: the line {problem}")
                elif line.strip():
                    table.add_prompt(number, line.strip())
        first_line += len(pieces)
    return True


def read_prompts(path: Path, problems: list[str], images: ImageReader | None = None) -> PromptTable:
    """Read every record of the prompt source; problems (with line numbers) go to `problems`.

    Conditioning images ("image" in a .jsonl line) are read and hashed through `images`.
    """
    images = images or ImageReader()
    start = len(problems)
    suffix = path.suffix.lower()
    table = _TableBuilder(full=suffix == ".jsonl")
    if suffix not in (".txt", ".jsonl"):
        problems.append(f"{path}: prompt files must end in .txt or .jsonl, not '{suffix or '(none)'}'")
        return table.build()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problems.append(f"{path}: prompt file not found; fix: check the 'prompts' path (relative to the job file)")
        return table.build()
    except IsADirectoryError:
        problems.append(f"{path}: is a folder, not a prompt file")
        return table.build()
    except OSError as err:
        problems.append(f"{path}: cannot read the prompt file ({err.strerror})")
        return table.build()
    errors: list[str] = []
    if suffix == ".txt":
        if not _read_text_lines(path, raw, table, errors):
            problems.extend(errors[-1:])
            return _TableBuilder(full=False).build()
    else:
        text = _decode(path, raw, problems)
        if text is None:
            return table.build()
        if text.startswith("\ufeff"):
            text = text[1:]
        lines = (enumerate(text.split("\n"), start=1) if _keeps_the_rule(raw, text)
                 else _lines(path, text, errors))
        decode = json.JSONDecoder().decode
        for number, line in lines:
            if not line.strip():
                continue
            try:
                obj = decode(line)
            except json.JSONDecodeError as err:
                errors.append(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})")
                continue
            escaped = "\\" in line
            record = (None if escaped else _plain_record(number, obj)) or \
                _record_from_json(path, number, obj, images, errors, escaped)
            if record is not None:
                table.add(record)
    problems.extend(errors[:MAX_REPORTED])
    if len(errors) > MAX_REPORTED:
        problems.append(f"{path}: ... and {len(errors) - MAX_REPORTED} more bad lines")
    built = table.build()
    if not len(built) and len(problems) == start:
        problems.append(f"{path}: no prompts found (the file is empty or blank); fix: add one prompt a line")
    return built
