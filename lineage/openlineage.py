"""OpenLineage in: read events, validate them, and store them as lineage.

Events come from files (one event, a JSON array of events, or one event per
line) or over HTTP (``lineage.openlineage_api``). Each is validated against the
bundled official schemas (``lineage/_ol_schema.py``): strict by default, so an
event that breaks the schema is rejected with the JSON pointer of each broken
field and nothing of it is stored; lenient on request, which repairs the known
recoverable breaks and keeps a warning with the event.

Accepted events become lineage in the estate (``lineage/_ol_store.py``): a
COMPLETE run's inputs feed its outputs as flow edges, column lineage becomes
the edges' field maps, ``symlinks`` facets become dataset aliases (applied when
lineage is read, whichever arrives first), and a writing run that completes
with no outputs is recorded as a lineage defect. Dataset names are normalised
and mapped to systems by the estate file's ``openlineage_namespaces``
(``lineage/_ol_names.py``). Importing the same event twice stores nothing new:
events are keyed by the SHA-256 of their canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlmodel import Session, col, select

from lethe.config import load_settings
from lethe.errors import ConfigError
from lethe.estate.config import Estate, load_estate
from lineage._ol_aliases import aliases_of, canonical_namer
from lineage._ol_names import Namer, namer_from_settings
from lineage._ol_schema import Checked, Problem, check
from lineage._ol_store import store
from lineage.openlineage_models import LineageDefect

log = logging.getLogger(__name__)

__all__ = [
    "Entry",
    "EventWarning",
    "ImportReport",
    "Intake",
    "Problem",
    "Rejection",
    "aliases_of",
    "canonical_namer",
    "current_intake",
    "event_digest",
    "import_events",
    "intake_for",
    "list_defects",
    "parse_events",
    "read_events",
    "validate_event",
]


@dataclass(frozen=True)
class Entry:
    """One event as read from a source, or why it could not be read."""

    origin: str
    index: int
    event: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Rejection:
    """An event that was not stored, with every field it broke."""

    origin: str
    index: int
    problems: tuple[Problem, ...]

    @property
    def reason(self) -> str:
        shown = "; ".join(str(p) for p in self.problems[:3])
        more = len(self.problems) - 3
        return f"{shown}; and {more} more" if more > 0 else shown

    def __str__(self) -> str:
        return f"{self.origin}#{self.index}: {self.reason}"


@dataclass(frozen=True)
class EventWarning:
    """A repair lenient mode made, or a facet it let through."""

    origin: str
    index: int
    problem: Problem

    def __str__(self) -> str:
        return f"{self.origin}#{self.index}: {self.problem}"


@dataclass
class ImportReport:
    stored: int = 0
    duplicates: int = 0
    flow_edges: int = 0
    aliases: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[EventWarning] = field(default_factory=list)
    defects: list[LineageDefect] = field(default_factory=list)
    unmapped_namespaces: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Intake:
    """Where accepted events go: the estate, and how its datasets are named."""

    estate: str
    namer: Namer


def intake_for(estate: Estate) -> Intake:
    """The estate's intake, with its ``openlineage_namespaces`` mapping."""
    raw: Any = {}
    if estate.path is not None:
        raw = yaml.safe_load(estate.path.read_text()) or {}
    namer = namer_from_settings(
        raw.get("openlineage_namespaces") if isinstance(raw, dict) else None,
        estate_systems=frozenset(estate.systems),
    )
    return Intake(estate=estate.name, namer=namer)


def current_intake() -> Intake:
    """The intake of the current estate (``LETHE_ESTATE``, else LETHE_HOME's).

    Mirrors ``flows.estate.current_estate``, which lineage may not import.
    """
    path = os.environ.get("LETHE_ESTATE")
    return intake_for(load_estate(Path(path) if path else load_settings().estate_file))


def validate_event(event: Any, *, lenient: bool = False) -> Checked:
    """Validate one event without storing it."""
    if not isinstance(event, dict):
        raise ConfigError("validate_event takes a decoded JSON object")
    return check(event, lenient=lenient)


def event_digest(event: Any) -> str:
    """SHA-256 of the event's canonical JSON: the same event, the same key."""
    text = json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def parse_events(text: str, origin: str) -> list[Entry]:
    """Events in ``text``: one JSON event, a JSON array of them, or NDJSON."""
    if not text.strip():
        return []
    try:
        value = _loads(text)
    except ValueError as whole:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2 or not _parses(lines[0]):
            return [Entry(origin, 0, error=f"not JSON: {whole}")]
        return [_line_entry(origin, index, line) for index, line in enumerate(lines)]
    values = value if isinstance(value, list) else [value]
    return [Entry(origin, index, event) for index, event in enumerate(values)]


def read_events(path: Path) -> list[Entry]:
    return parse_events(path.read_text(encoding="utf-8"), str(path))


def import_events(
    db: Session, intake: Intake, entries: Iterable[Entry], *, lenient: bool = False
) -> ImportReport:
    """Validate and store events; a rejected event stores nothing at all."""
    report = ImportReport()
    for entry in entries:
        checked, problems = _checked(entry, lenient=lenient)
        if checked is None or problems:
            report.rejected.append(Rejection(entry.origin, entry.index, problems))
            log.info(
                "rejected OpenLineage event %s#%d at %s",
                entry.origin,
                entry.index,
                ", ".join(p.pointer or "/" for p in problems),
            )
            continue
        report.warnings += [
            EventWarning(entry.origin, entry.index, w) for w in checked.warnings
        ]
        outcome = store(
            db,
            intake.estate,
            intake.namer,
            checked,
            digest=event_digest(entry.event),
            origin=f"{entry.origin}#{entry.index}",
            event_time=_event_time(checked.event["eventTime"]),
        )
        report.stored += outcome.new
        report.duplicates += not outcome.new
        report.flow_edges += outcome.flow_edges
        report.aliases += outcome.aliases
        report.defects += outcome.defects
        report.unmapped_namespaces |= outcome.unmapped
    for defect in report.defects:
        log.warning("lineage defect in %s: %s", defect.origin, defect.detail)
    log.info(
        "OpenLineage import: %d stored, %d seen before, %d rejected, %d new flow edges",
        report.stored,
        report.duplicates,
        len(report.rejected),
        report.flow_edges,
    )
    return report


def list_defects(
    db: Session, estate: str, *, include_resolved: bool = False
) -> list[LineageDefect]:
    query = select(LineageDefect).where(LineageDefect.estate == estate)
    if not include_resolved:
        query = query.where(col(LineageDefect.resolved_at).is_(None))
    return list(db.exec(query.order_by(col(LineageDefect.id))))


def _checked(
    entry: Entry, *, lenient: bool
) -> tuple[Checked | None, tuple[Problem, ...]]:
    if entry.error is not None:
        return None, (Problem("", entry.error),)
    if not isinstance(entry.event, dict):
        return None, (Problem("", "an event must be a JSON object"),)
    checked = check(entry.event, lenient=lenient)
    if checked.problems:
        return checked, checked.problems
    try:
        _event_time(checked.event["eventTime"])
    except ValueError:
        return checked, (Problem("/eventTime", "cannot be read as a time"),)
    return checked, ()


def _event_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.upper())
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _loads(text: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=no_constants)


def _parses(line: str) -> bool:
    try:
        _loads(line)
    except ValueError:
        return False
    return True


def _line_entry(origin: str, index: int, line: str) -> Entry:
    try:
        return Entry(origin, index, _loads(line))
    except ValueError as error:
        return Entry(origin, index, error=f"not JSON: {error}")
