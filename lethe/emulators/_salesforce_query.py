"""The org's query surface: SOQL ``query`` and ``queryAll``, their pages
(``nextRecordsUrl``), and an ApiEvent row for every call that read records.

A page size of 2,000 is the real batch; a query that needs more opens a cursor
(a query locator) that remembers what the query was, so each ``queryMore``
page logs its own ApiEvent naming the rows it returned. ``SELECT ... FROM
ApiEvent`` reads the log back and is itself never logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request

from lethe.emulators._salesforce_events import (
    API_EVENT_SCHEMA,
    QueryCall,
    api_event,
    is_api_event,
    project_event,
)
from lethe.emulators._salesforce_schema import SalesforceError
from lethe.emulators._salesforce_soql import Resolved, Soql, parse_soql
from lethe.emulators._salesforce_store import SalesforceStore


def install_query(
    app: FastAPI,
    store: SalesforceStore,
    *,
    page_size: int,
    clock: Callable[[], float],
    records_limit: int,
) -> None:
    """``query``, ``queryAll`` and their ``nextRecordsUrl`` pages."""

    def run(
        request: Request, version: str, q: str | None, *, include_deleted: bool
    ) -> dict[str, Any]:
        started = time.monotonic()
        if not q:
            raise SalesforceError(
                400, "MALFORMED_QUERY", "A query string has to be specified"
            )
        query = parse_soql(q)
        if is_api_event(query.sobject):
            return _page(_api_events(store, query), version, 0, None)
        sobject = store.canonical_sobject(query.sobject)
        if sobject is None:
            why = f"sObject type '{query.sobject}' is not supported."
            raise SalesforceError(400, "INVALID_TYPE", why)
        resolved = Resolved(query, store.schema(sobject), sobject)
        found = [
            project(record, resolved.fields, sobject, version)
            for record in store.records(sobject, include_deleted=include_deleted)
            if resolved.matches(record)
        ]
        if resolved.limit is not None:
            found = found[: resolved.limit]
        operation = "QueryAll" if include_deleted else "Query"
        context = {"soql": q, "sobject": sobject}
        body = _page(found, version, 0, None, context)
        call = _call(request, context, operation, version, started)
        _log(call, body, len(found))
        return body

    def _page(
        records: list[dict[str, Any]],
        version: str,
        offset: int,
        locator: str | None,
        context: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        end = offset + page_size
        body: dict[str, Any] = {
            "totalSize": len(records),
            "done": end >= len(records),
            "records": records[offset:end],
        }
        if not body["done"]:
            locator = locator or store.open_cursor(records, context)
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{end}"
        return body

    def _log(call: QueryCall, body: dict[str, Any], matched: int) -> None:
        store.log_api_event(
            api_event(
                call,
                body["records"],
                matched=matched,
                done=body["done"],
                now=clock(),
                records_limit=records_limit,
            )
        )

    @app.get("/services/data/{version}/query")
    async def query(
        request: Request, version: str, q: str | None = None
    ) -> dict[str, Any]:
        return run(request, version, q, include_deleted=False)

    @app.get("/services/data/{version}/queryAll")
    async def query_all(
        request: Request, version: str, q: str | None = None
    ) -> dict[str, Any]:
        return run(request, version, q, include_deleted=True)

    @app.get("/services/data/{version}/query/{cursor}")
    @app.get("/services/data/{version}/queryAll/{cursor}")
    async def query_more(request: Request, version: str, cursor: str) -> dict[str, Any]:
        started = time.monotonic()
        locator, _, offset = cursor.rpartition("-")
        records = store.cursor(locator) if offset.isdigit() else None
        if records is None:
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        body = _page(records, version, int(offset), locator)
        context = store.cursor_context(locator)
        if context is not None:  # None: an ApiEvent query, which is never logged
            _log(
                _call(request, context, "QueryMore", version, started),
                body,
                len(records),
            )
        return body


def _call(
    request: Request,
    context: dict[str, Any],
    operation: str,
    version: str,
    started: float,
) -> QueryCall:
    return QueryCall(
        soql=context["soql"],
        sobject=context["sobject"],
        operation=operation,
        version=version,
        caller=request.state.caller,
        headers=dict(request.headers),
        source_ip=request.client.host if request.client else None,
        started=started,
    )


def _api_events(store: SalesforceStore, query: Soql) -> list[dict[str, Any]]:
    """``SELECT ... FROM ApiEvent``: the log's rows, oldest first (not logged)."""
    resolved = Resolved(query, API_EVENT_SCHEMA, "ApiEvent")
    found = [
        project_event(event, resolved.fields)
        for event in store.api_events()
        if resolved.matches(event)
    ]
    return found if resolved.limit is None else found[: resolved.limit]


def project(
    record: dict[str, Any], fields: list[str], sobject: str, version: str
) -> dict[str, Any]:
    url = f"/services/data/{version}/sobjects/{sobject}/{record['Id']}"
    return {"attributes": {"type": sobject, "url": url}} | {
        name: record.get(name) for name in fields
    }
