"""The emulated Segment workspace's state in SQLite: tracked events, deletion
and suppression regulations, suppressed ids and planned outcomes.

Kept apart from the HTTP layer in ``segment.py`` because it holds the rules
rather than the wire format: which regulation types suppress, delete or are
forwarded to destinations, how a regulation's status follows from its clock,
and what its final status erases.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
import string
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from lethe.emulators._jobstore import (
    JobStore,
    PlannedOutcomeQueue,
    take_planned_outcome,
)

logger = logging.getLogger(__name__)

SUPPRESSING = frozenset(
    {"SUPPRESS_ONLY", "SUPPRESS_WITH_DELETE", "SUPPRESS_WITH_DELETE_INTERNAL"}
)
DELETING = frozenset(
    {
        "SUPPRESS_WITH_DELETE",
        "SUPPRESS_WITH_DELETE_INTERNAL",
        "DELETE_ONLY",
        "DELETE_INTERNAL",
        "DELETE_ARCHIVE_ONLY",
    }
)
# Only these two are forwarded to destinations; the rest stay inside Segment.
FORWARDED = frozenset({"SUPPRESS_WITH_DELETE", "DELETE_ONLY"})
FINAL_STATUSES = frozenset(
    {"FINISHED", "PARTIAL_SUCCESS", "FAILED", "INVALID", "NOT_SUPPORTED"}
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    message_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    user_id TEXT,
    anonymous_id TEXT,
    previous_id TEXT,
    event TEXT,
    properties TEXT NOT NULL,
    timestamp TEXT
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id);
CREATE INDEX IF NOT EXISTS events_anonymous ON events (anonymous_id);
CREATE TABLE IF NOT EXISTS regulations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    regulation_type TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subjects TEXT NOT NULL,
    source_id TEXT,
    destinations TEXT NOT NULL,
    created_at REAL NOT NULL,
    step_seconds REAL NOT NULL,
    planned_overall TEXT NOT NULL,
    destination_failed TEXT,
    final_status TEXT,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS suppressions (
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    PRIMARY KEY (subject_type, subject_id)
);
CREATE TABLE IF NOT EXISTS planned_outcomes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    overall TEXT NOT NULL,
    destination_failed TEXT
);
"""

_ALPHABET = string.ascii_letters + string.digits


def _new_id() -> str:
    """A 27-character base62 id, the shape of Segment's regulateIds."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(27))


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _destination_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:22]


class PlannedOutcomes(PlannedOutcomeQueue):
    """Endings planned for the next regulations filed, one each, in order.

    ``overall`` is the final overall status; ``destination_failed`` names a
    destination that ends FAILED while Segment's own deletion succeeds.
    """

    def add(
        self, overall: str = "FINISHED", destination_failed: str | None = None
    ) -> None:
        if overall not in FINAL_STATUSES:
            raise ValueError(f"overall must be one of {sorted(FINAL_STATUSES)}")
        self._store._execute(
            "INSERT INTO planned_outcomes (overall, destination_failed) VALUES (?, ?)",
            (overall, destination_failed),
        )


class SegmentStore(JobStore):
    """Events, regulations and suppressions of one emulated workspace."""

    _schema = _SCHEMA
    # reset forgets every event, regulation, suppression and planned outcome
    _tables = ("events", "regulations", "suppressions", "planned_outcomes")

    @cached_property
    def outcomes(self) -> PlannedOutcomes:
        return PlannedOutcomes(self)

    # -- events ------------------------------------------------------------

    def add_event(
        self,
        *,
        type: str,
        message_id: str | None = None,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        previous_id: str | None = None,
        event: str | None = None,
        properties: dict[str, Any] | None = None,
        timestamp: str | None = None,
    ) -> bool:
        """Keep one event; False when its messageId was seen or it is suppressed."""
        with self._lock, self._db:
            if self._is_suppressed(user_id, anonymous_id, previous_id):
                return False
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO events (message_id, type, user_id, "
                "anonymous_id, previous_id, event, properties, timestamp) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message_id or str(uuid.uuid4()),
                    type,
                    user_id,
                    anonymous_id,
                    previous_id,
                    event,
                    json.dumps(properties or {}, sort_keys=True),
                    timestamp,
                ),
            )
            return cursor.rowcount == 1

    def events_for(self, user_id: str) -> int:
        """Events carrying this userId (or naming it as an alias's previousId)."""
        return self._scalar(
            "SELECT count(*) FROM events WHERE user_id = ? OR previous_id = ?",
            (user_id, user_id),
        )

    def events_for_anonymous(self, anonymous_id: str) -> int:
        return self._scalar(
            "SELECT count(*) FROM events WHERE anonymous_id = ? OR previous_id = ?",
            (anonymous_id, anonymous_id),
        )

    def count(self) -> int:
        return self._scalar("SELECT count(*) FROM events", ())

    def checksum(self) -> str:
        """sha256 over every event in messageId order, to compare before/after."""
        return self._checksum("SELECT * FROM events ORDER BY message_id")

    # -- suppressions ------------------------------------------------------

    def _is_suppressed(self, *ids: str | None) -> bool:
        present = [i for i in ids if i]
        if not present:
            return False
        marks = ", ".join("?" for _ in present)
        row = self._db.execute(
            f"SELECT 1 FROM suppressions WHERE subject_id IN ({marks}) LIMIT 1",  # noqa: S608
            present,
        ).fetchone()
        return row is not None

    def is_suppressed(self, subject_id: str) -> bool:
        with self._lock:
            return self._is_suppressed(subject_id)

    def suppressions(self) -> list[tuple[str, str]]:
        """(subjectType, subjectId) pairs, sorted."""
        with self._lock:
            rows = self._db.execute(
                "SELECT subject_type, subject_id FROM suppressions "
                "ORDER BY subject_type, subject_id"
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    # -- regulations -------------------------------------------------------

    def create_regulation(
        self,
        *,
        regulation_type: str,
        subject_type: str,
        subject_ids: Sequence[str],
        source_id: str | None = None,
        destinations: Sequence[str] = (),
        step_seconds: float = 0.2,
    ) -> str:
        """File a regulation; suppression takes effect at once, deletion at the end."""
        regulate_id = _new_id()
        forwarded = list(destinations) if regulation_type in FORWARDED else []
        with self._lock, self._db:
            overall, failed_destination = self._take_planned_outcome()
            self._db.execute(
                "INSERT INTO regulations (id, regulation_type, subject_type, "
                "subjects, source_id, destinations, created_at, step_seconds, "
                "planned_overall, destination_failed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    regulate_id,
                    regulation_type,
                    subject_type,
                    json.dumps(list(subject_ids)),
                    source_id,
                    json.dumps(forwarded),
                    self.clock(),
                    step_seconds,
                    overall,
                    failed_destination,
                ),
            )
            self._apply_suppression(regulation_type, subject_type, subject_ids)
        logger.debug("regulation %s filed (%s)", regulate_id, regulation_type)
        return regulate_id

    def _take_planned_outcome(self) -> tuple[str, str | None]:
        row = take_planned_outcome(self._db, "overall, destination_failed")
        if row is None:
            return "FINISHED", None
        return row["overall"], row["destination_failed"]

    def _apply_suppression(
        self, regulation_type: str, subject_type: str, subject_ids: Iterable[str]
    ) -> None:
        pairs = [(subject_type, s) for s in subject_ids]
        if regulation_type in SUPPRESSING:
            self._db.executemany(
                "INSERT OR IGNORE INTO suppressions VALUES (?, ?)", pairs
            )
        elif regulation_type == "UNSUPPRESS":
            self._db.executemany(
                "DELETE FROM suppressions WHERE subject_type = ? AND subject_id = ?",
                pairs,
            )

    def _advance(self) -> None:
        """Give every regulation whose time is up its final status and effect."""
        now = self.clock()
        due = self._db.execute(
            "SELECT * FROM regulations WHERE final_status IS NULL "
            "AND created_at + 2 * step_seconds <= ?",
            (now,),
        ).fetchall()
        if not due:
            return
        with self._db:
            for row in due:
                self._finish(row)

    def _finish(self, row: sqlite3.Row) -> None:
        overall = row["planned_overall"]
        deleted = overall in ("FINISHED", "PARTIAL_SUCCESS") or (
            overall == "FAILED" and row["destination_failed"] is not None
        )
        if deleted and row["regulation_type"] in DELETING:
            self._delete_subjects(row["subject_type"], json.loads(row["subjects"]))
        finished_at = row["created_at"] + 2 * row["step_seconds"]
        self._db.execute(
            "UPDATE regulations SET final_status = ?, finished_at = ? WHERE id = ?",
            (overall, finished_at, row["id"]),
        )
        logger.debug("regulation %s ended %s", row["id"], overall)

    def _delete_subjects(self, subject_type: str, subject_ids: Sequence[str]) -> None:
        column = {"USER_ID": "user_id", "ANONYMOUS_ID": "anonymous_id"}.get(
            subject_type
        )
        if column is None:
            return  # OBJECT_ID: cloud-source objects, which this emulator lacks
        for subject_id in subject_ids:
            self._db.execute(
                f"DELETE FROM events WHERE {column} = ? OR previous_id = ?",  # noqa: S608
                (subject_id, subject_id),
            )

    def _status(self, row: sqlite3.Row) -> str:
        if row["final_status"] is not None:
            return str(row["final_status"])
        elapsed = self.clock() - row["created_at"]
        return "INITIALIZED" if elapsed < row["step_seconds"] else "RUNNING"

    def _destination_statuses(
        self, row: sqlite3.Row, overall: str
    ) -> list[dict[str, Any]]:
        names: list[str] = json.loads(row["destinations"])
        failed = row["destination_failed"]
        if failed is None and overall == "PARTIAL_SUCCESS" and names:
            failed = names[0]
        result = []
        for name in names:
            if overall not in FINAL_STATUSES or failed is None:
                status = overall
            else:
                status = "FAILED" if name == failed else "FINISHED"
            result.append(
                {
                    "name": name,
                    "id": _destination_id(name),
                    "status": status,
                    "errString": (
                        "the destination rejected the deletion"
                        if status == "FAILED"
                        else ""
                    ),
                    "finishedAt": _iso(row["finished_at"]),
                }
            )
        return result

    def _summary(self, row: sqlite3.Row) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "id": row["id"],
            "subjectType": row["subject_type"],
            "subjects": json.loads(row["subjects"]),
            "status": self._status(row),
            "createdAt": _iso(row["created_at"]),
            "regulationType": row["regulation_type"],
            "sourceId": row["source_id"],
        }
        if row["finished_at"] is not None:
            summary["finishedAt"] = _iso(row["finished_at"])
        return summary

    def regulations(self) -> list[dict[str, Any]]:
        """Every regulation, newest first, in the list shape plus ``sourceId``."""
        return self._listed("SELECT * FROM regulations ORDER BY seq DESC", ())

    def scoped_regulations(self, source_id: str | None) -> list[dict[str, Any]]:
        """Workspace-scoped regulations (``None``) or one source's, newest first."""
        return self._listed(
            "SELECT * FROM regulations WHERE source_id IS ? ORDER BY seq DESC",
            (source_id,),
        )

    def _listed(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with self._lock:
            self._advance()
            rows = self._db.execute(sql, params).fetchall()
            return [self._summary(row) for row in rows]

    def regulation(self, regulate_id: str) -> dict[str, Any] | None:
        """One regulation with its per-destination statuses, or None."""
        with self._lock:
            self._advance()
            row = self._db.execute(
                "SELECT * FROM regulations WHERE id = ?", (regulate_id,)
            ).fetchone()
            if row is None:
                return None
            detail = self._summary(row)
            detail["destinationStatus"] = self._destination_statuses(
                row, detail["status"]
            )
            return detail
