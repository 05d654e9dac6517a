"""The Individual behind a Contact or Lead: flag it, blank it, check it.

``Individual`` (API 42.0+, Data Protection and Privacy) is the org's privacy
record for a person; Contacts and Leads point to it through ``IndividualId``,
and deleting them leaves it in place. It carries the consent flags the org's
own processes read (``ShouldForget`` "Forget this Individual",
``HasOptedOutProcessing`` "Don't Process") and the person's names and birth
date (vendor-apis.md §1.2, failure case B10).

What the connector does with it, and why:

- Before the first hardDelete job is filed, every Individual the request's
  Contacts and Leads point to (live or in the Recycle Bin) gets
  ``ShouldForget`` and ``HasOptedOutProcessing`` set, and its personal fields
  blanked (FirstName, Salutation and BirthDate emptied, the required LastName
  overwritten with a neutral placeholder), through ``PATCH
  /composite/sobjects`` in calls of at most 200 records with ``allOrNone``
  false. An Individual already so is skipped, so a re-run changes nothing.
- It is not deleted. It is the record the org's consent tools, Privacy Center
  Right to Be Forgotten policies (which take Individual as their parent) and
  other records such as a User or Person Account read; flagging is what the
  vendor suggests while a request is pending, and blanking takes the names
  out without breaking those links. Deleting it safely would have to wait
  until the Contacts are gone, and by then nothing in the org leads back to
  it: lethe keeps no state between runs, so it could neither find nor verify
  it. An org that wants the record gone lets its own RTBF policy act on the
  flag.
- The ids are found from the Contacts and Leads themselves, so once those are
  hard-deleted the Individuals can no longer be looked up; the outcome and the
  evidence say so instead of failing.
- A flag that the org refuses (a validation rule, a missing permission) stops
  the erasure before any delete, since afterwards the link would be lost.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectors._salesforce_http import OrgSession
from lethe.errors import ConnectorError
from lethe.identity import salesforce_id_18

logger = logging.getLogger(__name__)

PLACEHOLDER = "ERASED"
PEOPLE = ("Contact", "Lead")
CHANGES: dict[str, Any] = {
    "ShouldForget": True,
    "HasOptedOutProcessing": True,
    "FirstName": None,
    "Salutation": None,
    "BirthDate": None,
    "LastName": PLACEHOLDER,
}
_FIELDS = ("Id", *CHANGES)
_BATCH = 200
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,60}$")
_GONE = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "NOT_FOUND"})


@dataclass(frozen=True)
class IndividualReport:
    """What happened to the Individuals the people records point to."""

    records_found: int
    linked: int = 0
    flagged: int = 0
    already: int = 0
    gone: int = 0

    def describe(self) -> str:
        if self.records_found == 0:
            return (
                "Individuals: the Contacts and Leads are gone, so their "
                "Individuals can no longer be looked up"
            )
        if self.linked == 0:
            return "Individuals: none linked to these Contacts and Leads"
        text = (
            f"Individuals: {self.flagged} flagged ShouldForget and "
            f"HasOptedOutProcessing with names blanked, {self.already} already were"
        )
        return text + (f", {self.gone} no longer live in the org" if self.gone else "")


def linked_ids(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The distinct 18-character IndividualIds of Contact or Lead rows."""
    found = (row.get("IndividualId") for row in rows)
    return list(dict.fromkeys(salesforce_id_18(str(i)) for i in found if i))


def is_handled(row: Mapping[str, Any]) -> bool:
    return all(row.get(name) == value for name, value in CHANGES.items())


class Individuals:
    """Flag and check Individuals through one ``OrgSession``."""

    def __init__(self, org: OrgSession) -> None:
        self._org = org
        self.system = org.system

    def _live(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = self._org.rows("Individual", ids, all_rows=False, fields=_FIELDS)
        return {salesforce_id_18(str(row["Id"])): row for row in rows}

    def flag(self, ids: Sequence[str], *, records_found: int) -> IndividualReport:
        """Flag and blank each live Individual that is not so already."""
        live = self._live(ids) if ids else {}
        todo = [i for i, row in live.items() if not is_handled(row)]
        gone = len(ids) - len(live)
        flagged = 0
        for start in range(0, len(todo), _BATCH):
            done, missing = self._patch(todo[start : start + _BATCH])
            flagged, gone = flagged + done, gone + missing
        report = IndividualReport(
            records_found, len(ids), flagged, len(live) - len(todo), gone
        )
        logger.info(
            "%s: Individuals linked %d, flagged %d, already %d, gone %d",
            self.system,
            report.linked,
            report.flagged,
            report.already,
            report.gone,
        )
        return report

    def _patch(self, ids: Sequence[str]) -> tuple[int, int]:
        """One collection update; returns (flagged, gone meanwhile)."""
        records = [
            {"attributes": {"type": "Individual"}, "id": i, **CHANGES} for i in ids
        ]
        body = {"allOrNone": False, "records": records}
        url = f"{self._org.data_path}/composite/sobjects"
        results = self._org.json("PATCH", url, "Individual update", json=body)
        if not isinstance(results, list) or len(results) != len(ids):
            raise ConnectorError(
                f"{self.system}: Salesforce Individual update answered without one "
                "result per record; check api_version"
            )
        flagged = gone = 0
        for result in results:
            if isinstance(result, dict) and result.get("success"):
                flagged += 1
                continue
            code = _status_code(result)
            if code not in _GONE:
                raise ConnectorError(
                    f"{self.system}: Salesforce refused to flag an Individual "
                    f"({code or 'no status code'}); nothing was deleted; check the "
                    "integration user's access to Individual and validation rules"
                )
            gone += 1
        return flagged, gone

    def unhandled(self, ids: Sequence[str]) -> int:
        """How many of these Individuals are live but not flagged and blanked."""
        if not ids:
            return 0
        return sum(1 for row in self._live(ids).values() if not is_handled(row))


def _status_code(result: Any) -> str | None:
    errors = result.get("errors") if isinstance(result, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code = errors[0].get("statusCode")
        return code if isinstance(code, str) and _CODE.match(code) else None
    return None
