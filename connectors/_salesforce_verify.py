"""What a re-read of the org shows after an erase: the Salesforce evidence.

Each object's ids are read twice, with ``query`` (live records) and
``queryAll`` (live and in the Recycle Bin). After a ``hardDelete`` both must
come back empty: a record in the Recycle Bin is still readable and
restorable, so it is named as left over. After a collection delete, which is
a soft delete by design (``_salesforce_composite``), ``queryAll`` may still
return the ids, each with ``IsDeleted`` true; ids it no longer returns at all
were purged, which counts too. Only a live record fails that check.

The Individuals behind the Contacts and Leads read (live or binned) are
checked as well: each must be flagged ShouldForget and blanked, or gone. Once
the records are hard-deleted those Individuals can no longer be found, and the
detail says so instead of failing. Details give counts, never ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from connectors._salesforce_composite import RECYCLE_BIN_DAYS
from connectors._salesforce_http import OrgSession
from connectors._salesforce_individuals import (
    PEOPLE,
    IndividualReport,
    Individuals,
    linked_ids,
)
from connectors.base import Evidence


def evidence(
    org: OrgSession,
    individuals: Individuals,
    ids: Mapping[str, Sequence[str]],
    *,
    soft: bool,
) -> Evidence:
    """Re-read every id; ``soft`` accepts Recycle Bin rows as deleted."""
    observed: dict[str, int] = {}
    left: list[str] = []
    people: list[dict[str, Any]] = []
    binned = 0
    for sobject, values in ids.items():
        fields = ("Id", "IsDeleted") + (("IndividualId",) if sobject in PEOPLE else ())
        live = org.rows(sobject, values, all_rows=False, fields=fields)
        every = org.rows(sobject, values, all_rows=True, fields=fields)
        in_bin = sum(1 for row in every if row.get("IsDeleted") is True)
        observed[f"{sobject}.query"] = len(live)
        observed[f"{sobject}.queryAll"] = len(every)
        if soft:
            observed[f"{sobject}.inRecycleBin"] = in_bin
            binned += in_bin
        people.extend(every if sobject in PEOPLE else ())
        left.extend(_leftovers(sobject, len(live), len(every), in_bin, soft=soft))

    notes = list(left)
    verified = not left
    if any(sobject in PEOPLE for sobject in ids):
        unhandled = _check_individuals(individuals, people, observed, notes)
        verified = verified and unhandled == 0
    gone = (
        f"no live record; {binned} in the Recycle Bin (soft-deleted), recoverable "
        f"there until the org purges them {RECYCLE_BIN_DAYS} days after deletion"
        if soft
        else "no record left, live or in the Recycle Bin"
    )
    return Evidence(
        verified=verified,
        observed=observed,
        checked_at=datetime.now(UTC),
        detail="; ".join(notes) if left else "; ".join([gone, *notes]),
    )


def _leftovers(
    sobject: str, live: int, every: int, in_bin: int, *, soft: bool
) -> list[str]:
    """What keeps one object from counting as erased."""
    left = []
    if live:
        left.append(f"{live} {sobject} records are still live")
    elif every > in_bin:
        # queryAll sees records query did not: the org changed between reads.
        left.append(f"{every - in_bin} {sobject} records are live in queryAll")
    if in_bin and not soft:
        left.append(
            f"{in_bin} {sobject} records remain in the Recycle Bin "
            "(soft-deleted, still readable through queryAll)"
        )
    return left


def _check_individuals(
    individuals: Individuals,
    people: list[dict[str, Any]],
    observed: dict[str, int],
    notes: list[str],
) -> int:
    linked = linked_ids(people)
    unhandled = individuals.unhandled(linked)
    observed["Individual.linked"] = len(linked)
    observed["Individual.unflagged"] = unhandled
    if not people:
        notes.append(IndividualReport(records_found=0).describe())
    elif unhandled:
        notes.append(
            f"{unhandled} Individuals are neither flagged ShouldForget and "
            "blanked nor gone"
        )
    return unhandled
