"""The SQLite and clock scaffolding that the async-vendor emulator stores share.

Segment regulations, Mixpanel deletion tasks and Amplitude deletion jobs are all
vendor-side jobs whose status follows from an injected clock. Each store keeps
its own schema and rules; what lives here is the part that is the same in all
of them: one connection behind one lock, reads that first bring every due job
to its end (``_advance``), a before/after checksum, and the queue of planned
outcomes that tests use to script unhappy endings.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class JobStore:
    """One emulated vendor's tables in SQLite, read through the injected clock.

    Subclasses name their ``_schema`` and the ``_tables`` that ``reset``
    empties, and implement ``_advance``.
    """

    _schema: str = ""
    _tables: tuple[str, ...] = ()

    def __init__(
        self, path: Path | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path), check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.executescript(self._schema)
        self.clock = clock

    def _advance(self) -> None:
        raise NotImplementedError("each store decides when its jobs end")

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        with self._lock, self._db:
            self._db.execute(sql, params)

    def _scalar(self, sql: str, params: Sequence[Any]) -> int:
        with self._lock:
            self._advance()
            return int(self._db.execute(sql, params).fetchone()[0])

    def _checksum(self, *queries: str) -> str:
        """sha256 over the rows of each query in turn, after due jobs have ended."""
        digest = hashlib.sha256()
        with self._lock:
            self._advance()
            for sql in queries:
                for row in self._db.execute(sql):
                    digest.update(json.dumps(list(row), default=str).encode())
                    digest.update(b"\n")
        return digest.hexdigest()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def reset(self) -> None:
        """Empty every table of the store."""
        with self._lock, self._db:
            for table in self._tables:
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608


class PlannedOutcomeQueue:
    """Endings planned for the next jobs filed, one each, in order.

    Rows live in the store's ``planned_outcomes`` table (``seq`` plus the
    vendor's own columns); each vendor's subclass adds a checked ``add``.
    """

    def __init__(self, store: JobStore) -> None:
        self._store = store

    def clear(self) -> None:
        self._store._execute("DELETE FROM planned_outcomes", ())

    def pending(self) -> int:
        return self._store._scalar("SELECT count(*) FROM planned_outcomes", ())


def take_planned_outcome(db: sqlite3.Connection, columns: str) -> sqlite3.Row | None:
    """Remove and return the oldest planned outcome's ``columns``, or None.

    Call with the store's lock held, inside the transaction that files the job,
    so the outcome is used up exactly when the job exists.
    """
    row: sqlite3.Row | None = db.execute(
        f"SELECT seq, {columns} FROM planned_outcomes ORDER BY seq LIMIT 1"  # noqa: S608
    ).fetchone()
    if row is not None:
        db.execute("DELETE FROM planned_outcomes WHERE seq = ?", (row["seq"],))
    return row
