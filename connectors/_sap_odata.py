"""The OData V2 wire details the SAP Business Partner connector relies on:
literals and key predicates, entity types and their keys, the ``{"d": ...}``
envelope, SAP's error body, the CSRF "Required" answer, and JSON dates.

Kept apart from ``sap.py`` so the connector reads as the block-and-anonymise
steps. Nothing here talks HTTP; it only reads and writes what HTTP carries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from lethe.errors import ConnectorError

FILTER_CHUNK = 15


def literal(value: str) -> str:
    """An OData string literal: single quotes, an inner quote doubled."""
    return "'" + value.replace("'", "''") + "'"


def entity_path(name: str, keys: Mapping[str, str]) -> str:
    """``Set('key')`` or ``Set(A='1',B='2')``, percent-encoded for a URL path."""
    if len(keys) == 1:
        predicate = literal(next(iter(keys.values())))
    else:
        predicate = ",".join(f"{k}={literal(v)}" for k, v in keys.items())
    return f"{name}({quote(predicate, safe=chr(39) + '=,')})"


_KEYS = {
    "A_BusinessPartner": ("BusinessPartner",),
    "A_BusinessPartnerAddress": ("BusinessPartner", "AddressID"),
    "A_AddressEmailAddress": ("AddressID", "Person", "OrdinalNumber"),
    "A_AddressPhoneNumber": ("AddressID", "Person", "OrdinalNumber"),
    "A_Customer": ("Customer",),
}


def entity_set(entity: Mapping[str, Any]) -> str:
    kind = str(entity.get("__metadata", {}).get("type", ""))
    name = kind.rpartition(".")[2].removesuffix("Type")
    if name not in _KEYS:
        raise ConnectorError(
            f"SAP returned an entity of unexpected type {name or '?'}; "
            "check the API version against $metadata"
        )
    return name


def keys_of(entity: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(entity[k]) for k in _KEYS[entity_set(entity)]}


def nav_results(entity: Mapping[str, Any], nav: str) -> list[dict[str, Any]]:
    value = entity.get(nav) or {}
    return list(value.get("results", [])) if isinstance(value, dict) else list(value)


def count_entries(partner: Mapping[str, Any], nav: str) -> int:
    return sum(
        len(nav_results(a, nav))
        for a in nav_results(partner, "to_BusinessPartnerAddress")
    )


def payload(
    response: httpx.Response, system: str, op: str, *, setting: str = "base_url"
) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("d"), dict):
        raise ConnectorError(
            f"{system}: {op} answered HTTP {response.status_code} without OData JSON; "
            f"check {setting} and that the service speaks OData V2",
            status=response.status_code,
        )
    return body["d"]


_JSON_DATE = re.compile(r"/Date\((-?\d+)(?:([+-])(\d{4}))?\)/")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def odata_date(value: object) -> date | None:
    """The calendar date an OData V2 JSON date names, or None if it is not one.

    ``/Date(<ms>)/`` counts milliseconds from 1970-01-01 UTC (negative before
    it); Edm.DateTime values with SAP's date display format are midnight UTC
    of their day. ``/Date(<ms>+0060)/``, the Edm.DateTimeOffset form, adds the
    offset in minutes (the OData V2 JSON format says minutes, not hhmm) to
    give the local date. ISO 8601 text, which some gateways send for
    DateTimeOffset, is read as written.
    """
    if not isinstance(value, str):
        return None
    match = _JSON_DATE.fullmatch(value.strip())
    if match is None:
        return _iso_date(value.strip())
    ms, sign, minutes = int(match[1]), match[2], int(match[3] or 0)
    shift = minutes if sign != "-" else -minutes
    try:
        moment = _EPOCH + timedelta(milliseconds=ms, minutes=shift)
    except OverflowError:
        return None
    return moment.date()


def _iso_date(text: str) -> date | None:
    try:
        return datetime.fromisoformat(text).date()
    except ValueError:
        return None


def is_odata_error(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and "code" in error and "message" in error


def csrf_required(response: httpx.Response) -> bool:
    required = response.headers.get("x-csrf-token", "").lower() == "required"
    return response.status_code == 403 and required


def chunks(items: Iterable[str], size: int = FILTER_CHUNK) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
