"""The emulated org's state in SQLite: records, sessions, query cursors,
Bulk API 2.0 ingest jobs and the ApiEvent log, with the org's delete rules.

A soft delete sets ``IsDeleted`` (the Recycle Bin, still seen by queryAll); a
hard delete removes the row. A Contact that live Cases reference cannot be
deleted (DELETE_FAILED), so callers delete children first; deleting a Contact
or Lead leaves its Individual alone, as the org does. A closed Bulk job does its
work in one go when its clock says JobComplete (``_salesforce_bulk``).

Each session belongs to an integration user (a Username with its own 005 id)
and remembers the connected app that issued it until its first API call: that
call is the one that authenticated, so only its ApiEvent carries the
ConnectedAppId (``_salesforce_sessions``, ``_salesforce_events``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lethe.emulators._salesforce_bulk import process_job
from lethe.emulators._salesforce_schema import (
    BY_PREFIX,
    DERIVED,
    KEY_PREFIXES,
    PERSON_NAMED,
    REQUIRED,
    SCHEMA,
    SYSTEM_FIELDS,
    SalesforceError,
    make_id,
    normal_id,
    not_found,
    sf_time,
)
from lethe.emulators._salesforce_sessions import (
    DEFAULT_USERNAME,
    SESSIONS_DDL,
    Sessions,
)

_DDL = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    sobject TEXT NOT NULL,
    fields TEXT NOT NULL,
    is_deleted INTEGER NOT NULL DEFAULT 0,
    created_date TEXT NOT NULL,
    system_modstamp TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_object ON records (sobject, is_deleted);
CREATE TABLE IF NOT EXISTS counters (prefix TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS custom_fields (
    sobject TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (sobject, name)
);
CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY, issued_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (
    locator TEXT PRIMARY KEY, records TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cursor_context (
    locator TEXT PRIMARY KEY, context TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    upload TEXT,
    progress_at REAL,
    complete_at REAL,
    success_csv TEXT,
    failed_csv TEXT
);
"""
_CURSOR_TTL = 15 * 60


class SalesforceStore(Sessions):
    """The org's records, tokens, query cursors and Bulk jobs, in SQLite."""

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.RLock()
        target = str(path) if path is not None else ":memory:"
        self._db = sqlite3.connect(
            target, check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_DDL + SESSIONS_DDL)
        self.org_id = make_id("00D", 1)
        self.user_id = make_id("005", 1)
        self._db.execute(
            "INSERT OR IGNORE INTO users VALUES (?, ?)",
            (DEFAULT_USERNAME, self.user_id),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _next(self, prefix: str) -> int:
        row = self._db.execute(
            "INSERT INTO counters VALUES (?, 1) ON CONFLICT (prefix) "
            "DO UPDATE SET value = value + 1 RETURNING value",
            (prefix,),
        ).fetchone()
        return int(row[0])

    def new_id(self, prefix: str) -> str:
        """A fresh 18-character id with this key prefix."""
        with self._transaction():
            return make_id(prefix, self._next(prefix))

    # -- schema ------------------------------------------------------------

    def schema(self, sobject: str) -> dict[str, str]:
        """Field name → kind for an object, custom fields included."""
        fields = dict(SCHEMA[sobject])
        with self._lock:
            rows = self._db.execute(
                "SELECT name FROM custom_fields WHERE sobject = ?", (sobject,)
            ).fetchall()
        fields.update({row[0]: "text" for row in rows})
        return fields

    def canonical_sobject(self, name: str) -> str | None:
        return {key.lower(): key for key in SCHEMA}.get(name.lower())

    def _canonical_fields(
        self, sobject: str, values: dict[str, Any], *, creating: bool
    ) -> dict[str, Any]:
        schema = self.schema(sobject)
        lower = {name.lower(): name for name in schema}
        result: dict[str, Any] = {}
        for name, value in values.items():
            canonical = lower.get(name.lower())
            if canonical is None and name.endswith("__c") and creating:
                self._db.execute(
                    "INSERT OR IGNORE INTO custom_fields VALUES (?, ?)", (sobject, name)
                )
                canonical, schema[name] = name, "text"
            if canonical is None:
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on sobject of type {sobject}",
                    [name],
                )
            writable = creating and canonical == "CreatedDate"
            if (canonical in SYSTEM_FIELDS or canonical in DERIVED[sobject]) and (
                not writable
            ):
                raise SalesforceError(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {canonical}. Please check the "
                    "security settings of this field",
                    [canonical],
                )
            if schema[canonical] in ("id", "ref") and value is not None:
                normal = normal_id(value)
                if normal is None:
                    raise SalesforceError(
                        400,
                        "MALFORMED_ID",
                        f"{canonical}: id value of incorrect type",
                        [canonical],
                    )
                value = normal
            result[canonical] = value
        return result

    # -- records -----------------------------------------------------------

    def insert(self, sobject: str, fields: dict[str, Any]) -> str:
        """Create a record and return its new 18-character Id."""
        canonical = self.canonical_sobject(sobject)
        if canonical is None:
            raise SalesforceError(
                400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported"
            )
        with self._transaction() as db:
            values = self._canonical_fields(canonical, fields, creating=True)
            for name in REQUIRED.get(canonical, ()):
                if not values.get(name):
                    raise SalesforceError(
                        400,
                        "REQUIRED_FIELD_MISSING",
                        f"Required fields are missing: [{name}]",
                        [name],
                    )
            now = sf_time(time.time())
            record_id = make_id(
                KEY_PREFIXES[canonical], self._next(KEY_PREFIXES[canonical])
            )
            created = str(values.pop("CreatedDate", now))
            if canonical == "Case":
                values["CaseNumber"] = f"{self._next('CaseNumber') + 1000:08d}"
            for name, kind in SCHEMA[canonical].items():
                if kind == "bool" and name not in SYSTEM_FIELDS:
                    values.setdefault(name, False)
            values.setdefault("OwnerId", self.user_id)
            values |= {"CreatedById": self.user_id, "LastModifiedById": self.user_id}
            values["LastModifiedDate"] = now
            db.execute(
                "INSERT INTO records (id, sobject, fields, is_deleted, created_date,"
                " system_modstamp) VALUES (?, ?, ?, 0, ?, ?)",
                (
                    record_id,
                    canonical,
                    json.dumps(values, sort_keys=True),
                    created,
                    now,
                ),
            )
        return record_id

    def _row(self, record_id: str) -> sqlite3.Row | None:
        return self._db.execute(
            "SELECT * FROM records WHERE id = ?", (record_id,)
        ).fetchone()

    def _materialise(self, row: sqlite3.Row) -> dict[str, Any]:
        fields: dict[str, Any] = json.loads(row["fields"])
        record = {
            "Id": row["id"],
            "IsDeleted": bool(row["is_deleted"]),
            "CreatedDate": row["created_date"],
            "SystemModstamp": row["system_modstamp"],
            **fields,
        }
        sobject = row["sobject"]
        if sobject in PERSON_NAMED:
            parts = (fields.get("FirstName"), fields.get("LastName"))
            record["Name"] = " ".join(part for part in parts if part)
        if sobject == "Case" and fields.get("ContactId"):
            contact = self._row(fields["ContactId"])
            source = json.loads(contact["fields"]) if contact else {}
            for name, origin in DERIVED["Case"].items():
                if origin:
                    record[name] = source.get(origin)
        return record

    def get(self, record_id: str) -> dict[str, Any] | None:
        """A record's fields (deleted ones included), or None if it is gone."""
        normal = normal_id(record_id)
        with self._lock:
            row = self._row(normal) if normal else None
            return self._materialise(row) if row else None

    def sobject_of(self, record_id: str) -> str | None:
        normal = normal_id(record_id)
        return BY_PREFIX.get(normal[:3]) if normal else None

    def records(
        self, sobject: str, *, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        """Every record of an object in creation order (live ones unless asked)."""
        sql = "SELECT * FROM records WHERE sobject = ?"
        if not include_deleted:
            sql += " AND is_deleted = 0"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", (sobject,)).fetchall()
            return [self._materialise(row) for row in rows]

    def count(self, sobject: str, *, include_deleted: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM records WHERE sobject = ?"
        if not include_deleted:
            sql += " AND is_deleted = 0"
        with self._lock:
            return int(self._db.execute(sql, (sobject,)).fetchone()[0])

    def checksum(self, *, exclude: Iterable[str] = ()) -> str:
        """sha256 over every live record (minus ``exclude`` ids), in id order."""
        skip = {normal_id(value) for value in exclude}
        digest = hashlib.sha256()
        with self._lock:
            rows = self._db.execute(
                "SELECT id, sobject, fields, created_date, system_modstamp "
                "FROM records WHERE is_deleted = 0 ORDER BY id"
            ).fetchall()
        for row in rows:
            if row["id"] not in skip:
                digest.update(json.dumps(list(row), sort_keys=True).encode() + b"\n")
        return digest.hexdigest()

    def update(
        self, record_id: str, fields: dict[str, Any], *, sobject: str | None = None
    ) -> None:
        """Change fields of a live record; raises SalesforceError like the API."""
        with self._transaction():
            error = self._update_one(record_id, fields, sobject)
        if error is not None:
            raise error

    def _live_row(
        self, record_id: str, sobject: str | None
    ) -> sqlite3.Row | SalesforceError:
        normal = normal_id(record_id)
        if normal is None:
            return SalesforceError(400, "MALFORMED_ID", f"malformed id {record_id}")
        row = self._row(normal)
        if row is None or (sobject is not None and row["sobject"] != sobject):
            return not_found()
        if row["is_deleted"]:
            return SalesforceError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return row

    def _update_one(
        self, record_id: str, fields: dict[str, Any], sobject: str | None
    ) -> SalesforceError | None:
        row = self._live_row(record_id, sobject)
        if isinstance(row, SalesforceError):
            return row
        try:
            changes = self._canonical_fields(row["sobject"], fields, creating=False)
        except SalesforceError as exc:
            return exc
        values = json.loads(row["fields"]) | changes
        now = sf_time(time.time())
        values["LastModifiedDate"] = now
        self._db.execute(
            "UPDATE records SET fields = ?, system_modstamp = ? WHERE id = ?",
            (json.dumps(values, sort_keys=True), now, row["id"]),
        )
        return None

    def delete(
        self, record_id: str, *, hard: bool = False, sobject: str | None = None
    ) -> None:
        """Soft-delete (Recycle Bin) or, with ``hard``, remove a live record."""
        with self._transaction():
            error = self._delete_one(record_id, hard=hard, sobject=sobject)
        if error is not None:
            raise error

    def _delete_one(
        self, record_id: str, *, hard: bool, sobject: str | None
    ) -> SalesforceError | None:
        row = self._live_row(record_id, sobject)
        if isinstance(row, SalesforceError):
            return row
        if row["sobject"] == "Contact":
            blocking = self._db.execute(
                "SELECT json_extract(fields, '$.CaseNumber') FROM records "
                "WHERE sobject = 'Case' AND is_deleted = 0 "
                "AND json_extract(fields, '$.ContactId') = ? ORDER BY seq",
                (row["id"],),
            ).fetchall()
            if blocking:
                name = self._materialise(row)["Name"]
                numbers = ", ".join(item[0] for item in blocking)
                return SalesforceError(
                    400,
                    "DELETE_FAILED",
                    f"Your attempt to delete {name} could not be completed because "
                    f"it is associated with the following cases.: {numbers}",
                )
        if hard:
            self._db.execute("DELETE FROM records WHERE id = ?", (row["id"],))
        else:
            self._db.execute(
                "UPDATE records SET is_deleted = 1, system_modstamp = ? WHERE id = ?",
                (sf_time(time.time()), row["id"]),
            )
        return None

    def write_many(
        self,
        operations: list[Callable[[], SalesforceError | None]],
        *,
        all_or_none: bool,
    ) -> list[SalesforceError | None]:
        """Run record operations in order in one transaction (collections)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                results = [operation() for operation in operations]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            failed = any(result is not None for result in results)
            self._db.execute("ROLLBACK" if all_or_none and failed else "COMMIT")
        if all_or_none and failed:
            rolled_back = SalesforceError(
                400,
                "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "Record rolled back because not all records were valid and the "
                "request was using AllOrNone header",
            )
            return [result or rolled_back for result in results]
        return results

    def delete_op(
        self, record_id: str, *, hard: bool = False
    ) -> Callable[[], SalesforceError | None]:
        return lambda: self._delete_one(record_id, hard=hard, sobject=None)

    def update_op(
        self, record_id: str, fields: dict[str, Any], sobject: str | None
    ) -> Callable[[], SalesforceError | None]:
        return lambda: self._update_one(record_id, fields, sobject)

    # -- API usage, query cursors ------------------------------------------

    def count_api_call(self) -> int:
        with self._transaction() as db:
            row = db.execute(
                "INSERT INTO meta VALUES ('api_calls', '1') ON CONFLICT (key) "
                "DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING value"
            ).fetchone()
        return int(row[0])

    def api_usage(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'api_calls'")
            found = row.fetchone()
        return int(found[0]) if found else 0

    def reset_api_usage(self) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM meta WHERE key = 'api_calls'")

    def open_cursor(
        self, records: list[dict[str, Any]], context: dict[str, Any] | None = None
    ) -> str:
        """A query locator over ``records``; ``context`` is what its pages log."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "DELETE FROM cursor_context WHERE locator IN "
                "(SELECT locator FROM cursors WHERE created < ?)",
                (now - _CURSOR_TTL,),
            )
            db.execute("DELETE FROM cursors WHERE created < ?", (now - _CURSOR_TTL,))
            locator = make_id("01g", self._next("01g"))
            db.execute(
                "INSERT INTO cursors VALUES (?, ?, ?)",
                (locator, json.dumps(records), now),
            )
            if context is not None:
                db.execute(
                    "INSERT INTO cursor_context VALUES (?, ?)",
                    (locator, json.dumps(context)),
                )
        return locator

    def cursor_context(self, locator: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT context FROM cursor_context WHERE locator = ?", (locator,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def cursor(self, locator: str) -> list[dict[str, Any]] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT records FROM cursors WHERE locator = ?", (locator,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    # -- Bulk API 2.0 ingest jobs ------------------------------------------

    def create_job(self, info: dict[str, Any]) -> dict[str, Any]:
        with self._transaction() as db:
            job_id = make_id("750", self._next("750"))
            info = {"id": job_id, **info}
            db.execute(
                "INSERT INTO jobs (id, info) VALUES (?, ?)", (job_id, json.dumps(info))
            )
        return info

    def job(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if row is None:
            return None
        return {**dict(row), "info": json.loads(row["info"])}

    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT info FROM jobs ORDER BY rowid").fetchall()
        return [json.loads(row[0]) for row in rows]

    def save_job(self, job_id: str, info: dict[str, Any], **columns: Any) -> None:
        assignments = "".join(f", {name} = ?" for name in columns)
        with self._transaction() as db:
            db.execute(
                f"UPDATE jobs SET info = ?{assignments} WHERE id = ?",  # noqa: S608
                (json.dumps(info), *columns.values(), job_id),
            )

    def delete_job(self, job_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def advance_jobs(self, now: float) -> None:
        """Move closed jobs along their clock; do a job's work as it completes."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE complete_at IS NOT NULL AND "
                "json_extract(info, '$.state') IN ('UploadComplete', 'InProgress')"
            ).fetchall()
            for row in rows:
                self._advance(row[0], now)

    def _advance(self, job_id: str, now: float) -> None:
        job = self.job(job_id)
        if job is None:
            return
        info = job["info"]
        if now >= job["complete_at"]:
            info |= process_job(self, info, job["upload"])
            info["systemModstamp"] = sf_time(job["complete_at"])
            success = info.pop("_success_csv")
            failed = info.pop("_failed_csv")
            self.save_job(job_id, info, success_csv=success, failed_csv=failed)
        elif now >= job["progress_at"] and info["state"] == "UploadComplete":
            info |= {
                "state": "InProgress",
                "systemModstamp": sf_time(job["progress_at"]),
            }
            self.save_job(job_id, info)
