"""Database URLs as lethe accepts them: SQLite or PostgreSQL, with the driver
lethe ships (psycopg2) chosen for a bare ``postgresql://`` URL, because
SQLAlchemy 2.1 would otherwise pick psycopg 3, which is not installed.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

from lethe.errors import ConfigError


def parse_database_url(url: str, *, setting: str) -> URL:
    """Parse and check a URL; ``setting`` names what to fix in the message."""
    try:
        parsed = make_url(url)
    except Exception:  # ArgumentError quotes the URL, which may hold a password
        raise ConfigError(
            f"{setting} is not a database URL; use sqlite:///path/file.db or "
            "postgresql://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"{setting} must be a SQLite or PostgreSQL URL, not {backend}"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed
