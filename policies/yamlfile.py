"""Reading policy YAML with line numbers, so a bad file names the line to fix.

PyYAML's ``safe_load`` forgets where values came from and silently keeps the last of two duplicate
keys; a guardrail file must do neither. We compose the node tree once, refuse duplicates, and keep a
map from each key path to its line for error messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from policies.types import PolicyError

LineMap = dict[tuple[str | int, ...], int]


#: libyaml's parser when PyYAML was built with it (the wheels are): the default policy set, read
#: by every process before its first decision, parses in a fraction of the pure-Python time.
_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[valid-type,misc]
    """SafeLoader without implicit timestamps: dates stay text and are validated (with a line)
    by the models, instead of a bad date such as 2025-13-01 crashing the YAML constructor."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _walk(node: yaml.Node, path: tuple[str | int, ...], lines: LineMap, source: str) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise PolicyError(
                    f"{source}: line {line}: duplicate key {key!r} (first at line {seen[key]}); "
                    "keep only one."
                )
            seen[key] = line
            _walk(value_node, (*path, key), lines, source)
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines, source)


def read_yaml(text: str, source: str) -> tuple[Any, LineMap]:
    """Parse ``text`` into data plus a key-path -> line map; malformed YAML is a PolicyError."""
    loader = _Loader(text)
    try:  # composed once: the node tree gives the lines, and the data is built from it
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "unknown line"
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"{source}: {where}: not valid YAML ({problem}).") from exc
    finally:
        loader.dispose()
    lines: LineMap = {}
    if node is not None:
        _walk(node, (), lines, source)
    return data, lines


def read_yaml_file(path: Path) -> tuple[Any, LineMap]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror}).") from exc
    return read_yaml(text, str(path))


def line_for(lines: LineMap, loc: Sequence[str | int]) -> int | None:
    """The line of the deepest known prefix of ``loc`` (pydantic error locations may go deeper)."""
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
