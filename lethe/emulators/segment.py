"""A loopback Segment: the tracking API's ``/v1/batch`` and the Public API's
Deletion & Suppression endpoints, sharing one SQLite store.

Segment erases by *regulation*: a job filed for up to 5,000 subject ids that
moves INITIALIZED → RUNNING → a final status (FINISHED, PARTIAL_SUCCESS,
FAILED, INVALID, NOT_SUPPORTED), with a status per destination that can differ
from the overall one. Suppression is a separate effect: a suppressed userId's
new events are dropped at intake. The emulator follows the paths, bodies,
status codes and error envelope of the Public API (segmentio/public-api-sdk-go
and -typescript, generated from its OpenAPI document) and the tracking API's
documented behaviour: 200 for everything except bad JSON and oversized
payloads (400), so an event with an unknown write key, no identity, or a
suppressed identity is silently not kept.

Time is a clock, not a thread: each regulation holds its creation time and
step length, and its status is worked out when anything reads the store. When
it reaches its final status, the deletion it asked for happens (Segment's own
copies). Tests plan unhappy endings with ``store.outcomes.add(...)`` or
``POST /__emulator/outcomes``; each planned outcome is taken by the next
regulation filed.

Simplifications: one workspace with one source (``source_id``); source-scoped
suppressions act workspace-wide; cloud sources (``OBJECT_ID``) are accepted
but hold no data here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import string
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from lethe.emulators._server import Faults, install_faults

logger = logging.getLogger(__name__)

__all__ = ["PlannedOutcomes", "SegmentStore", "create_app"]

MAX_SUBJECT_IDS = 5000
MAX_BATCH_BYTES = 500 * 1024
MAX_MESSAGE_BYTES = 32 * 1024
MAX_PAGE = 1000

WORKSPACE_TYPES = frozenset(
    {
        "SUPPRESS_ONLY",
        "UNSUPPRESS",
        "SUPPRESS_WITH_DELETE",
        "DELETE_INTERNAL",
        "SUPPRESS_WITH_DELETE_INTERNAL",
        "DELETE_ONLY",
    }
)
SOURCE_TYPES = WORKSPACE_TYPES | {"DELETE_ARCHIVE_ONLY"}
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
MESSAGE_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})

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


class PlannedOutcomes:
    """Endings planned for the next regulations filed, one each, in order.

    ``overall`` is the final overall status; ``destination_failed`` names a
    destination that ends FAILED while Segment's own deletion succeeds.
    """

    def __init__(self, store: SegmentStore) -> None:
        self._store = store

    def add(
        self, overall: str = "FINISHED", destination_failed: str | None = None
    ) -> None:
        if overall not in FINAL_STATUSES:
            raise ValueError(f"overall must be one of {sorted(FINAL_STATUSES)}")
        self._store._execute(
            "INSERT INTO planned_outcomes (overall, destination_failed) VALUES (?, ?)",
            (overall, destination_failed),
        )

    def clear(self) -> None:
        self._store._execute("DELETE FROM planned_outcomes", ())

    def pending(self) -> int:
        return self._store._scalar("SELECT count(*) FROM planned_outcomes", ())


class SegmentStore:
    """Events, regulations and suppressions of one emulated workspace."""

    def __init__(
        self, path: Path | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            ":memory:" if path is None else str(path), check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.executescript(_SCHEMA)
        self.clock = clock
        self.outcomes = PlannedOutcomes(self)

    # -- low level ---------------------------------------------------------

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        with self._lock, self._db:
            self._db.execute(sql, params)

    def _scalar(self, sql: str, params: Sequence[Any]) -> int:
        with self._lock:
            self._advance()
            return int(self._db.execute(sql, params).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def reset(self) -> None:
        """Forget every event, regulation, suppression and planned outcome."""
        with self._lock, self._db:
            for table in ("events", "regulations", "suppressions", "planned_outcomes"):
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608

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
        digest = hashlib.sha256()
        with self._lock:
            self._advance()
            rows = self._db.execute("SELECT * FROM events ORDER BY message_id")
            for row in rows:
                digest.update(json.dumps(list(row), default=str).encode())
                digest.update(b"\n")
        return digest.hexdigest()

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
        row = self._db.execute(
            "SELECT seq, overall, destination_failed FROM planned_outcomes "
            "ORDER BY seq LIMIT 1"
        ).fetchone()
        if row is None:
            return "FINISHED", None
        self._db.execute("DELETE FROM planned_outcomes WHERE seq = ?", (row["seq"],))
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


# -- HTTP ------------------------------------------------------------------


def _errors(
    status: int, type_: str, message: str, field: str | None = None
) -> JSONResponse:
    error: dict[str, Any] = {"type": type_, "message": message}
    if field is not None:
        error["field"] = field
    return JSONResponse({"errors": [error]}, status_code=status)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


def _decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        return None
    return offset if offset >= 0 else None


def _page(
    request: Request, items: Sequence[Any]
) -> tuple[Sequence[Any], dict[str, Any]] | JSONResponse:
    """Slice ``items`` by ``pagination[count]`` and ``pagination[cursor]``."""
    raw_count = request.query_params.get("pagination[count]", "10")
    if not raw_count.isdigit() or not 1 <= int(raw_count) <= MAX_PAGE:
        return _errors(
            422, "validation", "count must be between 1 and 1000", "pagination.count"
        )
    offset = _decode_cursor(request.query_params.get("pagination[cursor]"))
    if offset is None:
        return _errors(422, "validation", "cursor is not valid", "pagination.cursor")
    count = int(raw_count)
    page = items[offset : offset + count]
    pagination: dict[str, Any] = {
        "current": _encode_cursor(offset),
        "totalEntries": len(items),
    }
    if offset + count < len(items):
        pagination["next"] = _encode_cursor(offset + count)
    if offset > 0:
        pagination["previous"] = _encode_cursor(max(0, offset - count))
    return page, pagination


class _RateWindow:
    """A fixed one-minute window of regulation creations (600/min documented)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._start = time.time()
        self._used = 0

    def take(self) -> tuple[bool, int, float]:
        """(allowed, remaining, reset epoch)."""
        with self._lock:
            now = time.time()
            if now - self._start >= 60:
                self._start, self._used = now, 0
            reset = self._start + 60
            if self._used >= self.per_minute:
                return False, 0, reset
            self._used += 1
            return True, self.per_minute - self._used, reset


def _rate_headers(remaining: int, reset: float) -> dict[str, str]:
    return {
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": format_datetime(
            datetime.fromtimestamp(reset, UTC), usegmt=True
        ),
    }


def _install_rate_headers(app: FastAPI) -> None:
    """Give every 429 (injected ones too) the documented X-RateLimit headers.

    Added after ``install_faults`` so it wraps the fault middleware.
    """

    @app.middleware("http")
    async def rate_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if response.status_code == 429 and "X-RateLimit-Reset" not in response.headers:
            retry_after = response.headers.get("Retry-After", "60")
            wait = float(retry_after) if retry_after.isdigit() else 60.0
            response.headers.update(_rate_headers(0, time.time() + wait))
        return response


def _bearer_ok(request: Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value, token)


def _write_key(request: Request, body: dict[str, Any]) -> str | None:
    """The write key from HTTP Basic (as username) or from the body."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            return None
    key = body.get("writeKey")
    return key if isinstance(key, str) else None


def _validate_regulation(
    body: Any, *, allowed_types: frozenset[str], subject_types: frozenset[str]
) -> JSONResponse | None:
    if not isinstance(body, dict):
        return _errors(422, "validation", "body must be an object")
    if body.get("regulationType") not in allowed_types:
        return _errors(
            422,
            "validation",
            f"regulationType must be one of {', '.join(sorted(allowed_types))}",
            "regulationType",
        )
    if body.get("subjectType") not in subject_types:
        return _errors(
            422,
            "validation",
            f"subjectType must be one of {', '.join(sorted(subject_types))}",
            "subjectType",
        )
    ids = body.get("subjectIds")
    if not isinstance(ids, list) or not ids:
        return _errors(422, "validation", "subjectIds must not be empty", "subjectIds")
    if not all(isinstance(i, str) and i for i in ids):
        return _errors(
            422, "validation", "subjectIds must be non-empty strings", "subjectIds"
        )
    if len(ids) > MAX_SUBJECT_IDS:
        return _errors(
            422,
            "validation",
            f"subjectIds holds at most {MAX_SUBJECT_IDS} ids",
            "subjectIds",
        )
    return None


def _keep_message(store: SegmentStore, message: Any) -> bool:
    """Store one tracking message if Segment would accept it."""
    if not isinstance(message, dict) or message.get("type") not in MESSAGE_TYPES:
        return False
    kind = message["type"]
    user_id, anonymous_id = message.get("userId"), message.get("anonymousId")
    if not user_id and not anonymous_id:
        return False
    if kind == "track" and not message.get("event"):
        return False
    name = message.get("event") if kind == "track" else message.get("name")
    payload = message.get("traits") if kind in ("identify", "group") else None
    return store.add_event(
        type=kind,
        message_id=message.get("messageId"),
        user_id=str(user_id) if user_id else None,
        anonymous_id=str(anonymous_id) if anonymous_id else None,
        previous_id=message.get("previousId"),
        event=name,
        properties=payload or message.get("properties") or {},
        timestamp=message.get("timestamp"),
    )


def create_app(
    store: SegmentStore,
    *,
    token: str,
    write_key: str,
    step_seconds: float = 0.2,
    destinations: Sequence[str] = ("Amplitude (Actions)", "Google Analytics 4"),
    source_id: str = "src_emulated",
    workspace_id: str = "ws_emulated",
    regulations_per_minute: int = 600,
) -> FastAPI:
    """The tracking API and the Deletion & Suppression part of the Public API.

    ``step_seconds`` is how long a regulation spends in each of INITIALIZED
    and RUNNING; ``source_id`` is the one source the workspace has.
    """
    app = FastAPI(title="Segment emulator")
    app.state.store = store
    app.state.faults = Faults()
    app.state.outcomes = store.outcomes
    install_faults(app, app.state.faults)
    _install_rate_headers(app)
    window = _RateWindow(regulations_per_minute)

    @app.post("/__emulator/outcomes", include_in_schema=False)
    async def plan_outcome(request: Request) -> Response:
        body = await request.json()
        failed = body.get("destination_failed")
        if failed is not None and failed not in destinations:
            return JSONResponse({"error": "unknown destination"}, status_code=422)
        try:
            store.outcomes.add(body.get("overall", "FINISHED"), failed)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse({"status": "planned"})

    @app.delete("/__emulator/outcomes", include_in_schema=False)
    async def clear_outcomes() -> dict[str, str]:
        store.outcomes.clear()
        return {"status": "cleared"}

    @app.post("/v1/batch")
    async def batch(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BATCH_BYTES:
            return JSONResponse({"error": "batch over 500KB"}, status_code=400)
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "invalid JSON"}, status_code=400)
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            return JSONResponse({"error": "batch must be a list"}, status_code=400)
        messages = body["batch"]
        if any(len(json.dumps(m).encode()) > MAX_MESSAGE_BYTES for m in messages):
            return JSONResponse({"error": "message over 32KB"}, status_code=400)
        key = _write_key(request, body)
        if key is not None and hmac.compare_digest(key, write_key):
            kept = sum(_keep_message(store, m) for m in messages)
            logger.debug("batch kept %d of %d messages", kept, len(messages))
        return JSONResponse({"success": True})

    def unauthorized(request: Request) -> JSONResponse | None:
        if _bearer_ok(request, token):
            return None
        return _errors(401, "unauthorized", "the token is missing or not valid")

    async def create(request: Request, scope_source: str | None) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        if scope_source is not None and scope_source != source_id:
            return _errors(404, "not-found", "source not found")
        try:
            body = await request.json()
        except ValueError:
            return _errors(400, "bad-request", "body is not valid JSON")
        problem = _validate_regulation(
            body,
            allowed_types=WORKSPACE_TYPES if scope_source is None else SOURCE_TYPES,
            subject_types=frozenset(
                {"USER_ID", "OBJECT_ID"}
                if scope_source is None
                else {"USER_ID", "ANONYMOUS_ID"}
            ),
        )
        if problem is not None:
            return problem
        allowed, remaining, reset = window.take()
        if not allowed:
            response = _errors(429, "too-many-requests", "regulation rate limit")
            response.headers.update(_rate_headers(0, reset))
            response.headers["Retry-After"] = str(max(1, int(reset - time.time())))
            return response
        regulate_id = store.create_regulation(
            regulation_type=body["regulationType"],
            subject_type=body["subjectType"],
            subject_ids=body["subjectIds"],
            source_id=scope_source,
            destinations=destinations,
            step_seconds=step_seconds,
        )
        return JSONResponse(
            {"data": {"regulateId": regulate_id}},
            headers=_rate_headers(remaining, reset),
        )

    @app.post("/regulations")
    async def create_workspace_regulation(request: Request) -> Response:
        return await create(request, None)

    @app.post("/regulations/sources/{source}")
    async def create_source_regulation(request: Request, source: str) -> Response:
        return await create(request, source)

    def listing(request: Request, rows: list[dict[str, Any]]) -> Response:
        status = request.query_params.get("status")
        types = {
            t
            for value in request.query_params.getlist("regulationTypes")
            for t in value.split(",")
            if t
        }
        rows = [
            {k: v for k, v in row.items() if k != "sourceId"}
            for row in rows
            if (status is None or row["status"] == status)
            and (not types or row["regulationType"] in types)
        ]
        paged = _page(request, rows)
        if isinstance(paged, JSONResponse):
            return paged
        page, pagination = paged
        return JSONResponse(
            {"data": {"regulations": list(page), "pagination": pagination}}
        )

    @app.get("/regulations")
    async def list_workspace_regulations(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        return listing(request, store.scoped_regulations(None))

    @app.get("/regulations/sources/{source}")
    async def list_source_regulations(request: Request, source: str) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        if source != source_id:
            return _errors(404, "not-found", "source not found")
        return listing(request, store.scoped_regulations(source))

    @app.get("/regulations/{regulate_id}")
    async def get_regulation(request: Request, regulate_id: str) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        detail = store.regulation(regulate_id)
        if detail is None:
            return _errors(404, "not-found", "regulation not found")
        regulation: dict[str, Any] = {
            "id": detail["id"],
            "workspaceId": workspace_id,
            "overallStatus": detail["status"],
            "createdAt": detail["createdAt"],
            "streamStatus": [
                {
                    "id": detail["sourceId"] or source_id,
                    "destinationStatus": detail["destinationStatus"],
                }
            ],
        }
        if "finishedAt" in detail:
            regulation["finishedAt"] = detail["finishedAt"]
        return JSONResponse({"data": {"regulation": regulation}})

    @app.get("/suppressions")
    async def list_suppressions(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        paged = _page(request, store.suppressions())
        if isinstance(paged, JSONResponse):
            return paged
        page, pagination = paged
        grouped: dict[str, list[str]] = {}
        for subject_type, subject_id in page:
            grouped.setdefault(subject_type, []).append(subject_id)
        suppressed = [
            {"subjectType": t, "subjectIds": ids} for t, ids in grouped.items()
        ]
        return JSONResponse(
            {"data": {"suppressed": suppressed, "pagination": pagination}}
        )

    return app
