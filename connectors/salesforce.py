"""Salesforce: find a subject's Contacts, Leads and Cases, erase them with Bulk
API 2.0 ``hardDelete`` jobs, and prove with ``query`` and ``queryAll`` that
nothing is left, not even in the Recycle Bin.

Why these calls (vendor-apis.md §1, §7):

- ``hardDelete`` skips the Recycle Bin, where a plain delete would leave the
  record readable for 15 days. It needs the "Bulk API Hard Delete" permission
  on the integration user; without it the job fails and the outcome says so.
- A Contact that Cases still reference cannot be deleted, so the jobs run one
  object at a time, children first: Case, then Contact, then Lead (objects this
  module does not know run before all of them, Account after). ``submit`` files
  the first job; each ``poll`` that sees a job complete cleanly files the next.
  The job id handed back is the comma-separated list of the jobs so far.
- A vendor's "JobComplete" is not proof: ``verify`` re-reads with ``query`` and
  ``queryAll`` and names records that are only in the Recycle Bin.

Every call is paced and its 429s, 5xx and timeouts retried (``_resilience``,
through ``_salesforce_http.OrgSession``). Creating a Bulk job is the one call
that cannot simply be repeated: a timeout or 5xx may hide a job the org did
create, so before posting again the connector adopts an Open hardDelete job on
the same object created since the first attempt (``find_job``'s listing); only
a 429, which the org refused unprocessed, or finding none posts again. The org
may still be creating a lost job when the listing is read; the backoff before
the look narrows that window, and an empty Open job left behind holds no data.

Ids are compared in their 18-character form (15-character ids are extended
with their checksum, never lower-cased); SOQL literals are escaped, and IN
lists are cut to at most 200 values. Error messages name the system, the step
and the HTTP status with the org's errorCode, never a record, an id, a query or
a response body; ``_salesforce_http.py`` turns failed answers and token answers
into those errors.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import phonenumbers

from connectors._resilience import Pacer, RetryPolicy, pacer_for
from connectors._salesforce_http import OrgSession, answer_was_busy
from connectors.base import Capabilities, Evidence, Keys, Located, Outcome
from lethe.errors import (
    ConfigError,
    ConnectorError,
    InputError,
    LetheError,
    TransientConnectorError,
)
from lethe.identity import salesforce_id_18

__all__ = ["SalesforceConnector", "soql_literal"]

logger = logging.getLogger(__name__)

_CHILD_FIRST = ("Case", "Contact", "Lead", "Account")
_RUNNING = frozenset({"UploadComplete", "InProgress"})
_NOT_FINAL = _RUNNING | {"Open"}
_CLOSED = _RUNNING | {"JobComplete"}
_PERSON_FIELDS = ("Id", "Email", "Phone", "MobilePhone")
_SNAPSHOT_FIELDS = {
    "Contact": _PERSON_FIELDS,
    "Lead": _PERSON_FIELDS,
    "Case": ("Id", "ContactId", "SuppliedEmail", "SuppliedPhone"),
    "Account": ("Id", "Phone"),
}
_CLOCK_SKEW = timedelta(minutes=2)
_IN_MAX_VALUES = 200
_IN_MAX_CHARS = 4_000
_OBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_JOB_ID = re.compile(r"^750[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")
_VERSION = re.compile(r"^v?(\d{2,3}\.\d)$")
_SOQL_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def soql_literal(value: str) -> str:
    """A quoted SOQL string literal that means exactly ``value``."""
    return "'" + "".join(_SOQL_ESCAPES.get(char, char) for char in value) + "'"


def _select(fields: Sequence[str], sobject: str, where: str = "") -> str:
    """SOQL text. Names are checked identifiers; values come from soql_literal."""
    text = f"SELECT {', '.join(fields)} FROM {sobject}"  # noqa: S608
    return f"{text} WHERE {where}" if where else text


def _in_lists(values: Iterable[str]) -> Iterator[str]:
    """Comma-joined literals, at most 200 values and ~4,000 characters a list."""
    chunk: list[str] = []
    size = 0
    for literal in map(soql_literal, values):
        if chunk and (
            len(chunk) >= _IN_MAX_VALUES or size + len(literal) > _IN_MAX_CHARS
        ):
            yield ",".join(chunk)
            chunk, size = [], 0
        chunk.append(literal)
        size += len(literal) + 1
    if chunk:
        yield ",".join(chunk)


def _phone_forms(value: str) -> list[str]:
    """The ways an org commonly stores a number: E.164, international, national."""
    forms = [value]
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return forms
    for style in (
        phonenumbers.PhoneNumberFormat.E164,
        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        phonenumbers.PhoneNumberFormat.NATIONAL,
    ):
        forms.append(phonenumbers.format_number(number, style))
    forms.append(str(number.national_number))
    return list(dict.fromkeys(forms))


def _vendor_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return None


def _created_since(info: dict[str, Any], since: datetime) -> bool:
    created = _vendor_time(info.get("createdDate"))
    return created is not None and created >= since


class SalesforceConnector:
    """One Salesforce org, reached with the OAuth client-credentials flow."""

    capabilities = Capabilities(
        hard_delete=True, asynchronous=True, verify_by_read=True, batch_cap=200
    )

    def __init__(
        self,
        *,
        system: str,
        base_url: str,
        client_id: str,
        client_secret: str,
        api_version: str = "v60.0",
        timeout: float = 10.0,
        poll_interval: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        max_attempts: int = 4,
        backoff_cap: float = 30.0,
        rate_limit_per_second: float | None = None,
        pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        match = _VERSION.match(api_version.strip())
        if match is None:
            raise ConfigError(
                f"{system}: api_version must look like v60.0; check the estate file"
            )
        self.system = system
        self.poll_interval = poll_interval
        self.capabilities = replace(
            self.capabilities, rate_limit_per_second=rate_limit_per_second
        )
        self._data = f"/services/data/v{match.group(1)}"
        self._org = OrgSession(
            system=system,
            base_url=base_url,
            credentials={"client_id": client_id, "client_secret": client_secret},
            timeout=timeout,
            transport=transport,
            policy=RetryPolicy(max_attempts=max_attempts, max_delay=backoff_cap),
            pacer=pacer or pacer_for(f"salesforce:{system}", rate_limit_per_second),
            sleep=sleep,
        )

    def close(self) -> None:
        self._org.close()

    # -- reading -------------------------------------------------------------

    def _query(self, soql: str, *, all_rows: bool = False) -> Iterator[dict[str, Any]]:
        """Every record a SOQL query returns, following nextRecordsUrl."""
        operation = "queryAll" if all_rows else "query"
        url: str | None = f"{self._data}/{operation}"
        params: dict[str, str] | None = {"q": soql}
        while url is not None:
            body = self._org.json("GET", url, operation, params=params)
            records = body.get("records") if isinstance(body, dict) else None
            if not isinstance(records, list):
                raise ConnectorError(
                    f"{self.system}: Salesforce {operation} answered without a "
                    "records list; check base_url and api_version"
                )
            yield from records
            url, params = self._next_page(body, operation), None

    def _next_page(self, body: dict[str, Any], operation: str) -> str | None:
        if body.get("done", True):
            return None
        link = body.get("nextRecordsUrl")
        if not isinstance(link, str) or not link.startswith("/services/data/"):
            raise ConnectorError(
                f"{self.system}: Salesforce {operation} said more records follow "
                "but gave no usable nextRecordsUrl"
            )
        return link

    def _where_in(
        self, sobject: str, fields: Sequence[str], column: str, values: Iterable[str]
    ) -> Iterator[str]:
        for in_list in _in_lists(values):
            yield _select(fields, sobject, f"{column} IN ({in_list})")

    def _rows(
        self, sobject: str, ids: Sequence[str], *, all_rows: bool, fields: Sequence[str]
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for soql in self._where_in(sobject, fields, "Id", ids):
            rows.extend(self._query(soql, all_rows=all_rows))
        return rows

    def _live_ids(self, sobject: str, ids: Sequence[str]) -> list[str]:
        rows = self._rows(sobject, ids, all_rows=False, fields=("Id",))
        return list(dict.fromkeys(salesforce_id_18(str(row["Id"])) for row in rows))

    def _keys(self, keys: Keys) -> dict[str, list[str]]:
        """Object → distinct 18-character ids; rejects names that are not objects."""
        result: dict[str, list[str]] = {}
        for sobject, ids in keys.items():
            if not _OBJECT_NAME.match(sobject):
                raise InputError(
                    f"{self.system}: Salesforce datasets are object API names such "
                    "as Contact or Case; one of the keys' datasets is not"
                )
            result[sobject] = list(dict.fromkeys(salesforce_id_18(i) for i in ids))
        return result

    def locate(self, keys: Keys) -> Located:
        """How many live records each object still holds for the ids."""
        ids = self._keys(keys)
        counts = {
            sobject: len(self._live_ids(sobject, values))
            for sobject, values in ids.items()
        }
        return Located(counts=counts)

    def find_contacts(
        self, *, emails: Sequence[str] = (), phones: Sequence[str] = ()
    ) -> dict[str, list[dict[str, Any]]]:
        """Contacts and Leads whose Email, Phone or MobilePhone match.

        Values arrive normalised (e-mail case-folded, phones in E.164). The org
        compares e-mail case-insensitively; phones are stored as typed, so each
        is also tried in its international and national formats.
        """
        phone_forms = [form for phone in phones for form in _phone_forms(phone)]
        found: dict[str, list[dict[str, Any]]] = {}
        for sobject in ("Contact", "Lead"):
            soqls = list(self._where_in(sobject, _PERSON_FIELDS, "Email", emails))
            for in_list in _in_lists(phone_forms):
                where = f"Phone IN ({in_list}) OR MobilePhone IN ({in_list})"
                soqls.append(_select(_PERSON_FIELDS, sobject, where))
            by_id: dict[str, dict[str, Any]] = {}
            for soql in soqls:
                for row in self._query(soql):
                    record = {name: row.get(name) for name in _PERSON_FIELDS}
                    by_id.setdefault(str(row["Id"]), record)
            found[sobject] = list(by_id.values())
        return found

    def cases_for(self, contact_ids: Sequence[str]) -> list[str]:
        """Live Cases that reference these Contacts (they must go first)."""
        ids = [salesforce_id_18(value) for value in contact_ids]
        found: dict[str, None] = {}
        for soql in self._where_in("Case", ("Id",), "ContactId", dict.fromkeys(ids)):
            found.update(dict.fromkeys(str(row["Id"]) for row in self._query(soql)))
        return list(found)

    def snapshot(
        self, objects: Sequence[str] = ("Contact", "Lead")
    ) -> Iterator[dict[str, Any]]:
        """Every live record of the objects, with the fields lineage matches on.

        Each dict carries ``sobject`` plus Id, Email, Phone and MobilePhone
        (Case: Id, ContactId, SuppliedEmail, SuppliedPhone).
        """
        for sobject in objects:
            fields = _SNAPSHOT_FIELDS.get(sobject)
            if fields is None:
                raise InputError(
                    f"{self.system}: snapshot covers "
                    f"{', '.join(_SNAPSHOT_FIELDS)}; another object was asked for"
                )
            for row in self._query(_select(fields, sobject)):
                yield {"sobject": sobject} | {name: row.get(name) for name in fields}

    # -- erasing -------------------------------------------------------------

    def _order(self, ids: dict[str, list[str]]) -> list[str]:
        unknown = sorted(name for name in ids if name not in _CHILD_FIRST)
        return unknown + [name for name in _CHILD_FIRST if name in ids]

    def _jobs_url(self, job_id: str = "") -> str:
        return f"{self._data}/jobs/ingest" + (f"/{job_id}" if job_id else "")

    def _file_job(self, sobject: str, ids: Sequence[str], attempt: str) -> str:
        """Create, fill and close a hardDelete job; abort it if a step fails."""
        spec = {
            "object": sobject,
            "operation": "hardDelete",
            "contentType": "CSV",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        info = self._create_job(sobject, spec)
        job_id = info.get("id") if isinstance(info, dict) else None
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            raise ConnectorError(
                f"{self.system}: Salesforce Bulk job create answered without a job id"
            )
        upload = "Id\n" + "".join(f"{value}\n" for value in ids)
        try:
            self._org.send(
                "PUT",
                self._jobs_url(job_id) + "/batches",
                "Bulk job upload",
                content=upload.encode(),
                headers={"Content-Type": "text/csv"},
            )
            self._close_job(job_id)
        except LetheError:
            self._abort_quietly(job_id)
            raise
        logger.info(
            "%s: filed Bulk hardDelete job %s on %s for %d records (attempt %s)",
            self.system,
            job_id,
            sobject,
            len(ids),
            attempt,
        )
        return job_id

    def _close_job(self, job_id: str) -> None:
        """Mark the upload complete; a refusal from a job already closed is fine.

        A close whose answer was lost and then retried is refused (the job has
        moved on), so the job's own state decides.
        """
        close = {"state": "UploadComplete"}
        try:
            self._org.send(
                "PATCH", self._jobs_url(job_id), "Bulk job close", json=close
            )
        except ConnectorError as exc:
            if exc.status != 400 or self._job_info(job_id)["state"] not in _CLOSED:
                raise

    def _create_job(self, sobject: str, spec: dict[str, str]) -> Any:
        """POST the job; after an unclear failure, look for it before posting again.

        A timeout or 5xx does not say whether the org created the job, so the
        next attempt first adopts an Open hardDelete job on the object created
        since this call began (allowing for clock skew). Only finding none, or
        a 429 (refused unprocessed), posts again.
        """
        since = datetime.now(UTC) - _CLOCK_SKEW
        unclear = False

        def attempt() -> Any:
            nonlocal unclear
            if unclear and (orphan := self._open_job(sobject, since)) is not None:
                logger.info(
                    "%s: adopting the Bulk job a lost create filed", self.system
                )
                return orphan
            try:
                url, operation = self._jobs_url(), "Bulk job create"
                return self._org.json("POST", url, operation, json=spec, retry=False)
            except TransientConnectorError as exc:
                unclear = unclear or exc.status is None or exc.status >= 500
                raise

        return self._org.retried(attempt, "Bulk job create", retry_if=answer_was_busy)

    def _open_job(self, sobject: str, since: datetime) -> dict[str, Any] | None:
        """The newest Open hardDelete job on ``sobject`` created after ``since``."""
        found = [
            info
            for info in self._list_jobs()
            if info.get("operation") == "hardDelete"
            and info.get("object") == sobject
            and info.get("state") == "Open"
            and _created_since(info, since)
        ]
        if not found:
            return None
        return max(found, key=lambda info: str(info.get("createdDate", "")))

    def _list_jobs(self) -> Iterator[dict[str, Any]]:
        url: str | None = self._jobs_url()
        params: dict[str, str] | None = {"jobType": "V2Ingest"}
        while url is not None:
            body = self._org.json("GET", url, "Bulk job list", params=params)
            yield from body.get("records") or []
            url, params = self._next_page(body, "Bulk job list"), None

    def _abort_quietly(self, job_id: str) -> None:
        try:
            self._org.send(
                "PATCH",
                self._jobs_url(job_id),
                "Bulk job abort",
                json={"state": "Aborted"},
            )
        except LetheError:
            logger.warning("%s: could not abort Bulk job %s", self.system, job_id)

    def _job_info(self, job_id: str) -> dict[str, Any]:
        try:
            info = self._org.json("GET", self._jobs_url(job_id), "Bulk job status")
        except ConnectorError as exc:
            if exc.status != 404:
                raise
            raise ConnectorError(
                f"{self.system}: Salesforce no longer knows a Bulk job this request "
                "filed (jobs are deleted 7 days after they end); run verify",
                status=404,
            ) from None
        if not isinstance(info, dict) or not isinstance(info.get("state"), str):
            raise ConnectorError(
                f"{self.system}: Salesforce Bulk job status answered without a state"
            )
        return info

    def _failed_rows(self, job_id: str) -> int:
        response = self._org.send(
            "GET", self._jobs_url(job_id) + "/failedResults/", "Bulk job results"
        )
        rows = list(csv.reader(io.StringIO(response.text)))
        return sum(1 for row in rows[1:] if row)

    def submit(self, keys: Keys, *, idempotency_key: str) -> Outcome:
        """File the hardDelete job for the first object that has live records."""
        ids = self._keys(keys)
        return self._next_job([], ids, self._order(ids), idempotency_key)

    def _next_job(
        self,
        job_ids: list[str],
        ids: dict[str, list[str]],
        remaining: Sequence[str],
        attempt: str,
    ) -> Outcome:
        for sobject in remaining:
            live = self._live_ids(sobject, ids[sobject])
            if live:
                job_ids = [*job_ids, self._file_job(sobject, live, attempt)]
                return Outcome(
                    status="pending",
                    action="none",
                    job_id=",".join(job_ids),
                    vendor_status="UploadComplete",
                )
        return self._finished(job_ids)

    def _finished(self, job_ids: list[str]) -> Outcome:
        infos = [self._job_info(job_id) for job_id in job_ids]
        affected = sum(
            int(info.get("numberRecordsProcessed") or 0)
            - int(info.get("numberRecordsFailed") or 0)
            for info in infos
            if info["state"] == "JobComplete"
        )
        last = infos[-1] if infos else {}
        return Outcome(
            status="done",
            action="deleted" if affected else "already_absent",
            records_affected=affected,
            job_id=",".join(job_ids) or None,
            vendor_status=last.get("state"),
            finished_at=_vendor_time(last.get("systemModstamp")) or datetime.now(UTC),
        )

    def poll(self, job_id: str, keys: Keys) -> Outcome:
        """Read the newest job; when it completed cleanly, file the next one."""
        job_ids = [part for part in job_id.split(",") if part]
        if not job_ids:
            raise InputError(f"{self.system}: poll needs the job id submit returned")
        ids = self._keys(keys)
        info = self._job_info(job_ids[-1])
        state, sobject = info["state"], str(info.get("object", ""))
        if state in _RUNNING:
            return Outcome(
                status="pending", action="none", job_id=job_id, vendor_status=state
            )
        order = self._order(ids)
        here = order.index(sobject) if sobject in order else None
        if state == "Open":
            # The submit that filed it died before closing it: start that
            # object again with a fresh job.
            self._abort_quietly(job_ids[-1])
            return self._next_job(job_ids, ids, order[here or 0 :], "poll")
        failed = int(info.get("numberRecordsFailed") or 0)
        if state == "JobComplete":
            failed = max(failed, self._failed_rows(job_ids[-1]))
        if state != "JobComplete" or failed:
            return Outcome(
                status="failed",
                action="none",
                job_id=job_id,
                vendor_status=state,
                detail=f"{sobject} job {state}: {failed} records failed",
            )
        after = order if here is None else order[here + 1 :]
        return self._next_job(job_ids, ids, after, "poll")

    def find_job(self, keys: Keys, *, idempotency_key: str) -> str | None:
        """The newest unfinished hardDelete job on one of the keys' objects."""
        objects = set(self._keys(keys))
        found = [
            info
            for info in self._list_jobs()
            if info.get("operation") == "hardDelete"
            and info.get("object") in objects
            and info.get("state") in _NOT_FINAL
        ]
        if not found:
            return None
        newest = max(found, key=lambda info: str(info.get("createdDate", "")))
        return str(newest["id"])

    # -- verifying -----------------------------------------------------------

    def verify(self, keys: Keys) -> Evidence:
        """Re-read with query and queryAll: zero everywhere, or say what is left."""
        ids = self._keys(keys)
        observed: dict[str, object] = {}
        left: list[str] = []
        for sobject, values in ids.items():
            fields = ("Id", "IsDeleted")
            live = self._rows(sobject, values, all_rows=False, fields=fields)
            every = self._rows(sobject, values, all_rows=True, fields=fields)
            observed[f"{sobject}.query"] = len(live)
            observed[f"{sobject}.queryAll"] = len(every)
            binned = sum(1 for row in every if row.get("IsDeleted"))
            if live:
                left.append(f"{len(live)} {sobject} records are still live")
            if binned:
                left.append(
                    f"{binned} {sobject} records remain in the Recycle Bin "
                    "(soft-deleted, still readable through queryAll)"
                )
        verified = all(count == 0 for count in observed.values())
        return Evidence(
            verified=verified,
            observed=observed,
            checked_at=datetime.now(UTC),
            detail="; ".join(left)
            if left
            else "no record left, live or in the Recycle Bin",
        )
