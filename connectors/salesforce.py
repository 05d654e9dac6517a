"""Salesforce: find a subject's Contacts, Leads and Cases, erase them with Bulk
API 2.0 ``hardDelete`` jobs (or, for small steps when configured, one sObject
Collections delete), and prove with ``query`` and ``queryAll`` what is left.

Why these calls (vendor-apis.md §1, §7):

- ``hardDelete`` skips the Recycle Bin, where a plain delete would leave the
  record readable for 15 days. It needs the "Bulk API Hard Delete" permission
  on the integration user; without it the job fails and the outcome says so.
- ``delete_mode`` chooses between them per system. ``hard`` (the default)
  hard-deletes at every size, and verification wants ``queryAll`` empty.
  ``by_size`` sends a step whose ids fit one collection call (at most 200,
  all objects together) to ``DELETE /composite/sobjects``, a soft delete
  (``_salesforce_composite``): the outcome is "deleted", physically purged by
  the day the Recycle Bin lets go, and verification accepts records that
  ``queryAll`` shows with ``IsDeleted`` true. Larger steps still use
  ``hardDelete``. The rule reads only the keys, so a re-run, ``find_job`` and
  ``verify`` always agree with the submit on which path a step took.
- A Contact that Cases still reference cannot be deleted, so the jobs run one
  object at a time, children first: Case, then Contact, then Lead, then
  Individual if the keys name any (objects this module does not know run
  before all of them, Account after). ``submit`` files
  the first job; each ``poll`` that sees a job complete cleanly files the next.
  The job id handed back is the comma-separated list of the jobs so far.
- Before the first job, the Individuals the Contacts and Leads point to are
  flagged ``ShouldForget`` / ``HasOptedOutProcessing`` and their names blanked,
  not deleted (``_salesforce_individuals`` says why).
- A vendor's "JobComplete" is not proof: ``verify`` re-reads with ``query`` and
  ``queryAll`` and names records that are only in the Recycle Bin.
  ``confirm_absent`` reads single records and takes only the documented 404
  (NOT_FOUND, ENTITY_IS_DELETED) as absence (failure case B05).

Every call is paced and its 429s, 5xx and timeouts retried (``_resilience``,
through ``_salesforce_http.OrgSession``); creating a Bulk job, which cannot
simply be repeated, adopts the job a lost attempt filed (``_salesforce_bulk``).
The session comes from the client credentials or the JWT bearer flow
(``_salesforce_auth``). For lineage, ``api_events`` reads the org's ApiEvent
log (which user read which record ids) past a watermark
(``_salesforce_events``).

Ids are compared in their 18-character form (15-character ids are extended
with their checksum, never lower-cased); SOQL literals are escaped, and IN
lists are cut to at most 200 values. Error messages name the system, the step
and the HTTP status with the org's errorCode, never a record, an id, a query or
a response body; ``_salesforce_http.py`` turns failed answers and token answers
into those errors.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import phonenumbers

from connectors._resilience import Pacer, RetryPolicy, pacer_for
from connectors._salesforce_auth import build_grant
from connectors._salesforce_bulk import NOT_FINAL, RUNNING, BulkJobs, vendor_time
from connectors._salesforce_composite import (
    COLLECTION_CAP,
    delete_collection,
    residual_dates,
    soft_outcome,
)
from connectors._salesforce_events import api_events
from connectors._salesforce_http import OrgSession, error_code, failure
from connectors._salesforce_individuals import (
    PEOPLE,
    IndividualReport,
    Individuals,
    linked_ids,
)
from connectors._salesforce_soql import in_lists, select, soql_literal, where_in
from connectors._salesforce_verify import evidence
from connectors.base import Capabilities, Evidence, Keys, Located, Outcome
from lethe.errors import ConfigError, ConnectorError, InputError
from lethe.identity import salesforce_id_18

__all__ = ["SalesforceConnector", "soql_literal"]

logger = logging.getLogger(__name__)

_CHILD_FIRST = ("Case", "Contact", "Lead", "Individual", "Account")
_PERSON_FIELDS = ("Id", "Email", "Phone", "MobilePhone")
_SNAPSHOT_FIELDS = {
    "Contact": _PERSON_FIELDS,
    "Lead": _PERSON_FIELDS,
    "Case": ("Id", "ContactId", "SuppliedEmail", "SuppliedPhone"),
    "Account": ("Id", "Phone"),
}
_ABSENT_CODES = frozenset({"NOT_FOUND", "ENTITY_IS_DELETED"})
DELETE_MODES = ("hard", "by_size")
_OBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_VERSION = re.compile(r"^v?(\d{2,3}\.\d)$")


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


class SalesforceConnector:
    """One Salesforce org, reached with client credentials or a JWT bearer grant.

    ``auth`` is ``client_credentials`` (``client_id`` + ``client_secret``) or
    ``jwt_bearer`` (``client_id`` as the consumer key, ``username``, and the
    RSA key of the app's certificate as ``private_key_pem`` or
    ``private_key_file``; ``audience`` is https://test.salesforce.com for a
    sandbox).

    ``delete_mode`` is ``hard`` (Bulk ``hardDelete`` at every size) or
    ``by_size`` (a collection soft delete for steps of at most 200 ids).
    """

    capabilities = Capabilities(
        hard_delete=True, asynchronous=True, verify_by_read=True, batch_cap=200
    )

    def __init__(
        self,
        *,
        system: str,
        base_url: str,
        client_id: str,
        client_secret: str | None = None,
        auth: str = "client_credentials",
        username: str | None = None,
        private_key_pem: str | bytes | None = None,
        private_key_file: str | Path | None = None,
        audience: str = "https://login.salesforce.com",
        api_version: str = "v60.0",
        delete_mode: str = "hard",
        timeout: float = 10.0,
        poll_interval: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        max_attempts: int = 4,
        backoff_cap: float = 30.0,
        rate_limit_per_second: float | None = None,
        pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        match = _VERSION.match(api_version.strip())
        if match is None:
            raise ConfigError(
                f"{system}: api_version must look like v60.0; check the estate file"
            )
        if delete_mode not in DELETE_MODES:
            raise ConfigError(
                f"{system}: delete_mode must be hard or by_size, not "
                f"{str(delete_mode)[:20]!r}; check the estate file"
            )
        grant = build_grant(
            system,
            auth=auth,
            client_id=client_id,
            client_secret=client_secret,
            username=username,
            private_key_pem=private_key_pem,
            private_key_file=private_key_file,
            audience=audience,
            clock=clock,
        )
        self.system = system
        self.poll_interval = poll_interval
        self.delete_mode = delete_mode
        self.capabilities = replace(
            self.capabilities,
            hard_delete=delete_mode == "hard",
            rate_limit_per_second=rate_limit_per_second,
        )
        self._version = f"v{match.group(1)}"
        self._data = f"/services/data/{self._version}"
        self._org = OrgSession(
            system=system,
            base_url=base_url,
            data_path=self._data,
            grant=grant,
            timeout=timeout,
            transport=transport,
            policy=RetryPolicy(max_attempts=max_attempts, max_delay=backoff_cap),
            pacer=pacer or pacer_for(f"salesforce:{system}", rate_limit_per_second),
            sleep=sleep,
        )
        self._bulk = BulkJobs(self._org)
        self._individuals = Individuals(self._org)

    def close(self) -> None:
        self._org.close()

    # -- reading -------------------------------------------------------------

    def _live_ids(self, sobject: str, ids: Sequence[str]) -> list[str]:
        rows = self._org.rows(sobject, ids, all_rows=False, fields=("Id",))
        return list(dict.fromkeys(salesforce_id_18(str(row["Id"])) for row in rows))

    def _keys(self, keys: Keys) -> dict[str, list[str]]:
        """Object → distinct 18-character ids; rejects names that are not objects."""
        result: dict[str, list[str]] = {}
        for sobject, ids in keys.items():
            _check_object(self.system, sobject)
            result[sobject] = list(dict.fromkeys(salesforce_id_18(i) for i in ids))
        return result

    def read_fields(
        self, sobject: str, ids: Sequence[str], fields: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """Field values of live records by 18-character id (for reconciliation).

        The values are personal data: callers compare them in memory and keep
        only counts.
        """
        _check_object(self.system, sobject)
        for name in fields:
            _check_object(self.system, name)  # a field name has the same shape
        wanted = ["Id", *[f for f in fields if f != "Id"]]
        rows = self._org.rows(
            sobject, [salesforce_id_18(i) for i in ids], all_rows=False, fields=wanted
        )
        return {
            salesforce_id_18(str(row["Id"])): {f: row.get(f) for f in fields}
            for row in rows
        }

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
            soqls = list(where_in(sobject, _PERSON_FIELDS, "Email", emails))
            for in_list in in_lists(phone_forms):
                where = f"Phone IN ({in_list}) OR MobilePhone IN ({in_list})"
                soqls.append(select(_PERSON_FIELDS, sobject, where))
            by_id: dict[str, dict[str, Any]] = {}
            for soql in soqls:
                for row in self._org.query(soql):
                    record = {name: row.get(name) for name in _PERSON_FIELDS}
                    by_id.setdefault(str(row["Id"]), record)
            found[sobject] = list(by_id.values())
        return found

    def cases_for(self, contact_ids: Sequence[str]) -> list[str]:
        """Live Cases that reference these Contacts (they must go first)."""
        ids = [salesforce_id_18(value) for value in contact_ids]
        found: dict[str, None] = {}
        for soql in where_in("Case", ("Id",), "ContactId", dict.fromkeys(ids)):
            found.update(dict.fromkeys(str(row["Id"]) for row in self._org.query(soql)))
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
            for row in self._org.query(select(fields, sobject)):
                yield {"sobject": sobject} | {name: row.get(name) for name in fields}

    def api_events(
        self, since: str | None, *, after: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """ApiEvent rows newer than a watermark, oldest first (lineage's input).

        ``since`` is the last captured ``EventDate`` (None: from the start of
        the store) and ``after`` the ``EventIdentifier`` captured last at that
        date; without it every event at ``since`` counts as seen. Each row has
        ``_salesforce_events.API_EVENT_FIELDS``; the query text is left out.
        The org needs Event Monitoring, or the query answers INVALID_TYPE.
        """
        return api_events(self._org, since, after)

    def confirm_absent(self, keys: Keys) -> dict[str, bool]:
        """For each id as given, whether the org says it holds no live record.

        One ``GET /sobjects/{Object}`` per object first proves base_url,
        api_version and the object name (a wrong version answers the same 404
        NOT_FOUND a missing record does). Then ``GET /sobjects/{Object}/{Id}``:
        200 is present (False); the documented 404 with NOT_FOUND (never there,
        or purged) or ENTITY_IS_DELETED (in the Recycle Bin; ``verify`` still
        names those) is absent (True); a 404 without that body is a
        ConfigError naming base_url.
        """
        result: dict[str, bool] = {}
        for sobject, values in keys.items():
            _check_object(self.system, sobject)
            prefix = self._key_prefix(sobject)
            for value in values:
                record_id = salesforce_id_18(value)
                if prefix and not record_id.startswith(prefix):
                    raise InputError(
                        f"{self.system}: a key listed under {sobject} is the id of "
                        "another object; check the keys"
                    )
                result[value] = self._record_absent(sobject, record_id)
        return result

    def _key_prefix(self, sobject: str) -> str | None:
        try:
            info = self._org.json(
                "GET", f"{self._data}/sobjects/{sobject}", "object probe"
            )
        except ConnectorError as exc:
            if exc.status != 404:
                raise
            raise ConfigError(
                f"{self.system}: Salesforce does not serve {sobject} at "
                f"{self._version}; check the keys' object names and api_version"
            ) from None
        describe = info.get("objectDescribe") if isinstance(info, dict) else None
        if not isinstance(describe, dict):
            raise ConfigError(
                f"{self.system}: Salesforce object probe answered without an "
                "objectDescribe; check base_url"
            )
        prefix = describe.get("keyPrefix")
        return prefix if isinstance(prefix, str) and len(prefix) == 3 else None

    def _record_absent(self, sobject: str, record_id: str) -> bool:
        response = self._org.send(
            "GET",
            f"{self._data}/sobjects/{sobject}/{record_id}",
            "record read",
            accept=(404,),
            params={"fields": "Id"},
        )
        if response.is_success:
            return False
        if error_code(response) in _ABSENT_CODES:
            return True
        raise failure(self.system, response, "record read")

    # -- erasing -------------------------------------------------------------

    def _order(self, ids: dict[str, list[str]]) -> list[str]:
        unknown = sorted(name for name in ids if name not in _CHILD_FIRST)
        return unknown + [name for name in _CHILD_FIRST if name in ids]

    def _people(
        self, ids: dict[str, list[str]]
    ) -> tuple[dict[str, list[str]], IndividualReport | None]:
        """Live Contact and Lead ids, after flagging the Individuals behind them.

        One queryAll per object reads the records, live or in the Recycle Bin,
        with their IndividualId; those Individuals are flagged before any job.
        """
        objects = [sobject for sobject in PEOPLE if sobject in ids]
        if not objects:
            return {}, None
        fields = ("Id", "IsDeleted", "IndividualId")
        live: dict[str, list[str]] = {}
        rows: list[dict[str, Any]] = []
        for sobject in objects:
            found = self._org.rows(sobject, ids[sobject], all_rows=True, fields=fields)
            rows.extend(found)
            live[sobject] = list(
                dict.fromkeys(
                    salesforce_id_18(str(row["Id"]))
                    for row in found
                    if not row.get("IsDeleted")
                )
            )
        report = self._individuals.flag(linked_ids(rows), records_found=len(rows))
        return live, report

    def _one_call(self, ids: dict[str, list[str]]) -> bool:
        """Whether this step takes the collection delete (``by_size``, <= 200)."""
        total = sum(len(values) for values in ids.values())
        return self.delete_mode == "by_size" and total <= COLLECTION_CAP

    def submit(self, keys: Keys, *, idempotency_key: str) -> Outcome:
        """Flag the Individuals, then delete: one collection call for a step
        that takes it (a done Outcome, no job id), else the first object's
        hardDelete job."""
        ids = self._keys(keys)
        if self._one_call(ids):
            return self._delete_small(ids)
        live, report = self._people(ids)
        outcome = self._next_job([], ids, self._order(ids), idempotency_key, live)
        return _with_report(outcome, report)

    def _delete_small(self, ids: dict[str, list[str]]) -> Outcome:
        """Every id the org still holds, children first, in one collection call.

        queryAll finds the records live or in the Recycle Bin; ids it does not
        return are held nowhere and left out, so they cannot fail the call.
        Binned ones answer ENTITY_IS_DELETED, which counts as deleted: that is
        how a re-run after a crash between the call and the ledger ends.
        """
        held: list[str] = []
        people: list[dict[str, Any]] = []
        for sobject in self._order(ids):
            fields = ("Id", "IsDeleted") + (
                ("IndividualId",) if sobject in PEOPLE else ()
            )
            rows = self._org.rows(sobject, ids[sobject], all_rows=True, fields=fields)
            people.extend(rows if sobject in PEOPLE else ())
            held.extend(salesforce_id_18(str(row["Id"])) for row in rows)
        report = None
        if any(sobject in PEOPLE for sobject in ids):
            report = self._individuals.flag(
                linked_ids(people), records_found=len(people)
            )
        held = list(dict.fromkeys(held))
        if not held:
            gone = Outcome(
                status="done", action="already_absent", finished_at=datetime.now(UTC)
            )
            return _with_report(gone, report)
        return _with_report(soft_outcome(delete_collection(self._org, held)), report)

    def _next_job(
        self,
        job_ids: list[str],
        ids: dict[str, list[str]],
        remaining: Sequence[str],
        attempt: str,
        known_live: dict[str, list[str]] | None = None,
    ) -> Outcome:
        for sobject in remaining:
            if known_live is not None and sobject in known_live:
                live = known_live[sobject]
            else:
                live = self._live_ids(sobject, ids[sobject])
            if live:
                job_ids = [*job_ids, self._bulk.file(sobject, live, attempt)]
                return Outcome(
                    status="pending",
                    action="none",
                    job_id=",".join(job_ids),
                    vendor_status="UploadComplete",
                )
        return self._finished(job_ids)

    def _finished(self, job_ids: list[str]) -> Outcome:
        infos = [self._bulk.info(job_id) for job_id in job_ids]
        affected = sum(
            int(info.get("numberRecordsProcessed") or 0)
            - int(info.get("numberRecordsFailed") or 0)
            for info in infos
            if info["state"] == "JobComplete"
        )
        last = infos[-1] if infos else {}
        finished = vendor_time(last.get("systemModstamp")) or datetime.now(UTC)
        return Outcome(
            status="done",
            action="deleted" if affected else "already_absent",
            records_affected=affected,
            job_id=",".join(job_ids) or None,
            vendor_status=last.get("state"),
            finished_at=finished,
            detail="hard-deleted past the Recycle Bin: immediately eligible for "
            "physical deletion; queryAll may still list them for about a day",
            dates={
                "deleted_at": finished.isoformat(timespec="seconds"),
                "query_all_may_list_until": (finished + timedelta(days=1))
                .date()
                .isoformat(),
                **residual_dates(finished),
            },
        )

    def poll(self, job_id: str, keys: Keys) -> Outcome:
        """Read the newest job; when it completed cleanly, file the next one."""
        job_ids = [part for part in job_id.split(",") if part]
        if not job_ids:
            raise InputError(f"{self.system}: poll needs the job id submit returned")
        ids = self._keys(keys)
        info = self._bulk.info(job_ids[-1])
        state, sobject = info["state"], str(info.get("object", ""))
        if state in RUNNING:
            return Outcome(
                status="pending", action="none", job_id=job_id, vendor_status=state
            )
        order = self._order(ids)
        here = order.index(sobject) if sobject in order else None
        if state == "Open":
            # The submit that filed it died before closing it: start that
            # object again with a fresh job.
            self._bulk.abort_quietly(job_ids[-1])
            return self._next_job(job_ids, ids, order[here or 0 :], "poll")
        failed = int(info.get("numberRecordsFailed") or 0)
        if state == "JobComplete":
            failed = max(failed, self._bulk.failed_rows(job_ids[-1]))
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
        """The newest unfinished hardDelete job on one of the keys' objects.

        None for a step that takes the collection delete: it files no job.
        """
        ids = self._keys(keys)
        if self._one_call(ids):
            return None
        objects = set(ids)
        found = [
            info
            for info in self._bulk.listing()
            if info.get("operation") == "hardDelete"
            and info.get("object") in objects
            and info.get("state") in NOT_FINAL
        ]
        if not found:
            return None
        newest = max(found, key=lambda info: str(info.get("createdDate", "")))
        return str(newest["id"])

    # -- verifying -----------------------------------------------------------

    def verify(self, keys: Keys) -> Evidence:
        """Re-read with query and queryAll: zero everywhere, or say what is left.

        A step that took the collection delete counts records queryAll shows
        with IsDeleted true (the Recycle Bin) as deleted; ``_salesforce_verify``
        has the rules, the Individuals check included.
        """
        ids = self._keys(keys)
        return evidence(self._org, self._individuals, ids, soft=self._one_call(ids))


def _check_object(system: str, sobject: str) -> None:
    if not _OBJECT_NAME.match(sobject):
        raise InputError(
            f"{system}: Salesforce datasets are object API names such "
            "as Contact or Case; one of the keys' datasets is not"
        )


def _with_report(outcome: Outcome, report: IndividualReport | None) -> Outcome:
    if report is None:
        return outcome
    detail = "; ".join(part for part in (outcome.detail, report.describe()) if part)
    return replace(outcome, detail=detail)
