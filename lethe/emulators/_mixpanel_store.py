"""The emulated Mixpanel organisation's state in SQLite: events and user
profiles per project and distinct_id, GDPR deletion tasks, planned outcomes.

Kept apart from the HTTP layer in ``mixpanel.py`` because it holds the rules
rather than the wire format: how a deletion task's status follows from its
clock (PENDING → STAGING → STARTED → SUCCESS, one step each), when it may be
cancelled, and what its SUCCESS erases (the events and the profile of each
distinct_id, in that task's project only).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

from lethe.emulators._jobstore import (
    JobStore,
    PlannedOutcomeQueue,
    take_planned_outcome,
)

logger = logging.getLogger(__name__)

IN_PROGRESS = ("PENDING", "STAGING", "STARTED")
CANCELLABLE = frozenset({"PENDING", "STAGING"})
# What a task can end as; REVOKED also follows a cancel.
ENDINGS = frozenset({"SUCCESS", "FAILURE", "REVOKED", "NOT_FOUND", "UNKNOWN"})
COMPLIANCE_TYPES = frozenset({"GDPR", "CCPA"})

Cancelled = Literal["revoked", "too_late", "missing"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    project_token TEXT NOT NULL,
    distinct_id TEXT NOT NULL,
    insert_id TEXT NOT NULL,
    event TEXT NOT NULL,
    time REAL NOT NULL,
    properties TEXT NOT NULL,
    UNIQUE (project_token, insert_id)
);
CREATE INDEX IF NOT EXISTS events_subject ON events (project_token, distinct_id);
CREATE TABLE IF NOT EXISTS profiles (
    project_token TEXT NOT NULL,
    distinct_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    PRIMARY KEY (project_token, distinct_id)
);
CREATE TABLE IF NOT EXISTS deletions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tracking_id TEXT NOT NULL UNIQUE,
    project_token TEXT NOT NULL,
    project_id INTEGER NOT NULL,
    compliance_type TEXT NOT NULL,
    distinct_ids TEXT NOT NULL,
    requesting_user TEXT NOT NULL,
    created_at REAL NOT NULL,
    step_seconds REAL NOT NULL,
    planned_status TEXT NOT NULL,
    final_status TEXT,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS planned_outcomes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL
);
"""


def iso_naive(epoch: float) -> str:
    """Mixpanel's ``date_requested`` form: UTC, no offset, microseconds."""
    moment = datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds")


class PlannedOutcomes(PlannedOutcomeQueue):
    """Endings planned for the next deletion tasks created, one each, in order.

    Without one, a task ends SUCCESS. A planned FAILURE, REVOKED, NOT_FOUND or
    UNKNOWN ends the task at the moment it would otherwise have succeeded, and
    nothing is deleted.
    """

    def add(self, status: str) -> None:
        if status not in ENDINGS:
            raise ValueError(f"status must be one of {sorted(ENDINGS)}")
        self._store._execute(
            "INSERT INTO planned_outcomes (status) VALUES (?)", (status,)
        )


class MixpanelStore(JobStore):
    """Events, profiles and deletion tasks of every emulated project."""

    _schema = _SCHEMA
    # reset forgets every event, profile, deletion task and planned outcome
    _tables = ("events", "profiles", "deletions", "planned_outcomes")

    @cached_property
    def outcomes(self) -> PlannedOutcomes:
        return PlannedOutcomes(self)

    # -- events and profiles ----------------------------------------------

    def add_event(
        self,
        project_token: str,
        distinct_id: str,
        event: str,
        properties: dict[str, Any] | None = None,
        *,
        insert_id: str | None = None,
        time: float | None = None,
    ) -> bool:
        """Keep one event; False when the project already has its $insert_id."""
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO events (project_token, distinct_id, "
                "insert_id, event, time, properties) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    project_token,
                    distinct_id,
                    insert_id or uuid.uuid4().hex,
                    event,
                    self.clock() if time is None else time,
                    json.dumps(properties or {}, sort_keys=True),
                ),
            )
            return cursor.rowcount == 1

    def set_profile(
        self, project_token: str, distinct_id: str, properties: dict[str, Any]
    ) -> None:
        """``$set``: create the profile or overwrite the properties given."""
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT properties FROM profiles "
                "WHERE project_token = ? AND distinct_id = ?",
                (project_token, distinct_id),
            ).fetchone()
            merged = {**(json.loads(row[0]) if row else {}), **properties}
            self._db.execute(
                "INSERT OR REPLACE INTO profiles VALUES (?, ?, ?)",
                (project_token, distinct_id, json.dumps(merged, sort_keys=True)),
            )

    def events_for(self, project_token: str, distinct_id: str) -> int:
        return self._scalar(
            "SELECT count(*) FROM events WHERE project_token = ? AND distinct_id = ?",
            (project_token, distinct_id),
        )

    def has_profile(self, project_token: str, distinct_id: str) -> bool:
        return bool(
            self._scalar(
                "SELECT count(*) FROM profiles "
                "WHERE project_token = ? AND distinct_id = ?",
                (project_token, distinct_id),
            )
        )

    def count(self) -> int:
        """Events held across every project."""
        return self._scalar("SELECT count(*) FROM events", ())

    def checksum(self) -> str:
        """sha256 over every event and profile, to compare before and after."""
        return self._checksum(
            "SELECT project_token, distinct_id, insert_id, event, time, "
            "properties FROM events ORDER BY project_token, insert_id",
            "SELECT * FROM profiles ORDER BY project_token, distinct_id",
        )

    # -- deletion tasks ---------------------------------------------------

    def create_deletion(
        self,
        project_token: str,
        *,
        project_id: int,
        distinct_ids: Sequence[str],
        compliance_type: str = "GDPR",
        requesting_user: str = "privacy@example.com",
        step_seconds: float = 0.2,
    ) -> dict[str, Any]:
        """File a deletion task; it erases only when it reaches SUCCESS."""
        if compliance_type not in COMPLIANCE_TYPES:
            raise ValueError(f"compliance_type must be one of {COMPLIANCE_TYPES}")
        tracking_id = str(uuid.uuid4())
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO deletions (tracking_id, project_token, project_id, "
                "compliance_type, distinct_ids, requesting_user, created_at, "
                "step_seconds, planned_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tracking_id,
                    project_token,
                    project_id,
                    compliance_type,
                    json.dumps(list(dict.fromkeys(distinct_ids))),
                    requesting_user,
                    self.clock(),
                    step_seconds,
                    self._take_planned_outcome(),
                ),
            )
            row = self._row(project_token, tracking_id)
            assert row is not None
            task = self._task(row)
        logger.debug("deletion task %s filed", tracking_id)
        return task

    def _take_planned_outcome(self) -> str:
        row = take_planned_outcome(self._db, "status")
        return "SUCCESS" if row is None else str(row["status"])

    def deletion(self, project_token: str, tracking_id: str) -> dict[str, Any] | None:
        """One of the project's deletion tasks, or None."""
        with self._lock:
            self._advance()
            row = self._row(project_token, tracking_id)
            return None if row is None else self._task(row)

    def deletions(self, project_token: str) -> list[dict[str, Any]]:
        """The project's deletion tasks, newest first."""
        with self._lock:
            self._advance()
            rows = self._db.execute(
                "SELECT * FROM deletions WHERE project_token = ? ORDER BY seq DESC",
                (project_token,),
            ).fetchall()
            return [self._task(row) for row in rows]

    def cancel_deletion(self, project_token: str, tracking_id: str) -> Cancelled:
        """Revoke a task still PENDING or STAGING; from STARTED on it is too late."""
        with self._lock, self._db:
            self._advance()
            row = self._row(project_token, tracking_id)
            if row is None:
                return "missing"
            if self._status(row) not in CANCELLABLE:
                return "too_late"
            self._db.execute(
                "UPDATE deletions SET final_status = 'REVOKED', finished_at = ? "
                "WHERE tracking_id = ?",
                (self.clock(), tracking_id),
            )
        logger.debug("deletion task %s revoked", tracking_id)
        return "revoked"

    def _row(self, project_token: str, tracking_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute(
            "SELECT * FROM deletions WHERE project_token = ? AND tracking_id = ?",
            (project_token, tracking_id),
        ).fetchone()
        return row

    def _status(self, row: sqlite3.Row) -> str:
        if row["final_status"] is not None:
            return str(row["final_status"])
        steps = int((self.clock() - row["created_at"]) // row["step_seconds"])
        return IN_PROGRESS[min(max(steps, 0), len(IN_PROGRESS) - 1)]

    def _task(self, row: sqlite3.Row) -> dict[str, Any]:
        return {
            "tracking_id": row["tracking_id"],
            "status": self._status(row),
            "requesting_user": row["requesting_user"],
            "compliance_type": row["compliance_type"],
            "project_id": row["project_id"],
            "date_requested": iso_naive(row["created_at"]),
            "distinct_ids": json.loads(row["distinct_ids"]),
        }

    def _advance(self) -> None:
        """End every task whose three steps are over, erasing on SUCCESS."""
        due = self._db.execute(
            "SELECT * FROM deletions WHERE final_status IS NULL "
            "AND created_at + 3 * step_seconds <= ?",
            (self.clock(),),
        ).fetchall()
        if not due:
            return
        with self._db:
            for row in due:
                self._finish(row)

    def _finish(self, row: sqlite3.Row) -> None:
        status = row["planned_status"]
        if status == "SUCCESS":
            self._erase(row["project_token"], json.loads(row["distinct_ids"]))
        self._db.execute(
            "UPDATE deletions SET final_status = ?, finished_at = ? "
            "WHERE tracking_id = ?",
            (status, row["created_at"] + 3 * row["step_seconds"], row["tracking_id"]),
        )
        logger.debug("deletion task %s ended %s", row["tracking_id"], status)

    def _erase(self, project_token: str, distinct_ids: Sequence[str]) -> None:
        pairs = [(project_token, d) for d in distinct_ids]
        for table in ("events", "profiles"):
            self._db.executemany(
                f"DELETE FROM {table} WHERE project_token = ? AND distinct_id = ?",  # noqa: S608
                pairs,
            )
