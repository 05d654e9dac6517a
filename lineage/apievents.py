"""Subject-level lineage from Salesforce ApiEvent: which downstream read which
records, turned into copies.

An ApiEvent row says that a user read these record ids at this time
(vendor-apis.md §1.4). The estate's ``apievent_attribution`` map says where
such a read lands: a *reader*, the ``pipeline_id`` of the row's
``AdditionalInfo`` (the ``x-sfdc-addinfo-pipeline_id`` header its extractor
sends) or its ``Username`` (one integration user per downstream), maps to the
lethe dataset that extractor writes, such as ``warehouse:raw.sf_contact``. An
empty value names a reader that makes no copy lethe should learn from
ApiEvent: lethe itself, or a job whose manifests already give the downstream
keys. ``ConnectedAppId`` is never used: it is null whenever the call held an
existing token, which is nearly always.

What ApiEvent cannot say, and what this module does about it:

- *The downstream key.* Each copy's key is the Salesforce record id, and its
  subject is that record, or the parent the source snapshot ties it to (a
  Case → its Contact). That is right for datasets keyed by the Salesforce id;
  for a dataset with its own key (an ERP's partner number) an erasure could not
  use it, so such a job belongs in the map with an empty value, its copies
  coming from its manifests.
- *That the rows were written anywhere.* A read is not a copy: a job that reads
  every Contact and pushes a third of them over-claims here.
- *Who an unmapped reader is.* Its events are counted per reader, never
  guessed, and make no copy. Adding a reader later does not revisit the events
  already past the watermark; delete the estate's ``apievent_watermark`` row
  to read them again (capture is idempotent, so nothing doubles).
- *Every id of a large read.* ``Records`` holds at most 250,000 characters. A
  ``Records`` that is not whole JSON (cut), or names fewer ids than
  ``RowsReturned``, is a defect: the ids that can be read still become copies,
  and the capture reports the event with the rows it misses.

Capture is incremental and idempotent: a watermark per estate and source
system (``ApiEventWatermark``) keeps the last ``(EventDate, EventIdentifier)``;
events at or before it are skipped, and a copy already recorded for the same
dataset, key and event is never added again.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from lethe.errors import ConfigError, InputError
from lethe.identity import salesforce_id_18
from lethe.vault import Vault, utcnow
from lineage.apievent_models import ApiEventWatermark
from lineage.capture import SOURCE_RUN, key_digest, subject_digest
from lineage.graph import system_of
from lineage.models import Copy

log = logging.getLogger(__name__)

LEARNED_FROM = "apievent"
_ID_IN_TEXT = re.compile(r'"Id"\s*:\s*"([A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?)"')
_CHUNK = 500


@dataclass(frozen=True)
class RecordsDefect:
    """An event whose ``Records`` does not name every row it returned.

    ``kind`` is ``truncated`` (not whole JSON: cut, as at 250,000 characters),
    ``unrecognised`` (whole JSON, but not the shape read here: check the org's),
    ``short`` (the shape, but fewer ids than ``RowsReturned``) or ``missing``
    (no ``Records`` although rows were returned).
    """

    event_identifier: str
    kind: str
    missing: int
    length: int


@dataclass(frozen=True)
class ApiEventCapture:
    """What one capture read; ``unattributed`` names readers, so not in repr."""

    events: int = 0
    skipped: int = 0
    copies: int = 0
    attributed_events: int = 0
    ignored_events: int = 0
    unattributed: Mapping[str, int] = field(default_factory=dict, repr=False)
    defects: tuple[RecordsDefect, ...] = ()
    watermark: tuple[str, str] | None = None

    @property
    def unattributed_events(self) -> int:
        return sum(self.unattributed.values())

    @property
    def complete(self) -> bool:
        """Whether every attributed event named all the rows it returned."""
        return not self.defects


@dataclass(frozen=True)
class _Read:
    event_identifier: str
    moment: datetime
    job: str
    dataset: str
    ids: list[str]


def apievent_watermark(
    db: Session, estate: str, source: str = "salesforce"
) -> tuple[str, str] | None:
    """The last ``(EventDate, EventIdentifier)`` captured, or None."""
    row = _watermark_row(db, estate, source)
    return None if row is None else (row.event_date, row.event_identifier)


def record_api_events(
    db: Session,
    vault: Vault,
    estate: str,
    events: Iterable[Mapping[str, Any]],
    *,
    attribution: Mapping[str, str],
    source: str = "salesforce",
) -> ApiEventCapture:
    """Record the copies ApiEvent rows past the watermark show; move it on."""
    readers = _checked(attribution)
    row = _watermark_row(db, estate, source)
    mark = None if row is None else _event_key(row.event_date, row.event_identifier)
    fresh, skipped = _past(events, mark)
    reads: list[_Read] = []
    unattributed: Counter[str] = Counter()
    defects: list[RecordsDefect] = []
    ignored = 0
    for moment, identifier, event in fresh:
        job, dataset = _attribute(event, readers)
        if dataset is None:
            unattributed[job] += 1
        elif not dataset:
            ignored += 1
        else:
            ids, defect = record_ids(event)
            defects.extend([defect] if defect else [])
            reads.append(_Read(identifier, moment, job, dataset, ids))
    capture = ApiEventCapture(
        events=len(fresh),
        skipped=skipped,
        copies=_add_copies(db, vault, estate, reads),
        attributed_events=len(reads),
        ignored_events=ignored,
        unattributed=dict(unattributed),
        defects=tuple(defects),
    )
    capture = replace(
        capture, watermark=_advance(db, estate, source, row, fresh, capture)
    )
    _report(source, capture)
    return capture


def reader_of(event: Mapping[str, Any]) -> tuple[str | None, str]:
    """The event's ``pipeline_id`` (from ``AdditionalInfo``) and ``Username``."""
    pipeline = None
    try:
        info = json.loads(event.get("AdditionalInfo") or "null")
    except (TypeError, ValueError):
        info = None
    if isinstance(info, dict) and isinstance(info.get("pipeline_id"), str):
        pipeline = info["pipeline_id"] or None
    return pipeline, str(event.get("Username") or "")


def record_ids(event: Mapping[str, Any]) -> tuple[list[str], RecordsDefect | None]:
    """The 18-character ids an event's ``Records`` names, and its defect if any.

    The shape read is the emulator's (``{"records": [{"Id": ...}]}``); the real
    one must be checked in an org. A ``Records`` that is cut, or in another
    shape, still gives up every ``"Id": "..."`` written out in full.
    """
    text = event.get("Records") or ""
    returned = int(float(event.get("RowsReturned") or 0))
    kind = None
    try:
        body = json.loads(text) if text else {"records": []}
    except ValueError:
        body, kind = None, "truncated"
    rows = body.get("records") if isinstance(body, dict) else None
    if isinstance(rows, list):
        raw = [str(r["Id"]) for r in rows if isinstance(r, dict) and r.get("Id")]
    else:
        raw, kind = _ID_IN_TEXT.findall(text), kind or "unrecognised"
    ids = list(dict.fromkeys(_valid_ids(raw)))
    missing = max(returned - len(ids), 0)
    if kind is None and missing:
        kind = "short" if text else "missing"
    if kind is None:
        return ids, None
    identifier = str(event.get("EventIdentifier"))
    return ids, RecordsDefect(identifier, kind, missing, len(text))


def _valid_ids(raw: Sequence[str]) -> Iterable[str]:
    for value in raw:
        try:
            yield salesforce_id_18(value)
        except InputError:
            continue


def _checked(attribution: Mapping[str, str]) -> dict[str, str]:
    readers = {}
    for reader, dataset in attribution.items():
        target = dataset or ""
        if not reader or not isinstance(target, str) or (target and ":" not in target):
            raise ConfigError(
                "apievent_attribution maps each reader (a pipeline_id or a "
                "Username) to a 'system:dataset' name, or to '' for a reader "
                "that makes no copy; check the estate file"
            )
        readers[str(reader)] = target
    return readers


def _attribute(
    event: Mapping[str, Any], readers: Mapping[str, str]
) -> tuple[str, str | None]:
    """(job, dataset): the reader that matched, else the one to report."""
    pipeline, username = reader_of(event)
    for reader in (pipeline, username):
        if reader and reader in readers:
            return reader, readers[reader]
    return pipeline or username, None


def _event_key(event_date: Any, identifier: Any) -> tuple[datetime, str]:
    moment = None
    if isinstance(event_date, str) and event_date:
        try:
            moment = datetime.fromisoformat(event_date)
        except ValueError:
            moment = None
    if moment is None or not isinstance(identifier, str) or not identifier:
        raise InputError(
            "an ApiEvent needs a readable EventDate and an EventIdentifier; "
            "read the events with SalesforceConnector.api_events"
        )
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment, identifier


def _past(
    events: Iterable[Mapping[str, Any]], mark: tuple[datetime, str] | None
) -> tuple[list[tuple[datetime, str, Mapping[str, Any]]], int]:
    """Events past the watermark, oldest first, once each; and how many were not."""
    fresh: dict[str, tuple[datetime, str, Mapping[str, Any]]] = {}
    skipped = 0
    for event in events:
        moment, identifier = _event_key(
            event.get("EventDate"), event.get("EventIdentifier")
        )
        if (mark is not None and (moment, identifier) <= mark) or identifier in fresh:
            skipped += 1
            continue
        fresh[identifier] = (moment, identifier, event)
    return sorted(fresh.values(), key=lambda item: item[:2]), skipped


def _add_copies(db: Session, vault: Vault, estate: str, reads: list[_Read]) -> int:
    if not reads:
        return 0
    lineage_key = vault.lineage_key(db)
    digests = {i: key_digest(vault, i) for read in reads for i in read.ids}
    parents = _snapshot_subjects(db, estate, list(digests.values()))
    seen = _recorded(db, estate, [read.event_identifier for read in reads])
    added = 0
    for read in reads:
        for record_id in read.ids:
            digest = digests[record_id]
            if (read.dataset, digest, read.event_identifier) in seen:
                continue
            seen.add((read.dataset, digest, read.event_identifier))
            subject = parents.get(digest) or subject_digest(vault, record_id)
            db.add(
                Copy(
                    estate=estate,
                    system=system_of(read.dataset),
                    dataset=read.dataset,
                    key_digest=digest,
                    subject_digest=subject,
                    key_sealed=vault.seal(db, lineage_key, record_id),
                    job=read.job,
                    run_id=read.event_identifier,
                    copied_at=read.moment,
                    learned_from=LEARNED_FROM,
                )
            )
            added += 1
    db.flush()
    return added


def _snapshot_subjects(db: Session, estate: str, digests: list[str]) -> dict[str, str]:
    """Key digest → subject for records the source snapshot knows (Case → Contact)."""
    found: dict[str, str] = {}
    for start in range(0, len(digests), _CHUNK):
        rows = db.exec(
            select(Copy.key_digest, Copy.subject_digest).where(
                Copy.estate == estate,
                Copy.run_id == SOURCE_RUN,
                col(Copy.key_digest).in_(digests[start : start + _CHUNK]),
            )
        )
        found.update({digest: subject for digest, subject in rows})
    return found


def _recorded(
    db: Session, estate: str, identifiers: list[str]
) -> set[tuple[str, str, str]]:
    seen: set[tuple[str, str, str]] = set()
    for start in range(0, len(identifiers), _CHUNK):
        rows = db.exec(
            select(Copy.dataset, Copy.key_digest, Copy.run_id).where(
                Copy.estate == estate,
                Copy.learned_from == LEARNED_FROM,
                col(Copy.run_id).in_(identifiers[start : start + _CHUNK]),
            )
        )
        seen.update((dataset, digest, run) for dataset, digest, run in rows)
    return seen


def _watermark_row(db: Session, estate: str, source: str) -> ApiEventWatermark | None:
    return db.exec(
        select(ApiEventWatermark).where(
            ApiEventWatermark.estate == estate, ApiEventWatermark.source == source
        )
    ).first()


def _advance(
    db: Session,
    estate: str,
    source: str,
    row: ApiEventWatermark | None,
    fresh: list[tuple[datetime, str, Mapping[str, Any]]],
    capture: ApiEventCapture,
) -> tuple[str, str] | None:
    """Move the watermark to the newest event read; add to its running totals."""
    if not fresh:
        return None if row is None else (row.event_date, row.event_identifier)
    _, identifier, last = fresh[-1]
    if row is None:
        row = ApiEventWatermark(
            estate=estate, source=source, event_date="", event_identifier=""
        )
    row.event_date, row.event_identifier = str(last["EventDate"]), identifier
    row.events += capture.events
    row.copies += capture.copies
    row.unattributed_events += capture.unattributed_events
    row.incomplete_events += len(capture.defects)
    row.updated_at = utcnow()
    db.add(row)
    db.flush()
    return row.event_date, row.event_identifier


def _report(source: str, capture: ApiEventCapture) -> None:
    log.info(
        "%s ApiEvent capture: %d new events (%d already seen), %d copies, "
        "%d events from readers with no attribution",
        source,
        capture.events,
        capture.skipped,
        capture.copies,
        capture.unattributed_events,
    )
    for defect in capture.defects:
        log.warning(
            "%s ApiEvent %s: Records %s, %d returned rows not named; lineage "
            "from this event is incomplete",
            source,
            defect.event_identifier,
            defect.kind,
            defect.missing,
        )
