"""YAML files whose errors point at the line.

``load`` returns plain data (dicts, lists, scalars, as ``yaml.safe_load`` gives)
together with a ``Lines`` index from each value's path — ``("rules", 2,
"action")`` — to the line it starts on, so a validator can say
``policy.yaml:14: rules[2].action: ...`` instead of "somewhere in the file".

Only plain YAML is read: anchors and aliases (and so merge keys, and any
"billion laughs" file) are refused before anything is expanded, as are tags
that name a constructor; each refusal is a one-line ConfigError with the line.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from lethe.errors import ConfigError

PathKey = tuple[Hashable, ...]


@dataclass(frozen=True)
class Lines:
    """Where each value of a loaded file starts (1-based lines).

    ``file`` is the full path, for errors the user must act on; ``name`` is the
    short name (``policy.yaml``) that references kept in plans and certificates
    use, so they carry no machine paths.
    """

    file: Path
    lines: dict[PathKey, int] = field(default_factory=dict)
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.file.name

    def line(self, *path: Hashable) -> int | None:
        """The line of the deepest part of ``path`` the file has."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def at(self, *path: Hashable) -> str:
        """``file:line`` (the full path) of the deepest part of ``path``."""
        line = self.line(*path)
        return f"{self.file}:{line}" if line is not None else str(self.file)

    def ref(self, *path: Hashable) -> str:
        """``name:line`` of the deepest part of ``path``: short, for plans."""
        line = self.line(*path)
        return f"{self.label}:{line}" if line is not None else self.label

    def full(self, ref: str) -> str:
        """A ``ref`` of this file with its full path, for an error message."""
        if ref == self.label:
            return str(self.file)
        if ref.startswith(self.label + ":"):
            return f"{self.file}{ref[len(self.label) :]}"
        return ref

    def error(self, path: PathKey, message: str) -> ConfigError:
        """A ConfigError that names the place: ``file:line: rules[2].action: ...``."""
        return ConfigError(f"{self.at(*path)}: {dotted(path)}: {message}")


def dotted(path: PathKey) -> str:
    """``("rules", 2, "action")`` as ``rules[2].action``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(top level)"


def load(path: Path, *, what: str, name: str = "") -> tuple[Any, Lines]:
    """Read ``path``; ``what`` names the file in errors ("the policy file"),
    ``name`` is its short name in references (default: the file's name)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text: save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{what} {path} cannot be read ({type(exc).__name__})"
        ) from None
    lines = Lines(file=path, name=name)
    try:
        node = yaml.compose(text, Loader=_PlainLoader)
        built = None if node is None else _build(node, (), lines)
    except _Refused as exc:
        raise ConfigError(
            f"{exc.what} are not supported in {path}:{exc.mark.line + 1}: "
            "write the values out in full"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{where}: {what} is not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(
            f"{what} {path} nests too deeply to be a configuration file"
        ) from None
    return built, lines


class _Refused(yaml.YAMLError):
    def __init__(self, what: str, mark: Mark) -> None:
        super().__init__(what)
        self.what = what
        self.mark = mark


class _PlainLoader(yaml.SafeLoader):
    """A safe loader that stops at the first anchor or alias, before any
    expansion, so a file that would grow exponentially costs one event."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None):
            raise _Refused("anchors and aliases", event.start_mark)
        return super().compose_node(parent, index)  # type: ignore[no-any-return]


_SCALARS = SafeConstructor()
_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = {
    MappingNode: "tag:yaml.org,2002:map",
    SequenceNode: "tag:yaml.org,2002:seq",
}


def _build(node: Node, path: PathKey, lines: Lines) -> Any:
    lines.lines[path] = node.start_mark.line + 1
    if node.tag == _MERGE:
        raise _Refused("merge keys (<<)", node.start_mark)
    expected = _PLAIN_TAGS.get(type(node))
    if expected is not None and node.tag != expected:
        raise ConfigError(
            f"{path_text(lines, node)}: the YAML tag {node.tag!r} is not supported: "
            "write a plain mapping or list"
        )
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
        return _scalar(node, lines)
    raise ConfigError(f"{path_text(lines, node)}: unsupported YAML node")


def _scalar(node: ScalarNode, lines: Lines) -> Any:
    """The value of one scalar; one that YAML cannot build is an error at its line
    (the message names the tag or the kind of fault, never the value)."""
    try:
        return _SCALARS.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(
            f"{path_text(lines, node)}: this value cannot be read ({problem})"
        ) from None
    except (ValueError, TypeError, OverflowError) as exc:
        kind = node.tag.rpartition(":")[2]
        raise ConfigError(
            f"{path_text(lines, node)}: this value is not a valid {kind} "
            f"({type(exc).__name__}); quote it to keep it as text"
        ) from None


def path_text(lines: Lines, node: Node) -> str:
    return f"{lines.file}:{node.start_mark.line + 1}"
