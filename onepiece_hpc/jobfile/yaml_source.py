"""Safe YAML loading that remembers the line of every key, so errors can point at it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML mapping plus the 1-based line of each key path ("params.steps")."""

    path: Path
    text: str
    data: Any
    lines: dict[str, int]

    def line_of(self, field_path: str) -> int | None:
        """The line of the field, or of its nearest parent that exists in the file."""
        parts = field_path.split(".")
        while parts:
            line = self.lines.get(".".join(parts))
            if line is not None:
                return line
            parts.pop()
        return None


def _key_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            out[path] = key_node.start_mark.line + 1
            _key_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = f"{prefix}.{index}"
            out[path] = item.start_mark.line + 1
            _key_lines(item, path, out)


def parse_yaml(path: Path, text: str) -> YamlDocument:
    """Parse with the safe loader; raises yaml.YAMLError (with its mark) on bad syntax."""
    data = yaml.safe_load(text)
    lines: dict[str, int] = {}
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is not None:
        _key_lines(node, "", lines)
    return YamlDocument(path=path, text=text, data=data, lines=lines)
