"""The documentation's links hold: every relative link in README.md and docs/*.md names a file
that exists, and every #anchor a heading of the page it points into (slugged as GitHub does).
The index (docs/README.md) lists every page, and the README keeps the two commands CI and users
run. Pure file reading: no model, no MPI."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# a code span may wrap lines, never a blank one (a paragraph's end)
WRAPPED_CODE_SPAN = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.DOTALL)
# [text](target "title") and ![alt](target); the text may hold one level of brackets
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files(root: Path) -> list[Path]:
    """The pages checked: the README and every page under docs/ that exists."""
    readme = root / "README.md"
    return ([readme] if readme.exists() else []) + sorted((root / "docs").rglob("*.md"))


def outside_fences(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        opened = FENCE.match(line)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            continue
        if opened:
            fence = opened.group(1)
            continue
        lines.append((number, line))
    return lines


def prose(text: str) -> str:
    """The page with fenced code blocks and inline code spans blanked out (links there are text),
    each line where it was, so that a link wrapped over two lines is found whole."""
    lines = text.splitlines()
    kept = dict(outside_fences(text))
    blanked = "\n".join(kept.get(number, "") for number in range(1, len(lines) + 1))
    return WRAPPED_CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), blanked)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: markup dropped, lower case, punctuation removed,
    spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page has: its headings' slugs (repeats numbered -1, -2, ...) and <a id>s."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = page.read_text(encoding="utf-8")
    found.update(HTML_ANCHOR.findall(prose(text)))
    for _, line in outside_fences(text):
        heading = HEADING.match(line)  # a heading's code spans keep their text in its anchor
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link on a page, outside code."""
    text = prose(page.read_text(encoding="utf-8"))
    found = [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in INLINE_LINK.finditer(text)]
    for number, line in enumerate(text.split("\n"), start=1):
        definition = REFERENCE_DEF.match(line)
        if definition:
            found.append((number, definition.group(1)))
    return sorted(found, key=lambda link: link[0])  # in page order


def broken_links(root: Path) -> list[str]:
    """One line per relative link or anchor that does not resolve: page:line: target: why."""
    problems = []
    for page in markdown_files(root):
        where = page.relative_to(root)
        for number, target in links(page):
            if SCHEME.match(target):
                continue  # another site's address: not ours to check offline
            path, _, anchor = target.partition("#")
            path = unquote(path)
            if not path and not anchor:
                problems.append(f"{where}:{number}: empty link target")
                continue
            resolved = (page.parent / path).resolve() if path else page
            if root.resolve() not in (resolved, *resolved.parents):
                problems.append(f"{where}:{number}: {target}: points outside the repository")
                continue
            if not resolved.exists():
                problems.append(f"{where}:{number}: {target}: no such file {resolved.relative_to(root.resolve())}")
                continue
            if not anchor:
                continue
            if resolved.is_dir() or resolved.suffix != ".md":
                problems.append(f"{where}:{number}: {target}: an anchor into a file that is not a Markdown page")
            elif unquote(anchor).lower() not in anchors(resolved):
                problems.append(f"{where}:{number}: {target}: {resolved.name} has no heading with anchor #{anchor}")
    return problems


def test_every_relative_link_and_anchor_resolves():
    problems = broken_links(ROOT)
    assert not problems, "broken links in the documentation:\n" + "\n".join(problems)


def test_the_checker_finds_missing_pages_and_anchors(tmp_path):
    """The check above can fail: a missing page, a missing anchor and a link out of the tree are
    each found; good links (repeated headings, code, other sites) are not flagged."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "# Top\n\nSee [a](docs/a.md), [its part](docs/a.md#part-two-the-sequel), [again](docs/a.md#repeat-1),\n"
        "[gone](docs/gone.md), [no anchor](docs/a.md#nowhere) and [up](../outside.md).\n"
        "[site](https://example.org/x.md) and `[in code](docs/none.md)` are not checked, nor `a span\n"
        "that wraps [in code](docs/none.md)` over lines. A [link that\nwraps](docs/a.md#wrapped) is.\n"
        "```sh\n[in a fence](docs/none.md)\n```\n", encoding="utf-8")
    (tmp_path / "docs" / "a.md").write_text(
        "# A\n\n## Part two: the `sequel`\n\n## Repeat\n\n## Repeat\n\nBack to [top](../README.md#top), "
        "[here](#a) and [self](#missing).\n", encoding="utf-8")
    found = broken_links(tmp_path)
    assert [line.split(": ", 1)[1] for line in found] == [
        "docs/gone.md: no such file docs/gone.md",
        "docs/a.md#nowhere: a.md has no heading with anchor #nowhere",
        "../outside.md: points outside the repository",
        "docs/a.md#wrapped: a.md has no heading with anchor #wrapped",
        "#missing: a.md has no heading with anchor #missing",
    ], found


def test_github_slugs():
    assert slug("Transport: one-sided double-ring channels") == "transport-one-sided-double-ring-channels"
    assert slug("Output files (format version 3)") == "output-files-format-version-3"
    assert slug("Exit codes of `onepiece run`") == "exit-codes-of-onepiece-run"
    assert slug("Protocol (`onepiece_hpc/transport/ring.py`, pure Python)") == \
        "protocol-onepiece_hpctransportringpy-pure-python"


def test_the_index_lists_every_page():
    index = ROOT / "docs" / "README.md"
    listed = {(index.parent / unquote(target.partition("#")[0])).resolve()
              for _, target in links(index) if not SCHEME.match(target)}
    pages = [p for p in sorted((ROOT / "docs").rglob("*.md")) if p != index]
    missing = [str(p.relative_to(ROOT)) for p in pages if p.resolve() not in listed]
    assert not missing, f"docs/README.md does not link these pages: {missing}"


def test_the_readme_keeps_the_two_commands():
    """CI (.ci/run) and users run exactly the commands this section names."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Two commands\n", 1)[1].split("\n## ", 1)[0]
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert f"bash {script}" in section
        assert (ROOT / script).is_file()
