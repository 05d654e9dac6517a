"""Build, serve and describe the sample estate: four systems, each a real part.

- *salesforce*: the Salesforce REST emulator, loaded with Contacts, Leads, Cases;
- *warehouse*: a SQL database (SQLite file by default, or a PostgreSQL URL) with
  a raw copy table and a derived mart, filled by the nightly extract, and a
  newsletter table marketing filled by hand, which no lineage reports; a Fides
  annotation of its tables (``warehouse.fides.yml``) lets the discovery scan
  find people there;
- *analytics*: the Segment emulator, holding the app's events;
- *erp*: the SAP Business Partner emulator, holding partners the ERP sync pushed
  from Salesforce plus ERP-native customers that never came from Salesforce,
  and the billing documents the ERP issued them (API_BILLING_DOCUMENT_SRV).

Every emulator keeps its state in a SQLite file in the work directory, and the
estate file there records where each system listens, so ``lethe estate up``
serves the same estate again later.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lethe.emulators import EmulatorServer
from lethe.emulators import salesforce as sf_emulator
from lethe.emulators import sap as sap_emulator
from lethe.emulators import segment as segment_emulator
from lethe.errors import ConfigError, InputError
from lethe.estate import jobs
from lethe.estate.config import load_estate
from lethe.estate.people import (
    People,
    Person,
    billing_history,
    from_sample_data,
    generate,
)

log = logging.getLogger(__name__)
ESTATE_FILE = "estate.yaml"
POLICY_FILE = "policy.yaml"
FIDES_FILE = "warehouse.fides.yml"
RETENTION_BASIS = "HGB §257(1) / AO §147(1): commercial books and records"

FLOWS = [
    {
        "job": "nightly_extract",
        "from": "salesforce:Contact",
        "to": "warehouse:raw.sf_contact",
        "fields": {"Id": "sf_id", "Email": "email", "MobilePhone": "phone"},
    },
    {
        "job": "dbt_customer_summary",
        "from": "warehouse:raw.sf_contact",
        "to": "warehouse:mart.customer_summary",
        "key": "passthrough",
        "fields": {"sf_id": "sf_id", "email": "email"},
    },
    {"job": "event_forwarding", "from": "salesforce:Contact", "to": "analytics:events"},
    {
        "job": "event_forwarding",
        "from": "salesforce:Contact",
        "to": "analytics:anonymous_events",
    },
    {
        "job": "erp_sync",
        "from": "salesforce:Contact",
        "to": "erp:A_BusinessPartner",
        "fields": {"Id": "BusinessPartnerIDByExtSystem", "Email": "EmailAddress"},
    },
    {
        "job": "erp_account_writeback",
        "from": "erp:A_BusinessPartner",
        "to": "salesforce:Contact",
        "fields": {"Customer": "AccountNumber"},
    },
]


@dataclass
class Built:
    """What ``build`` made; ``featured_email`` stays in memory, never printed."""

    workdir: Path
    estate_file: Path
    origin: str
    featured_email: str
    estate_name: str
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Servers:
    salesforce: EmulatorServer
    analytics: EmulatorServer
    erp: EmulatorServer

    def stop(self) -> None:
        for server in (self.salesforce, self.analytics, self.erp):
            server.stop()


def _stores(workdir: Path) -> tuple[Any, Any, Any]:
    return (
        sf_emulator.SalesforceStore(workdir / "salesforce.db"),
        segment_emulator.SegmentStore(workdir / "analytics.db"),
        sap_emulator.SapStore(workdir / "erp.db"),
    )


def serve(workdir: Path, settings: dict[str, Any], *, fixed_ports: bool) -> Servers:
    """Start the three emulators over the work directory's state files."""
    sf_store, segment_store, sap_store = _stores(workdir)
    systems = settings["systems"]
    emulator = settings["emulator"]

    def port(name: str) -> int:
        return int(emulator["ports"][name]) if fixed_ports else 0

    sf = EmulatorServer(
        sf_emulator.create_app(
            sf_store,
            client_id=systems["salesforce"]["client_id"],
            client_secret=systems["salesforce"]["client_secret"],
            bulk_step_seconds=emulator["step_seconds"],
            integrations={
                user["client_id"]: (user["client_secret"], user["username"])
                for user in emulator.get("integrations", {}).values()
            },
        ),
        port=port("salesforce"),
    )
    analytics = EmulatorServer(
        segment_emulator.create_app(
            segment_store,
            token=systems["analytics"]["token"],
            write_key=emulator["segment_write_key"],
            step_seconds=emulator["step_seconds"],
        ),
        port=port("analytics"),
    )
    erp = EmulatorServer(
        sap_emulator.create_app(
            sap_store,
            username=systems["erp"]["username"],
            password=systems["erp"]["password"],
        ),
        port=port("erp"),
    )
    try:
        for server in (sf, analytics, erp):
            server.start()
    except (OSError, RuntimeError):
        for server in (sf, analytics, erp):
            server.stop()
        raise ConfigError(
            "could not start the estate's emulators on 127.0.0.1; another process "
            "may hold their ports (see the estate file)"
        ) from None
    return Servers(salesforce=sf, analytics=analytics, erp=erp)


def _settings(workdir: Path, warehouse_url: str, step_seconds: float) -> dict[str, Any]:
    def secret() -> str:
        return secrets.token_urlsafe(18)

    return {
        "name": f"sample-estate-{secrets.token_hex(4)}",
        "source": "salesforce",
        "manifests": str(workdir / "manifests"),
        "systems": {
            "salesforce": {
                "kind": "salesforce",
                "base_url": "",
                "client_id": secret(),
                "client_secret": secret(),
                "poll_interval": 0.2,
            },
            "warehouse": {
                "kind": "warehouse",
                "url": warehouse_url,
                "tables": jobs.WAREHOUSE_TABLES,
                "fides_datasets": [str(workdir / FIDES_FILE)],
            },
            "analytics": {
                "kind": "segment",
                "base_url": "",
                "token": secret(),
                "source_id": "src_emulated",
                "datasets": {"events": "userId", "anonymous_events": "anonymousId"},
            },
            "erp": {
                "kind": "sap_business_partner",
                "base_url": "",
                "username": "LETHE",
                "password": secret(),
                "retention_years": 10,
                "retention_basis": RETENTION_BASIS,
            },
        },
        "flows": FLOWS,
        "policy": str(workdir / POLICY_FILE),
        "divergence": [
            {
                "name": "contact_country",
                "source": "salesforce:Contact",
                "source_field": "MailingCountry",
                "target": "warehouse:raw.sf_contact",
                "target_field": "country",
                "sample": 100,
                "threshold": 0.05,
            }
        ],
        # Who read Salesforce, by pipeline_id: erp_sync's copies are keyed by
        # partner number, which only its manifests know; lethe's own reads
        # make no copy.
        "apievent_attribution": {
            "nightly_extract": "warehouse:raw.sf_contact",
            "erp_sync": "",
            sf_emulator.DEFAULT_USERNAME: "",
        },
        "emulator": {
            "ports": {},
            "step_seconds": step_seconds,
            "segment_write_key": secret(),
            "integrations": {
                job: {
                    "client_id": secret(),
                    "client_secret": secret(),
                    "username": f"{job}@integration.example",
                }
                for job in ("nightly_extract", "erp_sync")
            },
        },
    }


def build(
    workdir: Path,
    *,
    sample_data: Path | None = None,
    warehouse_url: str | None = None,
    step_seconds: float = 0.2,
    featured: Person | None = None,
) -> tuple[Built, Servers]:
    """Make the estate in ``workdir``, run its jobs, and leave it serving.

    ``featured`` puts a chosen person first, so they reach every system (tests
    plant a canary identity this way).
    """
    workdir = workdir.absolute()
    if (workdir / ESTATE_FILE).exists():
        raise InputError(
            f"{workdir} already holds an estate; choose an empty --workdir, "
            "or serve this one with `lethe estate up`"
        )
    people = from_sample_data(sample_data) if sample_data else generate()
    if featured is not None:
        people.people.insert(0, featured)
    workdir.mkdir(parents=True, exist_ok=True)
    url = warehouse_url or f"sqlite:///{workdir / 'warehouse.db'}"
    settings = _settings(workdir, url, step_seconds)
    annotations = yaml.safe_dump(jobs.warehouse_annotations(), sort_keys=False)
    (workdir / FIDES_FILE).write_text(annotations)
    contact_ids = _load_people(workdir, people)
    servers = serve(workdir, settings, fixed_ports=False)
    try:
        _wire(settings, servers)
        counts = _run_jobs(workdir, settings, servers, contact_ids)
        counts["newsletter_subscribers"] = jobs.newsletter_import(
            url, _subscribers(people)
        )
    except BaseException:
        servers.stop()
        raise
    policy = resources.files("lethe.estate").joinpath("sample-policy.yaml")
    (workdir / POLICY_FILE).write_text(policy.read_text(encoding="utf-8"))
    path = workdir / ESTATE_FILE
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    path.chmod(0o600)
    featured = people.people[0].email or ""
    return Built(
        workdir=workdir,
        estate_file=path,
        origin=people.origin,
        featured_email=featured,
        estate_name=settings["name"],
        counts=counts,
    ), servers


def _wire(settings: dict[str, Any], servers: Servers) -> None:
    systems = settings["systems"]
    systems["salesforce"]["base_url"] = servers.salesforce.base_url
    systems["analytics"]["base_url"] = servers.analytics.base_url
    systems["erp"]["base_url"] = servers.erp.base_url + sap_emulator.SERVICE_ROOT
    settings["emulator"]["ports"] = {
        "salesforce": servers.salesforce.port,
        "analytics": servers.analytics.port,
        "erp": servers.erp.port,
    }


def _load_people(workdir: Path, people: People) -> list[str]:
    """Insert the source records and ERP-native customers; returns Contact ids."""
    sf_store, _segment, sap_store = _stores(workdir)
    contact_ids = []
    for person in people.people:
        fields = {
            "FirstName": person.first_name,
            "LastName": person.last_name,
            "Email": person.email,
        }
        if person.sobject == "Contact":
            fields |= {
                "MobilePhone": person.phone,
                "MailingCity": person.city,
                "MailingCountry": person.country,
                "MailingStreet": person.street,
                "MailingPostalCode": person.postal_code,
            }
        else:
            fields |= {
                "MobilePhone": person.phone,
                "City": person.city,
                "Country": person.country,
                "Company": "Unknown",
            }
        record_id = sf_store.insert(person.sobject, _present(fields))
        if person.sobject == "Contact":
            contact_ids.append(record_id)
        for case in person.cases:
            sf_store.insert("Case", {**case, "ContactId": record_id})
    billed = {}
    for customer in people.erp_customers:
        partner = sap_store.create_partner(
            first_name=customer.first_name,
            last_name=customer.last_name,
            email=customer.email,
            phone=customer.phone,
            street=customer.street,
            postal_code=customer.postal_code,
            city=customer.city,
            country=customer.country,
        )
        billed[partner] = customer.documents
    jobs.erp_billing(sap_store, billed)
    for store in (sf_store, _segment, sap_store):
        store.close()
    return contact_ids


def _subscribers(people: People) -> list[tuple[str, str]]:
    """Who signed up for the newsletter: the featured person and every fourth."""
    return [
        (person.email, person.first_name)
        for index, person in enumerate(people.people)
        if person.email and index % 4 == 0
    ]


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v not in (None, "")}


def _run_jobs(
    workdir: Path, settings: dict[str, Any], servers: Servers, contact_ids: list[str]
) -> dict[str, int]:
    systems = settings["systems"]
    manifests = Path(settings["manifests"])

    def sf(job: str) -> jobs.SalesforceAccess:
        user = settings["emulator"]["integrations"][job]
        return jobs.SalesforceAccess(
            servers.salesforce.base_url,
            user["client_id"],
            user["client_secret"],
            pipeline_id=job,
        )

    jobs.create_warehouse(systems["warehouse"]["url"])
    jobs.nightly_extract(sf("nightly_extract"), systems["warehouse"]["url"], manifests)
    # The featured person (index 0) is in every system; others in some.
    to_erp = [c for i, c in enumerate(contact_ids) if i % 3 == 0]
    to_analytics = [c for i, c in enumerate(contact_ids) if i % 2 == 0]
    synced = jobs.erp_sync(
        sf("erp_sync"),
        servers.erp.base_url,
        (systems["erp"]["username"], systems["erp"]["password"]),
        to_erp,
        manifests,
    )
    erp = sap_emulator.SapStore(workdir / "erp.db")
    partners = jobs.synced_partners(synced)
    jobs.erp_billing(
        erp, {bp: billing_history(100 + n) for n, bp in enumerate(partners)}
    )
    billing_documents = erp.count_rows("A_BillingDocument")
    erp.close()
    jobs.event_forwarding(
        servers.analytics.base_url,
        settings["emulator"]["segment_write_key"],
        to_analytics,
        manifests,
    )
    return {
        "contacts": len(contact_ids),
        "erp_partners_from_salesforce": len(to_erp),
        "erp_billing_documents": billing_documents,
        "analytics_users": len(to_analytics),
    }


def load_settings_file(workdir: Path) -> dict[str, Any]:
    """The estate file of a sample estate's folder, checked before serving it."""
    path = workdir.absolute() / ESTATE_FILE
    if not path.exists():
        raise InputError(f"{workdir} holds no estate; build one with `lethe demo`")
    load_estate(path)  # the shared checks, with their messages
    settings = dict(yaml.safe_load(path.read_text()))
    emulator = settings.get("emulator")
    if not isinstance(emulator, dict) or not isinstance(emulator.get("ports"), dict):
        raise ConfigError(
            f"{path} is not a sample estate (no emulator section); only estates "
            "built by `lethe demo` can be served"
        )
    return settings
