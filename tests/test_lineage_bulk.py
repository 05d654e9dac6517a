"""Bulk capture records the same lineage as ``record_manifest``, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

import lineage
from lethe import ledger
from lethe.errors import InputError
from lethe.runtime import current
from lethe.vault import Vault
from lineage.bulk import record_manifest_bulk
from lineage.models import CaptureRun, Copy
from tests.conftest import postgres_database
from tests.helpers import BAD_MANIFESTS

ESTATE = "bulk-estate"
EDGES = [
    {"job": "extract", "from": "salesforce:Contact", "to": "warehouse:raw.sf_contact"},
    {
        "job": "dbt",
        "from": "warehouse:raw.sf_contact",
        "to": "warehouse:mart.summary",
        "key": "passthrough",
    },
    {"job": "sync", "from": "salesforce:Contact", "to": "erp:A_BusinessPartner"},
]
# 15- and 18-character forms of one Contact must name one subject.
CONTACTS = ["003000000000001", "003000000000001AAA", "003000000000002AAA"]


def _manifest(run_id: str = "run-1") -> dict:
    return {
        "job": "extract",
        "run_id": run_id,
        "finished_at": "2026-12-01T02:00:00",  # naive: read as UTC
        "outputs": [
            {
                "dataset": "warehouse:raw.sf_contact",
                "records": [
                    {"key": f"00300000000000{n}AAA", "source_key": CONTACTS[n % 3]}
                    for n in range(7)
                ],
            },
            {
                "dataset": "erp:A_BusinessPartner",
                "records": [
                    {"key": 1000000 + n, "source_key": CONTACTS[n % 3]}
                    for n in range(5)
                ],
            },
        ],
    }


@pytest.fixture
def bulk_ledger(any_ledger: str, tmp_path: Path) -> Iterator[Engine]:
    """A second ledger on the same backend as ``any_ledger``, for the bulk path."""
    if any_ledger.startswith("sqlite"):
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path / 'bulk.db'}"])
    else:
        urls = postgres_database()
    url = next(urls)
    engine = ledger.make_engine(url)
    ledger.create_schema(engine)
    yield engine
    engine.dispose()
    next(urls, None)  # drops the PostgreSQL database


def _capture(engine: Engine, vault: Vault, record, **options) -> int:
    with Session(engine) as db:
        lineage.load_flow_edges(db, ESTATE, EDGES)
        added = record(db, vault, ESTATE, _manifest(), **options)
        db.commit()
    return added


def _answer(engine: Engine, vault: Vault) -> dict:
    subjects = [lineage.subject_digest(vault, contact) for contact in CONTACTS]
    with Session(engine) as db:
        holdings = lineage.where(db, ESTATE, subjects, vault=vault)
        copies = db.exec(select(Copy).order_by(col(Copy.id))).all()
        return {
            "where": [
                (
                    h.dataset,
                    h.system,
                    h.key_count,
                    sorted(h.key_digests),
                    sorted(h.keys),
                    h.last_copied_at,
                    sorted(h.learned_from),
                )
                for h in holdings
            ],
            "copies": [
                (
                    c.id,
                    c.estate,
                    c.system,
                    c.dataset,
                    c.key_digest,
                    c.subject_digest,
                    c.job,
                    c.run_id,
                    c.copied_at,
                    c.learned_from,
                    c.erased_at,
                )
                for c in copies
            ],
            "runs": [(r.run_id, r.job, r.copies) for r in db.exec(select(CaptureRun))],
        }


@pytest.mark.parametrize("batch", [3, 10_000])
def test_bulk_capture_matches_record_manifest(
    any_ledger: str, bulk_ledger: Engine, batch: int
) -> None:
    vault = current().vault
    assert _capture(ledger.engine(), vault, lineage.record_manifest) == 12
    assert _capture(bulk_ledger, vault, record_manifest_bulk, batch=batch) == 12

    orm, bulk = _answer(ledger.engine(), vault), _answer(bulk_ledger, vault)
    assert bulk == orm
    assert [(h[0], h[2]) for h in bulk["where"]] == [
        ("erp:A_BusinessPartner", 5),
        ("warehouse:mart.summary", 7),
        ("warehouse:raw.sf_contact", 7),
    ]
    assert len({c[5] for c in bulk["copies"]}) == 2  # two Contacts, not three


def test_bulk_capture_twice_adds_nothing(any_ledger: str) -> None:
    vault = current().vault
    engine = ledger.engine()
    assert _capture(engine, vault, record_manifest_bulk) == 12
    assert _capture(engine, vault, record_manifest_bulk) == 0
    assert _capture(engine, vault, lineage.record_manifest) == 0
    with Session(engine) as db:
        assert len(db.exec(select(Copy)).all()) == 12
        assert [r.copies for r in db.exec(select(CaptureRun))] == [12]


def test_bulk_capture_seals_keys(any_ledger: str) -> None:
    vault = current().vault
    _capture(ledger.engine(), vault, record_manifest_bulk)
    with Session(ledger.engine()) as db:
        sealed = db.exec(select(Copy.key_sealed)).all()
    assert all(s and b"00300000000000" not in s and b"100000" not in s for s in sealed)


@pytest.mark.parametrize(
    "bad",
    BAD_MANIFESTS,
)
def test_bulk_capture_refuses_a_bad_manifest(any_ledger: str, bad: dict) -> None:
    vault = current().vault
    with pytest.raises(InputError, match="manifest needs"):
        with ledger.session() as db:
            record_manifest_bulk(db, vault, ESTATE, bad)
    with ledger.session() as db:
        assert db.exec(select(Copy)).all() == []
        assert db.get(CaptureRun, "r") is None
