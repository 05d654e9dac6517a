"""OpenLineage over HTTP: ``POST /api/v1/lineage``, as Marquez serves it.

That is the path openlineage-python's HTTP transport posts to by default, so
any OpenLineage producer (Airflow, dbt, Spark, openlineage-prefect) can point
its ``url`` here. One event per request, stored in the ledger of the current
LETHE_HOME under the current estate:

- 201, empty body: stored (or seen before; a re-sent event stores nothing new);
- 400: the body is not a JSON object (or not gzip when it says so);
- 422: the event breaks the schema; ``problems`` lists each JSON pointer and
  what is wrong, and nothing of the event is stored.

Bodies sent with ``Content-Encoding: gzip`` (the client's ``compression``
option) are accepted. Marquez's batch endpoint does not exist in Marquez 0.51
and is not served here either.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from lethe import ledger
from lineage.openlineage import (
    Entry,
    ImportReport,
    Intake,
    current_intake,
    import_events,
    parse_events,
)

log = logging.getLogger(__name__)
MAX_BODY = 16 * 1024 * 1024


def create_app(*, intake: Intake | None = None, lenient: bool = False) -> FastAPI:
    """The intake app; ``intake`` defaults to the current estate's."""
    app = FastAPI(title="lethe OpenLineage intake", docs_url=None, redoc_url=None)
    chosen = intake or current_intake()

    @app.post("/api/v1/lineage", status_code=201)
    async def post_lineage(request: Request) -> Response:
        body = await request.body()
        try:
            text = _decode(body, request.headers.get("content-encoding", ""))
        except ValueError as problem:
            return _error(400, str(problem))
        entries = parse_events(text, "http")
        if len(entries) != 1 or entries[0].error is not None:
            reason = entries[0].error if entries else "the body is empty"
            return _error(400, f"send one OpenLineage event as a JSON object: {reason}")
        if not isinstance(entries[0].event, dict) or not text.lstrip().startswith("{"):
            return _error(400, "send one OpenLineage event as a JSON object")
        report = await run_in_threadpool(_store, chosen, entries[0], lenient)
        if report.rejected:
            rejection = report.rejected[0]
            return JSONResponse(
                {
                    "error": "the event breaks the OpenLineage schema: "
                    + rejection.reason,
                    "problems": [
                        {"path": p.pointer or "/", "message": p.message}
                        for p in rejection.problems
                    ],
                },
                status_code=422,
            )
        return Response(status_code=201)

    return app


def _store(intake: Intake, entry: Entry, lenient: bool) -> ImportReport:
    with ledger.session() as db:
        return import_events(db, intake, [entry], lenient=lenient)


def _decode(body: bytes, encoding: str) -> str:
    if len(body) > MAX_BODY:
        raise ValueError(f"the body is over {MAX_BODY // (1024 * 1024)} MiB")
    if encoding.strip().lower() == "gzip":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            body = inflater.decompress(body, MAX_BODY + 1)
        except zlib.error:
            raise ValueError("the body says gzip but is not gzip") from None
        if len(body) > MAX_BODY:
            raise ValueError(f"the body is over {MAX_BODY // (1024 * 1024)} MiB")
        if not inflater.eof:
            raise ValueError("the gzip body ends early")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None


def _error(status: int, message: str) -> JSONResponse:
    log.info("refused an OpenLineage request: %d", status)
    body: dict[str, Any] = {"error": message}
    return JSONResponse(body, status_code=status)
