"""Lineage tables in the ledger: datasets, flow edges, copies and identity links.

A *copy* is subject-level lineage: one record, under one key, reached one
dataset at one time through one job run. The key itself is sealed in the vault
(under the lineage data key); look-ups use its keyed digest. ``subject_digest``
ties every copy back to the Salesforce record it came from, and an *identity
link* ties an identity (an e-mail or phone digest) to that record.

Every row belongs to one *estate* (the estate file's ``name``), so a ledger that
has seen several estates never mixes their lineage.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, LargeBinary, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from lethe.vault import Redacted, utcnow


class FlowEdge(Redacted, SQLModel, table=True):
    """Dataset-level lineage: ``source`` feeds ``target`` through ``job``."""

    __tablename__ = "flow_edge"
    __table_args__ = (UniqueConstraint("estate", "source", "target", "job"),)
    _repr_fields = ("id", "source", "target", "job")

    id: int | None = Field(default=None, primary_key=True)
    estate: str = Field(index=True)
    source: str = Field(index=True)
    target: str = Field(index=True)
    job: str
    key_passthrough: bool = False
    field_map: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))


class Copy(Redacted, SQLModel, table=True):
    __tablename__ = "copy"
    __table_args__ = (
        UniqueConstraint("estate", "dataset", "key_digest", "run_id"),
        # "Where is this person": without these SQLite may pick the estate index
        # and read every copy of the estate (bench/README-lineage.md).
        Index("ix_copy_estate_subject", "estate", "subject_digest"),
        Index("ix_copy_estate_key", "estate", "key_digest"),
    )
    _repr_fields = ("id", "dataset", "job", "run_id", "copied_at")

    id: int | None = Field(default=None, primary_key=True)
    estate: str = Field(index=True)
    system: str = Field(index=True)
    dataset: str = Field(index=True)
    key_digest: str = Field(index=True)
    subject_digest: str = Field(index=True)
    key_sealed: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    job: str
    run_id: str
    copied_at: datetime
    learned_from: str
    erased_at: datetime | None = None


class IdentityLink(Redacted, SQLModel, table=True):
    """An identity digest (email, phone) that names a Salesforce record."""

    __tablename__ = "identity_link"
    __table_args__ = (UniqueConstraint("estate", "identity_digest", "subject_digest"),)
    _repr_fields = ("id", "kind", "source_object", "seen_at")

    id: int | None = Field(default=None, primary_key=True)
    estate: str = Field(index=True)
    kind: str
    identity_digest: str = Field(index=True)
    subject_digest: str = Field(index=True)
    source_object: str
    seen_at: datetime = Field(default_factory=utcnow)


class CaptureRun(Redacted, SQLModel, table=True):
    """One job run whose manifest lineage has read; makes capture idempotent."""

    __tablename__ = "capture_run"
    _repr_fields = ("run_id", "job", "captured_at", "copies")

    run_id: str = Field(primary_key=True)
    estate: str = Field(index=True)
    job: str
    captured_at: datetime = Field(default_factory=utcnow)
    copies: int = 0


class Suppression(Redacted, SQLModel, table=True):
    """An erased subject or key, by keyed digest: a new copy of it is an alert.

    Kept after the request's identifiers are purged; a digest names nobody
    without the digest key.
    """

    __tablename__ = "suppression"
    __table_args__ = (UniqueConstraint("estate", "system", "kind", "digest"),)
    _repr_fields = ("id", "system", "kind", "request_id", "added_at")

    id: int | None = Field(default=None, primary_key=True)
    estate: str = Field(index=True)
    system: str  # where the subject was erased (a retained copy is no alarm)
    kind: str  # "subject" (a source record) or "key" (a key in a dataset)
    digest: str = Field(index=True)
    request_id: str = Field(index=True)
    added_at: datetime = Field(default_factory=utcnow)


class Alert(Redacted, SQLModel, table=True):
    """A copy that came back after an erasure, and the re-erasure it opened."""

    __tablename__ = "alert"
    _repr_fields = ("id", "kind", "dataset", "request_id", "reopened_request_id")

    id: int | None = Field(default=None, primary_key=True)
    estate: str = Field(index=True)
    kind: str = "resurrection"
    copy_id: int | None = Field(default=None, unique=True)
    dataset: str
    request_id: str = Field(index=True)
    reopened_request_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    detail: str = ""
