"""Lineage capture: flow edges from the estate file, a snapshot of the source
system, and every job manifest not yet captured.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

import lineage
from erasure.reopen import reopen
from flows.capture_apievents import capture_api_events
from flows.estate import connector_for, current_estate, source_records
from lethe import ledger
from lethe.errors import InputError
from lethe.runtime import current

log = logging.getLogger(__name__)
TASK_OPTIONS = {"persist_result": False, "cache_policy": NO_CACHE}


@task(name="load-flow-edges", **TASK_OPTIONS)
def load_edges() -> int:
    estate = current_estate()
    with ledger.session() as db:
        return lineage.load_flow_edges(db, estate.name, estate.flows)


@task(name="snapshot-source", **TASK_OPTIONS)
def snapshot_source() -> int:
    """Read every Contact, Lead and Case of the source system into lineage."""
    estate = current_estate()
    runtime = current()
    with connector_for(estate, estate.source) as source:
        records = []
        for sobject in ("Contact", "Lead", "Case"):
            records += source_records(sobject, source.snapshot(objects=(sobject,)))  # type: ignore[attr-defined]
    with ledger.session() as db:
        summary = lineage.record_source_snapshot(
            db,
            runtime.vault,
            estate.name,
            estate.source,
            records,
            phone_region=runtime.settings.phone_region,
        )
    log.info(
        "source snapshot: %d new copies, %d new identity links",
        summary.copies,
        summary.links,
    )
    return summary.copies


@task(name="read-manifests", **TASK_OPTIONS)
def read_manifests() -> int:
    estate = current_estate()
    if estate.manifests is None or not estate.manifests.exists():
        return 0
    runtime = current()
    added = 0
    for path in sorted(estate.manifests.glob("*.json")):
        manifest = _load(path)
        with ledger.session() as db:
            added += lineage.record_manifest(db, runtime.vault, estate.name, manifest)
    return added


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise InputError(f"manifest {path.name} is not readable JSON") from None


@task(name="guard-resurrections", **TASK_OPTIONS)
def guard_resurrections() -> list[str]:
    """Open a linked re-erasure for every erased subject a capture saw again."""
    estate = current_estate()
    with ledger.session() as db:
        found = lineage.find_resurrections(db, estate.name)
    by_request: dict[str, list[lineage.Resurrection]] = {}
    for resurrection in found:
        by_request.setdefault(resurrection.request_id, []).append(resurrection)
    opened = []
    for original, hits in sorted(by_request.items()):
        reopened = reopen(
            original, {h.subject_digest for h in hits}, reason="resurrection"
        )
        with ledger.session() as db:
            for hit in hits:
                lineage.record_alert(db, estate.name, hit, reopened)
        log.warning(
            "resurrection: %d new copies of a subject erased by %s (%s); "
            "re-erasure %s opened",
            len(hits),
            original,
            ", ".join(sorted({h.dataset for h in hits})),
            reopened,
        )
        opened.append(reopened)
    return opened


@flow(name="capture-lineage", log_prints=False, persist_result=False)
def capture_lineage() -> dict[str, int]:
    """Capture lineage for the estate in LETHE_HOME; returns counts only."""
    edges = load_edges()
    source = snapshot_source()
    copies = read_manifests()
    apievent_copies = capture_api_events()
    reopened = guard_resurrections()
    return {
        "flow_edges": edges,
        "source_copies": source,
        "manifest_copies": copies,
        "apievent_copies": apievent_copies,
        "reopened_requests": len(reopened),
    }
