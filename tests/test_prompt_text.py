"""Prompt text: one line is one item, and a character that other tools split lines on, that is
invisible, or that can't be written as UTF-8 is refused naming file:line and the fix (see the rule
in onepiece_hpc/jobfile/prompt_text.py). Validation only: `submit --dry-run` stops before any model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onepiece_hpc.jobfile.loader import load_job
from support import invoke, write_job

# every character str.splitlines() splits on, the other C0 and C1 controls, DEL
HOSTILE = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\r", "\x1b", "\x1c", "\x1d", "\x1e", "\x1f", "\x7f",
           "\x85", "\x9f", "\u2028", "\u2029"]
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]  # only .jsonl escapes can hold these


def _code(char: str) -> str:
    return f"U+{ord(char):04X}"


def _refused(job: Path, where: str, char: str) -> str:
    result = invoke("submit", job, "--dry-run")
    assert result.code == 2, result.out + result.err
    assert where in result.err and _code(char) in result.err and "fix:" in result.err, result.err
    assert char not in result.err and "Traceback" not in result.err
    return result.err


def _jsonl(folder: Path, *objects: dict | str) -> Path:
    lines = [o if isinstance(o, str) else json.dumps(o) for o in objects]
    return write_job(folder, lines, prompt_file="p.jsonl", prompts="p.jsonl")


@pytest.mark.parametrize("char", HOSTILE, ids=_code)
def test_txt_line_with_a_hostile_character_is_refused_at_its_line(tmp_path, char):
    job = write_job(tmp_path, ["a cat", "", f"a dog{char}a bird", "an owl"])
    _refused(job, "prompts.txt:3", char)


@pytest.mark.parametrize("char", HOSTILE, ids=_code)
def test_jsonl_line_with_a_raw_hostile_character_is_refused_at_its_line(tmp_path, char):
    job = _jsonl(tmp_path, {"prompt": "a cat"}, "", '{"prompt": "a dog' + char + 'a bird"}', {"prompt": "an owl"})
    _refused(job, "p.jsonl:3", char)


@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "image", "meta value", "meta key"])
@pytest.mark.parametrize("char", HOSTILE + SURROGATES, ids=_code)
def test_jsonl_string_holding_an_escaped_hostile_character_is_refused(tmp_path, char, field):
    text = f"a{char}b"
    line = {"prompt": "a dog", **{"prompt": {"prompt": text}, "negative_prompt": {"negative_prompt": text},
                                  "image": {"image": text}, "meta value": {"meta": {"tags": ["x", text]}},
                                  "meta key": {"meta": {text: 1}}}[field]}
    err = _refused(_jsonl(tmp_path, {"prompt": "a cat"}, line), "p.jsonl:2", char)
    assert f'"{field.split()[0]}"' in err


@pytest.mark.parametrize("char", ["\x0c", "\ud800"], ids=_code)
def test_job_file_negative_prompt_is_held_to_the_same_rule(tmp_path, char):
    escaped = json.dumps(char)  # a YAML double-quoted string takes JSON's escapes
    job = write_job(tmp_path, ["a cat"], params=f"{{steps: 2, negative_prompt: {escaped}}}")
    _refused(job, "job.yaml:4", char)


def test_line_numbers_stay_right_after_a_refused_line(tmp_path):
    job = _jsonl(tmp_path, {"prompt": "a"}, '{"prompt": "b\u2028c"}', {"prompt": "d"}, "", '{"prompt": oops}')
    result = invoke("submit", job, "--dry-run")
    assert result.code == 2
    assert "p.jsonl:2: the line holds U+2028" in result.err and "p.jsonl:5: not valid JSON" in result.err


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_harmless_text_is_kept_exactly_and_one_line_is_one_item(tmp_path, suffix):
    prompts = ["tab\tinside", "emoji 👩‍👩‍👧 with joiners", "no\u00a0break space", "right\u200fto left mark", "last"]
    lines = prompts if suffix == ".txt" else [json.dumps({"prompt": p}) for p in prompts]
    path = tmp_path / f"p{suffix}"
    path.write_bytes(("\r\n".join(lines[:2]) + "\r\n\r\n" + "\n".join(lines[2:])).encode())
    job = write_job(tmp_path, None, prompt_file=path.name, prompts=path.name)
    assert invoke("submit", job, "--dry-run").code == 0
    problems: list[str] = []
    loaded = load_job(job, problems)
    assert loaded is not None, problems
    assert [(r.line, r.prompt) for r in loaded.records] == list(zip([1, 2, 4, 5, 6], prompts))
