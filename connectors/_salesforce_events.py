"""Reading Salesforce's ApiEvent log: which user read which record ids, and when.

ApiEvent (Shield or Event Monitoring, and the "View Real-Time Event Monitoring
Data" permission; vendor-apis.md §1.4) keeps one row per ``query()`` or
``queryMore()`` call. The rows read here carry who (``Username``, ``UserId``,
``AdditionalInfo`` headers such as ``pipeline_id``; ``ConnectedAppId`` only
when the call itself authenticated, so it cannot attribute), what
(``QueriedEntities``, ``Records`` with the ids returned, ``RowsReturned``) and
when (``EventDate``, ``EventIdentifier``). ``Query`` is not read: its text can
hold a subject's e-mail as a literal, and lineage needs none of it.

A watermark is the last ``(EventDate, EventIdentifier)`` captured: two events
can share an ``EventDate``, so the identifier breaks the tie. SOQL datetime
literals stop at whole seconds, so the query asks for ``EventDate >=`` the
watermark's second and the rows at or below the watermark are dropped here.
Big-object results come in the store's index order, so the rows are sorted
here too; one call holds the whole answer in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from connectors._salesforce_http import OrgSession
from connectors._salesforce_soql import select
from lethe.errors import ConnectorError, InputError

__all__ = ["API_EVENT_FIELDS", "api_events", "event_moment"]

API_EVENT_FIELDS = (
    "EventDate",
    "EventIdentifier",
    "Username",
    "UserId",
    "ConnectedAppId",
    "ApiType",
    "Operation",
    "QueriedEntities",
    "RowsProcessed",
    "RowsReturned",
    "Records",
    "AdditionalInfo",
)


def event_moment(value: object) -> datetime | None:
    """An ``EventDate`` as the org writes it (``...+0000``, ``Z``), in UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def api_events(
    org: OrgSession, since: str | None, after: str | None
) -> Iterator[dict[str, Any]]:
    """ApiEvent rows past the watermark ``(since, after)``, oldest first."""
    mark = _watermark(org.system, since)
    where = ""
    if mark is not None:
        where = f"EventDate >= {mark.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
    ordered = []
    for row in org.query(select(API_EVENT_FIELDS, "ApiEvent", where)):
        moment = event_moment(row.get("EventDate"))
        identifier = row.get("EventIdentifier")
        if moment is None or not isinstance(identifier, str) or not identifier:
            raise ConnectorError(
                f"{org.system}: Salesforce returned an ApiEvent without a readable "
                "EventDate and EventIdentifier; check api_version"
            )
        if mark is None or _newer((moment, identifier), mark, after):
            ordered.append(((moment, identifier), row))
    ordered.sort(key=lambda item: item[0])
    for _, row in ordered:
        yield {name: row.get(name) for name in API_EVENT_FIELDS}


def _watermark(system: str, since: str | None) -> datetime | None:
    if since is None:
        return None
    moment = event_moment(since)
    if moment is None:
        raise InputError(
            f"{system}: an ApiEvent watermark must be an EventDate such as "
            "2026-01-31T08:00:00.000+0000"
        )
    return moment


def _newer(key: tuple[datetime, str], mark: datetime, after: str | None) -> bool:
    """Past ``(mark, after)``; with no identifier, strictly after ``mark``."""
    if after is None:
        return key[0] > mark
    return key > (mark, after)
