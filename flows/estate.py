"""Reaching the estate from inside a flow: its file and its connectors."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from connectors.base import Connector
from connectors.registry import build
from lethe.config import load_settings
from lethe.estate.config import Estate, load_estate
from lineage import SourceRecord


def current_estate() -> Estate:
    path = os.environ.get("LETHE_ESTATE")
    return load_estate(Path(path) if path else load_settings().estate_file)


@contextmanager
def connector_for(estate: Estate, system: str) -> Iterator[Connector]:
    """The system's connector; a paced one shares its limit across runs."""
    settings = estate.connector_settings(system)
    connector = build(system, settings)
    rate = connector.capabilities.rate_limit_per_second
    if rate and _accepts_pacer(connector) and shared_limits_enabled():
        from flows.pacing import shared_pacer

        connector.close()
        connector = build(system, {**settings, "pacer": shared_pacer(system, rate)})
    try:
        yield connector
    finally:
        connector.close()


def shared_limits_enabled() -> bool:
    """``LETHE_SHARED_RATE_LIMITS=0`` keeps pacing per process only."""
    return os.environ.get("LETHE_SHARED_RATE_LIMITS", "1") != "0"


def _accepts_pacer(connector: Connector) -> bool:
    return "pacer" in inspect.signature(type(connector)).parameters


def to_connector_keys(
    estate: Estate, system: str, keys: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """Rename lineage datasets to the key groups the connector expects."""
    aliases: Mapping[str, str] = estate.systems[system].get("datasets") or {}
    grouped: dict[str, list[str]] = {}
    for dataset, values in keys.items():
        grouped.setdefault(aliases.get(dataset, dataset), []).extend(values)
    return grouped


def source_records(
    sobject: str, rows: Iterable[Mapping[str, Any]]
) -> list[SourceRecord]:
    """Salesforce rows (Contact, Lead, Case) as lineage source records."""
    records = []
    for row in rows:
        emails = tuple(v for v in (row.get("Email"), row.get("SuppliedEmail")) if v)
        phones = tuple(
            v
            for v in (
                row.get("Phone"),
                row.get("MobilePhone"),
                row.get("SuppliedPhone"),
            )
            if v
        )
        records.append(
            SourceRecord(
                sobject=sobject,
                id=str(row["Id"]),
                emails=emails,
                phones=phones,
                parent_id=row.get("ContactId") if sobject == "Case" else None,
            )
        )
    return records


def can_discover(connector: Connector) -> bool:
    """Whether the system can find records by identity on its own: the ERP's
    partner search, or a warehouse with Fides-annotated tables to scan."""
    if hasattr(connector, "find_partners"):
        return True
    return bool(getattr(connector, "searchable_datasets", ()))


def discover(connector: Connector, *, emails: Sequence[str]) -> dict[str, list[str]]:
    """Keys the system's own identity search finds, by dataset."""
    scan = getattr(connector, "find_by_identity", None)
    if scan is not None:
        found: dict[str, list[str]] = scan(emails=emails)
        return found
    partners = connector.find_partners(emails=emails)  # type: ignore[attr-defined]
    return {"A_BusinessPartner": list(partners)} if partners else {}
