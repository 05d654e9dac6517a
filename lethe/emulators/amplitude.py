"""A loopback Amplitude: the User Privacy API (v1 deletions) and User Search,
over one SQLite store holding every project of an organisation.

Amplitude erases by *deletion job*: ids posted to ``/api/2/deletions/users``
join a project's job for a scheduled run day; the job is ``staging`` (ids can
still be removed), then ``submitted`` (locked); the users' data is scrubbed on
``active_scrub_done_date``, and the job turns ``done`` five days later, once
backups are cleared. The emulator follows the documented paths, bodies, limits
and codes (amplitude/amplitude-docs ``content/collections/api/en/user-privacy.md``):
HTTP Basic with a project's ``API_KEY:SECRET_KEY`` (401 otherwise), at most 100
ids a request, a 400 that marks nothing when an id is unknown unless
``ignore_invalid_ids`` (also spelt ``ignore_invalid_id``, and sent as a boolean
or as the strings ``"True"``/``"true"``), ``delete_from_org`` making one job per
project that holds the users, a job list limited to six months, and 1 request a
second on the deletions endpoint (429 with Retry-After).

Time is the injected clock counted in UTC days, so a test moves it forward a
day at a time. Simplifications, stated so no one mistakes them for Amplitude:
a new request joins the project's job while that job is still staging, else a
new job is scheduled ``staging_days`` ahead (Amplitude plans 10-13 days and
locks a job three days before it runs; here it is staging until its run day);
the scrub happens ``scrub_days`` after the run day. Amplitude IDs are unique
across the organisation here, while Amplitude numbers users per project. The
``delete_from_org`` answer is a list with one job object per project (each with
``app``); the documentation names the ``app`` field without showing the shape.
Errors are ``{"error": "<message>"}``.

This module is the HTTP side; the store and its rules are in
``_amplitude_store.py``.
"""

from __future__ import annotations

import base64
import calendar
import hmac
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from lethe.emulators._amplitude_store import (
    AmplitudeStore,
    JobChangeRefused,
    Member,
    Schedule,
)
from lethe.emulators._server import Faults, install_faults

logger = logging.getLogger(__name__)

__all__ = ["AmplitudeStore", "Schedule", "create_app"]

MAX_IDS = 100
MAX_RANGE_MONTHS = 6
FIRST_APP_ID = 310_000


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class _Pacer:
    """At most ``per_second`` requests per project key, on the real clock."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 0.0 if not per_second else 1.0 / per_second
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def wait_needed(self, key: str) -> float:
        """0 and counts the request when allowed; otherwise seconds to wait."""
        if self.interval == 0:
            return 0.0
        with self._lock:
            now = time.monotonic()
            wait = self._last.get(key, -math.inf) + self.interval - now
            if wait > 0:
                return wait
            self._last[key] = now
            return 0.0


@dataclass(frozen=True)
class _Deletion:
    """A validated POST body."""

    amplitude_ids: list[int]
    user_ids: list[str]
    requester: str | None
    ignore_invalid_ids: bool
    delete_from_org: bool
    include_mapped_user_ids: bool


def _flag(body: Mapping[str, Any], *names: str) -> bool | None:
    """A boolean field, given as JSON true/false or "true"/"false"; None if bad."""
    for name in names:
        if name not in body:
            continue
        value = body[name]
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return None
    return False


def _ids(value: Any, kind: type) -> list[Any] | None:
    """A list of ids; numbers may come as digit strings, user ids as numbers."""
    if value is None:
        return []
    if not isinstance(value, list):
        return None
    result: list[Any] = []
    for item in value:
        if kind is int and isinstance(item, str) and item.isdigit():
            item = int(item)
        elif kind is str and isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, kind) or isinstance(item, bool) or item == "":
            return None
        result.append(item)
    return result


def _parse_deletion(body: Any) -> _Deletion | JSONResponse:
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object")
    amplitude_ids = _ids(body.get("amplitude_ids"), int)
    user_ids = _ids(body.get("user_ids"), str)
    if amplitude_ids is None or user_ids is None:
        return _error(400, "amplitude_ids and user_ids must be lists of ids")
    total = len(amplitude_ids) + len(user_ids)
    if total == 0:
        return _error(400, "give at least one amplitude_id or user_id")
    if total > MAX_IDS:
        return _error(400, f"at most {MAX_IDS} ids per request, got {total}")
    requester = body.get("requester")
    if requester is not None and not isinstance(requester, str):
        return _error(400, "requester must be a string")
    flags = (
        _flag(body, "ignore_invalid_ids", "ignore_invalid_id"),
        _flag(body, "delete_from_org"),
        _flag(body, "include_mapped_user_ids"),
    )
    if any(f is None for f in flags):
        return _error(400, "flags must be true or false")
    ignore, org, mapped = (bool(f) for f in flags)
    return _Deletion(
        amplitude_ids=list(dict.fromkeys(amplitude_ids)),
        user_ids=list(dict.fromkeys(user_ids)),
        requester=requester,
        ignore_invalid_ids=ignore or org,
        delete_from_org=org,
        include_mapped_user_ids=mapped,
    )


def _parse_day(value: str | None) -> date | None:
    """YYYY-MM-DD (the documented form) or YYYYMMDD (the documented example)."""
    if not value:
        return None
    text = value if "-" in value else f"{value[:4]}-{value[4:6]}-{value[6:]}"
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _add_months(day: date, months: int) -> date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _entry(raw: Mapping[str, Any], *, with_user_id: bool) -> dict[str, Any]:
    entry = {
        "amplitude_id": raw["amplitude_id"],
        "requester": raw["requester"],
        "requested_on_day": raw["requested_on_day"],
    }
    if with_user_id and raw.get("user_id") is not None:
        entry["user_id"] = raw["user_id"]
    return entry


def _listed_job(job: Mapping[str, Any], app_id: int) -> dict[str, Any]:
    listed: dict[str, Any] = {
        "day": job["day"],
        "status": job["status"],
        "amplitude_ids": [_entry(e, with_user_id=False) for e in job["amplitude_ids"]],
    }
    if job["org_wide"]:
        listed["app"] = app_id
    if "active_scrub_done_date" in job:
        listed["active_scrub_done_date"] = job["active_scrub_done_date"]
    return listed


def create_app(
    store: AmplitudeStore,
    *,
    projects: Mapping[str, tuple[str, str]],
    clock: Callable[[], float] | None = None,
    staging_days: int = 3,
    scrub_days: int = 7,
    done_after_scrub_days: int = 5,
    rate_limit_per_second: float | None = 1.0,
) -> FastAPI:
    """The User Privacy API v1 and User Search for ``projects``.

    ``projects`` maps a project name to its ``(api_key, secret_key)``; the
    name is what the store files data under. ``clock`` (epoch seconds), when
    given, replaces the store's clock. ``rate_limit_per_second=None`` lifts the
    documented 1 request a second on the deletions endpoint.
    """
    if clock is not None:
        store.clock = clock
    schedule = Schedule(staging_days, scrub_days, done_after_scrub_days)
    app_ids = {name: FIRST_APP_ID + i for i, name in enumerate(projects)}
    pacer = _Pacer(rate_limit_per_second)
    app = FastAPI(title="Amplitude emulator")
    app.state.store = store
    app.state.faults = Faults()
    app.state.app_ids = app_ids
    install_faults(app, app.state.faults)

    def caller(request: Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        api_key, _, secret_key = decoded.partition(":")
        for name, (key, secret) in projects.items():
            same_key = hmac.compare_digest(api_key, key)
            if same_key & hmac.compare_digest(secret_key, secret):
                return name
        return None

    def unauthorized() -> JSONResponse:
        response = _error(401, "invalid api key or secret key")
        response.headers["WWW-Authenticate"] = 'Basic realm="amplitude"'
        return response

    def gate(request: Request) -> str | JSONResponse:
        """The caller's project, or the 401/429 to answer instead."""
        project = caller(request)
        if project is None:
            return unauthorized()
        wait = pacer.wait_needed(project)
        if wait > 0:
            response = _error(429, "too many requests: 1 per second per project")
            response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return response
        return project

    def project_answer(
        project: str,
        members: list[Member],
        deletion: _Deletion,
        invalid: list[int | str],
    ) -> dict[str, Any]:
        summary, entries = store.schedule_deletion(
            project,
            members,
            requester=deletion.requester,
            schedule=schedule,
            org_wide=deletion.delete_from_org,
        )
        answer: dict[str, Any] = {
            "day": summary["day"],
            "status": summary["status"],
            "amplitude_ids": [
                _entry(e, with_user_id=deletion.include_mapped_user_ids)
                for e in entries
            ],
            "user_ids": [u for u in deletion.user_ids if u not in invalid],
        }
        if deletion.delete_from_org:
            answer["app"] = app_ids[project]
        if deletion.ignore_invalid_ids:
            answer["invalid_ids"] = invalid
        return answer

    def org_answer(deletion: _Deletion) -> list[dict[str, Any]]:
        resolved = {
            name: store.resolve(name, deletion.amplitude_ids, deletion.user_ids)
            for name in projects
        }
        requested: list[int | str] = [*deletion.amplitude_ids, *deletion.user_ids]
        nowhere = [
            i for i in requested if all(i in inv for _, inv in resolved.values())
        ]
        return [
            project_answer(name, members, deletion, nowhere)
            for name, (members, _) in resolved.items()
            if members
        ]

    @app.post("/api/2/deletions/users")
    async def request_deletion(request: Request) -> Response:
        project = gate(request)
        if isinstance(project, JSONResponse):
            return project
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not valid JSON")
        deletion = _parse_deletion(body)
        if isinstance(deletion, JSONResponse):
            return deletion
        if deletion.delete_from_org:
            return JSONResponse(org_answer(deletion))
        members, invalid = store.resolve(
            project, deletion.amplitude_ids, deletion.user_ids
        )
        if invalid and not deletion.ignore_invalid_ids:
            return _error(
                400, "some ids were not found in the project", invalid_ids=invalid
            )
        return JSONResponse(project_answer(project, members, deletion, invalid))

    @app.get("/api/2/deletions/users")
    async def list_jobs(request: Request) -> Response:
        project = gate(request)
        if isinstance(project, JSONResponse):
            return project
        start = _parse_day(request.query_params.get("start_day"))
        end = _parse_day(request.query_params.get("end_day"))
        if start is None or end is None:
            return _error(400, "start_day and end_day are required, as YYYY-MM-DD")
        if end < start:
            return _error(400, "end_day is before start_day")
        if end > _add_months(start, MAX_RANGE_MONTHS):
            return _error(400, "the largest permitted time range is six months")
        jobs = store.jobs(project, start, end)
        return JSONResponse([_listed_job(job, app_ids[project]) for job in jobs])

    @app.delete("/api/2/deletions/users/{amplitude_id}/{day}")
    async def remove_from_job(
        request: Request, amplitude_id: str, day: str
    ) -> Response:
        project = gate(request)
        if isinstance(project, JSONResponse):
            return project
        job_day = _parse_day(day)
        if not amplitude_id.isdigit() or job_day is None:
            return _error(400, "give an Amplitude ID and a job day as YYYY-MM-DD")
        try:
            entry = store.remove_from_job(
                project, int(amplitude_id), job_day.isoformat()
            )
        except JobChangeRefused as refused:
            return _error(400, str(refused))
        return JSONResponse(_entry(entry, with_user_id=False))

    @app.get("/api/2/usersearch")
    async def user_search(request: Request) -> Response:
        project = caller(request)
        if project is None:
            return unauthorized()
        term = request.query_params.get("user")
        if not term:
            return _error(400, "the user parameter is required")
        kind, matches = store.search(project, term)
        return JSONResponse({"matches": matches, "type": kind})

    return app
