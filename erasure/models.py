"""Erasure tables in the ledger: requests, per-system steps, attempts,
certificates and the audit chain.

Nothing here holds personal data: the subject is a keyed digest, identities
live sealed in the vault, and details are written by lethe from allow-listed
values (counts, statuses, vendor job ids, dates).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, LargeBinary, Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from lethe.vault import Redacted, utcnow

# Request states
RECEIVED = "received"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
INCOMPLETE = "incomplete"  # a system failed or is still awaiting its vendor
NEEDS_DISAMBIGUATION = "needs_disambiguation"  # an identity matched several people
DUPLICATE = "duplicate"  # the same person and type, already open: linked, not run
HELD = "held"  # every part it could run is done; legal holds defer the rest
AWAITING_APPROVAL = "awaiting_approval"  # a second officer must approve it first
DENIED = "denied"  # refused with a reason code and certified; never runs
OPEN_STATES = (
    RECEIVED,
    IN_PROGRESS,
    INCOMPLETE,
    NEEDS_DISAMBIGUATION,
    AWAITING_APPROVAL,
)

# Per-system states
PLANNED = "planned"
AWAITING_VENDOR = "awaiting_vendor"
DONE = "done"
FAILED = "failed"
NO_DATA = "no_data"
DEFERRED = "deferred"  # held: a legal hold keeps it until released


class Request(Redacted, SQLModel, table=True):
    """A data subject request; its record outlives the identifiers it named."""

    __tablename__ = "request"
    _repr_fields = ("id", "type", "regulation", "state", "received_at", "deadline")

    id: str = Field(primary_key=True)
    type: str = "erasure"
    regulation: str
    channel: str = "cli"
    estate: str = ""  # the estate file's name the request was submitted to
    received_at: datetime
    jurisdiction: str = "DE"
    rule_version: str = ""
    deadline: date
    extended_deadline: date | None = None
    acknowledge_by: date | None = None
    pauses: list[list[str]] = Field(default_factory=list, sa_column=Column(JSON))
    paused_since: date | None = None
    extension_notified_on: date | None = None
    extension_reason: str = Field(default="", sa_column=Column(Text))
    state: str = RECEIVED
    subject_digest: str = Field(index=True)
    subject_kind: str = "email"
    resolved_at: datetime | None = None
    completed_at: datetime | None = None
    purged_at: datetime | None = None
    lineage_digest: str | None = None
    subjects: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    linked_to: str | None = None  # the request whose erasure this one repeats
    duplicate_of: str | None = Field(default=None, index=True)
    idempotency_key: str | None = Field(default=None, unique=True)
    rechecks: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    policy_digest: str = ""  # sha256 of the policy file the plan was made under
    detail: str = Field(default="", sa_column=Column(Text))
    # Who acted (staff handles, erasure/decisions.py) and what they decided.
    # Notes are staff free text: sealed under the request's data key, so a
    # purge shreds them with the identifiers; never on a certificate.
    submitted_by: str = ""
    approval_required: bool = False
    approved_by: str | None = None
    approved_at: datetime | None = None
    approval_note: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    denial_reason: str | None = None
    denied_by: str | None = None
    denied_at: datetime | None = None
    denial_note: bytes | None = Field(default=None, sa_column=Column(LargeBinary))


class SystemStep(Redacted, SQLModel, table=True):
    """What one request needs, and got, in one system."""

    __tablename__ = "system_step"
    __table_args__ = (UniqueConstraint("request_id", "system"),)
    _repr_fields = ("request_id", "system", "state", "action", "records_affected")

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True, foreign_key="request.id")
    system: str
    planned_action: str  # delete | anonymise | retain
    state: str = PLANNED
    key_count: int = 0
    datasets: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    action: str | None = None  # deleted | anonymised | retained | already_absent | none
    records_affected: int = 0
    vendor_job_id: str | None = None
    vendor_status: str | None = None
    retained_until: date | None = None
    basis: str | None = None
    dates: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    parts: dict[str, dict[str, Any]] = Field(
        default_factory=dict, sa_column=Column(JSON)
    )  # per dataset: the policy's decision (action, rule, basis, retention), state
    verified: bool = False
    observed: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    verified_at: datetime | None = None
    detail: str = Field(default="", sa_column=Column(Text))
    updated_at: datetime = Field(default_factory=utcnow)


class Attempt(Redacted, SQLModel, table=True):
    """One execution of one action, written before and after the external call."""

    __tablename__ = "attempt"
    _repr_fields = ("idempotency_key", "state", "vendor_job_id", "started_at")

    idempotency_key: str = Field(primary_key=True)  # request:system:action
    request_id: str = Field(index=True, foreign_key="request.id")
    system: str
    action: str
    state: str = "started"  # started | submitted | finished | failed
    vendor_job_id: str | None = None
    called: bool = False  # set before the first external call is made
    runs: int = 1
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))


class Certificate(Redacted, SQLModel, table=True):
    __tablename__ = "certificate"
    _repr_fields = ("id", "request_id", "kid", "issued_at")

    id: str = Field(primary_key=True)
    request_id: str = Field(index=True, foreign_key="request.id")
    kid: str
    issued_at: datetime = Field(default_factory=utcnow)
    jws: str = Field(sa_column=Column(Text))
    supersedes: str | None = None  # the certificate this one replaces
    kind: str = "completion"  # completion | partial (held) | interim | denial


class AuditEvent(Redacted, SQLModel, table=True):
    """Append-only, hash-chained record of what lethe did and why."""

    __tablename__ = "audit_event"
    _repr_fields = ("id", "request_id", "kind", "at")

    id: int | None = Field(default=None, primary_key=True)
    request_id: str | None = Field(default=None, index=True)
    kind: str
    at: datetime = Field(default_factory=utcnow)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    prev_hash: str
    hash: str


class LegalHold(Redacted, SQLModel, table=True):
    """A legal hold: what it freezes (system, dataset, category), why, until when.

    Without ``request_id`` it holds that scope for every request of the estate.
    The reason is staff free text: it stays in the ledger, never on a
    certificate, in a log or in Prefect.
    """

    __tablename__ = "legal_hold"
    _repr_fields = ("id", "estate", "system", "dataset", "category", "ends_on")

    id: str = Field(primary_key=True)
    estate: str = Field(index=True)
    request_id: str | None = Field(default=None, index=True)
    system: str
    dataset: str | None = None
    category: str | None = None
    reason: str = Field(sa_column=Column(Text))
    ends_on: date | None = None
    placed_by: str = ""
    placed_at: datetime = Field(default_factory=utcnow)
    released_by: str | None = None
    released_at: datetime | None = None
