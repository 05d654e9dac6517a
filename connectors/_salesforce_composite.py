"""The sObject Collections delete, for steps small enough for one call
(vendor-apis.md §1.3), and the honest outcome it earns.

``DELETE /composite/sobjects?ids=…&allOrNone=false`` takes at most 200 ids of
mixed objects and answers 200 with one DeleteResult per id, in request order;
a request it cannot parse is a 400. It is a soft delete: the records go to
the Recycle Bin, where ``queryAll`` still returns them with ``IsDeleted`` true
and anyone with access can restore them, until the org purges them 15 days
later. So the outcome is "deleted" with ``physically_purged_by`` 15 days after
``deleted_at``, and the detail says the records are recoverable until then.

The call is synchronous and safe to repeat. An id already in the Recycle Bin
answers ENTITY_IS_DELETED, which here means the work is done: that is what a
retry after a lost answer, or a re-run after a crash between the call and the
ledger write, sees. Any other per-id refusal leaves the step failed, naming
the org's status codes and never an id.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors._salesforce_http import OrgSession
from connectors.base import Outcome
from lethe.errors import ConnectorError

logger = logging.getLogger(__name__)

COLLECTION_CAP = 200
RECYCLE_BIN_DAYS = 15
ALREADY_DELETED = "ENTITY_IS_DELETED"
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,60}$")


@dataclass(frozen=True)
class CollectionDelete:
    """What one collection delete did, counted; never which ids."""

    deleted: int
    already: int
    refused: Counter[str]
    deleted_at: datetime

    @property
    def in_bin(self) -> int:
        return self.deleted + self.already


def delete_collection(org: OrgSession, ids: Sequence[str]) -> CollectionDelete:
    """Soft-delete ``ids`` (at most 200, in the order given) in one call.

    The org refuses more than 200 with a 400, which surfaces as the
    ConnectorError ``OrgSession`` raises for any 4xx; 429, 5xx and timeouts
    are retried there, which is safe because the call can be repeated.
    ``deleted_at`` is when the answer arrived, so the purge date derived from
    it is never earlier than the org's.
    """
    url = f"{org.data_path}/composite/sobjects"
    params = {"ids": ",".join(ids), "allOrNone": "false"}
    results = org.json("DELETE", url, "collection delete", params=params)
    answered = datetime.now(UTC)
    if not isinstance(results, list) or len(results) != len(ids):
        raise ConnectorError(
            f"{org.system}: Salesforce collection delete answered without one "
            "result per id, so which records went is unknown; check api_version "
            "(sObject Collections need 42.0 or later) and run the step again"
        )
    deleted = already = 0
    refused: Counter[str] = Counter()
    for result in results:
        if isinstance(result, dict) and result.get("success") is True:
            deleted += 1
            continue
        code = _status_code(result)
        if code == ALREADY_DELETED:
            already += 1
        else:
            refused[code or "no status code"] += 1
    logger.info(
        "%s: collection delete: %d to the Recycle Bin, %d already there, %d refused",
        org.system,
        deleted,
        already,
        sum(refused.values()),
    )
    return CollectionDelete(deleted, already, refused, answered)


EVENT_LOG_DAYS = 30  # EventLogFile and ApiEvent retention with Event Monitoring


def residual_dates(deleted_at: datetime) -> dict[str, str]:
    """Copies Salesforce keeps outside the records themselves (vendor-apis.md
    1.3): event monitoring logs — which hold the query texts of lethe's own
    search by e-mail — until ``event_logs_expire_by``."""
    until = deleted_at + timedelta(days=EVENT_LOG_DAYS)
    return {"event_logs_expire_by": until.date().isoformat()}


def purge_date(deleted_at: datetime) -> str:
    """The day the org's Recycle Bin lets go of a record deleted then."""
    return (deleted_at + timedelta(days=RECYCLE_BIN_DAYS)).date().isoformat()


def soft_outcome(result: CollectionDelete) -> Outcome:
    """Done and "deleted" with the Recycle Bin dates, or failed naming the codes."""
    purged_by = purge_date(result.deleted_at)
    binned = (
        f"{result.in_bin} records are in the Recycle Bin (soft delete), "
        f"recoverable there until {purged_by}, when the org purges them"
    )
    if result.already:
        binned += f"; {result.already} of them were there before this call"
    if result.refused:
        codes = ", ".join(
            f"{count} {code}" for code, count in sorted(result.refused.items())
        )
        return Outcome(
            status="failed",
            action="none",
            records_affected=result.in_bin,
            detail=f"collection delete refused {sum(result.refused.values())} "
            f"records ({codes}); {binned}",
        )
    return Outcome(
        status="done",
        action="deleted",
        records_affected=result.in_bin,
        detail=binned,
        finished_at=result.deleted_at,
        dates={
            "deleted_at": result.deleted_at.isoformat(timespec="seconds"),
            "physically_purged_by": purged_by,
            **residual_dates(result.deleted_at),
        },
    )


def _status_code(result: Any) -> str | None:
    errors = result.get("errors") if isinstance(result, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code = errors[0].get("statusCode")
        return code if isinstance(code, str) and _CODE.match(code) else None
    return None
