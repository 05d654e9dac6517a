"""The warehouse connector's setup: its tables, its annotated search columns
and its database engine.

Kept apart from ``warehouse.py``, which erases, anonymises and verifies; this
module only reads settings. ``tables`` names each dataset's table and key
column; ``fides_datasets`` (lethe/fides.py) adds the columns the identity
search reads, and any annotated table no dataset names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from lethe.errors import ConfigError
from lethe.fides import Annotations

SearchColumns = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class DatasetConfig:
    """Where one dataset lives: its table (schema-qualified or not) and key."""

    schema: str | None
    table: str
    key_column: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


def parse_tables(
    system: str, tables: Mapping[str, Mapping[str, str]]
) -> dict[str, DatasetConfig]:
    """The ``tables`` setting, checked: each dataset needs a table and key."""
    parsed = {}
    for dataset, config in tables.items():
        if not config.get("table") or not config.get("key_column"):
            raise ConfigError(
                f"{system}: dataset {dataset!r} needs 'table' and 'key_column' in "
                "the tables setting"
            )
        schema, _, name = config["table"].rpartition(".")
        parsed[dataset] = DatasetConfig(schema or None, name, config["key_column"])
    return parsed


def search_columns(
    tables: dict[str, DatasetConfig], annotations: list[Annotations]
) -> dict[str, SearchColumns]:
    """(e-mail columns, phone columns) per annotated dataset.

    A collection no dataset names is added to ``tables``, keyed by the
    annotation's key field; a configured dataset keeps its own key column.
    """
    search: dict[str, SearchColumns] = {}
    for annotation in annotations:
        for tagged in annotation.tables:
            name = tagged.qualified
            dataset = next(
                (d for d, c in tables.items() if name in (d, c.qualified)), name
            )
            if dataset in search:
                raise ConfigError(
                    f"{annotation.path}: table {name!r} is annotated twice; keep one "
                    "Fides collection per table"
                )
            if dataset not in tables:
                tables[dataset] = DatasetConfig(
                    tagged.schema, tagged.collection, tagged.key
                )
            search[dataset] = (tagged.emails, tagged.phones)
    return search


def build_engine(system: str, url: str, timeout: float) -> Engine:
    """An engine that hides bound values and times statements out."""
    parsed = _parse_url(system, url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        connect_args: dict[str, Any] = {"timeout": timeout}
    elif backend == "postgresql":
        connect_args = {
            "connect_timeout": max(1, math.ceil(timeout)),
            "options": f"-c statement_timeout={math.ceil(timeout * 1000)}",
        }
    else:
        raise ConfigError(
            f"{system}: url names a {backend} database; this connector supports "
            "sqlite and postgresql"
        )
    try:
        engine = create_engine(
            parsed, echo=False, hide_parameters=True, connect_args=connect_args
        )
    except (sa_exc.ArgumentError, ImportError):
        raise ConfigError(
            f"{system}: no database driver for {parsed.drivername!r}; check url"
        ) from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _parse_url(system: str, url: str) -> URL:
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        raise ConfigError(f"{system}: url is not a database URL; check it") from None
    if parsed.drivername == "postgresql":
        # The project ships psycopg2; SQLAlchemy 2.1 would default to psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()
