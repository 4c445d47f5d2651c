"""Prompt sources: .txt (one prompt a line) and .jsonl (one JSON object a line), read into a
`PromptTable` (jobfile/prompt_table.py). Prompt text is held to one rule in both formats
(jobfile/prompt_text.py); a .jsonl line's fields are checked in jobfile/prompt_records.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from onepiece_hpc.jobfile.images import ImageReader
from onepiece_hpc.jobfile.prompt_records import plain_record, record_from_json
from onepiece_hpc.jobfile.prompt_table import PromptTable, TableBuilder
from onepiece_hpc.jobfile.prompt_text import keeps_the_rule, text_problem

MAX_REPORTED = 20  # problems listed per file before "... and N more"
CHUNK_BYTES = 8 << 20  # a .txt prompt file is read this many bytes (whole lines) at a time


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


def _lines(path: Path, text: str, problems: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, line) of each non-blank line that keeps the prompt-text rule; the others go to problems."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        problem = text_problem(line)
        if problem is not None:
            problems.append(f"{path}:{number}: the line {problem}")
        elif line.strip():
            yield number, line


def _chunks(raw: bytes) -> Iterator[tuple[int, bytes]]:
    """(byte offset, bytes) of whole-line pieces of about CHUNK_BYTES."""
    start = 0
    while start < len(raw):
        end = raw.find(b"\n", min(start + CHUNK_BYTES, len(raw)))
        end = len(raw) if end < 0 else end + 1
        yield start, raw[start:end]
        start = end


def _read_text_lines(path: Path, raw: bytes, table: TableBuilder, errors: list[str]) -> bool:
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
        if keeps_the_rule(chunk, text):  # the common case: every line does
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
    table = TableBuilder(full=suffix == ".jsonl")
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
            return TableBuilder(full=False).build()
    else:
        text = _decode(path, raw, problems)
        if text is None:
            return table.build()
        if text.startswith("\ufeff"):
            text = text[1:]
        lines = (enumerate(text.split("\n"), start=1) if keeps_the_rule(raw, text)
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
            record = (None if escaped else plain_record(number, obj)) or \
                record_from_json(path, number, obj, images, errors, escaped)
            if record is not None:
                table.add(record)
    problems.extend(errors[:MAX_REPORTED])
    if len(errors) > MAX_REPORTED:
        problems.append(f"{path}: ... and {len(errors) - MAX_REPORTED} more bad lines")
    built = table.build()
    if not len(built) and len(problems) == start:
        problems.append(f"{path}: no prompts found (the file is empty or blank); fix: add one prompt a line")
    return built
