"""Lineage: capture is idempotent, look-ups normalise, traversal is transitive
and ends on cycles."""

from __future__ import annotations

from pathlib import Path

import pytest

import lineage
from lethe import ledger
from lethe.errors import InputError
from lethe.identity import normalize_email
from lethe.runtime import current
from tests.helpers import BAD_MANIFESTS

ESTATE = "test-estate"
CONTACT = "003000000000001AAA"
OTHER = "003000000000002AAA"
EDGES = [
    {"job": "extract", "from": "salesforce:Contact", "to": "warehouse:raw.sf_contact"},
    {
        "job": "dbt",
        "from": "warehouse:raw.sf_contact",
        "to": "warehouse:mart.summary",
        "key": "passthrough",
    },
    {
        "job": "dbt2",
        "from": "warehouse:mart.summary",
        "to": "warehouse:mart.rollup",
        "key": "passthrough",
    },
    {"job": "sync", "from": "salesforce:Contact", "to": "erp:A_BusinessPartner"},
    {"job": "writeback", "from": "erp:A_BusinessPartner", "to": "salesforce:Contact"},
    # a passthrough cycle, which must not loop
    {
        "job": "loop",
        "from": "warehouse:mart.rollup",
        "to": "warehouse:raw.sf_contact",
        "key": "passthrough",
    },
]


def _manifest(run_id: str, dataset: str, pairs: list[tuple[str, str]]) -> dict:
    return {
        "job": "extract",
        "run_id": run_id,
        "finished_at": "2026-12-01T02:00:00+00:00",
        "outputs": [
            {
                "dataset": dataset,
                "records": [{"key": k, "source_key": s} for k, s in pairs],
            }
        ],
    }


def _capture(db, vault) -> None:
    lineage.load_flow_edges(db, ESTATE, EDGES)
    lineage.record_source_snapshot(
        db,
        vault,
        ESTATE,
        "salesforce",
        [
            lineage.SourceRecord("Contact", CONTACT, emails=("Dana.W@Example.ORG\t",)),
            lineage.SourceRecord("Contact", OTHER, emails=("other@example.org",)),
        ],
    )
    lineage.record_manifest(
        db,
        vault,
        ESTATE,
        _manifest(
            "run-1", "warehouse:raw.sf_contact", [(CONTACT, CONTACT), (OTHER, OTHER)]
        ),
    )
    lineage.record_manifest(
        db,
        vault,
        ESTATE,
        _manifest("run-2", "erp:A_BusinessPartner", [("1000001", CONTACT)]),
    )


def _where(db, vault, email: str, *, with_keys: bool = False) -> dict:
    digest = vault.digest("email", normalize_email(email))
    subjects = lineage.subjects_for(db, ESTATE, [digest])
    return {
        h.dataset: h
        for h in lineage.where(db, ESTATE, subjects, vault=vault if with_keys else None)
    }


def test_where_follows_passthrough_edges_and_ends_on_cycles(home: Path) -> None:
    vault = current().vault
    with ledger.session() as db:
        _capture(db, vault)
        found = _where(db, vault, " dana.w@example.org ", with_keys=True)
    assert set(found) == {
        "salesforce:Contact",
        "warehouse:raw.sf_contact",
        "warehouse:mart.summary",
        "warehouse:mart.rollup",
        "erp:A_BusinessPartner",
    }
    assert found["warehouse:mart.rollup"].keys == {CONTACT}
    assert found["erp:A_BusinessPartner"].keys == {"1000001"}
    assert any(
        "flow edge dbt" in s for s in found["warehouse:mart.summary"].learned_from
    )
    assert all(h.key_count == 1 for h in found.values())


def test_where_keeps_people_apart(home: Path) -> None:
    vault = current().vault
    with ledger.session() as db:
        _capture(db, vault)
        found = _where(db, vault, "other@example.org")
    assert "erp:A_BusinessPartner" not in found
    assert found["warehouse:raw.sf_contact"].key_count == 1


def test_capture_twice_records_no_duplicates(home: Path) -> None:
    vault = current().vault
    with ledger.session() as db:
        _capture(db, vault)
    with ledger.session() as db:
        before = _where(db, vault, "dana.w@example.org")
        lineage.load_flow_edges(db, ESTATE, EDGES)
        again = lineage.record_manifest(
            db,
            vault,
            ESTATE,
            _manifest("run-1", "warehouse:raw.sf_contact", [(CONTACT, CONTACT)]),
        )
        summary = lineage.record_source_snapshot(
            db,
            vault,
            ESTATE,
            "salesforce",
            [lineage.SourceRecord("Contact", CONTACT, emails=("dana.w@example.org",))],
        )
        after = _where(db, vault, "dana.w@example.org")
    assert again == 0 and summary.copies == 0 and summary.links == 0
    assert {k: v.key_count for k, v in before.items()} == {
        k: v.key_count for k, v in after.items()
    }


def test_lineage_of_another_estate_is_invisible(home: Path) -> None:
    vault = current().vault
    with ledger.session() as db:
        _capture(db, vault)
        digest = vault.digest("email", "dana.w@example.org")
        assert lineage.subjects_for(db, "another-estate", [digest]) == set()


def test_keys_are_sealed_not_stored_in_clear(home: Path, tmp_path: Path) -> None:
    vault = current().vault
    with ledger.session() as db:
        _capture(db, vault)
    data = (home / "ledger.db").read_bytes()
    assert CONTACT.encode() not in data and b"1000001" not in data
    assert b"dana.w@example.org" not in data.lower()


@pytest.mark.parametrize(
    "bad",
    BAD_MANIFESTS,
)
def test_bad_manifest_is_refused_and_nothing_stored(home: Path, bad: dict) -> None:
    vault = current().vault
    with pytest.raises(InputError, match="manifest needs"):
        with ledger.session() as db:
            lineage.record_manifest(db, vault, ESTATE, bad)
    with ledger.session() as db:
        assert lineage.where(db, ESTATE, ["anything"]) == []


def test_discovered_copy_found_again_after_erasure_is_recorded_again(
    home: Path,
) -> None:
    vault = current().vault
    identity = vault.digest("email", "erin.q@example.org")
    found = {"dataset": "erp:A_BusinessPartner", "keys": ["1000042"]}

    def discover() -> int:
        with ledger.session() as db:
            return lineage.record_discovered(
                db,
                vault,
                ESTATE,
                found["dataset"],
                found["keys"],
                identity_kind="email",
                identity_digest=identity,
            )

    assert discover() == 1
    assert discover() == 0  # the same live copy: nothing new
    with ledger.session() as db:
        erased = lineage.mark_erased(
            db, ESTATE, [lineage.key_digest(vault, "1000042")], [found["dataset"]]
        )
    assert erased == 1
    assert discover() == 1  # back after the erasure: a new copy to erase
    with ledger.session() as db:
        held = lineage.where(db, ESTATE, {identity}, vault=vault)
    assert [(h.dataset, sorted(h.keys)) for h in held] == [
        ("erp:A_BusinessPartner", ["1000042"])
    ]
