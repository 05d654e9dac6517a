"""The sample company's own data jobs, which copy Salesforce data downstream.

They are not part of lethe: they stand for the ETL a data team runs. Each talks
to the systems over their real APIs and writes a *manifest* per run — which
Salesforce records it copied into which dataset, under which key, and when —
which is what lethe's lineage capture reads.

- ``nightly_extract``: Salesforce Contacts → warehouse ``raw.sf_contact``, then
  the derived ``mart.customer_summary`` (a dbt-like model; lineage knows it from
  the raw → mart flow edge, not from a manifest).
- ``erp_sync``: Salesforce Contacts → SAP Business Partners (deep insert).
- ``erp_billing``: the ERP's own billing run, which invoices its customers. SAP
  creates billing documents inside SD billing and API_BILLING_DOCUMENT_SRV only
  reads them, so this writes them into the ERP emulator's store directly.
- ``event_forwarding``: app events for Contacts → Segment's tracking API, keyed by
  the app's own userId.
- ``newsletter_import``: marketing's spreadsheet of newsletter subscribers,
  loaded by hand into the warehouse's ``crm.newsletter``. It writes no manifest
  and no flow edge names it: only the discovery scan, reading the warehouse's
  Fides annotations (``warehouse_annotations``), finds a person there.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    insert,
    select,
)

from lethe.dburl import parse_database_url
from lethe.emulators.sap import SapStore
from lethe.estate.people import BillingDocument

API = "v60.0"
metadata = MetaData()
raw_sf_contact = Table(
    "raw_sf_contact",
    metadata,
    Column("sf_id", String(18), primary_key=True),
    Column("first_name", String(80)),
    Column("last_name", String(80)),
    Column("email", String(255)),
    Column("phone", String(40)),
    Column("city", String(80)),
    Column("country", String(80)),
    Column("is_deleted", Boolean, nullable=False, default=False),
    Column("extracted_at", DateTime, nullable=False),
    Column("run_id", String(64), nullable=False),
)
mart_customer_summary = Table(
    "mart_customer_summary",
    metadata,
    Column("sf_id", String(18), primary_key=True),
    Column("full_name", String(170)),
    Column("email", String(255)),
    Column("country", String(80)),
    Column("built_at", DateTime, nullable=False),
)
crm_newsletter = Table(
    "crm_newsletter",
    metadata,
    Column("subscriber_id", String(24), primary_key=True),
    Column("email", String(255)),
    Column("first_name", String(80)),
    Column("consent_source", String(40), nullable=False),
    Column("subscribed_at", DateTime, nullable=False),
)
WAREHOUSE_TABLES = {
    "raw.sf_contact": {"table": "raw_sf_contact", "key_column": "sf_id"},
    "mart.customer_summary": {"table": "mart_customer_summary", "key_column": "sf_id"},
    "crm.newsletter": {"table": "crm_newsletter", "key_column": "subscriber_id"},
}
# fideslang data categories of the warehouse's columns (others: system.operations)
COLUMN_CATEGORIES = {
    "sf_id": "user.unique_id",
    "subscriber_id": "user.unique_id.pseudonymous",
    "first_name": "user.name.first",
    "last_name": "user.name.last",
    "full_name": "user.name",
    "email": "user.contact.email",
    "phone": "user.contact.phone_number",
    "city": "user.contact.address.city",
    "country": "user.contact.address.country",
}


@dataclass(frozen=True)
class SalesforceAccess:
    """How one job reaches Salesforce: its own integration user, and the
    ``x-sfdc-addinfo-pipeline_id`` its ApiEvent rows carry."""

    base_url: str
    client_id: str
    client_secret: str
    pipeline_id: str | None = None


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _token(client: httpx.Client, sf: SalesforceAccess) -> str:
    response = client.post(
        f"{sf.base_url}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sf.client_id,
            "client_secret": sf.client_secret,
        },
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def soql(sf: SalesforceAccess, query: str) -> Iterator[dict[str, Any]]:
    """Every record of a SOQL query, following ``nextRecordsUrl``."""
    with httpx.Client(timeout=30) as client:
        headers = {"Authorization": f"Bearer {_token(client, sf)}"}
        if sf.pipeline_id:
            headers["x-sfdc-addinfo-pipeline_id"] = sf.pipeline_id
        page = client.get(
            f"{sf.base_url}/services/data/{API}/query",
            params={"q": query},
            headers=headers,
        )
        while True:
            page.raise_for_status()
            body = page.json()
            yield from body["records"]
            if body.get("done", True):
                return
            page = client.get(f"{sf.base_url}{body['nextRecordsUrl']}", headers=headers)


def _write_manifest(
    folder: Path,
    job: str,
    started: datetime,
    dataset: str,
    records: list[dict[str, str]],
    *,
    more: dict[str, list[dict[str, str]]] | None = None,
) -> Path:
    """One run's manifest: which records it copied into which datasets."""
    run_id = f"{job}-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    outputs = [{"dataset": dataset, "records": records}]
    outputs += [{"dataset": d, "records": r} for d, r in (more or {}).items()]
    manifest = {
        "job": job,
        "run_id": run_id,
        "started_at": started.isoformat(),
        "finished_at": _now().isoformat(),
        "source": "salesforce:Contact",
        "outputs": outputs,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


def create_warehouse(url: str) -> None:
    engine = create_engine(parse_database_url(url, setting="--warehouse-url"))
    metadata.create_all(engine)
    engine.dispose()


def nightly_extract(sf: SalesforceAccess, warehouse_url: str, manifests: Path) -> Path:
    started = _now()
    run_id = f"extract-{started:%Y%m%dT%H%M%S}"
    rows = [
        {
            "sf_id": r["Id"],
            "first_name": r.get("FirstName"),
            "last_name": r.get("LastName"),
            "email": r.get("Email"),
            "phone": r.get("MobilePhone") or r.get("Phone"),
            "city": r.get("MailingCity"),
            "country": r.get("MailingCountry"),
            "is_deleted": False,
            "extracted_at": started.replace(tzinfo=None),
            "run_id": run_id,
        }
        for r in soql(
            sf,
            "SELECT Id, FirstName, LastName, Email, Phone, MobilePhone, "
            "MailingCity, MailingCountry FROM Contact",
        )
    ]
    engine = create_engine(parse_database_url(warehouse_url, setting="--warehouse-url"))
    with engine.begin() as db:
        db.execute(delete(raw_sf_contact))
        if rows:
            db.execute(insert(raw_sf_contact), rows)
        _build_mart(db, started)
    engine.dispose()
    return _write_manifest(
        manifests,
        "nightly_extract",
        started,
        "warehouse:raw.sf_contact",
        [{"key": r["sf_id"], "source_key": r["sf_id"]} for r in rows],
    )


def _build_mart(db: Any, built_at: datetime) -> None:
    db.execute(delete(mart_customer_summary))
    source = db.execute(
        select(raw_sf_contact).where(raw_sf_contact.c.is_deleted.is_(False))
    )
    rows = [
        {
            "sf_id": r.sf_id,
            "full_name": f"{r.first_name or ''} {r.last_name or ''}".strip(),
            "email": r.email,
            "country": r.country,
            "built_at": built_at.replace(tzinfo=None),
        }
        for r in source
    ]
    if rows:
        db.execute(insert(mart_customer_summary), rows)


def erp_sync(
    sf: SalesforceAccess,
    sap_url: str,
    auth: tuple[str, str],
    contact_ids: Sequence[str],
    manifests: Path,
) -> Path:
    """Push the chosen Contacts to the ERP as Business Partners."""
    started = _now()
    wanted = set(contact_ids)
    contacts = [
        r
        for r in soql(
            sf,
            "SELECT Id, FirstName, LastName, Email, MobilePhone, "
            "MailingStreet, MailingPostalCode, MailingCity, "
            "MailingCountry FROM Contact",
        )
        if r["Id"] in wanted
    ]
    records = []
    service = f"{sap_url}/sap/opu/odata/sap/API_BUSINESS_PARTNER"
    with httpx.Client(auth=auth, timeout=30) as client:
        fetch = client.get(
            f"{service}/A_BusinessPartner",
            params={"$top": "1"},
            headers={"x-csrf-token": "Fetch"},
        )
        fetch.raise_for_status()
        token = fetch.headers["x-csrf-token"]
        for contact in contacts:
            response = client.post(
                f"{service}/A_BusinessPartner",
                json=_partner_body(contact),
                headers={"x-csrf-token": token, "Accept": "application/json"},
            )
            response.raise_for_status()
            partner = response.json()["d"]["BusinessPartner"]
            records.append({"key": partner, "source_key": contact["Id"]})
    return _write_manifest(
        manifests, "erp_sync", started, "erp:A_BusinessPartner", records
    )


def _partner_body(contact: dict[str, Any]) -> dict[str, Any]:
    address: dict[str, Any] = {
        "StreetName": contact.get("MailingStreet") or "",
        "PostalCode": contact.get("MailingPostalCode") or "",
        "CityName": contact.get("MailingCity") or "",
        "Country": (contact.get("MailingCountry") or "")[:3],
    }
    if contact.get("Email"):
        address["to_EmailAddress"] = {"results": [{"EmailAddress": contact["Email"]}]}
    if contact.get("MobilePhone"):
        address["to_PhoneNumber"] = {
            "results": [{"PhoneNumber": contact["MobilePhone"]}]
        }
    return {
        "BusinessPartnerCategory": "1",
        "FirstName": contact.get("FirstName") or "",
        "LastName": contact.get("LastName") or "",
        "BusinessPartnerIDByExtSystem": contact["Id"],
        "to_BusinessPartnerAddress": {"results": [address]},
        "to_Customer": {},  # the customer role, so the ERP can bill them
    }


def erp_billing(
    store: SapStore, documents: Mapping[str, Sequence[BillingDocument]]
) -> int:
    """Issue each customer's billing documents (by customer number, which is
    the partner number in the emulator); returns how many were issued."""
    rows = [
        {
            "SoldToParty": customer,
            "BillingDocumentDate": document.on.isoformat(),
            "TotalNetAmount": document.net_amount,
            "TransactionCurrency": document.currency,
            "BillingDocumentIsCancelled": document.cancelled,
        }
        for customer, issued in documents.items()
        for document in issued
    ]
    return len(store.add_billing_documents(rows))


def synced_partners(manifest: Path) -> list[str]:
    """The partner numbers an ``erp_sync`` run wrote, in the order it wrote them."""
    outputs = json.loads(manifest.read_text())["outputs"]
    return [record["key"] for output in outputs for record in output["records"]]


def app_user_id(contact_id: str) -> str:
    """The app's own user id for a contact (stable, not derived reversibly)."""
    return "usr_" + hashlib.sha256(f"app-user:{contact_id}".encode()).hexdigest()[:16]


def event_forwarding(
    segment_url: str, write_key: str, contact_ids: Sequence[str], manifests: Path
) -> Path:
    """Send identify + track events for each contact to Segment's tracking API."""
    started = _now()
    batch = []
    for contact_id in contact_ids:
        user_id = app_user_id(contact_id)
        anonymous_id = device_id(contact_id)
        stamp = started.isoformat()
        # Before signing in, the browser is only an anonymousId.
        batch.append(
            {
                "type": "page",
                "anonymousId": anonymous_id,
                "name": "Pricing",
                "messageId": str(uuid.uuid4()),
                "timestamp": stamp,
            }
        )
        batch.append(
            {
                "type": "identify",
                "userId": user_id,
                "anonymousId": anonymous_id,
                "messageId": str(uuid.uuid4()),
                "timestamp": stamp,
                "traits": {"plan": "standard"},
            }
        )
        for event in ("Signed In", "Viewed Invoice"):
            batch.append(
                {
                    "type": "track",
                    "userId": user_id,
                    "event": event,
                    "messageId": str(uuid.uuid4()),
                    "timestamp": stamp,
                    "properties": {"source": "web"},
                }
            )
    with httpx.Client(auth=(write_key, ""), timeout=30) as client:
        client.post(f"{segment_url}/v1/batch", json={"batch": batch}).raise_for_status()
    return _write_manifest(
        manifests,
        "event_forwarding",
        started,
        "analytics:events",
        [{"key": app_user_id(c), "source_key": c} for c in contact_ids],
        more={
            "analytics:anonymous_events": [
                {"key": device_id(c), "source_key": c} for c in contact_ids
            ]
        },
    )


def device_id(contact_id: str) -> str:
    """The anonymousId of the contact's browser before sign-in (stable)."""
    return "anon_" + hashlib.sha256(f"device:{contact_id}".encode()).hexdigest()[:16]


def newsletter_import(
    warehouse_url: str, subscribers: Sequence[tuple[str, str]]
) -> int:
    """Load marketing's subscriber list (e-mail, first name) as typed by hand.

    The first subscriber's address is written the way spreadsheets leave it,
    upper-cased and padded, so only lethe's normalisation matches it.
    """
    now = _now().replace(tzinfo=None)
    rows = [
        {
            "subscriber_id": f"nl-{number:05d}",
            "email": f" {email.upper()} " if number == 1 else email,
            "first_name": first_name,
            "consent_source": "manual import",
            "subscribed_at": now,
        }
        for number, (email, first_name) in enumerate(subscribers, start=1)
    ]
    engine = create_engine(parse_database_url(warehouse_url, setting="--warehouse-url"))
    with engine.begin() as db:
        db.execute(delete(crm_newsletter))
        if rows:
            db.execute(insert(crm_newsletter), rows)
    engine.dispose()
    return len(rows)


def warehouse_annotations() -> dict[str, Any]:
    """A Fides dataset describing the warehouse tables, from their definitions."""
    collections = []
    for table in metadata.sorted_tables:
        fields = []
        for column in table.columns:
            field: dict[str, Any] = {
                "name": str(column.name),
                "data_categories": [
                    COLUMN_CATEGORIES.get(column.name, "system.operations")
                ],
            }
            meta: dict[str, Any] = {"primary_key": True} if column.primary_key else {}
            if column.name == "email":
                meta["identity"] = "email"
            if meta:
                field["fides_meta"] = meta
            fields.append(field)
        collections.append({"name": str(table.name), "fields": fields})
    return {
        "dataset": [
            {
                "fides_key": "sample_warehouse",
                "name": "Sample estate warehouse",
                "description": "Written by lethe from the sample warehouse's tables.",
                "collections": collections,
            }
        ]
    }
