"""Turn what jobs and the source system report into lineage in the ledger.

Three inputs, all idempotent:

- flow edges from the declarative estate file (dataset-level lineage);
- a snapshot of the source system's records (Salesforce Contacts, Leads and the
  Cases that reference them), which links each identity digest to a record;
- job manifests: which Salesforce records a job run copied into which dataset,
  under which key, and when. A run already captured is skipped.

Identities are normalised with ``lethe.identity`` before they are digested, the
same function intake and every connector use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from lethe.errors import InputError
from lethe.identity import normalize_email, normalize_phone, salesforce_id_18
from lethe.vault import Vault, utcnow
from lineage._ol_aliases import aliases_of
from lineage.graph import system_of
from lineage.models import CaptureRun, Copy, FlowEdge, IdentityLink

log = logging.getLogger(__name__)

SOURCE_RUN = "source-snapshot"


@dataclass(frozen=True)
class SourceRecord:
    """One record of the source system, as a snapshot reads it."""

    sobject: str
    id: str
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    parent_id: str | None = None  # a Case's ContactId


@dataclass(frozen=True)
class CaptureSummary:
    copies: int = 0
    links: int = 0
    skipped_runs: int = 0
    unreadable_identities: int = 0


def subject_digest(vault: Vault, salesforce_id: str) -> str:
    return vault.digest("salesforce_id", salesforce_id_18(salesforce_id))


def key_digest(vault: Vault, key: str) -> str:
    return vault.digest("key", key)


def load_flow_edges(
    db: Session, estate: str, edges: Sequence[Mapping[str, Any]]
) -> int:
    """Store the estate file's flow edges; returns how many were new."""
    known = {
        (e.source, e.target, e.job)
        for e in db.exec(select(FlowEdge).where(FlowEdge.estate == estate))
    }
    added = 0
    for number, edge in enumerate(edges, start=1):
        try:
            source, target, job = edge["from"], edge["to"], edge["job"]
        except KeyError as missing:
            raise InputError(
                f"flow edge {number} in the estate file has no {missing.args[0]!r}; "
                "each edge needs from, to and job"
            ) from None
        if (source, target, job) in known:
            continue
        db.add(
            FlowEdge(
                estate=estate,
                source=source,
                target=target,
                job=job,
                key_passthrough=edge.get("key") == "passthrough",
                field_map=dict(edge.get("fields") or {}),
            )
        )
        added += 1
    db.flush()
    return added


def record_source_snapshot(
    db: Session,
    vault: Vault,
    estate: str,
    system: str,
    records: Iterable[SourceRecord],
    *,
    phone_region: str = "US",
) -> CaptureSummary:
    """Record source records as copies and link their identities to them."""
    lineage_key = vault.lineage_key(db)
    copies = links = unreadable = 0
    known_copies = set(
        db.exec(
            select(Copy.key_digest).where(
                Copy.estate == estate, Copy.run_id == SOURCE_RUN
            )
        )
    )
    known_links = {
        (link.identity_digest, link.subject_digest)
        for link in db.exec(select(IdentityLink).where(IdentityLink.estate == estate))
    }
    now = utcnow()
    for record in records:
        record_id = salesforce_id_18(record.id)
        subject = subject_digest(vault, record.parent_id or record_id)
        digest = key_digest(vault, record_id)
        if digest not in known_copies:
            known_copies.add(digest)
            db.add(
                Copy(
                    estate=estate,
                    system=system,
                    dataset=f"{system}:{record.sobject}",
                    key_digest=digest,
                    subject_digest=subject,
                    key_sealed=vault.seal(db, lineage_key, record_id),
                    job="source snapshot",
                    run_id=SOURCE_RUN,
                    copied_at=now,
                    learned_from="source",
                )
            )
            copies += 1
        for kind, value in _identities(record, phone_region):
            if value is None:
                unreadable += 1
                continue
            pair = (vault.digest(kind, value), subject)
            if pair not in known_links:
                known_links.add(pair)
                db.add(
                    IdentityLink(
                        estate=estate,
                        kind=kind,
                        identity_digest=pair[0],
                        subject_digest=subject,
                        source_object=record.sobject,
                    )
                )
                links += 1
    db.flush()
    return CaptureSummary(copies=copies, links=links, unreadable_identities=unreadable)


def _identities(
    record: SourceRecord, phone_region: str
) -> Iterable[tuple[str, str | None]]:
    for email in record.emails:
        try:
            yield "email", normalize_email(email)
        except InputError:
            yield "email", None
    for phone in record.phones:
        try:
            yield "phone", normalize_phone(phone, region=phone_region)
        except InputError:
            yield "phone", None


def record_manifest(
    db: Session, vault: Vault, estate: str, manifest: Mapping[str, Any]
) -> int:
    """Record one job run's manifest; returns the copies added (0 if seen)."""
    job, run_id, copied_at, outputs = _read_manifest(manifest)
    if db.get(CaptureRun, run_id) is not None:
        return 0
    lineage_key = vault.lineage_key(db)
    added = 0
    for output in outputs:
        dataset = output["dataset"]
        for record in output["records"]:
            key = str(record["key"])
            db.add(
                Copy(
                    estate=estate,
                    system=system_of(dataset),
                    dataset=dataset,
                    key_digest=key_digest(vault, key),
                    subject_digest=subject_digest(vault, str(record["source_key"])),
                    key_sealed=vault.seal(db, lineage_key, key),
                    job=job,
                    run_id=run_id,
                    copied_at=copied_at,
                    learned_from="manifest",
                )
            )
            added += 1
    db.add(CaptureRun(run_id=run_id, estate=estate, job=job, copies=added))
    db.flush()
    log.info("captured %d copies from %s run %s", added, job, run_id)
    return added


def _read_manifest(
    manifest: Mapping[str, Any],
) -> tuple[str, str, datetime, list[Mapping[str, Any]]]:
    try:
        job = str(manifest["job"])
        run_id = str(manifest["run_id"])
        finished = datetime.fromisoformat(str(manifest["finished_at"]))
        outputs = list(manifest["outputs"])
        for output in outputs:
            if ":" not in output["dataset"] or not isinstance(output["records"], list):
                raise ValueError
    except (KeyError, TypeError, ValueError):
        raise InputError(
            "a job manifest needs job, run_id, finished_at (ISO 8601) and outputs, "
            "each with a 'system:dataset' name and a list of records"
        ) from None
    finished = (
        finished.replace(tzinfo=UTC)
        if finished.tzinfo is None
        else finished.astimezone(UTC)
    )
    return job, run_id, finished, outputs


def mark_erased(
    db: Session, estate: str, key_digests: Iterable[str], datasets: Iterable[str]
) -> int:
    """Forget the sealed keys of copies an erasure removed; keep their digests."""
    digests = list(key_digests)
    names = sorted(aliases_of(db, estate, datasets))  # a copy may sit under an alias
    if not digests or not names:
        return 0
    now = utcnow()
    rows = db.exec(
        select(Copy).where(
            Copy.estate == estate,
            col(Copy.key_digest).in_(digests),
            col(Copy.dataset).in_(names),
            col(Copy.erased_at).is_(None),
        )
    )
    count = 0
    for copy in rows:
        copy.erased_at = now
        copy.key_sealed = None
        db.add(copy)
        count += 1
    return count


def record_discovered(
    db: Session,
    vault: Vault,
    estate: str,
    dataset: str,
    keys: Iterable[str],
    *,
    identity_kind: str,
    identity_digest: str,
    job: str = "identity search",
) -> int:
    """Record records a system's own identity search found (no Salesforce origin).

    Such a copy's subject is the identity digest itself, linked to itself, so
    ``where`` finds it from the same identity: an ERP-native customer who shares
    the e-mail is found although no job ever copied them from Salesforce.
    ``job`` says how (``identity search``, ``discovery scan``); each identity
    has its own run, so one record two identities find is two copies. A record
    found again after its copy was erased is recorded again, as a new copy.
    """
    lineage_key = vault.lineage_key(db)
    earlier = db.exec(
        select(Copy.key_digest, Copy.erased_at).where(
            Copy.estate == estate,
            Copy.dataset == dataset,
            Copy.subject_digest == identity_digest,
        )
    ).all()
    known = {digest for digest, erased_at in earlier if erased_at is None}
    erased = {digest for digest, erased_at in earlier if erased_at is not None}
    run_id = f"discovery-{identity_digest[:16]}"
    added = 0
    for key in keys:
        digest = key_digest(vault, key)
        if digest in known:
            continue
        known.add(digest)
        # found again after an erasure (a restore, a replay): a new copy
        this_run = f"{run_id}-{utcnow().isoformat()}" if digest in erased else run_id
        db.add(
            Copy(
                estate=estate,
                system=system_of(dataset),
                dataset=dataset,
                key_digest=digest,
                subject_digest=identity_digest,
                key_sealed=vault.seal(db, lineage_key, key),
                job=job,
                run_id=this_run,
                copied_at=utcnow(),
                learned_from="discovery",
            )
        )
        added += 1
    link = db.exec(
        select(IdentityLink).where(
            IdentityLink.estate == estate,
            IdentityLink.identity_digest == identity_digest,
            IdentityLink.subject_digest == identity_digest,
        )
    ).first()
    if added and link is None:
        db.add(
            IdentityLink(
                estate=estate,
                kind=identity_kind,
                identity_digest=identity_digest,
                subject_digest=identity_digest,
                source_object=dataset,
            )
        )
    db.flush()
    return added


def record_found_again(
    db: Session,
    vault: Vault,
    estate: str,
    dataset: str,
    keys: Iterable[str],
    *,
    subject_digest: str,
) -> int:
    """Record copies a re-check found where an erasure had removed them.

    No job reported them (a restore, a replay), so they are learned from the
    re-check itself; a linked re-erasure then finds them through lineage.
    """
    lineage_key = vault.lineage_key(db)
    now = utcnow()
    added = 0
    for key in sorted(set(keys)):
        db.add(
            Copy(
                estate=estate,
                system=system_of(dataset),
                dataset=dataset,
                key_digest=key_digest(vault, key),
                subject_digest=subject_digest,
                key_sealed=vault.seal(db, lineage_key, key),
                job="re-check",
                run_id=f"recheck-{now.isoformat()}",
                copied_at=now,
                learned_from="re-check",
            )
        )
        added += 1
    db.flush()
    return added
