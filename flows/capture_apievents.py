"""Capture subject-level lineage from the source system's ApiEvent log.

Runs only when the estate file has a top-level ``apievent_attribution``
mapping, which applies to the estate's source system::

    apievent_attribution:
      nightly_extract: warehouse:raw.sf_contact   # a pipeline_id header
      etl-bi@acme.example: warehouse:raw.sf_lead  # or a Username
      integration@acme.example: ''                # lethe's own user: no copy

An empty value (or null) is a reader whose reads make no copy lethe should
learn from ApiEvent (``lineage.apievents`` says when). Only counts leave the
task: reader names stay in the ledger session and are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.estate import connector_for, current_estate
from lethe import ledger
from lethe.errors import ConfigError
from lethe.estate.config import Estate
from lethe.runtime import current
from lineage.apievents import apievent_watermark, record_api_events

log = logging.getLogger(__name__)


def attribution_of(estate: Estate) -> dict[str, str] | None:
    """The estate file's ``apievent_attribution``, or None when it has none."""
    raw: Any = estate.raw.get("apievent_attribution")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(
            "apievent_attribution in the estate file must map readers to "
            "'system:dataset' names"
        )
    return {str(reader): str(dataset or "") for reader, dataset in raw.items()}


@task(name="capture-apievents", persist_result=False, cache_policy=NO_CACHE)
def capture_api_events() -> int:
    """Read ApiEvent past the watermark into copies; returns the copies added."""
    estate = current_estate()
    attribution = attribution_of(estate)
    if attribution is None:
        return 0
    with ledger.session() as db:
        mark = apievent_watermark(db, estate.name, estate.source)
    since, after = mark if mark else (None, None)
    with connector_for(estate, estate.source) as source:
        events = list(source.api_events(since, after=after))  # type: ignore[attr-defined]
    with ledger.session() as db:
        capture = record_api_events(
            db,
            current().vault,
            estate.name,
            events,
            attribution=attribution,
            source=estate.source,
        )
    return capture.copies
