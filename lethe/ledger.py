"""The ledger: lethe's own database, and the truth about every action.

SQLite by default (a file in ``LETHE_HOME``), PostgreSQL when
``LETHE_DATABASE_URL`` says so; the same models run on both. SQLite runs with
``secure_delete`` so that deleted rows leave no bytes behind in free pages.
SQL echo is off and bound parameters are hidden from SQLAlchemy's error text, so
neither logs nor exceptions repeat the values lethe stores.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from lethe.config import Settings, load_settings
from lethe.dburl import parse_database_url
from lethe.errors import ConfigError

log = logging.getLogger(__name__)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with lethe's safety settings applied."""
    parsed = parse_database_url(url, setting="LETHE_DATABASE_URL")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.touch(mode=0o600, exist_ok=True)
        engine = create_engine(
            parsed,
            echo=False,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(parsed, echo=False, hide_parameters=True, pool_pre_ping=True)


def exists(settings: Settings | None = None) -> bool:
    """Whether the ledger is there already (a SQLite file; a server always is)."""
    parsed = parse_database_url(
        (settings or load_settings()).database_url, setting="LETHE_DATABASE_URL"
    )
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return True
    return Path(parsed.database).exists()


def require(settings: Settings | None = None) -> None:
    """Refuse to read a ledger that is not there, instead of making an empty one."""
    settings = settings or load_settings()
    if not exists(settings):
        if os.environ.get("LETHE_DATABASE_URL"):
            raise ConfigError(
                "LETHE_DATABASE_URL names a SQLite file that does not exist; "
                "check the path"
            )
        raise ConfigError(
            f"no ledger in {settings.home}: run lethe where its .lethe folder is, "
            "or set LETHE_HOME (or LETHE_DATABASE_URL)"
        )


def create_schema(engine: Engine) -> None:
    """Create every ledger table that does not exist yet."""
    # The model modules register their tables on SQLModel.metadata when imported.
    import erasure.models  # noqa: F401
    import lethe.vault  # noqa: F401
    import lineage.apievent_models  # noqa: F401
    import lineage.models  # noqa: F401
    import lineage.openlineage_models  # noqa: F401

    SQLModel.metadata.create_all(engine)


_engines: dict[str, Engine] = {}


def engine(settings: Settings | None = None) -> Engine:
    """The ledger engine for the current settings, schema created on first use."""
    url = (settings or load_settings()).database_url
    if url not in _engines:
        created = make_engine(url)
        create_schema(created)
        _engines[url] = created
    return _engines[url]


@contextmanager
def session(settings: Settings | None = None) -> Iterator[Session]:
    """A ledger session that commits on success and rolls back on error."""
    with Session(engine(settings), expire_on_commit=False) as db:
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise


def reset_engines() -> None:
    """Dispose of cached engines (tests switch LETHE_DATABASE_URL between ledgers)."""
    for cached in _engines.values():
        cached.dispose()
    _engines.clear()
