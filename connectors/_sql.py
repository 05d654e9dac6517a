"""The warehouse connector's database vocabulary: placeholders and errors.

Kept apart from ``warehouse.py`` because neither depends on the erase plan,
only on the database: which value a column type accepts when a row is
anonymised, and what a driver error means. Errors are reduced to a SQLSTATE
or SQLite error name and a constraint's name, never the driver's message
text, which can quote the failing row.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import Column
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import sqltypes

from lethe.errors import ConfigError, ConnectorError, LetheError
from lethe.errors import TransientConnectorError as Transient

_EMAIL_COLUMN = re.compile(r"e_?mail", re.IGNORECASE)
_SQLITE_CONSTRAINT = re.compile(r"^[A-Z ]+ constraint failed(: .{1,200})?$")
_EPOCH = date(1970, 1, 1)

# PostgreSQL SQLSTATE classes that are worth a retry or point at a setting.
_PG_TRANSIENT = ("08", "40", "53", "57", "55P03")
_PG_CONFIG = ("28", "3D", "3F", "42")
_SQLITE_TRANSIENT = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})


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
