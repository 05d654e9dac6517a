"""ApiEvent: the emulated org's record of which user read which record ids.

Every successful REST ``query``, ``queryAll`` and ``queryMore`` call logs one
row, as ApiEvent tracks ``query()`` and ``queryMore()`` (vendor-apis.md §1.4),
and ``SELECT ... FROM ApiEvent`` reads them back. Not logged: queries of
ApiEvent itself, refused queries, record reads by id, and Bulk queries (the
emulator's Bulk jobs are ingest deletes only, and a real Bulk result download
is a BulkApiResultEvent, which carries no record ids).

What a row holds, and where the emulator had to choose:

- ``EventDate`` (milliseconds, ``+0000``) and ``EventIdentifier`` (a UUID);
  two events can share an ``EventDate``, so a reader orders by both.
- ``Username`` and ``UserId`` of the session's integration user;
  ``ConnectedAppId`` only on the call that authenticated the session (its
  token's first call), null on every call that holds an existing token.
- ``ApiType`` REST; ``Operation`` Query, QueryAll or QueryMore;
  ``QueriedEntities`` the object; ``Query`` the SOQL text as sent, literals
  included (a real one can hold an e-mail address), cut at 10,000 characters.
- ``RowsProcessed`` the rows the query matched, ``RowsReturned`` the rows this
  call returned (one batch of at most the page size).
- ``Records``: JSON describing the rows this call returned. The documented
  contract is only that it describes them "including their IDs"; the shape
  here is the emulator's choice, ``{"totalSize": n, "done": bool, "records":
  [{"attributes": {"type": "Contact"}, "Id": "003..."}]}``, so check the real
  shape in an org before trusting a parser with it. Text over 250,000
  characters (the field's length) is cut there and is no longer valid JSON;
  what a real org does with an overlong Records is not documented.
- ``AdditionalInfo``: the request's headers named ``x-sfdc-addinfo-<name>``
  (``<name>`` 2 to 29 letters, digits or ``_``) as a JSON object keyed by
  ``<name>`` in lower case (HTTP header names ignore case); null without any.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lethe.emulators._salesforce_schema import sf_time
from lethe.emulators._salesforce_sessions import Caller

API_EVENT = "ApiEvent"
RECORDS_LIMIT = 250_000
QUERY_LIMIT = 10_000
_ADDINFO = re.compile(r"^x-sfdc-addinfo-([A-Za-z0-9_]{2,29})$", re.I)

API_EVENT_SCHEMA: dict[str, str] = {
    "EventDate": "date",
    "EventIdentifier": "text",
    "Username": "text",
    "UserId": "ref",
    "ConnectedAppId": "ref",
    "ApiType": "text",
    "ApiVersion": "num",
    "Operation": "text",
    "QueriedEntities": "text",
    "Query": "text",
    "RowsProcessed": "num",
    "RowsReturned": "num",
    "Records": "text",
    "AdditionalInfo": "text",
    "SourceIp": "text",
    "UserAgent": "text",
    "SessionKey": "text",
    "LoginKey": "text",
    "ElapsedTime": "num",
    "RequestIdentifier": "text",
    "CreatedDate": "date",
}


@dataclass(frozen=True)
class QueryCall:
    """One logged query call: what was asked, by whom, from where."""

    soql: str
    sobject: str
    operation: str  # Query, QueryAll or QueryMore
    version: str
    caller: Caller
    headers: Mapping[str, str]
    source_ip: str | None
    started: float


def is_api_event(sobject: str) -> bool:
    return sobject.lower() == API_EVENT.lower()


def additional_info(headers: Mapping[str, str]) -> str | None:
    """The ``x-sfdc-addinfo-*`` headers as ApiEvent keeps them, or None."""
    kept = {}
    for name, value in headers.items():
        match = _ADDINFO.match(name)
        if match is not None:
            kept[match.group(1).lower()] = value
    return json.dumps(kept, sort_keys=True) if kept else None


def records_json(
    rows: Sequence[Mapping[str, Any]], *, done: bool, limit: int = RECORDS_LIMIT
) -> str:
    """The emulator's ``Records`` text for the rows one call returned."""
    described = []
    for row in rows:
        # The id is there even when the query did not select it: its url ends in it.
        attributes = row["attributes"]
        record_id = row.get("Id") or attributes["url"].rsplit("/", 1)[1]
        described.append({"attributes": {"type": attributes["type"]}, "Id": record_id})
    body = {"totalSize": len(rows), "done": done, "records": described}
    return json.dumps(body, separators=(",", ":"))[:limit]


def api_event(
    call: QueryCall,
    rows: Sequence[Mapping[str, Any]],
    *,
    matched: int,
    done: bool,
    now: float,
    records_limit: int = RECORDS_LIMIT,
) -> dict[str, Any]:
    """The ApiEvent row for one query call that returned ``rows``."""
    token = call.caller.token
    return {
        "EventDate": sf_time(now),
        "EventIdentifier": str(uuid.uuid4()),
        "Username": call.caller.username,
        "UserId": call.caller.user_id,
        "ConnectedAppId": call.caller.connected_app_id,
        "ApiType": "REST",
        "ApiVersion": float(call.version.lstrip("v")),
        "Operation": call.operation,
        "QueriedEntities": call.sobject,
        "Query": call.soql[:QUERY_LIMIT],
        "RowsProcessed": float(matched),
        "RowsReturned": float(len(rows)),
        "Records": records_json(rows, done=done, limit=records_limit),
        "AdditionalInfo": additional_info(call.headers),
        "SourceIp": call.source_ip,
        "UserAgent": call.headers.get("user-agent"),
        "SessionKey": _key("session", token),
        "LoginKey": _key("login", token),
        "ElapsedTime": int((time.monotonic() - call.started) * 1000),
        "RequestIdentifier": uuid.uuid4().hex[:16],
        "CreatedDate": sf_time(now),
    }


def _key(kind: str, token: str) -> str:
    """A stable key for the token's session that does not reveal the token."""
    return hashlib.sha256(f"{kind}:{token}".encode()).hexdigest()[:16]


def project_event(event: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {"attributes": {"type": API_EVENT}} | {
        name: event.get(name) for name in fields
    }
