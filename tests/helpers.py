"""Shared test helpers: a sample estate with a canary person planted in it."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from connectors.salesforce import SalesforceConnector
from connectors.sap import SapBusinessPartnerConnector
from lethe.config import load_settings
from lethe.estate.build import Servers, build
from lethe.estate.jobs import app_user_id
from lethe.estate.people import Person


@dataclass
class Estate:
    workdir: Path
    settings: dict
    servers: Servers
    canary: Person
    contact_id: str
    partner_id: str
    user_id: str


def canary_person() -> Person:
    tag = uuid.uuid4().hex[:8]
    return Person(
        sobject="Contact",
        first_name="Canary",
        last_name=f"Q{tag}",
        email=f"Canary.Q{tag}@Example.NET",
        phone="+1 (555) 555-0199",
        city="Springfield",
        country="US",
        street="1 Canary Row",
        postal_code="99999",
        cases=[{"Subject": "Delete my data", "Status": "New"}],
    )


def plant_canary_estate(workdir: Path, *, step_seconds: float) -> Estate:
    """Build the sample estate with a canary first, serving, and point
    LETHE_HOME at it. The caller stops ``servers``."""
    canary = canary_person()
    built, servers = build(workdir, featured=canary, step_seconds=step_seconds)
    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built.estate_file, settings.estate_file)
    data = yaml.safe_load(built.estate_file.read_text())
    sf, erp = data["systems"]["salesforce"], data["systems"]["erp"]
    source = SalesforceConnector(
        system="salesforce",
        base_url=sf["base_url"],
        client_id=sf["client_id"],
        client_secret=sf["client_secret"],
    )
    contact_id = source.find_contacts(emails=[canary.email.lower()])["Contact"][0]["Id"]
    source.close()
    sap = SapBusinessPartnerConnector(
        system="erp",
        base_url=erp["base_url"],
        username=erp["username"],
        password=erp["password"],
    )
    partner_id = sap.find_partners(ext_ids=[contact_id])[0]
    sap.close()
    return Estate(
        workdir, data, servers, canary, contact_id, partner_id, app_user_id(contact_id)
    )


def prefect_files() -> list[Path]:
    """The Prefect server's database files, to search for canary identifiers."""
    explicit = os.environ.get("LETHE_TEST_PREFECT_DB")
    base = (
        Path(explicit) if explicit else Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    )
    return [p for p in (base, Path(f"{base}-wal")) if p.exists()]


def flush_prefect() -> None:
    """Send buffered logs and events to the server before searching it."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    EventsWorker.drain_all()


def forms_of(value: str) -> list[bytes]:
    """The spellings of an identifier a search must not find (case, URL-quoted)."""
    from urllib.parse import quote

    return sorted(
        {
            f.encode()
            for f in (
                value,
                value.lower(),
                value.upper(),
                quote(value),
                quote(value.lower()),
            )
        }
    )


# Job manifests lineage capture must refuse: a time that is no time, a dataset
# without its system, and no job at all.
BAD_MANIFESTS = [
    {"job": "x", "run_id": "r", "finished_at": "yesterday", "outputs": []},
    {
        "job": "x",
        "run_id": "r",
        "finished_at": "2026-12-01T00:00:00",
        "outputs": [{"dataset": "no-system-prefix", "records": []}],
    },
    {"run_id": "r"},
]
