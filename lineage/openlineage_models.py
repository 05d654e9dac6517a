"""Ledger tables for OpenLineage intake: events, runs, run datasets, aliases, defects.

An OpenLineage run reports its inputs and outputs across several events (a START
may carry them and the COMPLETE nothing, or the other way round), so lethe keeps
each run's datasets until the run completes and then turns them into flow edges.
Raw events are not kept: facets can hold SQL text, environment variables and
connection strings. What is kept is each event's digest (for idempotency), its
kind and time, and the dataset names it named.

Every row belongs to one estate, like the rest of lineage.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from lethe.vault import Redacted, utcnow


class OpenLineageEvent(Redacted, SQLModel, table=True):
    """One event lethe accepted; ``digest`` makes a second import a no-op."""

    __tablename__ = "ol_event"
    __table_args__ = (UniqueConstraint("estate", "digest"),)
    _repr_fields = ("id", "kind", "event_type", "job", "run_id", "event_time")

    id: int | None = Field(default=None, primary_key=True)
    estate: str = Field(index=True)
    digest: str
    kind: str  # RunEvent, DatasetEvent or JobEvent
    event_type: str | None = None
    job: str | None = None
    run_id: str | None = Field(default=None, index=True)
    event_time: datetime
    producer: str
    origin: str  # "file.json#3" or "http"
    warnings: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    received_at: datetime = Field(default_factory=utcnow)


class OpenLineageRun(Redacted, SQLModel, table=True):
    """A job run as its events told it; ``writes`` says why lethe thinks it writes."""

    __tablename__ = "ol_run"
    __table_args__ = (UniqueConstraint("estate", "run_id"),)
    _repr_fields = ("id", "job", "run_id", "completed_at")

    id: int | None = Field(default=None, primary_key=True)
    estate: str = Field(index=True)
    run_id: str
    job: str = Field(index=True)
    writes: str | None = None
    completed_at: datetime | None = None
    completed_by: str | None = None  # origin of the COMPLETE event


class OpenLineageRunDataset(Redacted, SQLModel, table=True):
    """An input or output dataset of a run, under its lethe name.

    ``column_lineage`` (outputs only) lists ``[output field, input dataset,
    input field, "DIRECT" | "INDIRECT"]``; a dataset-wide dependency has no
    output field.
    """

    __tablename__ = "ol_run_dataset"
    __table_args__ = (UniqueConstraint("estate", "run_id", "role", "dataset"),)
    _repr_fields = ("id", "run_id", "role", "dataset")

    id: int | None = Field(default=None, primary_key=True)
    estate: str = Field(index=True)
    run_id: str = Field(index=True)
    job: str = Field(index=True)
    role: str  # input or output
    dataset: str
    column_lineage: list[list[str | None]] = Field(
        default_factory=list, sa_column=Column(JSON)
    )


class DatasetAlias(Redacted, SQLModel, table=True):
    """Two names of one dataset (a ``symlinks`` facet said so), either order.

    ``*_known`` records whether the name's system is one the estate knows, so
    the canonical name is chosen the same way whichever declaration came first.
    """

    __tablename__ = "dataset_alias"
    __table_args__ = (UniqueConstraint("estate", "name_a", "name_b"),)
    _repr_fields = ("id", "name_a", "name_b")

    id: int | None = Field(default=None, primary_key=True)
    estate: str = Field(index=True)
    name_a: str
    name_b: str
    a_known: bool = False
    b_known: bool = False
    declared_by: str  # origin of the event that declared it
    declared_at: datetime = Field(default_factory=utcnow)


class LineageDefect(Redacted, SQLModel, table=True):
    """A lineage event that cannot be right, e.g. a writing run with no outputs.

    ``resolved_at`` is set when a later (or late-arriving) event fills the gap.
    """

    __tablename__ = "lineage_defect"
    __table_args__ = (UniqueConstraint("estate", "kind", "run_id"),)
    _repr_fields = ("id", "kind", "job", "run_id", "resolved_at")

    id: int | None = Field(default=None, primary_key=True)
    estate: str = Field(index=True)
    kind: str
    job: str
    run_id: str
    origin: str
    detail: str
    detected_at: datetime = Field(default_factory=utcnow)
    resolved_at: datetime | None = None
