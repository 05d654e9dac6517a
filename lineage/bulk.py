"""Capture of large job manifests: the same copies as ``record_manifest``, in bulk.

``record_manifest`` builds one ORM object per record, which holds capture to a
few thousand copies a second. This path reads the manifest the same way, makes
the same digests and seals, and inserts the rows with Core ``INSERT``
statements of ``batch`` rows each. A run already captured is skipped, as there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session

from lethe.vault import Vault
from lineage.capture import _read_manifest, key_digest, subject_digest
from lineage.graph import system_of
from lineage.models import CaptureRun, Copy

log = logging.getLogger(__name__)


def record_manifest_bulk(
    db: Session,
    vault: Vault,
    estate: str,
    manifest: Mapping[str, Any],
    *,
    batch: int = 10_000,
) -> int:
    """Record one job run's manifest; returns the copies added (0 if seen)."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    job, run_id, copied_at, outputs = _read_manifest(manifest)
    if db.get(CaptureRun, run_id) is not None:
        return 0

    lineage_key = vault.lineage_key(db)
    rows = _copy_rows(vault, db, lineage_key, estate, job, run_id, copied_at, outputs)
    statement = insert(Copy.__table__)  # type: ignore[attr-defined]
    added = 0
    while chunk := list(islice(rows, batch)):
        db.execute(statement, chunk)
        added += len(chunk)

    db.add(CaptureRun(run_id=run_id, estate=estate, job=job, copies=added))
    db.flush()
    log.info("captured %d copies from %s run %s", added, job, run_id)
    return added


def _copy_rows(
    vault: Vault,
    db: Session,
    lineage_key: str,
    estate: str,
    job: str,
    run_id: str,
    copied_at: datetime,
    outputs: list[Mapping[str, Any]],
) -> Iterator[dict[str, Any]]:
    # A subject usually reaches several datasets in one run: digest it once.
    subjects: dict[str, str] = {}
    for output in outputs:
        dataset = output["dataset"]
        system = system_of(dataset)
        for record in output["records"]:
            key = str(record["key"])
            source_key = str(record["source_key"])
            subject = subjects.get(source_key)
            if subject is None:
                subject = subjects[source_key] = subject_digest(vault, source_key)
            yield {
                "estate": estate,
                "system": system,
                "dataset": dataset,
                "key_digest": key_digest(vault, key),
                "subject_digest": subject,
                "key_sealed": vault.seal(db, lineage_key, key),
                "job": job,
                "run_id": run_id,
                "copied_at": copied_at,
                "learned_from": "manifest",
            }
