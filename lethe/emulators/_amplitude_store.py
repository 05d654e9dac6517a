"""The emulated Amplitude organisation's state in SQLite: users and events per
project, and the User Privacy API's deletion jobs.

Kept apart from the HTTP layer in ``amplitude.py`` because it holds the rules
rather than the wire format: how ids resolve to users, which job a request
joins, how a job's status follows from the clock, and what the scrub erases.

Time is counted in days of the injected clock (UTC). A job is filed for a run
day; it is ``staging`` before that day, ``submitted`` from it, its users'
events and profiles are scrubbed on ``scrub_day`` (shown as
``active_scrub_done_date``), and it is ``done`` on ``done_day``, once the
backups would be cleared. The three days are fixed when the job is created, so
a job keeps its schedule across a restart.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from lethe.emulators._jobstore import JobStore

logger = logging.getLogger(__name__)

# Amplitude IDs are large integers; starting here makes them look the part.
FIRST_AMPLITUDE_ID = 356_896_327_700

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    amplitude_id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    user_id TEXT,
    device_id TEXT
);
CREATE INDEX IF NOT EXISTS users_by_user ON users (project, user_id);
CREATE INDEX IF NOT EXISTS users_by_device ON users (project, device_id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    amplitude_id INTEGER NOT NULL,
    event_type TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (project, amplitude_id);
CREATE TABLE IF NOT EXISTS jobs (
    project TEXT NOT NULL,
    day TEXT NOT NULL,
    scrub_day TEXT NOT NULL,
    done_day TEXT NOT NULL,
    org_wide INTEGER NOT NULL DEFAULT 0,
    scrubbed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project, day)
);
CREATE TABLE IF NOT EXISTS job_members (
    project TEXT NOT NULL,
    day TEXT NOT NULL,
    amplitude_id INTEGER NOT NULL,
    user_id TEXT,
    requester TEXT,
    requested_on_day TEXT NOT NULL,
    PRIMARY KEY (project, day, amplitude_id)
);
"""


class JobChangeRefused(ValueError):
    """A job member cannot be removed: no such job or member, or it is locked."""


@dataclass(frozen=True)
class Schedule:
    """Days from a job's creation to its run, and from its run to scrub and done."""

    staging_days: int = 3
    scrub_days: int = 7
    done_after_scrub_days: int = 5


@dataclass(frozen=True)
class Member:
    """One user resolved from a requested id."""

    amplitude_id: int
    user_id: str | None


class AmplitudeStore(JobStore):
    """Users, events and deletion jobs of every project in one organisation."""

    _schema = _SCHEMA
    # reset forgets every user, event and job (Amplitude IDs are never reused)
    _tables = ("users", "events", "jobs", "job_members")

    def today(self) -> date:
        return datetime.fromtimestamp(self.clock(), UTC).date()

    # -- users and events --------------------------------------------------

    def add_event(
        self,
        project: str,
        user_id: str | None,
        event: str,
        device_id: str | None = None,
    ) -> int:
        """Record one event, creating the user on first sight; its Amplitude ID."""
        if not user_id and not device_id:
            raise ValueError("an event needs a user_id or a device_id")
        with self._lock, self._db:
            amplitude_id = self._user(project, user_id, device_id)
            self._db.execute(
                "INSERT INTO events (project, amplitude_id, event_type) "
                "VALUES (?, ?, ?)",
                (project, amplitude_id, event),
            )
        return amplitude_id

    def _user(self, project: str, user_id: str | None, device_id: str | None) -> int:
        column, value = ("user_id", user_id) if user_id else ("device_id", device_id)
        row = self._db.execute(
            f"SELECT amplitude_id, device_id FROM users "  # noqa: S608
            f"WHERE project = ? AND {column} = ?",
            (project, value),
        ).fetchone()
        if row is not None:
            if device_id and row["device_id"] is None:
                self._db.execute(
                    "UPDATE users SET device_id = ? WHERE amplitude_id = ?",
                    (device_id, row["amplitude_id"]),
                )
            return int(row["amplitude_id"])
        seen = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'users'"
        ).fetchone()
        explicit = FIRST_AMPLITUDE_ID if seen is None else None
        cursor = self._db.execute(
            "INSERT INTO users (amplitude_id, project, user_id, device_id) "
            "VALUES (?, ?, ?, ?)",
            (explicit, project, user_id, device_id),
        )
        return int(cursor.lastrowid or 0)

    def events_for(self, project: str, user_id: str) -> int:
        """Events of the user with this user_id in this project."""
        return self._scalar(
            "SELECT count(*) FROM events e JOIN users u "
            "ON u.amplitude_id = e.amplitude_id "
            "WHERE u.project = ? AND u.user_id = ?",
            (project, user_id),
        )

    def count(self) -> int:
        return self._scalar("SELECT count(*) FROM events", ())

    def checksum(self) -> str:
        """sha256 over every user and event in id order, to compare before/after."""
        return self._checksum(
            "SELECT * FROM users ORDER BY amplitude_id",
            "SELECT * FROM events ORDER BY seq",
        )

    def search(self, project: str, term: str) -> tuple[str, list[dict[str, Any]]]:
        """User Search: by user_id or device_id, or by Amplitude ID if numeric."""
        with self._lock:
            self._advance()
            rows: list[sqlite3.Row] = []
            kind = "nomatch"
            if term.isdigit():
                rows = self._db.execute(
                    "SELECT * FROM users WHERE project = ? AND amplitude_id = ?",
                    (project, int(term)),
                ).fetchall()
                kind = "match_amplitude_id" if rows else kind
            if not rows:
                rows = self._db.execute(
                    "SELECT * FROM users WHERE project = ? "
                    "AND (user_id = ? OR device_id = ?) ORDER BY amplitude_id",
                    (project, term, term),
                ).fetchall()
                kind = "match_user_or_device_id" if rows else kind
        matches = [
            {"amplitude_id": row["amplitude_id"], "user_id": row["user_id"]}
            for row in rows
        ]
        return kind, matches

    def resolve(
        self,
        project: str,
        amplitude_ids: Iterable[int],
        user_ids: Iterable[str],
    ) -> tuple[list[Member], list[int | str]]:
        """The users these ids name in the project, and the ids naming none."""
        members: dict[int, Member] = {}
        invalid: list[int | str] = []
        with self._lock:
            self._advance()
            for amplitude_id in amplitude_ids:
                row = self._db.execute(
                    "SELECT amplitude_id, user_id FROM users "
                    "WHERE project = ? AND amplitude_id = ?",
                    (project, amplitude_id),
                ).fetchone()
                self._collect(row, amplitude_id, members, invalid)
            for user_id in user_ids:
                row = self._db.execute(
                    "SELECT amplitude_id, user_id FROM users "
                    "WHERE project = ? AND user_id = ?",
                    (project, user_id),
                ).fetchone()
                self._collect(row, user_id, members, invalid)
        return list(members.values()), invalid

    @staticmethod
    def _collect(
        row: sqlite3.Row | None,
        requested: int | str,
        members: dict[int, Member],
        invalid: list[int | str],
    ) -> None:
        if row is None:
            invalid.append(requested)
            return
        members.setdefault(
            row["amplitude_id"], Member(row["amplitude_id"], row["user_id"])
        )

    # -- deletion jobs -----------------------------------------------------

    def schedule_deletion(
        self,
        project: str,
        members: Sequence[Member],
        *,
        requester: str | None,
        schedule: Schedule,
        org_wide: bool = False,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Add users to the project's open (staging) job, creating one if needed.

        Returns the job's summary and this request's entries (an id already in
        the job keeps its first entry). Nothing is stored when ``members`` is
        empty; the summary is then that of the job the ids would have joined.
        """
        with self._lock, self._db:
            self._advance()
            today = self.today()
            day = self._open_job_day(project, today)
            if day is None:
                day = (today + timedelta(days=schedule.staging_days)).isoformat()
                if members:
                    self._create_job(project, day, schedule)
            if members and org_wide:
                self._db.execute(
                    "UPDATE jobs SET org_wide = 1 WHERE project = ? AND day = ?",
                    (project, day),
                )
            self._db.executemany(
                "INSERT OR IGNORE INTO job_members (project, day, amplitude_id, "
                "user_id, requester, requested_on_day) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (project, day, m.amplitude_id, m.user_id, requester, str(today))
                    for m in members
                ],
            )
            entries = self._entries(project, day, [m.amplitude_id for m in members])
            summary = self._job(project, day)
        if summary is None:
            summary = {"day": day, "status": "staging", "amplitude_ids": []}
        logger.debug("deletion of %d user(s) scheduled in a job", len(members))
        return summary, entries

    def _open_job_day(self, project: str, today: date) -> str | None:
        row = self._db.execute(
            "SELECT max(day) FROM jobs WHERE project = ? AND day > ?",
            (project, today.isoformat()),
        ).fetchone()
        return row[0]

    def _create_job(self, project: str, day: str, schedule: Schedule) -> None:
        run = date.fromisoformat(day)
        scrub = run + timedelta(days=schedule.scrub_days)
        done = scrub + timedelta(days=schedule.done_after_scrub_days)
        self._db.execute(
            "INSERT INTO jobs (project, day, scrub_day, done_day) VALUES (?, ?, ?, ?)",
            (project, day, scrub.isoformat(), done.isoformat()),
        )

    def _entries(
        self, project: str, day: str, amplitude_ids: Sequence[int]
    ) -> list[dict[str, Any]]:
        wanted = set(amplitude_ids)
        return [e for e in self._members(project, day) if e["amplitude_id"] in wanted]

    def _members(self, project: str, day: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT amplitude_id, user_id, requester, requested_on_day "
            "FROM job_members WHERE project = ? AND day = ? ORDER BY amplitude_id",
            (project, day),
        ).fetchall()
        return [dict(row) for row in rows]

    def jobs(self, project: str, start: date, end: date) -> list[dict[str, Any]]:
        """The project's jobs whose run day is in [start, end], oldest first."""
        with self._lock:
            self._advance()
            days = self._db.execute(
                "SELECT day FROM jobs WHERE project = ? AND day BETWEEN ? AND ? "
                "ORDER BY day",
                (project, start.isoformat(), end.isoformat()),
            ).fetchall()
            found = [self._job(project, row["day"]) for row in days]
        return [job for job in found if job is not None]

    def _job(self, project: str, day: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT * FROM jobs WHERE project = ? AND day = ?", (project, day)
        ).fetchone()
        if row is None:
            return None
        job: dict[str, Any] = {
            "day": day,
            "status": self._status(row),
            "amplitude_ids": self._members(project, day),
            "org_wide": bool(row["org_wide"]),
        }
        if row["scrubbed"]:
            job["active_scrub_done_date"] = row["scrub_day"]
        return job

    def _status(self, row: sqlite3.Row) -> str:
        today = self.today().isoformat()
        if today < row["day"]:
            return "staging"
        if today < row["done_day"]:
            return "submitted"
        return "done"

    def remove_from_job(self, project: str, amplitude_id: int, day: str) -> dict:
        """Take one user out of a staging job; its entry as it was."""
        with self._lock, self._db:
            self._advance()
            job = self._db.execute(
                "SELECT * FROM jobs WHERE project = ? AND day = ?", (project, day)
            ).fetchone()
            if job is None:
                raise JobChangeRefused("no deletion job is scheduled for that day")
            if self._status(job) != "staging":
                raise JobChangeRefused("the job is no longer staging")
            entry = self._entries(project, day, [amplitude_id])
            if not entry:
                raise JobChangeRefused("the Amplitude ID is not in that job")
            self._db.execute(
                "DELETE FROM job_members WHERE project = ? AND day = ? "
                "AND amplitude_id = ?",
                (project, day, amplitude_id),
            )
        return entry[0]

    # -- the clock ---------------------------------------------------------

    def _advance(self) -> None:
        """Scrub every job whose scrub day has come: its users' data goes."""
        due = self._db.execute(
            "SELECT project, day FROM jobs WHERE scrubbed = 0 AND scrub_day <= ?",
            (self.today().isoformat(),),
        ).fetchall()
        if not due:
            return
        with self._db:
            for row in due:
                self._scrub(row["project"], row["day"])

    def _scrub(self, project: str, day: str) -> None:
        ids = [
            (project, r["amplitude_id"])
            for r in self._db.execute(
                "SELECT amplitude_id FROM job_members WHERE project = ? AND day = ?",
                (project, day),
            )
        ]
        self._db.executemany(
            "DELETE FROM events WHERE project = ? AND amplitude_id = ?", ids
        )
        self._db.executemany(
            "DELETE FROM users WHERE project = ? AND amplitude_id = ?", ids
        )
        self._db.execute(
            "UPDATE jobs SET scrubbed = 1 WHERE project = ? AND day = ?",
            (project, day),
        )
        logger.debug("deletion job scrubbed %d user(s)", len(ids))
