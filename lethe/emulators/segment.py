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

This module is the HTTP side: authentication, validation, paging, rate limits
and the response shapes. The store and its rules are in ``_segment_store.py``.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from lethe.emulators._segment_store import PlannedOutcomes, SegmentStore
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
MESSAGE_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})


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
