"""Block and anonymise a person in SAP S/4HANA through API_BUSINESS_PARTNER.

A business partner cannot be deleted here: ``A_BusinessPartner`` and
``A_Customer`` are ``sap:deletable="false"``, and §257 HGB / §147 AO keep books
and records for ten years from the end of the calendar year. So the honest
outcome is *retained*: the partner gets SAP's central block and the customer's
posting, order, delivery and billing blocks; its names, search term and birth
date and its addresses are overwritten with a neutral placeholder that owes
nothing to the old values; its e-mail and phone entries are deleted. SAP's ILM
destroys the blocked record when the retention period ends; posted documents
keep their own name snapshots and are outside this API.

Kept on purpose: ``Country`` (ILM retention rules are set per country) and
``BusinessPartnerIDByExtSystem`` (the Salesforce id that ties the retained
record to the request's lineage; it says nothing once Salesforce has erased
the person).

Every write carries the CSRF token of the client's session, fetched once and
fetched again when SAP answers 403 ``x-csrf-token: Required``. Updates carry
``If-Match``; a 412 re-reads the entity's etag and retries once. The partner
PATCH goes last, so a run cut short leaves the partner looking untouched and
the next run completes it, while a partner already blocked and anonymised is
skipped: erase is idempotent. ``confirm_absent`` tells a partner SAP does not
hold (the documented OData 404) from one it retains blocked (failure case
B05). That is also why every call may be retried in
place: 429s, 5xx and timeouts are, with backoff and optional pacing
(``_resilience``, through ``_sap_http``); SAP documents no fixed rate, so none
is kept by default.

The retention clock runs from the end of the calendar year of the last
relevant document (§257(5) HGB, §147(4) AO), so ``erase`` first asks
API_BILLING_DOCUMENT_SRV (``billing_base_url``, by default the sibling of
``base_url``; scenario SAP_COM_0120) for each partner's latest billing document
that is not cancelled, and puts the latest across the step's partners on the
outcome as ``dates["last_document"]``. A cancellation document (type S1) is
itself such a document, so cancelling an invoice never shortens the clock.
``retained_until`` stays end of this year plus ``retention_years``: the
policy, which knows the rule per record class, computes the until-date from
``last_document``. The look-up runs before any write, so a wrong
``billing_base_url`` changes nothing; ``read_billing_documents=False`` skips
it for a system that does not expose the service.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import httpx

from connectors._resilience import Pacer, RetryPolicy, pacer_for
from connectors._sap_http import BILLING, SapHttp
from connectors._sap_odata import (
    chunks,
    count_entries,
    entity_path,
    entity_set,
    is_odata_error,
    keys_of,
    literal,
    nav_results,
    odata_date,
    payload,
)
from connectors.base import Capabilities, Evidence, Keys, Located, Outcome
from lethe.errors import ConfigError, ConnectorError, InputError
from lethe.identity import normalize_email

__all__ = ["SapBusinessPartnerConnector"]

logger = logging.getLogger(__name__)

DATASET = "A_BusinessPartner"
BILLING_SET = "A_BillingDocument"
PLACEHOLDER = "ERASED"
_EXPAND = (
    "to_BusinessPartnerAddress/to_EmailAddress,"
    "to_BusinessPartnerAddress/to_PhoneNumber,to_Customer"
)
_PARTNER_CHANGES: dict[str, Any] = {
    "FirstName": PLACEHOLDER,
    "LastName": PLACEHOLDER,
    "BusinessPartnerFullName": PLACEHOLDER,
    "SearchTerm1": PLACEHOLDER,
    "BirthDate": None,
    "BusinessPartnerIsBlocked": True,
}
_ADDRESS_CHANGES: dict[str, Any] = {
    "FullName": PLACEHOLDER,
    "StreetName": PLACEHOLDER,
    "HouseNumber": "",
    "PostalCode": "",
    "CityName": PLACEHOLDER,
}
_COMMUNICATION = ("to_EmailAddress", "to_PhoneNumber")


class SapBusinessPartnerConnector:
    """One S/4HANA system, reached through its API_BUSINESS_PARTNER service root
    (``base_url``) and its API_BILLING_DOCUMENT_SRV root (``billing_base_url``)."""

    capabilities = Capabilities(anonymise=True, hard_delete=False, batch_cap=200)

    def __init__(
        self,
        *,
        system: str,
        base_url: str,
        username: str,
        password: str,
        retention_years: int = 10,
        retention_basis: str = "HGB §257(1) / AO §147(1): books and records",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        block_reason: str = "01",
        max_attempts: int = 4,
        backoff_cap: float = 30.0,
        rate_limit_per_second: float | None = None,
        pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        billing_base_url: str | None = None,
        read_billing_documents: bool = True,
    ) -> None:
        self.system = system
        self.capabilities = replace(
            self.capabilities, rate_limit_per_second=rate_limit_per_second
        )
        self.retention_years = retention_years
        self.retention_basis = retention_basis
        self._customer_changes = {
            "PostingIsBlocked": True,
            "OrderIsBlockedForCustomer": block_reason,
            "DeliveryIsBlocked": block_reason,
            "BillingIsBlockedForCustomer": block_reason,
        }
        root = httpx.URL(base_url.rstrip("/") + "/")
        billing = billing_base_url or str(root.join(f"../{BILLING.name}"))
        self._billing = httpx.URL(billing.rstrip("/") + "/").join(BILLING_SET)
        self._read_billing = read_billing_documents
        self._http = SapHttp(
            system=system,
            root=root,
            username=username,
            password=password,
            timeout=timeout,
            transport=transport,
            policy=RetryPolicy(max_attempts=max_attempts, max_delay=backoff_cap),
            pacer=pacer or pacer_for(f"sap:{system}", rate_limit_per_second),
            sleep=sleep,
        )

    def close(self) -> None:
        self._http.close()

    # -- resolution --------------------------------------------------------------

    def find_partners(
        self, *, ext_ids: Sequence[str] = (), emails: Sequence[str] = ()
    ) -> list[str]:
        """Partner ids whose external id or any e-mail entry matches."""
        found: set[str] = set()
        for chunk in chunks(sorted(set(ext_ids))):
            where = " or ".join(
                f"BusinessPartnerIDByExtSystem eq {literal(x)}" for x in chunk
            )
            params = {"$filter": where, "$select": "BusinessPartner"}
            rows = self._http.collect(
                DATASET, params, op="find partners by external id"
            )
            found |= {row["BusinessPartner"] for row in rows}
        address_ids = self._addresses_with_emails({normalize_email(e) for e in emails})
        for chunk in chunks(sorted(address_ids)):
            where = " or ".join(f"AddressID eq {literal(a)}" for a in chunk)
            params = {"$filter": where, "$select": "BusinessPartner,AddressID"}
            rows = self._http.collect(
                "A_BusinessPartnerAddress", params, op="find partners by address"
            )
            found |= {row["BusinessPartner"] for row in rows}
        return sorted(found)

    def _addresses_with_emails(self, wanted: set[str]) -> set[str]:
        # EmailAddress eq is case-sensitive in SAP; SearchEmailAddress holds the
        # upper-cased first 20 characters, so both are asked and the full
        # address is compared in lethe's one normalisation.
        found: set[str] = set()
        for chunk in chunks(sorted(wanted)):
            where = " or ".join(
                f"EmailAddress eq {literal(e)} or "
                f"SearchEmailAddress eq {literal(e.upper()[:20])}"
                for e in chunk
            )
            params = {"$filter": where, "$select": "AddressID,EmailAddress"}
            rows = self._http.collect(
                "A_AddressEmailAddress", params, op="find partners by e-mail"
            )
            found |= {r["AddressID"] for r in rows if _same_email(r, wanted)}
        return found

    # -- the connector contract ------------------------------------------------------

    def locate(self, keys: Keys) -> Located:
        """How many of the partners still carry personal data."""
        partners = [self._read_partner(bp) for bp in self._partner_ids(keys)]
        count = sum(1 for p in partners if p is not None and not self._is_done(p))
        return Located(counts={DATASET: count})

    def erase(self, keys: Keys, *, idempotency_key: str) -> Outcome:
        """Block and anonymise each partner; retained under the legal basis."""
        ids = self._partner_ids(keys)
        partners = {bp: self._read_partner(bp) for bp in ids}
        found = {bp: p for bp, p in partners.items() if p is not None}
        documents = self._documents_of(found) if self._read_billing else None
        results = [self._erase_partner(p) for p in found.values()]
        changed, missing = results.count("changed"), len(ids) - len(found)
        logger.info(
            "%s: erase %s: %d partner(s) blocked and anonymised, %d already were, "
            "%d not found, %s with a billing document",
            self.system,
            idempotency_key,
            changed,
            results.count("skipped"),
            missing,
            "?" if documents is None else len(documents),
        )
        finished = datetime.now(UTC)
        if ids and not found:
            return Outcome(
                status="done",
                action="already_absent",
                detail="no business partner found for the keys",
                finished_at=finished,
            )
        detail = "blocked and anonymised"
        if missing:
            detail += f"; {missing} partner(s) not found"
        detail += _documents_detail(documents, len(found))
        return Outcome(
            status="done",
            action="retained",
            records_affected=changed,
            retained_until=date(finished.year + self.retention_years, 12, 31),
            basis=self.retention_basis,
            detail=detail,
            finished_at=finished,
            dates=_last_document(documents),
        )

    def last_document_dates(self, keys: Keys) -> dict[str, date]:
        """Each partner's latest billing document that is not cancelled, by date.

        Partners with no such document (no customer role, none billed, or not
        found) are absent. One read of the partner's customer number and one
        billing query (``$orderby=BillingDocumentDate desc&$top=1``) per
        partner.
        """
        partners = {bp: self._customer_of(bp) for bp in self._partner_ids(keys)}
        return self._latest_documents(partners)

    def verify(self, keys: Keys) -> Evidence:
        """Re-read every partner: blocked, anonymised, no e-mail or phone left."""
        ids = self._partner_ids(keys)
        partners = [p for p in map(self._read_partner, ids) if p is not None]
        observed = {
            "partners": len(ids),
            "missing": len(ids) - len(partners),
            "blocked": sum(1 for p in partners if p.get("BusinessPartnerIsBlocked")),
            "anonymised": sum(1 for p in partners if _is_anonymised(p)),
            "emails": sum(count_entries(p, "to_EmailAddress") for p in partners),
            "phones": sum(count_entries(p, "to_PhoneNumber") for p in partners),
            "customers_unblocked": sum(
                1 for p in partners if not self._customer_blocked(p)
            ),
        }
        problems = _problems(observed)
        return Evidence(
            verified=not problems,
            observed=observed,
            checked_at=datetime.now(UTC),
            detail="; ".join(problems),
        )

    def confirm_absent(self, keys: Keys) -> dict[str, bool]:
        """For each partner id, whether SAP says it holds no such partner.

        The service document is read first: a gateway answers an unknown entity
        set, or another OData service, with the same OData 404 a missing
        partner gets, so ``A_BusinessPartner`` must be listed. Then ``GET
        A_BusinessPartner('<id>')``: the documented OData 404 is absent (True);
        200 is present (False), blocked and anonymised partners included, since
        they are retained, not gone; a 404 without an OData error body is a
        ConfigError naming base_url. The communication user needs the
        authorisation to display blocked data, or SAP hides blocked partners
        and they would read as absent.
        """
        ids = self._partner_ids(keys)
        self._probe_service()
        return {bp: self._partner_absent(bp) for bp in ids}

    def _probe_service(self) -> None:
        op = "read service document"
        response = self._http.send("GET", "", op=op)
        self._http.raise_for(response, op)
        sets = payload(response, self.system, op).get("EntitySets")
        if not isinstance(sets, list) or DATASET not in sets:
            raise ConfigError(
                f"{self.system}: the service at base_url does not list {DATASET}; "
                "check that base_url is the API_BUSINESS_PARTNER service root"
            )

    def _partner_absent(self, bp: str) -> bool:
        op = "read partner"
        path = entity_path(DATASET, {"BusinessPartner": bp})
        params = {"$select": "BusinessPartner"}
        response = self._http.send("GET", path, op=op, params=params)
        if response.status_code == 404 and is_odata_error(response):
            return True
        self._http.raise_for(response, op)
        payload(response, self.system, op)
        return False

    # -- billing documents -------------------------------------------------------

    def _documents_of(
        self, partners: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, date]:
        customers = {bp: str(p.get("Customer") or "") for bp, p in partners.items()}
        return self._latest_documents(customers)

    def _customer_of(self, bp: str) -> str:
        op = "read partner's customer"
        path = entity_path(DATASET, {"BusinessPartner": bp})
        params = {"$select": "BusinessPartner,Customer"}
        response = self._http.send("GET", path, op=op, params=params)
        if response.status_code == 404 and is_odata_error(response):
            return ""
        self._http.raise_for(response, op)
        return str(payload(response, self.system, op).get("Customer") or "")

    def _latest_documents(self, customers: Mapping[str, str]) -> dict[str, date]:
        latest = {bp: self._latest_document(c) for bp, c in customers.items() if c}
        return {bp: day for bp, day in latest.items() if day is not None}

    def _latest_document(self, customer: str) -> date | None:
        op = "read billing documents"
        params = {
            "$filter": f"SoldToParty eq {literal(customer)} "
            "and BillingDocumentIsCancelled eq false",
            "$orderby": "BillingDocumentDate desc",
            "$top": "1",
            "$select": "BillingDocument,BillingDocumentDate",
            "$format": "json",
        }
        response = self._http.send("GET", self._billing, op=op, params=params)
        if response.status_code == 404:
            # A query never 404s for "no match": any 404 is the wrong service.
            raise ConfigError(
                f"{self.system}: {op} answered HTTP 404; check {BILLING.setting}, "
                f"which must be the {BILLING.name} service root"
            )
        self._http.raise_for(response, op, BILLING)
        rows = payload(response, self.system, op, setting=BILLING.setting)
        results = rows.get("results")
        if not isinstance(results, list):
            raise ConnectorError(
                f"{self.system}: {op} answered without a result list; check "
                f"{BILLING.setting} and the API version against $metadata"
            )
        if not results:
            return None
        day = odata_date(results[0].get("BillingDocumentDate"))
        if day is None:
            raise ConnectorError(
                f"{self.system}: {op} gave a BillingDocumentDate that is not an "
                "OData date; check the API version against $metadata"
            )
        return day

    # -- one partner -------------------------------------------------------------

    def _erase_partner(self, partner: Mapping[str, Any]) -> str:
        if self._is_done(partner):
            return "skipped"
        for address in nav_results(partner, "to_BusinessPartnerAddress"):
            for nav in _COMMUNICATION:
                for entry in nav_results(address, nav):
                    self._delete_entry(entity_set(entry), entry)
            self._update(address, _ADDRESS_CHANGES, op="anonymise address")
        customer = partner.get("to_Customer")
        if customer:
            self._update(customer, self._customer_changes, op="block customer")
        self._update(partner, _PARTNER_CHANGES, op="block and anonymise partner")
        return "changed"

    def _is_done(self, partner: Mapping[str, Any]) -> bool:
        if not (partner.get("BusinessPartnerIsBlocked") and _is_anonymised(partner)):
            return False
        entries = count_entries(partner, "to_EmailAddress") + count_entries(
            partner, "to_PhoneNumber"
        )
        return entries == 0 and self._customer_blocked(partner)

    def _customer_blocked(self, partner: Mapping[str, Any]) -> bool:
        customer = partner.get("to_Customer")
        if not customer:
            return True
        return all(customer.get(f) == v for f, v in self._customer_changes.items())

    def _read_partner(self, bp: str) -> dict[str, Any] | None:
        path = entity_path(DATASET, {"BusinessPartner": bp})
        response = self._http.send(
            "GET", path, op="read partner", params={"$expand": _EXPAND}
        )
        if response.status_code == 404 and is_odata_error(response):
            return None
        self._http.raise_for(response, "read partner")
        return payload(response, self.system, "read partner")

    def _update(
        self, entity: Mapping[str, Any], changes: Mapping[str, Any], *, op: str
    ) -> None:
        path = entity_path(entity_set(entity), keys_of(entity))
        etag = entity.get("__metadata", {}).get("etag", "*")
        response = self._http.write("PATCH", path, op=op, json=changes, if_match=etag)
        if response.status_code != 412:
            return
        logger.info("%s: %s met a changed entity; re-reading once", self.system, op)
        fresh = self._http.send("GET", path, op=op)
        self._http.raise_for(fresh, op)
        etag = payload(fresh, self.system, op).get("__metadata", {}).get("etag", "*")
        response = self._http.write("PATCH", path, op=op, json=changes, if_match=etag)
        if response.status_code == 412:
            raise ConnectorError(
                f"{self.system}: {op} answered HTTP 412 twice: the entity keeps "
                "changing in SAP; retry later or check for a competing job",
                status=412,
            )

    def _delete_entry(self, set_name: str, entry: Mapping[str, Any]) -> None:
        path = entity_path(set_name, keys_of(entry))
        op = "delete communication entry"
        response = self._http.write("DELETE", path, op=op)
        if response.status_code == 404 and is_odata_error(response):
            return  # gone already: a second run after a partial first one

    def _partner_ids(self, keys: Keys) -> list[str]:
        unknown = sorted(set(keys) - {DATASET})
        if unknown:
            raise ConfigError(
                f"{self.system}: datasets {', '.join(unknown)} are not served by "
                f"this connector; use {DATASET}"
            )
        ids = list(dict.fromkeys(keys.get(DATASET, ())))
        if any(not isinstance(bp, str) or not 0 < len(bp) <= 10 for bp in ids):
            raise InputError(
                f"{self.system}: a business partner key must be 1 to 10 characters"
            )
        return ids


def _is_anonymised(partner: Mapping[str, Any]) -> bool:
    fields = {
        k: v for k, v in _PARTNER_CHANGES.items() if k != "BusinessPartnerIsBlocked"
    }
    if any(partner.get(k) != v for k, v in fields.items()):
        return False
    return all(
        address.get(k) == v
        for address in nav_results(partner, "to_BusinessPartnerAddress")
        for k, v in _ADDRESS_CHANGES.items()
    )


def _problems(observed: Mapping[str, int]) -> list[str]:
    total, problems = observed["partners"], []
    if observed["missing"]:
        problems.append(
            f"{observed['missing']} partner(s) not found: unresolved, check the keys "
            "or whether ILM has destroyed them"
        )
    present = total - observed["missing"]
    if observed["blocked"] < present:
        problems.append(f"{present - observed['blocked']} partner(s) not blocked")
    if observed["anonymised"] < present:
        problems.append(f"{present - observed['anonymised']} partner(s) not anonymised")
    if observed["emails"] or observed["phones"]:
        problems.append("e-mail or phone entries remain")
    if observed["customers_unblocked"]:
        problems.append(f"{observed['customers_unblocked']} customer(s) not blocked")
    return problems


def _documents_detail(documents: Mapping[str, date] | None, partners: int) -> str:
    if documents is None:
        return "; billing documents not read (read_billing_documents is off)"
    if not documents:
        return "; no billing document found for the partner(s)"
    if len(documents) < partners:
        return f"; {partners - len(documents)} partner(s) have no billing document"
    return ""


def _last_document(documents: Mapping[str, date] | None) -> dict[str, str]:
    if not documents:
        return {}
    return {"last_document": max(documents.values()).isoformat()}


def _same_email(row: Mapping[str, Any], wanted: set[str]) -> bool:
    try:
        return normalize_email(str(row.get("EmailAddress", ""))) in wanted
    except InputError:
        return False
