"""A loopback Mixpanel: the GDPR/CCPA API v3 deletion endpoints under
``/api/app`` (``https://{mixpanel|eu.mixpanel|in.mixpanel}.com/api/app``), plus
just enough of the ingestion API (``/import``, ``/engage`` ``$set``) to fill it.

Mixpanel erases by *deletion task*: a job for up to 1,999 distinct_ids of one
project that moves PENDING → STAGING → STARTED → SUCCESS over "up to 30 days",
or ends FAILURE, REVOKED (cancelled), NOT_FOUND or UNKNOWN. It can be cancelled
while PENDING or STAGING; from STARTED on a cancel answers 405. Every call
carries the GDPR OAuth token as a Bearer header and the project token as
``?token=``, and the API allows one request per second per project (429 past
that). The paths, bodies, statuses and the ``{"status":"error","error":…}``
envelope follow mixpanel/docs ``openapi/src/gdpr.openapi.yaml`` and
``reference/GDPR API/overview.md``.

Two quirks are kept on purpose. The documents show two shapes for a created
task: the OpenAPI ``{"results":{"task_id":…}}`` and the prose example's
``{"results":[{tracking_id, status, …, distinct_id_count}]}``;
``legacy_response_shape=True`` serves the second. And the documented URLs end
in a slash (``/v3.0/?token=``) while the OpenAPI paths do not; both are served.

Not in the documents but relied on by clients: ``GET /data-deletions/v3.0``
lists the project's tasks (newest first, in the status shape), which is how a
connector finds a task it filed but never recorded.

Time is a clock, not a thread: each task holds its creation time and step
length, and its status is worked out when anything reads the store. Tests plan
unhappy endings with ``store.outcomes.add("FAILURE")`` or
``POST /__emulator/outcomes`` ``{"status": "FAILURE"}``; each planned outcome
is taken by the next task created.

Simplifications: legacy aliases (whose deletion also deletes the ids they map
to) are not modelled; the prose's "DELETE on the collection with a
distinct_ids body" is not served; data retrievals are not emulated.

This module is the HTTP side; the store and its rules are in
``_mixpanel_store.py``.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from lethe.emulators._mixpanel_store import (
    COMPLIANCE_TYPES,
    MixpanelStore,
    PlannedOutcomes,
)
from lethe.emulators._server import Faults, install_faults

logger = logging.getLogger(__name__)

__all__ = ["MixpanelStore", "PlannedOutcomes", "create_app"]

MAX_DELETION_IDS = 1999
MAX_IMPORT_EVENTS = 2000
PREFIX = "/api/app"
DELETIONS = f"{PREFIX}/data-deletions/v3.0"
FIRST_PROJECT_ID = 3_100_001


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message}, status_code=status)


class _RateLimiter:
    """A sliding window per project: ``per_second`` requests, 429 past that.

    Only requests that were let through count, so a client that backs off as
    told gets through on its next try.
    """

    def __init__(self, per_second: float, clock: Callable[[], float]) -> None:
        if per_second <= 0:
            raise ValueError("rate_limit_per_second must be positive")
        self.window = max(1.0, 1.0 / per_second)
        self.capacity = max(1, int(per_second * self.window))
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}

    def take(self, project: str) -> float | None:
        """None when allowed, else the seconds to wait."""
        with self._lock:
            now = self._clock()
            seen = self._seen.setdefault(project, deque())
            while seen and seen[0] <= now - self.window:
                seen.popleft()
            if len(seen) >= self.capacity:
                return seen[0] + self.window - now
            seen.append(now)
            return None


def _bearer_ok(request: Request, token: str) -> bool:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value, token)


def _basic_username(request: Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value).decode().partition(":")[0]
    except (ValueError, UnicodeDecodeError):
        return None


def _deletion_request(body: Any) -> tuple[list[str], str] | JSONResponse:
    """(distinct_ids, compliance_type) from a create body, or the 400 to send."""
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object")
    ids = body.get("distinct_ids")
    if not isinstance(ids, list) or not ids:
        return _error(400, "distinct_ids is required and must be a non-empty list")
    if not all(isinstance(i, str) and i for i in ids):
        return _error(400, "distinct_ids must be non-empty strings")
    if len(ids) > MAX_DELETION_IDS:
        return _error(400, f"distinct_ids holds at most {MAX_DELETION_IDS} ids")
    compliance = body.get("compliance_type", "GDPR")
    if not isinstance(compliance, str) or compliance.upper() not in COMPLIANCE_TYPES:
        return _error(400, "compliance_type must be GDPR or CCPA")
    return ids, compliance.upper()


def _legacy_created(task: dict[str, Any]) -> dict[str, Any]:
    """The overview's example shape: a one-item list with a count of ids."""
    return {
        "status": "ok",
        "results": [
            {
                "status": task["status"],
                "date_requested": task["date_requested"],
                "tracking_id": task["tracking_id"],
                "project_id": task["project_id"],
                "compliance_type": task["compliance_type"].lower(),
                "requesting_user": task["requesting_user"],
                "distinct_id_count": len(task["distinct_ids"]),
            }
        ],
    }


def _import_problem(index: int, record: Any) -> dict[str, Any] | None:
    """Strict /import validation: event, time, distinct_id and $insert_id."""
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return {"index": index, "field": "event", "message": "event is required"}
    properties = record.get("properties")
    if not isinstance(properties, dict):
        return {"index": index, "field": "properties", "message": "required"}
    for field, kind in (("time", (int, float)), ("distinct_id", str)):
        if not isinstance(properties.get(field), kind):
            return {
                "index": index,
                "field": f"properties.{field}",
                "message": f"properties.{field} is required",
            }
    insert_id = properties.get("$insert_id")
    if not isinstance(insert_id, str) or not insert_id or len(insert_id) > 36:
        return {
            "index": index,
            "field": "properties.$insert_id",
            "message": "properties.$insert_id is required (at most 36 bytes)",
        }
    return None


def _keep_event(store: MixpanelStore, project: str, record: dict[str, Any]) -> None:
    properties = dict(record["properties"])
    moment = float(properties.pop("time"))
    store.add_event(
        project,
        str(properties.pop("distinct_id")),
        record["event"],
        properties,
        insert_id=str(properties.pop("$insert_id")),
        time=moment / 1000 if moment > 1e11 else moment,  # milliseconds allowed
    )


def create_app(
    store: MixpanelStore,
    *,
    gdpr_token: str,
    project_tokens: Sequence[str],
    step_seconds: float = 0.2,
    clock: Callable[[], float] = time.time,
    rate_limit_per_second: float = 1.0,
    legacy_response_shape: bool = False,
    requesting_user: str = "privacy-officer@example.com",
) -> FastAPI:
    """The GDPR deletion API for ``project_tokens``, and ingestion into them.

    ``step_seconds`` is how long a task spends in each of PENDING, STAGING and
    STARTED; task states follow the store's clock, the rate limit follows
    ``clock``. Project ids are given in order from 3100001.
    """
    app = FastAPI(title="Mixpanel emulator", redirect_slashes=False)
    app.state.store = store
    app.state.faults = Faults()
    app.state.outcomes = store.outcomes
    app.state.project_ids = {
        token: FIRST_PROJECT_ID + i for i, token in enumerate(project_tokens)
    }
    install_faults(app, app.state.faults)
    limiter = _RateLimiter(rate_limit_per_second, clock)
    project_ids: dict[str, int] = app.state.project_ids

    @app.post("/__emulator/outcomes", include_in_schema=False)
    async def plan_outcome(request: Request) -> Response:
        body = await request.json()
        try:
            store.outcomes.add(str(body.get("status", "SUCCESS")))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        return JSONResponse({"status": "planned"})

    @app.delete("/__emulator/outcomes", include_in_schema=False)
    async def clear_outcomes() -> dict[str, str]:
        store.outcomes.clear()
        return {"status": "cleared"}

    def admit(request: Request) -> str | JSONResponse:
        """The caller's project token, or the 401/400/429 to answer with."""
        if not _bearer_ok(request, gdpr_token):
            return _error(401, "the GDPR OAuth token is missing or not valid")
        project = request.query_params.get("token")
        if not project:
            return _error(400, "the token query parameter (project token) is required")
        if project not in project_ids:
            return _error(401, "the project token is not valid for this OAuth token")
        wait = limiter.take(project)
        if wait is not None:
            response = _error(429, "rate limit exceeded: 1 request per second")
            response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return response
        return project

    @app.post(DELETIONS)
    @app.post(f"{DELETIONS}/")
    async def create_deletion(request: Request) -> Response:
        project = admit(request)
        if isinstance(project, JSONResponse):
            return project
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not valid JSON")
        parsed = _deletion_request(body)
        if isinstance(parsed, JSONResponse):
            return parsed
        ids, compliance = parsed
        task = store.create_deletion(
            project,
            project_id=project_ids[project],
            distinct_ids=ids,
            compliance_type=compliance,
            requesting_user=requesting_user,
            step_seconds=step_seconds,
        )
        if legacy_response_shape:
            return JSONResponse(_legacy_created(task), status_code=201)
        return JSONResponse(
            {"status": "ok", "results": {"task_id": task["tracking_id"]}},
            status_code=201,
        )

    @app.get(DELETIONS)
    @app.get(f"{DELETIONS}/")
    async def list_deletions(request: Request) -> Response:
        project = admit(request)
        if isinstance(project, JSONResponse):
            return project
        return JSONResponse({"status": "ok", "results": store.deletions(project)})

    @app.get(DELETIONS + "/{tracking_id}")
    @app.get(DELETIONS + "/{tracking_id}/")
    async def get_deletion(request: Request, tracking_id: str) -> Response:
        project = admit(request)
        if isinstance(project, JSONResponse):
            return project
        task = store.deletion(project, tracking_id)
        if task is None:
            return _error(404, "no deletion task with this tracking_id")
        return JSONResponse({"status": "ok", "results": task})

    @app.delete(DELETIONS + "/{tracking_id}")
    @app.delete(DELETIONS + "/{tracking_id}/")
    async def cancel_deletion(request: Request, tracking_id: str) -> Response:
        project = admit(request)
        if isinstance(project, JSONResponse):
            return project
        result = store.cancel_deletion(project, tracking_id)
        if result == "missing":
            return _error(404, "no deletion task with this tracking_id")
        if result == "too_late":
            return _error(405, "the deletion task has started and cannot be canceled")
        return Response(status_code=204)

    @app.post("/import")
    async def import_events(request: Request) -> Response:
        project = _basic_username(request)
        if project not in project_ids:
            return JSONResponse(
                {"code": 401, "error": "Invalid credentials", "status": "Unauthorized"},
                status_code=401,
            )
        try:
            records = json.loads(await request.body())
        except ValueError:
            records = None
        if not isinstance(records, list) or not 1 <= len(records) <= MAX_IMPORT_EVENTS:
            return JSONResponse(
                {"code": 400, "error": "body must be a list of 1 to 2000 events"},
                status_code=400,
            )
        failed = [p for i, r in enumerate(records) if (p := _import_problem(i, r))]
        bad = {p["index"] for p in failed}
        for index, record in enumerate(records):
            if index not in bad:
                _keep_event(store, project, record)
        imported = len(records) - len(bad)
        if failed:
            return JSONResponse(
                {
                    "code": 400,
                    "error": "some data points in the request failed validation",
                    "failed_records": failed,
                    "num_records_imported": imported,
                    "status": "Bad Request",
                },
                status_code=400,
            )
        return JSONResponse(
            {"code": 200, "num_records_imported": imported, "status": "OK"}
        )

    @app.post("/engage")
    async def engage(request: Request) -> Response:
        try:
            updates = json.loads(await request.body())
        except ValueError:
            return PlainTextResponse("0")
        updates = updates if isinstance(updates, list) else [updates]
        kept = 0
        for update in updates:
            if not isinstance(update, dict) or update.get("$token") not in project_ids:
                continue
            distinct_id, changes = update.get("$distinct_id"), update.get("$set")
            if isinstance(distinct_id, str) and isinstance(changes, dict):
                store.set_profile(update["$token"], distinct_id, changes)
                kept += 1
        return PlainTextResponse("1" if kept else "0")

    return app
