"""The rule for prompt text, the same in both formats, so that one line is one item and every error
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

import re
import unicodedata

#: what prompt text may not hold (see the module docstring): controls but tab, U+2028/9, surrogates
REFUSED = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: the same over many lines at once: line ends ("\n", "\r\n") pass, everything else REFUSED holds does not
REFUSED_IN_LINES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]|\r(?!\n)")
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


def keeps_the_rule(chunk: bytes, text: str) -> bool:
    """Whether every line of a chunk keeps the prompt-text rule (fast for ASCII: a byte deletion)."""
    if chunk.isascii():
        rest = chunk.translate(None, _ASCII_ALLOWED)  # what is left is refused, or a "\r"
        return not rest or (rest.count(b"\r") == len(rest) and chunk.count(b"\r") == chunk.count(b"\r\n"))
    return REFUSED_IN_LINES.search(text) is None
