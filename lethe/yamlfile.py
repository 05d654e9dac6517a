"""YAML files whose errors point at the line.

``load`` returns plain data (dicts, lists, scalars, as ``yaml.safe_load`` gives)
together with a ``Lines`` index from each value's path — ``("rules", 2,
"action")`` — to the line it starts on, so a validator can say
``policy.yaml:14: rules[2].action: ...`` instead of "somewhere in the file".
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from lethe.errors import ConfigError

PathKey = tuple[Hashable, ...]


@dataclass(frozen=True)
class Lines:
    """Where each value of a loaded file starts (1-based lines)."""

    file: Path
    lines: dict[PathKey, int] = field(default_factory=dict)

    def at(self, *path: Hashable) -> str:
        """``file:line`` of the deepest part of ``path`` the file has."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return f"{self.file}:{line}"
        return str(self.file)

    def error(self, path: PathKey, message: str) -> ConfigError:
        """A ConfigError that names the place: ``file:line: rules[2].action: ...``."""
        return ConfigError(f"{self.at(*path)}: {dotted(path)}: {message}")


def dotted(path: PathKey) -> str:
    """``("rules", 2, "action")`` as ``rules[2].action``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(top level)"


def load(path: Path, *, what: str) -> tuple[Any, Lines]:
    """Read ``path``; ``what`` names the file in errors ("the policy file")."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{what} {path} cannot be read ({type(exc).__name__})"
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{where}: {what} is not valid YAML ({problem})") from None
    lines = Lines(file=path)
    if node is None:
        return None, lines
    return _build(node, (), lines), lines


_SCALARS = SafeConstructor()


def _build(node: Node, path: PathKey, lines: Lines) -> Any:
    lines.lines[path] = node.start_mark.line + 1
    if isinstance(node, MappingNode):
        built: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _build(key_node, (*path, "<key>"), lines)
            if not isinstance(key, Hashable):
                raise ConfigError(
                    f"{path_text(lines, key_node)}: a mapping key must be a plain value"
                )
            if key in built:
                raise ConfigError(
                    f"{path_text(lines, key_node)}: {dotted((*path, key))} "
                    "is given twice"
                )
            built[key] = _build(value_node, (*path, key), lines)
            lines.lines[(*path, key)] = key_node.start_mark.line + 1  # the key's line
        lines.lines.pop((*path, "<key>"), None)
        return built
    if isinstance(node, SequenceNode):
        return [_build(item, (*path, i), lines) for i, item in enumerate(node.value)]
    if isinstance(node, ScalarNode):
        return _SCALARS.construct_object(node, deep=True)
    raise ConfigError(f"{path_text(lines, node)}: unsupported YAML node")


def path_text(lines: Lines, node: Node) -> str:
    return f"{lines.file}:{node.start_mark.line + 1}"
