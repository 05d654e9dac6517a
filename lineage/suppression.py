"""The resurrection guard: erased people stay erased.

When a request completes, the subjects it erased and their keys in every
dataset where they were deleted go onto a suppression list, as keyed digests.
A later capture that records a *new* copy of a suppressed subject or key — a
replay, a restore, a stale extract, a two-way sync — is a resurrection: lethe
raises an alert and the flows open a linked re-erasure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlmodel import Session, col, select

from lineage.models import Alert, Copy, Suppression


@dataclass(frozen=True)
class Resurrection:
    copy_id: int
    dataset: str
    subject_digest: str
    request_id: str


def suppress(
    db: Session,
    estate: str,
    request_id: str,
    *,
    systems: Iterable[str],
    subjects: Iterable[str],
    keys: Iterable[str],
) -> int:
    """Add an erased request's subjects and keys for the systems where it was
    erased; returns how many entries were new."""
    known = {
        (s.system, s.kind, s.digest)
        for s in db.exec(select(Suppression).where(Suppression.estate == estate))
    }
    subjects, keys = set(subjects), set(keys)
    added = 0
    for system in set(systems):
        for kind, digests in (("subject", subjects), ("key", keys)):
            for digest in digests:
                if (system, kind, digest) in known:
                    continue
                db.add(
                    Suppression(
                        estate=estate,
                        system=system,
                        kind=kind,
                        digest=digest,
                        request_id=request_id,
                    )
                )
                added += 1
    db.flush()
    return added


def suppressed_subjects(db: Session, estate: str, request_id: str) -> set[str]:
    rows = db.exec(
        select(Suppression.digest).where(
            Suppression.estate == estate,
            Suppression.request_id == request_id,
            Suppression.kind == "subject",
        )
    )
    return set(rows)


def find_resurrections(db: Session, estate: str) -> list[Resurrection]:
    """Live copies of suppressed subjects or keys, newer than their suppression,
    that no alert covers yet."""
    entries = list(db.exec(select(Suppression).where(Suppression.estate == estate)))
    if not entries:
        return []
    by_digest = {(e.system, e.kind, e.digest): e for e in entries}
    alerted = set(db.exec(select(Alert.copy_id).where(Alert.estate == estate)))
    digests = [e.digest for e in entries]
    # Two indexed queries rather than one OR, which SQLite answers by scanning.
    live = (Copy.estate == estate, col(Copy.erased_at).is_(None))
    by_subject = db.exec(
        select(Copy).where(*live, col(Copy.subject_digest).in_(digests))
    )
    by_key = db.exec(select(Copy).where(*live, col(Copy.key_digest).in_(digests)))
    copies = sorted(
        {c.id: c for c in [*by_subject, *by_key]}.values(), key=lambda c: c.id or 0
    )
    found = []
    for copy in copies:
        entry = by_digest.get(
            (copy.system, "subject", copy.subject_digest)
        ) or by_digest.get((copy.system, "key", copy.key_digest))
        if entry is None or copy.id is None or copy.id in alerted:
            continue
        if copy.copied_at <= entry.added_at:
            continue  # the copy the erasure already dealt with
        found.append(
            Resurrection(copy.id, copy.dataset, copy.subject_digest, entry.request_id)
        )
    return found


def record_alert(
    db: Session, estate: str, resurrection: Resurrection, reopened_request_id: str
) -> Alert:
    alert = Alert(
        estate=estate,
        copy_id=resurrection.copy_id,
        dataset=resurrection.dataset,
        request_id=resurrection.request_id,
        reopened_request_id=reopened_request_id,
        detail=f"a new copy in {resurrection.dataset} of a subject erased by "
        f"{resurrection.request_id}; re-erasure {reopened_request_id} opened",
    )
    db.add(alert)
    db.flush()
    return alert
