"""From a request to a plan: find the subject's keys in every system through
lineage, before anything is touched, and seal them into the request's vault.

The plan has one step per system of the estate. A system where lineage holds
no copy of the subject gets a ``no_data`` step, so the certificate can say so.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import rfc8785
from sqlmodel import Session, select

import lineage
from erasure import audit
from erasure.models import IN_PROGRESS, NO_DATA, PLANNED, Request, SystemStep
from erasure.requests import get, steps_of
from lethe import ledger
from lethe.estate.config import Estate
from lethe.runtime import current
from lethe.vault import SealedIdentity, utcnow

PLANNED_ACTION = {"delete": "delete", "anonymise": "anonymise", "retain": "retain"}


def submitted_identities(db: Session, request_id: str) -> list[tuple[str, str]]:
    """The (kind, value) identities the requester gave, opened from the vault."""
    vault = current().vault
    rows = db.exec(
        select(SealedIdentity).where(
            SealedIdentity.request_id == request_id, SealedIdentity.role == "submitted"
        )
    )
    return [
        (row.kind, vault.open(db, request_id, row.sealed)) for row in rows if row.sealed
    ]


def resolve(request_id: str, estate: Estate) -> list[SystemStep]:
    """Plan the request from lineage; a request already planned keeps its plan."""
    vault = current().vault
    with ledger.session() as db:
        request = get(request_id, db)
        existing = steps_of(db, request.id)
        if request.resolved_at is not None and existing:
            return existing
        subjects = lineage.subjects_for(db, estate.name, [request.subject_digest])
        holdings = lineage.where(db, estate.name, subjects, vault=vault)
        by_system: dict[str, list[lineage.Holding]] = defaultdict(list)
        for holding in holdings:
            by_system[holding.system].append(holding)
        steps = [
            _plan_system(db, request, system, by_system.get(system, []), estate)
            for system in estate.systems
        ]
        request.lineage_digest = lineage_digest(holdings)
        request.resolved_at = utcnow()
        request.state = IN_PROGRESS
        db.add(request)
    audit.append(
        "request.planned",
        request_id=request_id,
        systems={s.system: s.key_count for s in steps},
        lineage_digest=request.lineage_digest,
    )
    return steps


def _plan_system(
    db: Session,
    request: Request,
    system: str,
    holdings: list[lineage.Holding],
    estate: Estate,
) -> SystemStep:
    vault = current().vault
    key_count = 0
    for holding in holdings:
        for key in sorted(holding.keys):
            db.add(
                SealedIdentity(
                    request_id=request.id,
                    role="resolved",
                    kind="key",
                    system=system,
                    dataset=holding.local_name,
                    digest=lineage.key_digest(vault, key),
                    sealed=vault.seal(db, request.id, key),
                )
            )
        key_count += len(holding.keys)
    step = SystemStep(
        request_id=request.id,
        system=system,
        planned_action=PLANNED_ACTION[estate.action_for(system)],
        key_count=key_count,
        datasets=sorted(h.local_name for h in holdings),
        state=PLANNED if key_count else NO_DATA,
    )
    db.add(step)
    return step


def keys_for(request_id: str, system: str) -> dict[str, list[str]]:
    """The request's resolved keys in one system, by dataset (opened from the vault)."""
    vault = current().vault
    keys: dict[str, list[str]] = defaultdict(list)
    with ledger.session() as db:
        rows = db.exec(
            select(SealedIdentity).where(
                SealedIdentity.request_id == request_id,
                SealedIdentity.role == "resolved",
                SealedIdentity.system == system,
            )
        )
        for row in rows:
            if row.sealed is not None and row.dataset is not None:
                keys[row.dataset].append(vault.open(db, request_id, row.sealed))
    return {dataset: sorted(values) for dataset, values in keys.items()}


def lineage_digest(holdings: list[lineage.Holding]) -> str:
    """SHA-256 over the lineage used for the plan: datasets, key digests, sources."""
    body = [
        {
            "dataset": h.dataset,
            "key_digests": sorted(h.key_digests),
            "learned_from": sorted(h.learned_from),
        }
        for h in holdings
    ]
    return "sha256:" + hashlib.sha256(rfc8785.dumps(body)).hexdigest()
