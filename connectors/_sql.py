"""The warehouse connector's database vocabulary: placeholders, errors and the
identity search.

Kept apart from ``warehouse.py`` because none depends on the erase plan, only
on the database: which value a column type accepts when a row is anonymised,
what a driver error means, and how to find rows by e-mail or phone. Errors are
reduced to a SQLSTATE or SQLite error name and a constraint's name, never the
driver's message text, which can quote the failing row.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, date, datetime, time
from typing import Any

import phonenumbers
from sqlalchemy import Column, ColumnElement, Connection, Table, func, or_, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import sqltypes

from lethe.errors import ConfigError, ConnectorError, InputError, LetheError
from lethe.errors import TransientConnectorError as Transient
from lethe.identity import normalize_email, normalize_phone

_EMAIL_COLUMN = re.compile(r"e_?mail", re.IGNORECASE)
_SQLITE_CONSTRAINT = re.compile(r"^[A-Z ]+ constraint failed(: .{1,200})?$")
_EPOCH = date(1970, 1, 1)

# PostgreSQL SQLSTATE classes that are worth a retry or point at a setting.
_PG_TRANSIENT = ("08", "40", "53", "57", "55P03")
_PG_CONFIG = ("28", "3D", "3F", "42")
_SQLITE_TRANSIENT = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})
# What people put between the digits of a phone number.
_PHONE_SEPARATORS = (" ", "-", "(", ")", ".", "/", "+", "\u00a0")
_SEARCH_CHUNK = 100


# -- placeholders --------------------------------------------------------------


def placeholder(col: Column[Any]) -> Any:
    """A value the column accepts that carries nothing of the original."""
    kind = col.type
    if col.nullable:
        return None
    if isinstance(kind, sqltypes.Enum) and kind.enums:
        return kind.enums[0]
    if isinstance(kind, sqltypes.String):
        return _text_placeholder(col.name, kind.length)
    if isinstance(kind, sqltypes.Boolean):
        return False
    if isinstance(kind, sqltypes.Integer | sqltypes.Numeric):
        return 0
    if isinstance(kind, sqltypes.DateTime):
        return datetime(1970, 1, 1, tzinfo=UTC if kind.timezone else None)
    if isinstance(kind, sqltypes.Date):
        return _EPOCH
    if isinstance(kind, sqltypes.Time):
        return time(0)
    if isinstance(kind, sqltypes.Uuid):
        return uuid.uuid4()
    raise ValueError(
        f"column {col.name!r} ({kind}) is NOT NULL and has no placeholder; make it "
        "nullable or leave it out of the anonymise columns"
    )


def _text_placeholder(name: str, length: int | None) -> str:
    token = secrets.token_hex(8)
    if not _EMAIL_COLUMN.search(name):
        return f"erased-{token}"[:length]

    for email in (f"erased-{token[:8]}@invalid.example", f"{token[:8]}@x.invalid"):
        if length is None or len(email) <= length:
            return email
    raise ValueError(
        f"column {name!r} holds at most {length} characters, too few for a "
        "placeholder e-mail address; widen it or make it nullable"
    )


# -- errors --------------------------------------------------------------------


def error_code(exc: sa_exc.DBAPIError) -> str:
    """SQLSTATE or SQLite error name: identifies the failure, holds no values."""
    orig = exc.orig
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlite_errorname", None)
    return str(code) if code else type(orig).__name__


def violated_constraint(exc: sa_exc.IntegrityError) -> str:
    """The violated constraint's name, from schema text only."""
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name:
        return f"constraint {name} on table {getattr(diag, 'table_name', '?')}"
    message = str(exc.orig)
    if _SQLITE_CONSTRAINT.match(message):
        return f"the constraint in '{message}'"
    return f"a constraint ({error_code(exc)})"


def translate_error(system: str, operation: str, exc: sa_exc.DBAPIError) -> LetheError:
    code = error_code(exc)
    where = f"{system}: {operation} failed ({code})"
    if isinstance(exc, sa_exc.IntegrityError):
        return ConnectorError(f"{where}; {violated_constraint(exc)} rejected it")
    if code in _SQLITE_TRANSIENT or code.startswith(_PG_TRANSIENT):
        return Transient(f"{where}; the database was busy, timed out or dropped")
    if code == "SQLITE_CANTOPEN" or code.startswith(_PG_CONFIG):
        return ConfigError(f"{where}; check url, tables and the role's grants")
    if isinstance(exc, sa_exc.OperationalError) and not code.startswith("SQLITE"):
        return Transient(f"{where}; could not reach the database, check url")
    return ConnectorError(f"{where}; check the database log for this statement")


# -- identity search -----------------------------------------------------------


def find_identities(
    conn: Connection,
    table: Table,
    key: Column[Any],
    *,
    email_columns: tuple[str, ...],
    phone_columns: tuple[str, ...],
    emails: set[str],
    phones: set[str],
    phone_region: str,
) -> list[str]:
    """Keys of the rows whose identifying columns hold one of the identities.

    ``emails`` and ``phones`` are already in lethe's normal form. SQL only
    narrows the rows (a loose, parameterised match that every stored spelling
    the normalisation accepts passes: case, padding, phone punctuation); each
    candidate value is then normalised in Python and compared exactly, so the
    table need not store identities normalised.
    """
    columns = [table.c[name] for name in (*email_columns, *phone_columns)]
    found: set[str] = set()
    for email_chunk, phone_chunk in _chunked(sorted(emails), sorted(phones)):
        probes = [
            *_email_probes(table, email_columns, email_chunk),
            *_phone_probes(table, phone_columns, phone_chunk),
        ]
        if not probes:
            continue
        query = select(key, *columns).where(or_(*probes))
        for row in conn.execute(query):
            values = dict(zip((*email_columns, *phone_columns), row[1:], strict=True))
            hit = any(_same_email(values[c], emails) for c in email_columns) or any(
                _same_phone(values[c], phones, phone_region) for c in phone_columns
            )
            if hit and row[0] is not None:
                found.add(str(row[0]))
    return sorted(found)


def _chunked(emails: list[str], phones: list[str]) -> list[tuple[list[str], list[str]]]:
    """Identities in batches: one statement for up to ``_SEARCH_CHUNK`` of each."""
    size = _SEARCH_CHUNK
    rounds = max(-(-len(emails) // size), -(-len(phones) // size))
    return [
        (emails[n * size : (n + 1) * size], phones[n * size : (n + 1) * size])
        for n in range(rounds)
    ]


def _email_probes(
    table: Table, names: tuple[str, ...], emails: list[str]
) -> list[ColumnElement[bool]]:
    probes = []
    for name in names:
        lowered = func.lower(table.c[name])
        for email in emails:
            probes.append(lowered.contains(_email_probe(email), autoescape=True))
    return probes


def _email_probe(email: str) -> str:
    """What a stored spelling of ``email`` must contain, lower-cased in SQL.

    SQLite lower-cases ASCII only, and case-folding is not lower-casing beyond
    it, so an address with other letters is narrowed by its domain alone (or
    not at all) and left to the exact comparison.
    """
    if email.isascii():
        return email
    domain = email.rsplit("@", 1)[1]
    return f"@{domain}" if domain.isascii() else "@"


def _phone_probes(
    table: Table, names: tuple[str, ...], phones: list[str]
) -> list[ColumnElement[bool]]:
    probes = []
    for name in names:
        digits: ColumnElement[Any] = table.c[name]
        for separator in _PHONE_SEPARATORS:
            digits = func.replace(digits, separator, "")
        for phone in phones:
            national = str(phonenumbers.parse(phone).national_number)
            probes.append(digits.contains(national, autoescape=True))
    return probes


def _same_email(value: Any, wanted: set[str]) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return normalize_email(value) in wanted
    except InputError:
        return False  # not an address: it names nobody


def _same_phone(value: Any, wanted: set[str], region: str) -> bool:
    if value is None:
        return False
    try:
        return normalize_phone(str(value), region=region) in wanted
    except InputError:
        return False
