"""Legal holds: scoped deferral, a partial certificate, release, a superseding one."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import select

from erasure import decisions, holds, requests
from erasure.certificate import verify
from erasure.models import Certificate, LegalHold, Request
from lethe import ledger
from lethe.emulators.sap import SapStore
from lethe.errors import InputError, NotFoundError
from lethe.estate.config import load_estate
from lethe.runtime import current
from lineage.models import FlowEdge
from tests.helpers import Estate, plant_canary_estate

REASON = "Matter 2026-117: preserve billing records"


@pytest.fixture
def estate(any_ledger: str, tmp_path: Path) -> Iterator[Estate]:
    planted = plant_canary_estate(tmp_path / "estate", step_seconds=0.05)
    try:
        yield planted
    finally:
        planted.servers.stop()


def _payload(jws: str) -> dict:
    body = jws.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def _certificates(request_id: str) -> list[Certificate]:
    with ledger.session() as db:
        rows = db.exec(select(Certificate).where(Certificate.request_id == request_id))
        return sorted(rows, key=lambda c: c.issued_at)


def _warehouse_rows(e: Estate, table: str) -> int:
    engine = create_engine(e.settings["systems"]["warehouse"]["url"])
    with engine.connect() as db:
        count = db.execute(
            text(f"SELECT count(*) FROM {table} WHERE sf_id = :id"),  # noqa: S608
            {"id": e.contact_id},
        ).scalar_one()
    engine.dispose()
    return int(count)


@pytest.mark.e2e
def test_hold_defers_part_then_release_supersedes(estate: Estate) -> None:
    from flows.capture import capture_lineage
    from flows.erasure import erase_requests

    e = estate
    capture_lineage()
    request = requests.submit(email=e.canary.email, regulation="gdpr")
    lethe_estate = load_estate(current().settings.estate_file)
    erp_hold = holds.place(
        lethe_estate,
        system="erp",
        category="user.financial",
        request_id=request.id,
        reason=REASON,
        by="counsel-1",
    )
    mart_hold = holds.place(
        lethe_estate,
        system="warehouse",
        dataset="mart.customer_summary",
        reason=REASON,
        ends_on=date.today() + timedelta(days=90),
        by="counsel-1",
    )

    assert erase_requests([request.id]) == {request.id: "held"}
    shown = {s["system"]: s for s in requests.describe(request.id)["systems"]}
    assert shown["erp"]["state"] == "deferred"
    assert shown["erp"]["outcome"] == "deferred by legal hold"
    assert shown["warehouse"]["state"] == "deferred"
    assert shown["warehouse"]["parts"]["raw.sf_contact"]["state"] == "done"
    assert shown["warehouse"]["parts"]["mart.customer_summary"]["state"] == "deferred"
    assert shown["salesforce"]["state"] == shown["analytics"]["state"] == "done"
    # the held parts are untouched; the rest is gone
    assert _warehouse_rows(e, "raw_sf_contact") == 0
    assert _warehouse_rows(e, "mart_customer_summary") == 1
    partner = SapStore(e.workdir / "erp.db").partner(e.partner_id)
    assert partner["LastName"] == e.canary.last_name

    [first] = _certificates(request.id)
    keys = current().keys.public_keys()
    assert verify(first.jws, keys)
    partial = _payload(first.jws)
    assert partial["complete"] is False and partial["supersedes"] is None
    assert partial["request"]["completed_at"] is None
    assert partial["request"]["stated_at"]
    assert partial["policy"]["digest"].startswith("sha256:")
    by_system = {s["system"]: s for s in partial["systems"]}
    assert by_system["erp"]["outcome"] == "deferred by legal hold"
    assert by_system["erp"]["holds"] == [{"id": erp_hold.id, "ends_on": None}]
    assert by_system["warehouse"]["holds"][0]["id"] == mart_hold.id
    assert REASON not in first.jws and "Matter" not in json.dumps(partial)

    # nothing changes while the holds stand
    assert erase_requests([request.id]) == {request.id: "held"}
    assert len(_certificates(request.id)) == 1

    assert holds.release(erp_hold.id, by="counsel-2") == [request.id]
    assert holds.release(mart_hold.id, by="counsel-2") == [request.id]
    assert erase_requests([request.id]) == {request.id: "completed"}
    assert _warehouse_rows(e, "mart_customer_summary") == 0
    partner = SapStore(e.workdir / "erp.db").partner(e.partner_id)
    assert partner["LastName"] != e.canary.last_name

    first_again, second = _certificates(request.id)
    assert first_again.id == first.id and second.supersedes == first.id
    assert verify(second.jws, keys) and verify(first.jws, keys)
    final = _payload(second.jws)
    assert final["supersedes"] == first.id and final["complete"] is True
    by_system = {s["system"]: s for s in final["systems"]}
    assert by_system["erp"]["outcome"].startswith("retained under HGB")
    assert by_system["erp"]["outcome"].endswith("; personal fields anonymised")
    # the ERP's rule: ten years from the end of the year of the last invoice
    last_document = date.fromisoformat(by_system["erp"]["dates"]["last_document"])
    assert by_system["erp"]["retained_until"] == f"{last_document.year + 10}-12-31"
    assert by_system["erp"]["parts"]["A_BusinessPartner"]["retention_rule"] == (
        "10 years from the end of the year of the last document"
    )
    assert by_system["warehouse"]["parts"]["mart.customer_summary"]["state"] == "done"
    with ledger.session() as db:
        assert db.get(LegalHold, erp_hold.id).released_by == "counsel-2"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"system": "crm"}, "unknown system 'crm'"),
        ({"system": "erp", "category": "user.shoe_size"}, "unknown data category"),
        ({"system": "erp", "reason": "  "}, "give a reason"),
        ({"system": "erp", "ends_on": date(2020, 1, 1)}, "is in the past"),
        ({"system": "erp", "request_id": "dsr-000000000000"}, "dsr-000000000000"),
        ({"system": "erp", "by": "someone@example.com"}, "handle"),
        (
            {"system": "erp", "dataset": "Nope"},
            "the estate knows no dataset of system erp",
        ),
        (
            {"system": "erp", "category": "user.financial"},
            "no dataset of system erp is declared to hold user.financial; declare "
            "it in the policy's datasets: or drop --category",
        ),
    ],
)
def test_hold_bad_input_is_refused_and_stores_nothing(
    home: Path, tmp_path: Path, options: dict, fragment: str
) -> None:
    estate_file = tmp_path / "estate.yaml"
    estate_file.write_text(
        "name: t\nsource: salesforce\npolicy: policy.yaml\n"
        "systems:\n  salesforce: {kind: salesforce}\n"
        "  erp: {kind: sap_business_partner}\n"
    )
    (tmp_path / "policy.yaml").write_text(
        "version: 1\nrules:\n  - {system: erp, action: anonymise}\n"
        "  - {system: salesforce, action: delete}\n"
    )
    lethe_estate = load_estate(estate_file)
    arguments = {"reason": REASON, "by": "counsel-1", **options}
    with pytest.raises((InputError, NotFoundError)) as caught:
        holds.place(lethe_estate, **arguments)
    assert fragment in str(caught.value)
    with ledger.session() as db:
        assert db.exec(select(LegalHold)).all() == []


def test_hold_release_unknown_or_twice(home: Path) -> None:
    with pytest.raises(NotFoundError, match="no legal hold 'hold-nope'"):
        holds.release("hold-nope", by="counsel-1")


@pytest.mark.parametrize(
    ("hold", "dataset", "categories", "covered"),
    [
        ({"system": "erp"}, "A_BusinessPartner", [], True),
        (
            {"system": "erp", "dataset": "A_BusinessPartner"},
            "A_BusinessPartner",
            [],
            True,
        ),
        ({"system": "erp", "dataset": "Other"}, "A_BusinessPartner", [], False),
        ({"system": "warehouse"}, "A_BusinessPartner", [], False),
        (
            {"system": "erp", "category": "user.financial"},
            "A",
            ["user.financial"],
            True,
        ),
        (
            {"system": "erp", "category": "user.financial"},
            "A",
            ["user.financial.bank_account"],
            True,
        ),
        ({"system": "erp", "category": "user.financial"}, "A", ["user.name"], False),
        ({"system": "erp", "category": "user.financial"}, "A", [], False),
    ],
)
def test_hold_covers(hold: dict, dataset: str, categories: list, covered: bool) -> None:
    legal_hold = LegalHold(id="hold-x", estate="t", reason=REASON, **hold)
    assert holds.covers(legal_hold, "erp", dataset, categories) is covered


def _small_estate(tmp_path: Path):
    estate_file = tmp_path / "estate.yaml"
    estate_file.write_text(
        "name: t\nsource: salesforce\npolicy: policy.yaml\n"
        "systems:\n  salesforce: {kind: salesforce}\n  warehouse: {kind: warehouse}\n"
    )
    (tmp_path / "policy.yaml").write_text(
        "version: 1\ndatasets:\n  'warehouse:mart.ltv': [user.financial]\n"
        "rules:\n  - {system: '*', action: delete}\n"
    )
    return load_estate(estate_file)


def test_hold_past_its_end_date_frees_its_part_for_a_new_round(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from erasure.models import SystemStep
    from flows import _actions

    lethe_estate = _small_estate(tmp_path)
    request = requests.submit(email="ada@example.org", regulation="gdpr", estate="t")
    with ledger.session() as db:
        db.add(
            SystemStep(
                request_id=request.id,
                system="warehouse",
                planned_action="delete",
                key_count=2,
                datasets=["mart.ltv", "raw.contact"],
                parts={
                    "mart.ltv": {"action": "delete"},
                    "raw.contact": {"action": "delete"},
                },
            )
        )
    ends = date.today() + timedelta(days=10)
    hold = holds.place(
        lethe_estate,
        system="warehouse",
        category="user.financial",
        reason=REASON,
        ends_on=ends,
        by="counsel-1",
    )
    keys = {"mart.ltv": ["k1"], "raw.contact": ["k2"]}

    step = holds.defer_held(lethe_estate, request.id, "warehouse")
    assert step.parts["mart.ltv"] == {
        "action": "delete",
        "state": "deferred",
        "held_by": [hold.id],
    }
    assert _actions.groups(step.parts, "delete", keys) == {
        "delete": {"raw.contact": ["k2"]}
    }

    later = holds.utcnow() + timedelta(days=11)
    monkeypatch.setattr(holds, "utcnow", lambda: later)
    assert holds.expired("t") == [hold.id]
    step = holds.defer_held(lethe_estate, request.id, "warehouse")
    assert step.parts["mart.ltv"]["state"] == "planned"
    assert step.parts["mart.ltv"]["round"] == 1
    assert _actions.groups(step.parts, "delete", keys) == {
        "delete": {"raw.contact": ["k2"]},
        "delete.r1": {"mart.ltv": ["k1"]},
    }


def test_hold_cli_places_lists_refuses_and_releases(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from lethe.cli import app

    _small_estate(tmp_path)
    monkeypatch.setenv("LETHE_ESTATE", str(tmp_path / "estate.yaml"))
    monkeypatch.setenv("LETHE_OFFICER", "counsel-1")
    runner = CliRunner()
    placed = runner.invoke(
        app, ["hold", "place", "--system", "warehouse", "--reason", REASON]
    )
    assert placed.exit_code == 0, placed.stderr
    hold_id = placed.stdout.split()[1]
    bad = [
        (["hold", "place", "--system", "crm", "--reason", REASON], "unknown system"),
        (
            [
                "hold",
                "place",
                "--system",
                "warehouse",
                "--reason",
                REASON,
                "--ends",
                "next week",
            ],
            "is not a date",
        ),
        (["hold", "release"], "name the holds to release"),
        (["hold", "release", "hold-nope"], "no legal hold 'hold-nope'"),
    ]
    for args, fragment in bad:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.stderr)
        assert fragment in result.stderr and len(result.stderr.splitlines()) == 1
    listed = json.loads(runner.invoke(app, ["hold", "list", "--json"]).stdout)
    assert [(h["id"], h["active"], h["reason"]) for h in listed] == [
        (hold_id, True, REASON)
    ]
    released = runner.invoke(app, ["hold", "release", hold_id])
    assert released.exit_code == 0, released.stderr
    assert "no deferred parts were waiting" in released.stdout
    again = runner.invoke(app, ["hold", "release", hold_id])
    assert again.exit_code == 2 and "already released" in again.stderr


def _scoped_estate(tmp_path: Path):
    """Datasets named every way an estate can name one, and one declared category."""
    estate_file = tmp_path / "estate.yaml"
    estate_file.write_text(
        "name: t\nsource: salesforce\npolicy: policy.yaml\n"
        "systems:\n  salesforce: {kind: salesforce}\n"
        "  warehouse:\n    kind: warehouse\n"
        "    tables: {raw.contact: {table: raw_contact, key_column: sf_id}}\n"
        "  analytics: {kind: segment, datasets: {events: userId}}\n"
        "  erp: {kind: sap_business_partner}\n"
        "flows:\n  - {job: extract, from: 'salesforce:Contact', "
        "to: 'warehouse:staging.contact'}\n"
    )
    (tmp_path / "policy.yaml").write_text(
        "version: 1\ndatasets:\n"
        "  'warehouse:raw.contact':\n"
        "    [user.financial, user.contact.address.postal_code]\n"
        "  'erp:A_BusinessPartner': [user.name]\n"
        "rules:\n  - {system: erp, action: anonymise}\n"
        "  - {system: '*', action: delete}\n"
    )
    return load_estate(estate_file)


def _hold_rows() -> list[LegalHold]:
    with ledger.session() as db:
        return list(db.exec(select(LegalHold)))


@pytest.mark.parametrize(
    ("system", "dataset", "category"),
    [
        ("warehouse", "staging.contact", None),  # a flow edge of the estate file
        ("warehouse", "raw.contact", None),  # the system's tables setting
        ("analytics", "events", None),  # the system's datasets setting
        ("erp", "A_BusinessPartner", None),  # the policy's datasets
        ("warehouse", "mart.imported", None),  # an edge lineage captured
        ("salesforce", "Contact", None),
        ("warehouse", None, "user.financial"),
        ("warehouse", "raw.contact", "user.financial"),
        ("warehouse", "raw.contact", "user"),  # user.financial is beneath it
        ("erp", None, "user.name"),
    ],
)
def test_hold_on_a_known_scope_is_placed(
    home: Path, tmp_path: Path, system: str, dataset: str | None, category: str | None
) -> None:
    lethe_estate = _scoped_estate(tmp_path)
    with ledger.session() as db:
        db.add(
            FlowEdge(
                estate="t",
                source="warehouse:raw.contact",
                target="warehouse:mart.imported",
                job="dbt",
            )
        )
    hold = holds.place(
        lethe_estate,
        system=system,
        dataset=dataset,
        category=category,
        reason=REASON,
        by="counsel-1",
    )
    assert [(h.id, h.dataset, h.category) for h in _hold_rows()] == [
        (hold.id, dataset, category)
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"system": "warehouse", "dataset": "Nope"},
            "system warehouse has no dataset 'Nope' the estate knows; its known "
            "datasets are raw.contact, staging.contact",
        ),
        (
            {"system": "analytics", "dataset": "raw.contact"},
            "system analytics has no dataset 'raw.contact' the estate knows; its "
            "known datasets are events",
        ),
        (
            {"system": "warehouse", "category": "user.name"},
            "no dataset of system warehouse is declared to hold user.name; declare "
            "it in the policy's datasets: or drop --category",
        ),
        (
            {"system": "analytics", "category": "user.financial"},
            "no dataset of system analytics is declared to hold user.financial",
        ),
        (  # a deeper category than declared: no part would be deferred by it
            {"system": "warehouse", "category": "user.financial.bank_account"},
            "no dataset of system warehouse is declared to hold "
            "user.financial.bank_account",
        ),
        (
            {"system": "warehouse", "dataset": "staging.contact", "category": "user"},
            "dataset staging.contact of system warehouse is not declared to hold "
            "user; declare it in the policy's datasets: or drop --category",
        ),
    ],
)
def test_hold_that_protects_nothing_is_refused(
    home: Path, tmp_path: Path, options: dict, message: str
) -> None:
    lethe_estate = _scoped_estate(tmp_path)
    with pytest.raises(InputError) as caught:
        holds.place(lethe_estate, reason=REASON, by="counsel-1", **options)
    assert str(caught.value).startswith(message)
    assert _hold_rows() == []


@pytest.mark.parametrize("state", ["completed", "denied"])
def test_hold_on_a_finished_request_is_refused(
    home: Path, tmp_path: Path, state: str
) -> None:
    lethe_estate = _small_estate(tmp_path)
    request = requests.submit(email="ada@example.org", regulation="gdpr", estate="t")
    if state == "denied":
        decisions.deny(request.id, reason="no_match", by="officer-2")
    else:
        with ledger.session() as db:
            row = db.get(Request, request.id)
            row.state = state
            db.add(row)
    with pytest.raises(InputError, match=f"is {state}: nothing is left to hold"):
        holds.place(
            lethe_estate,
            system="warehouse",
            request_id=request.id,
            reason=REASON,
            by="counsel-1",
        )
    assert _hold_rows() == []


def test_hold_on_a_duplicate_holds_its_canonical_request(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from lethe.cli import app

    _small_estate(tmp_path)
    monkeypatch.setenv("LETHE_ESTATE", str(tmp_path / "estate.yaml"))
    first = requests.submit(email="ada@example.org", regulation="gdpr", estate="t")
    second = requests.submit(email="ADA@example.org", regulation="gdpr", estate="t")
    assert second.duplicate_of == first.id
    args = ["hold", "place", "--system", "warehouse", "--reason", REASON]
    placed = CliRunner().invoke(
        app, [*args, "--request", second.id, "--by", "counsel-1"]
    )
    assert placed.exit_code == 0, placed.stderr
    [hold] = _hold_rows()
    assert hold.request_id == first.id
    assert f"for request {first.id}" in placed.stdout
    assert f"{second.id} is a duplicate: the hold covers {first.id}" in placed.stdout


def test_hold_reason_is_stored_redacted_and_the_user_is_told(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from lethe.cli import app

    _small_estate(tmp_path)
    monkeypatch.setenv("LETHE_ESTATE", str(tmp_path / "estate.yaml"))
    reason = "Matter 9: claim by jane.roe@example.org, call +49 30 1234 5678"
    placed = CliRunner().invoke(
        app,
        ["hold", "place", "--system", "warehouse", "--reason", reason, "--by", "c-1"],
    )
    assert placed.exit_code == 0, placed.stderr
    assert "it was stored redacted" in placed.stdout
    assert "jane.roe" not in placed.stdout
    [hold] = _hold_rows()
    assert hold.reason == "Matter 9: claim by <redacted-email>, call <redacted-phone>"
    ledger_bytes = (home / "ledger.db").read_bytes()
    assert b"jane.roe" not in ledger_bytes and b"1234 5678" not in ledger_bytes
    clean = CliRunner().invoke(
        app,
        ["hold", "place", "--system", "warehouse", "--reason", REASON, "--by", "c-1"],
    )
    assert clean.exit_code == 0 and "redacted" not in clean.stdout


def test_hold_place_list_and_release_show_scope_and_log_no_reason(
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from typer.testing import CliRunner

    from lethe.cli import app

    _small_estate(tmp_path)
    monkeypatch.setenv("LETHE_ESTATE", str(tmp_path / "estate.yaml"))
    monkeypatch.setenv("LETHE_OFFICER", "counsel-1")
    caplog.set_level(logging.INFO, logger="erasure.holds")
    runner = CliRunner()
    placed = runner.invoke(
        app,
        [
            "hold",
            "place",
            "--system",
            "warehouse",
            "--dataset",
            "mart.ltv",
            "--category",
            "user.financial",
            "--ends",
            (date.today() + timedelta(days=30)).isoformat(),
            "--reason",
            REASON,
        ],
    )
    assert placed.exit_code == 0, placed.stderr
    hold_id = placed.stdout.split()[1]
    assert "on warehouse:mart.ltv, category user.financial" in placed.stdout
    assert "for every request" in placed.stdout
    table = runner.invoke(app, ["hold", "list"]).stdout
    for shown in (hold_id, "mart.ltv", "user.financial", "active"):
        assert shown in table
    released = runner.invoke(app, ["hold", "release", hold_id, "--by", "counsel-2"])
    assert released.exit_code == 0, released.stderr
    [listed] = json.loads(runner.invoke(app, ["hold", "list", "--json"]).stdout)
    assert listed["released_by"] == "counsel-2" and listed["placed_by"] == "counsel-1"
    table = runner.invoke(app, ["hold", "list"]).stdout
    assert "released" in table and "counsel-2" in table and "active" not in table
    logged = [r.getMessage() for r in caplog.records if r.name == "erasure.holds"]
    assert len(logged) == 2
    assert logged[0].startswith(f"legal hold {hold_id} placed on warehouse:mart.ltv")
    assert logged[1].startswith(f"legal hold {hold_id} on warehouse:mart.ltv")
    assert "released" in logged[1]
    assert not any("Matter" in line for line in logged)


def test_hold_release_of_several_checks_every_id_first(home: Path, tmp_path: Path):
    lethe_estate = _small_estate(tmp_path)
    first, second = (
        holds.place(lethe_estate, system="warehouse", reason=REASON, by="counsel-1")
        for _ in range(2)
    )
    with pytest.raises(NotFoundError, match="no legal hold 'hold-nope'; nothing was"):
        holds.release_all([first.id, "hold-nope"], by="counsel-2")
    assert all(h.released_at is None for h in _hold_rows())
    holds.release(second.id, by="counsel-2")
    with pytest.raises(InputError, match=f"hold {second.id} was already released"):
        holds.release_all([first.id, second.id], by="counsel-2")
    assert {h.id: h.released_at is None for h in _hold_rows()} == {
        first.id: True,
        second.id: False,
    }
    assert holds.release_all([first.id, first.id], by="counsel-2") == []
    assert all(h.released_by == "counsel-2" for h in _hold_rows())


def test_hold_cli_release_with_one_unknown_id_releases_nothing(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from lethe.cli import app

    lethe_estate = _small_estate(tmp_path)
    monkeypatch.setenv("LETHE_ESTATE", str(tmp_path / "estate.yaml"))
    hold = holds.place(lethe_estate, system="warehouse", reason=REASON, by="c-1")
    result = CliRunner().invoke(
        app, ["hold", "release", hold.id, "hold-nope", "--by", "c-2"]
    )
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and "hold-nope" in result.stderr
    assert [h.released_at for h in _hold_rows()] == [None]


@pytest.mark.parametrize(
    ("ends_in_days", "released", "active"),
    [
        (None, False, True),
        (1, False, True),
        (0, False, True),  # through its end date, inclusive
        (-1, False, False),  # expired the day after
        (None, True, False),
    ],
)
def test_hold_is_active_through_its_end_date(
    ends_in_days: int | None, released: bool, active: bool
) -> None:
    today = date(2027, 6, 30)
    hold = LegalHold(
        id="hold-x",
        estate="t",
        system="erp",
        reason=REASON,
        ends_on=None if ends_in_days is None else today + timedelta(ends_in_days),
        released_at=holds.utcnow() if released else None,
    )
    assert holds.is_active(hold, today) is active


def test_hold_list_never_cuts_ids_in_piped_output(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from lethe.cli import app

    lethe_estate = _scoped_estate(tmp_path)
    monkeypatch.setenv("LETHE_ESTATE", str(tmp_path / "estate.yaml"))
    request = requests.submit(email="ada@example.org", regulation="gdpr", estate="t")
    placed = [
        holds.place(
            lethe_estate,
            system="warehouse",
            dataset="raw.contact",
            category="user.contact.address.postal_code",
            request_id=request.id,
            reason=REASON + " and everything the matter's custodians name " * 3,
            ends_on=date.today() + timedelta(days=400),
            by="counsel-1",
        )
        for _ in range(3)
    ]
    holds.release(placed[0].id, by="counsel-2")
    listed = CliRunner().invoke(app, ["hold", "list"])
    assert listed.exit_code == 0, listed.stderr
    assert max(len(line) for line in listed.stdout.splitlines()) <= 120
    for hold in placed:
        assert hold.id in listed.stdout
    assert listed.stdout.count(request.id) == 3


@pytest.mark.e2e
def test_scheduled_flow_runs_what_an_ended_hold_deferred(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.capture import capture_lineage
    from flows.erasure import erase_requests
    from flows.holds import release_expired_holds

    e = plant_canary_estate(tmp_path / "estate", step_seconds=0.05)
    try:
        capture_lineage()
        request = requests.submit(email=e.canary.email, regulation="gdpr")
        lethe_estate = load_estate(current().settings.estate_file)
        hold = holds.place(
            lethe_estate,
            system="erp",
            reason=REASON,
            ends_on=date.today() + timedelta(days=1),
            by="counsel-1",
        )
        assert erase_requests([request.id]) == {request.id: "held"}
        assert release_expired_holds() == {}  # still active through its end date

        later = holds.utcnow() + timedelta(days=3)
        monkeypatch.setattr(holds, "utcnow", lambda: later)
        assert release_expired_holds() == {request.id: "completed"}
        first, second = _certificates(request.id)
        assert second.supersedes == first.id
        erp = {s["system"]: s for s in _payload(second.jws)["systems"]}["erp"]
        assert erp["outcome"].startswith("retained under HGB")
        assert holds.expired(lethe_estate.name) == [hold.id]
        assert release_expired_holds() == {}  # nothing left to run
    finally:
        e.servers.stop()


def test_each_release_runs_in_a_round_of_its_own(home: Path, tmp_path: Path) -> None:
    from erasure.models import SystemStep

    _small_estate(tmp_path)
    request = requests.submit(email="ada@example.org", regulation="gdpr", estate="t")
    with ledger.session() as db:
        db.add(
            SystemStep(
                request_id=request.id,
                system="warehouse",
                planned_action="delete",
                state="deferred",
                datasets=["a", "b"],
                parts={
                    "a": {"action": "delete", "state": "deferred", "held_by": ["h1"]},
                    "b": {"action": "delete", "state": "deferred", "held_by": ["h2"]},
                },
            )
        )
    assert holds.free_parts(hold_ids=["h1"]) == [request.id]
    with ledger.session() as db:
        step = db.exec(select(SystemStep)).one()
        step.parts = {**step.parts, "a": {**step.parts["a"], "state": "done"}}
        db.add(step)
    assert holds.free_parts(hold_ids=["h2"]) == [request.id]
    with ledger.session() as db:
        parts = db.exec(select(SystemStep)).one().parts
    assert (parts["a"]["round"], parts["b"]["round"]) == (1, 2)
