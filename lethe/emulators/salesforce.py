"""A loopback Salesforce org: OAuth client credentials, SOQL query/queryAll,
sObject and sObject Collections writes, Bulk API 2.0 ingest jobs, and the
ApiEvent log of who read which records.

The emulator exists so the Salesforce connector is tested against the wire
format the real org speaks (vendor-apis.md §1): error bodies are JSON arrays of
``{message, errorCode}``, query results page through ``nextRecordsUrl``, a
collection call takes at most 200 ids, ``DELETE`` puts records in the Recycle
Bin where only ``queryAll`` still sees them, and a Bulk ``hardDelete`` job
moves Open → UploadComplete → InProgress → JobComplete on a clock, doing its
work only when it completes. A Contact that live Cases still reference cannot
be deleted, as in a real org, so callers must delete children first. A record
read (``GET /sobjects/{Object}/{Id}``) answers the documented 404s: NOT_FOUND
for an id the org does not hold, ENTITY_IS_DELETED for one in the Recycle Bin.
The sObject Collections delete (API 42.0+) answers as documented: 400 with an
error body for a request it cannot take (no ids, more than 200), otherwise 200
with one DeleteResult per id in request order, ``success`` false and the
org's ``statusCode`` (MALFORMED_ID, ENTITY_IS_DELETED for an id already in the
Recycle Bin, DELETE_FAILED) for the ids it refused. The code for a missing
``ids`` list (MISSING_ARGUMENT) is the emulator's choice; the doc names none.
The token endpoint (``_salesforce_oauth``) takes client credentials and the
JWT bearer flow; each client id runs as its own integration user. Every query
call is logged as an ApiEvent row (``_salesforce_events``), readable with
``SELECT ... FROM ApiEvent WHERE EventDate > 2026-01-31T00:00:00Z``.

Records live in SQLite (``path=None`` keeps them in memory) so an estate
survives a restart. What is deliberately left out, so nobody relies on it:
relationship fields and sub-queries, ``ORDER BY``/``OFFSET``/``COUNT()``,
range operators on anything but dates, SOSL, cascade delete of an Account's
children, Bulk queries, and Bulk operations other than ``delete`` and
``hardDelete``; each answers with the error the real org gives for a query or
job it cannot run.

This module is the HTTP surface; the query language, the records and the job
clock live in ``_salesforce_soql``, ``_salesforce_store`` and
``_salesforce_schema``; users, sessions and ApiEvent rows in
``_salesforce_sessions`` and ``_salesforce_events``. ``app.state.calls``
counts the data API calls the org served (past faults and the session check),
keyed ``"METHOD /services/data/vXX.X/path"``, so tests can say how many calls
of a kind a connector made.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lethe.emulators._salesforce_bulk import DELIMITERS, OPEN_STATES, csv_text
from lethe.emulators._salesforce_events import RECORDS_LIMIT
from lethe.emulators._salesforce_oauth import (
    JwtApp,
    TokenSettings,
    install_oauth,
    load_public_key,
)
from lethe.emulators._salesforce_query import install_query, project
from lethe.emulators._salesforce_schema import (
    KEY_PREFIXES,
    SalesforceError,
    normal_id,
    not_found,
    sf_time,
)
from lethe.emulators._salesforce_sessions import DEFAULT_USERNAME
from lethe.emulators._salesforce_soql import parse_soql
from lethe.emulators._salesforce_store import SalesforceStore
from lethe.emulators._server import Faults, install_faults

__all__ = [
    "DEFAULT_USERNAME",
    "SalesforceError",
    "SalesforceStore",
    "create_app",
    "parse_soql",
]

_VERSION = re.compile(r"^/services/data/v(\d+\.\d)(/.*)?$")
_JOBS_PAGE = 1000
_COLLECTIONS_SINCE = 42.0


@dataclass
class _Settings:
    max_version: float
    page_size: int
    bulk_step_seconds: float
    api_limit: int
    clock: Callable[[], float]


def _error_response(
    error: SalesforceError, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def create_app(
    store: SalesforceStore,
    *,
    client_id: str,
    client_secret: str,
    api_version: str = "v60.0",
    page_size: int = 2000,
    bulk_step_seconds: float = 0.2,
    api_limit: int = 100_000,
    clock: Callable[[], float] = time.time,
    jwt_consumer_key: str | None = None,
    jwt_public_key_pem: bytes | None = None,
    jwt_username: str | None = None,
    jwt_max_lifetime: float = 300.0,
    integrations: Mapping[str, tuple[str, str]] | None = None,
    api_event_records_limit: int = RECORDS_LIMIT,
) -> FastAPI:
    """The org's REST and Bulk API 2.0 endpoints over ``store``.

    ``client_id``/``client_secret`` run as the store's default integration
    user (``DEFAULT_USERNAME``); ``integrations`` adds more connected apps,
    client id → (client secret, run-as username), so each downstream's
    extractor can read as its own user. ``api_event_records_limit`` is the
    length ApiEvent ``Records`` is cut at (250,000 in a real org).

    ``page_size`` is the query batch size (2,000 in a real org), and
    ``bulk_step_seconds`` how long a closed Bulk job spends in each of
    UploadComplete and InProgress before it completes. The JWT bearer flow is
    open when ``jwt_consumer_key``, ``jwt_public_key_pem`` (the app's
    certificate or its public key, PEM) and ``jwt_username`` (the pre-authorised
    user) are all given; ``jwt_max_lifetime`` is how far ahead ``exp`` may lie.
    """
    jwt_settings = (jwt_consumer_key, jwt_public_key_pem, jwt_username)
    if any(value is not None for value in jwt_settings) and None in jwt_settings:
        raise ValueError(
            "the JWT bearer flow needs jwt_consumer_key, jwt_public_key_pem "
            "and jwt_username together"
        )
    jwt = None
    if jwt_consumer_key and jwt_public_key_pem and jwt_username:
        key = load_public_key(jwt_public_key_pem)
        jwt = JwtApp(jwt_consumer_key, key, jwt_username, jwt_max_lifetime)
    clients = {client_id: (client_secret, DEFAULT_USERNAME)}
    for extra, credentials in (integrations or {}).items():
        if extra in clients:
            raise ValueError("each integration needs its own client id")
        clients[extra] = credentials
    tokens = TokenSettings(clients, clock, jwt)
    settings = _Settings(
        float(api_version.lstrip("v")),
        page_size,
        bulk_step_seconds,
        api_limit,
        clock,
    )
    app = FastAPI(title="Salesforce emulator", docs_url=None, redoc_url=None)
    app.state.store = store
    app.state.faults = Faults()
    app.state.calls = Counter()
    _install_gate(app, store, settings)
    install_faults(app, app.state.faults)
    _install_errors(app)
    install_oauth(app, store, tokens)
    install_query(
        app,
        store,
        page_size=page_size,
        clock=clock,
        records_limit=api_event_records_limit,
    )
    _install_sobjects(app, store)
    _install_bulk(app, store, settings)
    return app


def _install_gate(app: FastAPI, store: SalesforceStore, settings: _Settings) -> None:
    """Version check, bearer token, API allocation and Sforce-Limit-Info."""

    @app.middleware("http")
    async def gate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if path.rstrip("/") == "/services/data":
            return JSONResponse(_versions(settings.max_version))
        if not path.startswith("/services/data/"):
            return await call_next(request)
        match = _VERSION.match(path)
        if match is None or not 31.0 <= float(match.group(1)) <= settings.max_version:
            return _error_response(not_found())
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        caller = (
            store.use_session(token.strip()) if scheme.lower() == "bearer" else None
        )
        if caller is None:
            expired = SalesforceError(
                401, "INVALID_SESSION_ID", "Session expired or invalid"
            )
            return _error_response(expired)
        request.state.caller = caller
        app.state.calls[f"{request.method} {path.rstrip('/')}"] += 1
        calls = store.count_api_call()
        usage = {"Sforce-Limit-Info": f"api-usage={calls}/{settings.api_limit}"}
        if calls > settings.api_limit:
            limit = SalesforceError(
                403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."
            )
            return _error_response(limit, usage)
        store.advance_jobs(settings.clock())
        response = await call_next(request)
        response.headers.update(usage)
        return response


def _versions(max_version: float) -> list[dict[str, str]]:
    """``GET /services/data``: the versions served, oldest first, no auth."""
    versions = []
    for number in range(31, int(max_version) + 1):
        url = f"/services/data/v{number}.0"
        versions.append({"label": f"v{number}.0", "url": url, "version": f"{number}.0"})
    return versions


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(SalesforceError)
    async def salesforce_error(_request: Request, exc: SalesforceError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if not request.url.path.startswith("/services/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        if exc.status_code == 405:
            why = f"HTTP Method '{request.method}' not allowed."
            return _error_response(SalesforceError(405, "METHOD_NOT_ALLOWED", why))
        return _error_response(not_found())


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError:
        raise SalesforceError(
            400, "JSON_PARSER_ERROR", "the request body is not valid JSON"
        ) from None


def _save_results(
    ids: list[str], errors: list[SalesforceError | None]
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for record_id, error in zip(ids, errors, strict=True):
        if error is None:
            results.append({"id": normal_id(record_id), "success": True, "errors": []})
        else:
            results.append({"success": False, "errors": [error.save_error()]})
    return results


def _install_sobjects(app: FastAPI, store: SalesforceStore) -> None:
    def sobject_or_404(name: str) -> str:
        canonical = store.canonical_sobject(name)
        if canonical is None:
            raise not_found()
        return canonical

    @app.post("/services/data/{version}/sobjects/{sobject}")
    async def create(sobject: str, request: Request) -> JSONResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "expected a JSON object")
        record_id = store.insert(sobject_or_404(sobject), body)
        return JSONResponse(
            {"id": record_id, "success": True, "errors": []}, status_code=201
        )

    @app.get("/services/data/{version}/sobjects/{sobject}")
    async def basic_info(version: str, sobject: str) -> dict[str, Any]:
        return _basic_info(sobject_or_404(sobject), version)

    @app.get("/services/data/{version}/sobjects/{sobject}/{record_id}")
    async def read(
        version: str, sobject: str, record_id: str, fields: str | None = None
    ) -> dict[str, Any]:
        canonical = sobject_or_404(sobject)
        record = store.get(record_id)
        if record is None or store.sobject_of(record_id) != canonical:
            raise not_found()
        if record["IsDeleted"]:
            raise SalesforceError(404, "ENTITY_IS_DELETED", "entity is deleted")
        names = _field_list(store.schema(canonical), canonical, fields)
        return project(record, names, canonical, version)

    @app.patch("/services/data/{version}/sobjects/{sobject}/{record_id}")
    async def patch(sobject: str, record_id: str, request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "expected a JSON object")
        store.update(record_id, body, sobject=sobject_or_404(sobject))
        return Response(status_code=204)

    @app.delete("/services/data/{version}/sobjects/{sobject}/{record_id}")
    async def delete(sobject: str, record_id: str) -> Response:
        store.delete(record_id, sobject=sobject_or_404(sobject))
        return Response(status_code=204)

    @app.delete("/services/data/{version}/composite/sobjects")
    async def delete_collection(
        version: str, ids: str = "", allOrNone: str = "false"
    ) -> list[dict[str, Any]]:
        _check_collections_version(version)
        id_list = [value.strip() for value in ids.split(",") if value.strip()]
        if not id_list:
            why = "ids: a comma-separated list of record ids is required"
            raise SalesforceError(400, "MISSING_ARGUMENT", why)
        _check_collection_size(len(id_list))
        operations = [store.delete_op(record_id) for record_id in id_list]
        errors = store.write_many(operations, all_or_none=allOrNone.lower() == "true")
        return _collection_results(id_list, errors)

    @app.patch("/services/data/{version}/composite/sobjects")
    async def update_collection(version: str, request: Request) -> list[dict[str, Any]]:
        _check_collections_version(version)
        body = await _json_body(request)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "expected {records: [...]}")
        _check_collection_size(len(records))
        ids, operations = [], []
        for record in records:
            record_id, sobject, fields = _collection_record(store, record)
            ids.append(record_id)
            operations.append(store.update_op(record_id, fields, sobject))
        errors = store.write_many(operations, all_or_none=bool(body.get("allOrNone")))
        return _collection_results(ids, errors)


def _basic_info(sobject: str, version: str) -> dict[str, Any]:
    """``GET /sobjects/{Object}``: the sObject Basic Information resource."""
    url = f"/services/data/{version}/sobjects/{sobject}"
    describe = {
        "name": sobject,
        "label": sobject,
        "labelPlural": f"{sobject}s",
        "keyPrefix": KEY_PREFIXES[sobject],
        "custom": False,
        "createable": True,
        "deletable": True,
        "queryable": True,
        "retrieveable": True,
        "updateable": True,
        "undeletable": True,
        "urls": {
            "sobject": url,
            "describe": f"{url}/describe",
            "rowTemplate": f"{url}/{{ID}}",
        },
    }
    return {"objectDescribe": describe, "recentItems": []}


def _field_list(schema: dict[str, str], sobject: str, fields: str | None) -> list[str]:
    """The ``fields`` parameter of a record GET, in canonical names."""
    if fields is None:
        return list(schema)
    lower = {name.lower(): name for name in schema}
    names = []
    for name in (part.strip() for part in fields.split(",") if part.strip()):
        if name.lower() not in lower:
            why = f"No such column '{name}' on entity '{sobject}'"
            raise SalesforceError(400, "INVALID_FIELD", why, [name])
        names.append(lower[name.lower()])
    return names


def _check_collections_version(version: str) -> None:
    """sObject Collections exist from API 42.0; older versions do not serve them."""
    if float(version.lstrip("v")) < _COLLECTIONS_SINCE:
        raise not_found()


def _check_collection_size(count: int) -> None:
    if count > 200:
        raise SalesforceError(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        )


def _collection_results(
    ids: list[str], errors: list[SalesforceError | None]
) -> list[dict[str, Any]]:
    mapped = []
    for error in errors:
        if error is not None and error.code == "NOT_FOUND":
            error = SalesforceError(
                400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"
            )
        mapped.append(error)
    return _save_results(ids, mapped)


def _collection_record(
    store: SalesforceStore, record: Any
) -> tuple[str, str | None, dict[str, Any]]:
    if not isinstance(record, dict):
        raise SalesforceError(400, "JSON_PARSER_ERROR", "each record must be an object")
    fields = {k: v for k, v in record.items() if k not in ("attributes", "id", "Id")}
    record_id = str(record.get("id") or record.get("Id") or "")
    declared = (record.get("attributes") or {}).get("type", "")
    sobject = store.canonical_sobject(str(declared))
    if sobject is None:
        raise SalesforceError(
            400, "INVALID_TYPE", "every record needs attributes.type naming its sObject"
        )
    return record_id, sobject, fields


def _install_bulk(app: FastAPI, store: SalesforceStore, settings: _Settings) -> None:
    base = "/services/data/{version}/jobs/ingest"

    def job_or_404(job_id: str) -> dict[str, Any]:
        job = store.job(job_id)
        if job is None:
            raise not_found()
        return job

    @app.post(base)
    async def create_job(version: str, request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "expected a JSON object")
        return _public_info(store.create_job(_new_job_info(store, body, version)))

    @app.get(base)
    async def list_jobs(version: str, queryLocator: str = "0") -> dict[str, Any]:
        start = int(queryLocator) if queryLocator.isdigit() else 0
        jobs = store.jobs()
        page = [_public_info(info) for info in jobs[start : start + _JOBS_PAGE]]
        done = start + _JOBS_PAGE >= len(jobs)
        following = f"/services/data/{version}/jobs/ingest?queryLocator="
        next_url = None if done else f"{following}{start + _JOBS_PAGE}"
        return {"done": done, "records": page, "nextRecordsUrl": next_url}

    @app.get(base + "/{job_id}")
    async def job_info(job_id: str) -> dict[str, Any]:
        return _public_info(job_or_404(job_id)["info"])

    @app.put(base + "/{job_id}/batches")
    async def upload(job_id: str, request: Request) -> Response:
        job = job_or_404(job_id)
        if not request.headers.get("content-type", "").startswith("text/csv"):
            raise SalesforceError(400, "INVALIDJOB", "Content-Type must be text/csv")
        if job["info"]["state"] != "Open" or job["upload"] is not None:
            why = "InvalidJob : data can be uploaded once, to an Open job"
            raise SalesforceError(409, "INVALIDJOB", why)
        info = job["info"] | {"systemModstamp": sf_time(settings.clock())}
        store.save_job(job_id, info, upload=(await request.body()).decode("utf-8-sig"))
        return Response(status_code=201)

    @app.patch(base + "/{job_id}")
    async def change_state(job_id: str, request: Request) -> dict[str, Any]:
        job = job_or_404(job_id)
        body = await _json_body(request)
        wanted = body.get("state") if isinstance(body, dict) else None
        info = _change_state(store, job, wanted, settings)
        return _public_info(info)

    @app.delete(base + "/{job_id}")
    async def delete_job(job_id: str) -> Response:
        job = job_or_404(job_id)
        if job["info"]["state"] in OPEN_STATES:
            why = "InvalidJob : only a job in a final state can be deleted"
            raise SalesforceError(400, "INVALIDJOB", why)
        store.delete_job(job_id)
        return Response(status_code=204)

    def results(job_id: str, column: str) -> Response:
        job = job_or_404(job_id)
        info = job["info"]
        line_ending = "\r\n" if info["lineEnding"] == "CRLF" else "\n"
        text = job[column]
        if text is None:
            header = _upload_header(job)
            second = "sf__Created" if column == "success_csv" else "sf__Error"
            text = csv_text(["sf__Id", second, *header], [], line_ending)
        return Response(text, media_type="text/csv")

    for suffix in ("", "/"):

        @app.get(base + "/{job_id}/successfulResults" + suffix)
        async def successful(job_id: str) -> Response:
            return results(job_id, "success_csv")

        @app.get(base + "/{job_id}/failedResults" + suffix)
        async def failed(job_id: str) -> Response:
            return results(job_id, "failed_csv")

        @app.get(base + "/{job_id}/unprocessedrecords" + suffix)
        async def unprocessed(job_id: str) -> Response:
            job = job_or_404(job_id)
            done = job["info"]["state"] == "JobComplete"
            upload = job["upload"] or ""
            text = upload.splitlines(keepends=True)[0] if done and upload else upload
            return Response(text, media_type="text/csv")


def _upload_header(job: dict[str, Any]) -> list[str]:
    upload = job["upload"] or ""
    delimiter = DELIMITERS[job["info"]["columnDelimiter"]]
    rows = list(csv.reader(io.StringIO(upload), delimiter=delimiter))
    return rows[0] if rows else ["Id"]


def _new_job_info(
    store: SalesforceStore, body: dict[str, Any], version: str
) -> dict[str, Any]:
    sobject = store.canonical_sobject(str(body.get("object", "")))
    if sobject is None:
        why = f"sObject type '{body.get('object')}' is not supported"
        raise SalesforceError(400, "INVALIDENTITY", why)
    operation = body.get("operation")
    if operation not in ("delete", "hardDelete"):
        why = (
            f"InvalidJob : operation {operation}: the emulator runs delete, hardDelete"
        )
        raise SalesforceError(400, "INVALIDJOB", why)
    if body.get("contentType", "CSV") != "CSV":
        raise SalesforceError(400, "INVALIDJOB", "InvalidJob : contentType must be CSV")
    line_ending = body.get("lineEnding", "LF")
    delimiter = body.get("columnDelimiter", "COMMA")
    if line_ending not in ("LF", "CRLF") or delimiter not in DELIMITERS:
        raise SalesforceError(
            400, "INVALIDJOB", "InvalidJob : lineEnding or columnDelimiter"
        )
    now = sf_time(time.time())
    return {
        "operation": operation,
        "object": sobject,
        "createdById": store.user_id,
        "createdDate": now,
        "systemModstamp": now,
        "state": "Open",
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": float(version.lstrip("v")),
        "jobType": "V2Ingest",
        "lineEnding": line_ending,
        "columnDelimiter": delimiter,
        "numberRecordsProcessed": 0,
        "numberRecordsFailed": 0,
        "retries": 0,
        "totalProcessingTime": 0,
        "apiActiveProcessingTime": 0,
        "apexProcessingTime": 0,
    }


def _change_state(
    store: SalesforceStore, job: dict[str, Any], wanted: Any, settings: _Settings
) -> dict[str, Any]:
    info = job["info"]
    now = settings.clock()
    if wanted == "UploadComplete" and info["state"] == "Open":
        step = settings.bulk_step_seconds
        info |= {
            "state": "UploadComplete",
            "systemModstamp": sf_time(now),
            "totalProcessingTime": int(2 * step * 1000),
        }
        store.save_job(
            info["id"], info, progress_at=now + step, complete_at=now + 2 * step
        )
        return info
    if wanted == "Aborted" and info["state"] in OPEN_STATES:
        info |= {"state": "Aborted", "systemModstamp": sf_time(now)}
        store.save_job(info["id"], info, complete_at=None)
        return info
    why = f"InvalidJob : cannot change a job from {info['state']} to {wanted}"
    raise SalesforceError(400, "INVALIDJOB", why)


def _public_info(info: dict[str, Any]) -> dict[str, Any]:
    version = info["apiVersion"]
    content_url = f"services/data/v{version:.1f}/jobs/ingest/{info['id']}/batches"
    return {**info, "contentUrl": content_url}
