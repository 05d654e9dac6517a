"""A SOQL subset: ``SELECT f, ... FROM Obj [WHERE ...] [LIMIT n]``.

Conditions are ``=``, ``!=``/``<>``, ``IN``, ``NOT IN`` and ``LIKE`` on string,
id, boolean, number and ``null`` literals, joined by ``AND`` or ``OR`` (mixing
the two needs parentheses, as in SOQL) and negated by ``NOT``. Date and
datetime fields also take ``<``, ``<=``, ``>`` and ``>=`` (and ``=``) against an
unquoted date (``2026-01-31``) or datetime literal (``2026-01-31T08:00:00Z``,
``...+01:00``, optionally with milliseconds), which is what
``SELECT ... FROM ApiEvent WHERE EventDate > ...`` needs; range operators on
other kinds of field are left out. Keywords and
field names are case-insensitive; text compares case-insensitively and ids by
their 18-character form, the way the real org does. String literals take
SOQL's backslash escapes. Errors carry the org's codes: MALFORMED_QUERY,
INVALID_FIELD, INVALID_QUERY_FILTER_OPERATOR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lethe.emulators._salesforce_schema import SalesforceError, normal_id

_KEYWORDS = frozenset(
    "SELECT FROM WHERE AND OR NOT IN LIKE LIMIT ORDER BY GROUP HAVING OFFSET "
    "NULL TRUE FALSE INCLUDES EXCLUDES WITH USING TYPEOF".split()
)
_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<str>'(?:[^'\\]|\\.)*')
    |(?P<dt>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2}))?)
    |(?P<num>-?\d+(?:\.\d+)?)
    |(?P<op>!=|<>|<=|>=|=|<|>)
    |(?P<punct>[(),])
    |(?P<word>[A-Za-z_][A-Za-z0-9_.]*)""",
    re.X | re.S,
)
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPES |= {"b": "\b", "f": "\f"}
_MAX_SOQL = 100_000
_MAX_WHERE_STRING = 4_000
_RANGE = ("<", "<=", ">", ">=")


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


@dataclass(frozen=True)
class _Literal:
    value: str | float | bool | datetime | None
    raw: str = ""  # the quoted source of a string, for LIKE's own escapes


@dataclass
class Soql:
    """A parsed query: object, selected fields, filter tree, limit."""

    sobject: str
    fields: list[str]
    where: tuple[Any, ...] | None
    limit: int | None
    text: str


def _malformed(text: str, pos: int, why: str) -> SalesforceError:
    snippet = text[max(0, pos - 40) : pos + 40]
    message = f"\n{snippet}\n^\nERROR at Row:1:Column:{pos + 1}\n{why}"
    return SalesforceError(400, "MALFORMED_QUERY", message)


def _tokenize(text: str) -> list[_Tok]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _malformed(text, pos, f"unexpected token: '{text[pos]}'")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Tok(kind, match.group(), pos))
        pos = match.end()
    return tokens


def _escape_at(body: str, i: int, text: str, pos: int) -> str:
    """The character a backslash sequence in a string literal stands for."""
    nxt = body[i + 1] if i + 1 < len(body) else ""
    if nxt in _ESCAPES or nxt in ("_", "%"):
        return _ESCAPES.get(nxt, nxt)
    why = f"Invalid string literal. Illegal character sequence '\\{nxt}' in string"
    raise _malformed(text, pos, why)


def _unescape(raw: str, text: str, pos: int) -> str:
    out, i, body = [], 0, raw[1:-1]
    while i < len(body):
        if body[i] == "\\":
            out.append(_escape_at(body, i, text, pos))
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _like_regex(raw: str, text: str, pos: int) -> re.Pattern[str]:
    """LIKE's % and _ wildcards; an escaped \\% or \\_ matches itself."""
    pattern, i, body = [], 0, raw[1:-1]
    while i < len(body):
        if body[i] == "\\":
            pattern.append(re.escape(_escape_at(body, i, text, pos)))
            i += 2
            continue
        pattern.append({"%": ".*", "_": "."}.get(body[i], re.escape(body[i])))
        i += 1
    return re.compile("".join(pattern), re.I | re.S)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def parse(self) -> Soql:
        self._keyword("SELECT")
        fields = [self._name()]
        while self._accept(","):
            fields.append(self._name())
        self._keyword("FROM")
        sobject = self._name()
        where = self._expr() if self._accept_keyword("WHERE") else None
        limit = self._integer() if self._accept_keyword("LIMIT") else None
        if self.i < len(self.tokens):
            self._fail()
        return Soql(sobject, fields, where, limit, self.text)

    def _peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _fail(self, why: str | None = None) -> SalesforceError:
        tok = self._peek()
        if tok is None:
            raise _malformed(
                self.text, len(self.text), why or "unexpected end of query"
            )
        raise _malformed(self.text, tok.pos, why or f"unexpected token: '{tok.text}'")

    def _accept(self, text: str) -> bool:
        tok = self._peek()
        if tok is not None and tok.kind in ("punct", "op") and tok.text == text:
            self.i += 1
            return True
        return False

    def _accept_keyword(self, word: str) -> bool:
        tok = self._peek()
        if tok is not None and tok.kind == "word" and tok.text.upper() == word:
            self.i += 1
            return True
        return False

    def _keyword(self, word: str) -> None:
        if not self._accept_keyword(word):
            self._fail()

    def _name(self) -> str:
        tok = self._peek()
        if tok is None or tok.kind != "word" or tok.text.upper() in _KEYWORDS:
            self._fail()
        self.i += 1
        return tok.text  # type: ignore[union-attr]

    def _integer(self) -> int:
        tok = self._peek()
        if tok is None or tok.kind != "num" or not tok.text.isdigit():
            self._fail()
        self.i += 1
        return int(tok.text)  # type: ignore[union-attr]

    def _expr(self) -> tuple[Any, ...]:
        items, joiner = [self._factor()], None
        while (tok := self._peek()) is not None and tok.text.upper() in ("AND", "OR"):
            word = tok.text.upper()
            if joiner is not None and word != joiner:
                self._fail()  # SOQL wants parentheses to mix AND and OR
            joiner = word
            self.i += 1
            items.append(self._factor())
        return (joiner.lower(), items) if joiner else items[0]

    def _factor(self) -> tuple[Any, ...]:
        if self._accept("("):
            node = self._expr()
            if not self._accept(")"):
                self._fail()
            return node
        if self._accept_keyword("NOT"):
            return ("not", self._factor())
        return self._condition()

    def _condition(self) -> tuple[Any, ...]:
        start = self._peek()
        name = self._name()
        pos = start.pos if start else 0
        if self._accept_keyword("NOT"):
            self._keyword("IN")
            return ("cmp", name, "not in", self._values(), pos)
        if self._accept_keyword("IN"):
            return ("cmp", name, "in", self._values(), pos)
        if self._accept_keyword("LIKE"):
            return ("cmp", name, "like", [self._value()], pos)
        tok = self._peek()
        if tok is None or tok.kind != "op":
            self._fail()
        self.i += 1
        op = {"<>": "!="}.get(tok.text, tok.text)  # type: ignore[union-attr]
        return ("cmp", name, op, [self._value()], pos)

    def _values(self) -> list[_Literal]:
        if not self._accept("("):
            self._fail()
        values = [self._value()]
        while self._accept(","):
            values.append(self._value())
        if not self._accept(")"):
            self._fail()
        return values

    def _value(self) -> _Literal:
        tok = self._peek()
        if tok is None:
            self._fail()
        self.i += 1
        if tok.kind == "str":  # type: ignore[union-attr]
            text = _unescape(tok.text, self.text, tok.pos)  # type: ignore[union-attr]
            if len(text) > _MAX_WHERE_STRING:
                self._fail("a string in a WHERE clause exceeds 4,000 characters")
            return _Literal(text, tok.text)  # type: ignore[union-attr]
        if tok.kind == "num":  # type: ignore[union-attr]
            return _Literal(float(tok.text))  # type: ignore[union-attr]
        if tok.kind == "dt":  # type: ignore[union-attr]
            return _Literal(instant(tok.text))  # type: ignore[union-attr]
        word = tok.text.upper()  # type: ignore[union-attr]
        if word in ("TRUE", "FALSE", "NULL"):
            return _Literal({"TRUE": True, "FALSE": False, "NULL": None}[word])
        self.i -= 1
        self._fail()
        raise AssertionError  # unreachable


def instant(text: str) -> datetime:
    """A date or datetime as the org writes it (``...+0000``, ``Z``), in UTC."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def parse_soql(text: str) -> Soql:
    """Parse the supported SOQL subset or raise SalesforceError(MALFORMED_QUERY)."""
    if len(text) > _MAX_SOQL:
        raise SalesforceError(
            400, "MALFORMED_QUERY", "SOQL statements cannot exceed 100,000 characters"
        )
    return _Parser(text).parse()


class Resolved:
    """A parsed query checked against the schema, ready to filter records."""

    def __init__(self, query: Soql, schema: dict[str, str], sobject: str) -> None:
        self.sobject = sobject
        self.query = query
        self._schema = schema
        self._lower = {name.lower(): name for name in schema}
        self.fields = [self._field(name, 0) for name in query.fields]
        if len(set(self.fields)) != len(self.fields):
            raise _malformed(query.text, 0, "duplicate field selected")
        self.where = self._check(query.where) if query.where else None
        self.limit = query.limit

    def _field(self, name: str, pos: int) -> str:
        if "." in name:
            why = f"Didn't understand relationship '{name.split('.')[0]}' in field path"
            raise SalesforceError(400, "INVALID_FIELD", why)
        canonical = self._lower.get(name.lower())
        if canonical is None:
            why = (
                f"No such column '{name}' on entity '{self.sobject}'. If you are "
                "attempting to use a custom field, be sure to append the '__c' "
                "after the custom field name."
            )
            raise SalesforceError(400, "INVALID_FIELD", why)
        return canonical

    def _check(self, node: tuple[Any, ...]) -> tuple[Any, ...]:
        if node[0] in ("and", "or"):
            return (node[0], [self._check(item) for item in node[1]])
        if node[0] == "not":
            return ("not", self._check(node[1]))
        _, name, op, values, pos = node
        canonical = self._field(name, pos)
        kind = self._schema[canonical]
        coerced = [self._coerce(canonical, kind, op, value) for value in values]
        return ("cmp", canonical, op, coerced, kind)

    def _coerce(self, name: str, kind: str, op: str, literal: _Literal) -> Any:
        value = literal.value
        if op in _RANGE or isinstance(value, datetime):
            return _moment(name, kind, op, value)
        if op == "like":
            if kind != "text" or not isinstance(value, str):
                raise SalesforceError(
                    400, "INVALID_FIELD", f"invalid operator on field '{name}': LIKE"
                )
            return _like_regex(literal.raw, self.query.text, 0)
        if value is None:
            return None
        if kind in ("id", "ref"):
            normal = normal_id(value)
            if normal is None:
                raise SalesforceError(
                    400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}"
                )
            return normal
        if kind == "bool":
            if not isinstance(value, bool):
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"value of filter criterion for field '{name}' must be of type "
                    "boolean and should not be enclosed in quotes",
                )
            return value
        if kind == "num":
            return float(value) if isinstance(value, float) else value
        if not isinstance(value, str):
            raise SalesforceError(
                400,
                "INVALID_FIELD",
                f"value of filter criterion for field '{name}' must be of type "
                "string and should be enclosed in quotes",
            )
        return value.lower()

    def matches(self, record: dict[str, Any]) -> bool:
        return self.where is None or _eval(self.where, record)


def _moment(name: str, kind: str, op: str, value: Any) -> datetime:
    """A date literal checked against its field (range operators need one)."""
    if kind != "date":
        why = f"invalid operator on field '{name}': {op} (the emulator compares "
        raise SalesforceError(
            400, "INVALID_FIELD", why + "dates only, with <, <=, > and >=)"
        )
    if not isinstance(value, datetime):
        raise SalesforceError(
            400,
            "INVALID_FIELD",
            f"value of filter criterion for field '{name}' must be of type date "
            "and should not be enclosed in quotes",
        )
    return value


def _later(actual: Any, op: str, expected: datetime) -> bool:
    if not isinstance(actual, str) or not actual:
        return False
    moment = instant(actual)
    if op == "<":
        return moment < expected
    if op == "<=":
        return moment <= expected
    return moment > expected if op == ">" else moment >= expected


def _equal(actual: Any, expected: Any, kind: str) -> bool:
    if actual is None or expected is None:
        return actual is expected
    if isinstance(expected, datetime):
        return isinstance(actual, str) and instant(actual) == expected
    if kind in ("id", "ref"):
        return bool(actual == expected)  # both 18-character, case kept
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.lower() == expected
    if isinstance(expected, float) and isinstance(actual, int | float):
        return float(actual) == expected
    return bool(actual == expected)


def _eval(node: tuple[Any, ...], record: dict[str, Any]) -> bool:
    kind = node[0]
    if kind == "and":
        return all(_eval(item, record) for item in node[1])
    if kind == "or":
        return any(_eval(item, record) for item in node[1])
    if kind == "not":
        return not _eval(node[1], record)
    _, name, op, values, field_kind = node
    actual = record.get(name)
    if op == "like":
        return isinstance(actual, str) and values[0].fullmatch(actual) is not None
    if op in _RANGE:
        return _later(actual, op, values[0])
    hit = any(_equal(actual, value, field_kind) for value in values)
    return hit if op in ("=", "in") else not hit
