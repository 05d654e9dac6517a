"""Re-erasure: when an erased subject comes back, open a linked request.

The new request names the subject by the keyed digests of its Salesforce
records (the original request's identifiers may already be purged), keeps
the original's regulation, jurisdiction and estate, and is planned from
lineage like any other: the new copies are what it finds.
"""

from __future__ import annotations

from collections.abc import Iterable

from erasure import audit
from erasure.clocks import Clock
from erasure.models import Request
from erasure.requests import get, new_request_id
from lethe import ledger
from lethe.runtime import current
from lethe.vault import SealedIdentity, utcnow


def reopen(original_id: str, subjects: Iterable[str], *, reason: str) -> str:
    """Open a re-erasure linked to ``original_id``; returns its id."""
    vault = current().vault
    received = utcnow()
    with ledger.session() as db:
        original = get(original_id, db)
        clock = Clock.for_request(original.regulation, received, original.jurisdiction)
        request_id = new_request_id()
        vault.new_data_key(db, scope="request", key_id=request_id)
        db.add(
            Request(
                id=request_id,
                regulation=original.regulation,
                channel=reason,
                estate=original.estate,
                received_at=received,
                jurisdiction=original.jurisdiction,
                rule_version=clock.rule_version,
                deadline=clock.deadline,
                acknowledge_by=clock.acknowledge_by,
                subject_digest=original.subject_digest,
                subject_kind=original.subject_kind,
                linked_to=original.id,
            )
        )
        for digest in sorted(set(subjects)):
            db.add(
                SealedIdentity(
                    request_id=request_id,
                    role="submitted",
                    kind="subject",
                    digest=digest,
                    sealed=None,
                )
            )
    audit.append(
        "request.reopened", request_id=request_id, linked_to=original_id, reason=reason
    )
    return request_id
