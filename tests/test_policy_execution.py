"""The policy shapes what runs: per-dataset actions in one system, CCPA's
deidentify verified by re-reading, retention by the ERP's rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from connectors.warehouse import WarehouseConnector
from erasure import requests
from flows import _actions
from lethe.estate.jobs import WAREHOUSE_TABLES
from tests.helpers import Estate

DEIDENTIFY_MART = """\
  - system: warehouse
    dataset: mart.customer_summary
    regulation: ccpa
    action: deidentify
    fields: [full_name, email]
"""


def _mart_row(e: Estate) -> dict | None:
    engine = create_engine(e.settings["systems"]["warehouse"]["url"])
    with engine.connect() as db:
        row = (
            db.execute(
                text(
                    "SELECT full_name, email, country FROM mart_customer_summary "
                    "WHERE sf_id = :id"
                ),
                {"id": e.contact_id},
            )
            .mappings()
            .first()
        )
    engine.dispose()
    return dict(row) if row else None


@pytest.mark.e2e
def test_policy_ccpa_deidentifies_one_dataset_and_deletes_the_other(
    estate: Estate,
) -> None:
    from flows.capture import capture_lineage
    from flows.erasure import erase_requests

    e = estate
    policy = Path(e.settings["policy"])
    policy.write_text(policy.read_text() + DEIDENTIFY_MART)
    capture_lineage()
    before = _mart_row(e)
    assert before is not None and before["email"]

    request = requests.submit(email=e.canary.email, regulation="ccpa")
    assert erase_requests([request.id]) == {request.id: "completed"}
    warehouse = {s["system"]: s for s in requests.describe(request.id)["systems"]}[
        "warehouse"
    ]
    parts = warehouse["parts"]
    assert parts["raw.sf_contact"]["action"] == "delete"
    assert parts["raw.sf_contact"]["outcome"] == "deleted"
    assert parts["mart.customer_summary"]["action"] == "deidentify"
    assert parts["mart.customer_summary"]["outcome"] == "anonymised"
    assert parts["mart.customer_summary"]["observed"] == {
        "rows": 1,
        "fields_unchanged": 0,
    }
    assert warehouse["state"] == "done" and warehouse["verified"]
    after = _mart_row(e)
    assert after is not None  # deidentified, not deleted
    assert after["email"] != before["email"]
    assert after["full_name"] != before["full_name"]
    assert after["country"] == before["country"]  # not a named field
    # a second run repeats nothing
    assert erase_requests([request.id]) == {request.id: "completed"}
    assert _mart_row(e) == after


@pytest.mark.e2e
def test_policy_naming_a_missing_column_changes_nothing_in_the_system(
    estate: Estate,
) -> None:
    from flows.capture import capture_lineage
    from flows.erasure import erase_requests

    e = estate
    policy = Path(e.settings["policy"])
    policy.write_text(
        policy.read_text() + DEIDENTIFY_MART.replace("full_name, email", "emial")
    )
    capture_lineage()
    before = _mart_row(e)
    request = requests.submit(email=e.canary.email, regulation="ccpa")

    assert erase_requests([request.id]) == {request.id: "incomplete"}
    warehouse = {s["system"]: s for s in requests.describe(request.id)["systems"]}[
        "warehouse"
    ]
    assert warehouse["state"] == "failed"
    assert "has no column emial" in warehouse["detail"]
    assert _mart_row(e) == before  # neither dataset was touched
    engine = create_engine(e.settings["systems"]["warehouse"]["url"])
    with engine.connect() as db:
        raw = db.execute(
            text("SELECT count(*) FROM raw_sf_contact WHERE sf_id = :id"),
            {"id": e.contact_id},
        ).scalar_one()
    engine.dispose()
    assert raw == 1

    # the officer fixes the policy: the parts that never ran take the new rule
    policy.write_text(policy.read_text().replace("[emial]", "[full_name, email]"))
    assert erase_requests([request.id]) == {request.id: "completed"}
    after = _mart_row(e)
    assert after is not None and after["email"] != before["email"]
    shown = requests.describe(request.id)
    mart = {s["system"]: s for s in shown["systems"]}["warehouse"]["parts"][
        "mart.customer_summary"
    ]
    assert mart["fields"] == ["email", "full_name"] and mart["state"] == "done"


def test_anonymise_verification_fails_when_values_stayed(
    home: Path, tmp_path: Path
) -> None:
    """Anonymising that did not change the fields is not verified."""

    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = create_engine(url)
    with engine.begin() as db:
        db.execute(
            text(
                "CREATE TABLE mart_customer_summary (sf_id VARCHAR(18) PRIMARY KEY, "
                "full_name VARCHAR(170), email VARCHAR(255), country VARCHAR(80), "
                "built_at TIMESTAMP NOT NULL)"
            )
        )
        db.execute(
            text(
                "INSERT INTO mart_customer_summary VALUES "
                "('003000000000001AAA', 'Ada Q', 'ada@example.org', 'DE', "
                "'2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    connector = WarehouseConnector(
        system="warehouse",
        url=url,
        tables={"mart.customer_summary": WAREHOUSE_TABLES["mart.customer_summary"]},
    )
    keys = {"mart.customer_summary": ["003000000000001AAA"]}
    fields = {"mart.customer_summary": ["full_name", "email"]}
    request = requests.submit(email="ada@example.org", regulation="ccpa")
    _actions.seal_pre_image(connector, request.id, "warehouse", keys, fields)

    unchanged = _actions.verify_anonymised(
        connector, request.id, "warehouse", keys, fields
    )
    assert not unchanged.verified
    assert unchanged.observed == {
        "mart.customer_summary": {"rows": 1, "fields_unchanged": 2}
    }

    connector.anonymise(keys, fields, idempotency_key="t:warehouse:anonymise")
    changed = _actions.verify_anonymised(
        connector, request.id, "warehouse", keys, fields
    )
    assert changed.verified
    connector.close()
