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
from erasure.models import (
    AWAITING_APPROVAL,
    DEFERRED,
    DENIED,
    DONE,
    IN_PROGRESS,
    NEEDS_DISAMBIGUATION,
    NO_DATA,
    PLANNED,
    RECEIVED,
    Request,
    SystemStep,
)
from erasure.requests import get, steps_of
from erasure.steps import attempts_of
from lethe import ledger
from lethe.errors import InputError
from lethe.estate.config import Estate
from lethe.identity import salesforce_id_18
from lethe.policy import EXECUTED_AS, STRENGTH
from lethe.runtime import current
from lethe.vault import SealedIdentity, utcnow

PERSON_OBJECTS = ("Contact", "Lead")


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


def _digests(db: Session, request_id: str, role: str) -> dict[str, set[str]]:
    rows = db.exec(
        select(SealedIdentity).where(
            SealedIdentity.request_id == request_id, SealedIdentity.role == role
        )
    )
    found: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        found[row.kind].add(row.digest)
    return found


def _subjects(db: Session, request: Request, estate: Estate) -> set[str] | None:
    """The Salesforce records that are this subject, or None when ambiguous.

    Every record an e-mail matches is the subject's: an address names one
    person. A phone is different (households and offices share them): records
    only a phone matches are the subject's when there is exactly one and no
    e-mail matched elsewhere, or when the officer chose them.
    """
    submitted = _digests(db, request.id, "submitted")
    chosen = _digests(db, request.id, "chosen").get("salesforce_id", set())
    by_email = lineage.subjects_for(db, estate.name, submitted.get("email", set()))
    by_email |= submitted.get("subject", set())  # a re-erasure names records directly
    by_phone = lineage.subjects_for(db, estate.name, submitted.get("phone", set()))
    phone_only = by_phone - by_email
    if chosen:
        return by_email | (phone_only & chosen)
    if len(phone_only) > 1 or (phone_only and by_email):
        _record_candidates(db, request, estate, phone_only | by_email)
        return None
    return by_email | phone_only


def _record_candidates(
    db: Session, request: Request, estate: Estate, subjects: set[str]
) -> None:
    vault = current().vault
    for holding in lineage.where(db, estate.name, subjects, vault=vault):
        if holding.system != estate.source or holding.local_name not in PERSON_OBJECTS:
            continue
        for record_id in sorted(holding.keys):
            db.add(
                SealedIdentity(
                    request_id=request.id,
                    role="candidate",
                    kind="salesforce_id",
                    system=holding.system,
                    dataset=holding.local_name,
                    digest=lineage.subject_digest(vault, record_id),
                    sealed=vault.seal(db, request.id, record_id),
                )
            )


def resolve(request_id: str, estate: Estate) -> list[SystemStep] | None:
    """Plan the request from lineage; a request already planned keeps its plan.

    Returns None, with the request in ``needs_disambiguation`` and the
    candidate records sealed in its vault, when an identity matched several
    people; ``lethe dsr resolve`` records the officer's choice.
    """
    vault = current().vault
    with ledger.session() as db:
        request = get(request_id, db)
        existing = steps_of(db, request.id)
        if request.resolved_at is not None and existing:
            return existing
        if request.state in (NEEDS_DISAMBIGUATION, AWAITING_APPROVAL, DENIED):
            return None  # re-checked here, in the planning transaction
        request.detail = ""
        request.estate = request.estate or estate.name
        subjects = _subjects(db, request, estate)
        if subjects is None:
            request.state = NEEDS_DISAMBIGUATION
            db.add(request)
            candidates = None
        else:
            holdings = lineage.where(db, estate.name, subjects, vault=vault)
            by_system: dict[str, list[lineage.Holding]] = defaultdict(list)
            for holding in holdings:
                by_system[holding.system].append(holding)
            steps = [
                _plan_system(db, request, system, by_system.get(system, []), estate)
                for system in estate.systems
            ]
            request.lineage_digest = lineage_digest(holdings)
            request.policy_digest = estate.policy.digest
            request.subjects = sorted(subjects)
            request.resolved_at = utcnow()
            request.state = IN_PROGRESS
            db.add(request)
            candidates = steps
    if candidates is None:
        audit.append("request.needs_disambiguation", request_id=request_id)
        return None
    audit.append(
        "request.planned",
        request_id=request_id,
        systems={s.system: s.key_count for s in candidates},
        lineage_digest=request.lineage_digest,
    )
    return candidates


def choose(request_id: str, record_ids: list[str]) -> None:
    """Record which candidate records are the subject's; the request can run."""
    vault = current().vault
    with ledger.session() as db:
        request = get(request_id, db)
        if request.state != NEEDS_DISAMBIGUATION:
            raise InputError(
                f"request {request.id} is {request.state}, not needs_disambiguation; "
                "only an ambiguous request takes --record"
            )
        offered = _digests(db, request.id, "candidate").get("salesforce_id", set())
        picked = []
        for record_id in record_ids:
            try:
                digest = lineage.subject_digest(vault, record_id)
            except InputError:
                digest = ""
            if digest not in offered:
                raise InputError(
                    f"{record_id!r} is not one of the request's candidate records; "
                    f"`lethe dsr show {request.id}` lists them"
                )
            picked.append((record_id, digest))
        for record_id, digest in picked:
            db.add(
                SealedIdentity(
                    request_id=request.id,
                    role="chosen",
                    kind="salesforce_id",
                    digest=digest,
                    sealed=vault.seal(db, request.id, salesforce_id_18(record_id)),
                )
            )
        request.state = RECEIVED
        db.add(request)
    audit.append("request.disambiguated", request_id=request_id, chosen=len(picked))


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
    parts = {
        h.local_name: estate.policy.decide(
            system, h.local_name, request.regulation
        ).as_json()
        for h in holdings
    }
    whole = estate.policy.decide(system, "", request.regulation).action
    step = SystemStep(
        request_id=request.id,
        system=system,
        planned_action=strongest([p["action"] for p in parts.values()]) or whole,
        key_count=key_count,
        datasets=sorted(h.local_name for h in holdings),
        parts=parts,
        state=PLANNED if key_count else NO_DATA,
    )
    db.add(step)
    return step


def strongest(actions: list[str]) -> str | None:
    """The action that prevails in one system: retain over anonymise over delete."""
    return max(actions, key=STRENGTH.__getitem__) if actions else None


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


def redecide(request_id: str, system: str, estate: Estate) -> SystemStep:
    """Re-apply the current policy to a step's parts that have not run yet.

    A request is planned under the policy of its first run; when the policy
    file changed since (a wrong column fixed, say), the parts no attempt has
    called a system for take the new decision, so a request is never stuck on
    a rule that no longer exists. Finished and held parts keep theirs.
    """
    called = {a.action.split(".")[0] for a in attempts_of(request_id) if a.called}
    with ledger.session() as db:
        request = get(request_id, db)
        step = db.exec(
            select(SystemStep).where(
                SystemStep.request_id == request.id, SystemStep.system == system
            )
        ).one()
        if request.policy_digest == estate.policy.digest or not step.parts:
            return step
        parts = {name: dict(part) for name, part in step.parts.items()}
        changed = []
        for dataset, part in parts.items():
            executed = EXECUTED_AS[str(part.get("action", step.planned_action))]
            if part.get("state") in (DONE, DEFERRED) or executed in called:
                continue
            fresh = estate.policy.decide(system, dataset, request.regulation).as_json()
            if {k: part.get(k) for k in fresh} != fresh:
                part.update(fresh)
                changed.append(dataset)
        if not changed:
            return step
        step.parts = parts
        step.planned_action = strongest([p["action"] for p in parts.values()]) or (
            step.planned_action
        )
        request.policy_digest = estate.policy.digest
        db.add(step)
        db.add(request)
    audit.append(
        "plan.redecided",
        request_id=request_id,
        system=system,
        datasets=changed,
        policy_digest=estate.policy.digest,
    )
    return step
