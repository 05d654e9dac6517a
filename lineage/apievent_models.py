"""How far lineage has read a source system's ApiEvent log, per estate.

One row per estate and source system: the last ``(EventDate,
EventIdentifier)`` captured, so the next capture asks only for newer events
and an event seen twice adds nothing. The counters are running totals of what
the captures found, defects included, so a truncated ``Records`` stays on
record after the run that met it. Nothing here names a person: event
identifiers and dates only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from lethe.vault import Redacted, utcnow


class ApiEventWatermark(Redacted, SQLModel, table=True):
    __tablename__ = "apievent_watermark"
    __table_args__ = (UniqueConstraint("estate", "source"),)
    _repr_fields = ("id", "estate", "source", "event_date", "events", "updated_at")

    id: int | None = Field(default=None, primary_key=True)
    estate: str = Field(index=True)
    source: str  # the Salesforce system's name in the estate file
    event_date: str  # EventDate exactly as the org wrote it
    event_identifier: str
    events: int = 0
    copies: int = 0
    unattributed_events: int = 0
    incomplete_events: int = 0  # Records cut or short of RowsReturned
    updated_at: datetime = Field(default_factory=utcnow)
