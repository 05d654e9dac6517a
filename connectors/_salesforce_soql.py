"""SOQL text the Salesforce connector sends, built so a value can never change
a query's meaning.

Object and field names are the connector's own checked identifiers; every
value goes through ``soql_literal`` (backslash first, then quotes and control
characters, as SOQL's escapes require). IN lists are cut to at most 200 values
and about 4,000 characters, inside the org's limits on a WHERE clause.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

__all__ = ["in_lists", "select", "soql_literal", "where_in"]

_IN_MAX_VALUES = 200
_IN_MAX_CHARS = 4_000
_SOQL_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def soql_literal(value: str) -> str:
    """A quoted SOQL string literal that means exactly ``value``."""
    return "'" + "".join(_SOQL_ESCAPES.get(char, char) for char in value) + "'"


def select(fields: Sequence[str], sobject: str, where: str = "") -> str:
    """SOQL text. Names are checked identifiers; values come from soql_literal."""
    text = f"SELECT {', '.join(fields)} FROM {sobject}"  # noqa: S608
    return f"{text} WHERE {where}" if where else text


def in_lists(values: Iterable[str]) -> Iterator[str]:
    """Comma-joined literals, at most 200 values and ~4,000 characters a list."""
    chunk: list[str] = []
    size = 0
    for literal in map(soql_literal, values):
        if chunk and (
            len(chunk) >= _IN_MAX_VALUES or size + len(literal) > _IN_MAX_CHARS
        ):
            yield ",".join(chunk)
            chunk, size = [], 0
        chunk.append(literal)
        size += len(literal) + 1
    if chunk:
        yield ",".join(chunk)


def where_in(
    sobject: str, fields: Sequence[str], column: str, values: Iterable[str]
) -> Iterator[str]:
    """One ``SELECT ... WHERE column IN (...)`` per IN list of ``values``."""
    for in_list in in_lists(values):
        yield select(fields, sobject, f"{column} IN ({in_list})")
