"""Governance lint: the sample estate's two-way sync is flagged, and each kind of
finding fires on the smallest estate that shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

import lineage
from lethe import ledger
from lethe.cli.lineage_lint import lint_command
from lethe.errors import ConfigError, InputError
from lethe.estate.build import FLOWS
from lineage.lint import Finding, lint, ownership_of, personal_data_of

ESTATE = "lint-test"
SAMPLE_OWNERSHIP = {"erp": ["Customer", "AccountNumber"], "salesforce": ["Email"]}
SYNC = "erp:A_BusinessPartner → salesforce:Contact → erp:A_BusinessPartner"


def _lint(edges: list[dict], ownership: dict | None = None, **kwargs) -> list[Finding]:
    with ledger.session() as db:
        lineage.load_flow_edges(db, ESTATE, edges)
        return lint(db, ESTATE, ownership or {}, **kwargs)


def _edge(job: str, source: str, target: str, **fields: str) -> dict:
    return {"job": job, "from": source, "to": target, "fields": fields}


def test_lint_flags_the_sample_estates_two_way_sync(home: Path) -> None:
    findings = _lint(FLOWS, SAMPLE_OWNERSHIP)

    # Each side writes only what it owns, so the cycle is the one finding.
    assert findings == [
        Finding(
            "cycle",
            SYNC,
            "through jobs erp_account_writeback; erp_sync: an erasure on one side "
            "can be written back by the next run; pause the sync or re-verify "
            "after it",
        )
    ]


def test_lint_flags_the_write_back_when_salesforce_owns_the_field(home: Path) -> None:
    ownership = {"salesforce": ["Email", "AccountNumber"]}
    kinds = [(f.kind, f.subject, f.detail) for f in _lint(FLOWS, ownership)]

    assert kinds[0] == (
        "foreign-write",
        "erp_account_writeback",
        "erp writes salesforce:Contact.AccountNumber, which salesforce owns",
    )
    assert [kind for kind, *_ in kinds] == ["foreign-write", "cycle"]


def test_lint_multiple_writers_counts_systems_not_datasets(home: Path) -> None:
    findings = _lint(
        [
            _edge(
                "crm_load", "salesforce:Contact", "warehouse:raw.person", Email="email"
            ),
            _edge(
                "lead_load", "salesforce:Lead", "warehouse:raw.person", Email="email"
            ),
            _edge(
                "erp_load",
                "erp:A_BusinessPartner",
                "warehouse:raw.person",
                Mail="email",
            ),
            _edge(
                "phones", "salesforce:Contact", "warehouse:raw.person", Phone="phone"
            ),
            _edge("phones2", "salesforce:Lead", "warehouse:raw.person", Phone="phone"),
        ]
    )

    assert findings == [
        Finding(
            "multiple-writers",
            "warehouse:raw.person.email",
            "written from erp:A_BusinessPartner (job erp_load), salesforce:Contact "
            "(job crm_load), salesforce:Lead (job lead_load)",
        )
    ]


def test_lint_foreign_write_of_a_field_or_an_owned_dataset(home: Path) -> None:
    edges = [
        _edge(
            "sync", "salesforce:Contact", "erp:A_BusinessPartner", Email="EmailAddress"
        ),
        _edge("backfill", "analytics:events", "salesforce:Contact", mail="email"),
        _edge("reshape", "warehouse:raw.c", "warehouse:mart.c", email="email"),
        _edge("erp_load", "erp:A_BusinessPartner", "warehouse:raw.erp", Mail="email"),
    ]
    ownership = {"salesforce": ["Email"], "erp": ["erp:A_BusinessPartner"]}

    assert _lint(edges, ownership) == [
        Finding(
            "foreign-write",
            "backfill",
            "analytics writes salesforce:Contact.email, which salesforce owns",
        ),
        Finding(
            "foreign-write",
            "sync",
            "salesforce writes erp:A_BusinessPartner, which erp owns",
        ),
    ]


def test_lint_names_every_cycle_from_its_smallest_dataset(home: Path) -> None:
    findings = _lint(
        [
            _edge("b_to_c", "warehouse:b", "warehouse:c"),
            _edge("c_to_a", "warehouse:c", "warehouse:a"),
            _edge("a_to_b", "warehouse:a", "warehouse:b"),
            _edge("again", "warehouse:a", "warehouse:a"),
            _edge("out", "warehouse:c", "analytics:events"),
        ]
    )

    assert [(f.kind, f.subject) for f in findings] == [
        ("cycle", "warehouse:a → warehouse:a"),
        ("cycle", "warehouse:a → warehouse:b → warehouse:c → warehouse:a"),
    ]
    assert "a_to_b; b_to_c; c_to_a" in findings[1].detail


def test_lint_personal_data_with_no_path_from_the_source(home: Path) -> None:
    edges = [
        _edge("extract", "salesforce:Contact", "warehouse:raw.c"),
        _edge("snapshot", "warehouse:snap.c", "warehouse:mart.c"),
        _edge("track", "app:events", "analytics:events"),
    ]
    findings = _lint(
        edges,
        personal_datasets=["warehouse:raw.c", "warehouse:mart.c", "warehouse:lost"],
        personal_systems=["analytics", "crm2", "salesforce"],
    )

    assert [(f.subject, f.detail.split(",")[0]) for f in findings] == [
        ("analytics:events", "declared personal"),
        ("crm2", "declared personal"),
        ("warehouse:lost", "declared personal"),
        ("warehouse:mart.c", "declared personal"),
    ]
    assert {f.kind for f in findings} == {"unlinked-personal-data"}
    assert "no flow edge at all from salesforce" in findings[2].detail
    assert "no lineage path from salesforce" in findings[3].detail
    assert "no flow edge names any of its datasets" in findings[1].detail


def test_lint_orders_findings_by_kind_then_subject(home: Path) -> None:
    edges = [
        *FLOWS,
        _edge("x", "analytics:events", "warehouse:raw.sf_contact", userId="email"),
    ]
    ownership = {"salesforce": ["Email", "AccountNumber"]}
    first = _lint(edges, ownership, personal_datasets=["warehouse:orphan"])
    with ledger.session() as db:
        again = lint(db, ESTATE, ownership, personal_datasets=["warehouse:orphan"])

    assert first == again
    assert [(f.kind, f.subject) for f in first] == [
        ("multiple-writers", "warehouse:raw.sf_contact.email"),
        ("foreign-write", "erp_account_writeback"),
        ("foreign-write", "x"),
        ("cycle", SYNC),
        ("unlinked-personal-data", "warehouse:orphan"),
    ]
    # email there holds Salesforce's Email, copied by nightly_extract.
    assert first[2].detail == (
        "analytics writes warehouse:raw.sf_contact.email, which salesforce owns"
    )


def test_lint_refuses_a_field_with_two_owners(home: Path) -> None:
    with pytest.raises(InputError, match="owned by both erp and salesforce"):
        _lint(FLOWS, {"erp": ["email"], "salesforce": ["Email"]})


def test_ownership_of_reads_the_estate_file_section() -> None:
    raw = {
        "systems": {"salesforce": {}, "erp": {}, "analytics": {}},
        "ownership": SAMPLE_OWNERSHIP,
        "personal_data": {"systems": ["analytics"], "datasets": ["erp:X"]},
    }

    assert ownership_of(raw) == {
        "erp": ("Customer", "AccountNumber"),
        "salesforce": ("Email",),
    }
    assert ownership_of({"systems": {}}) == {}
    assert personal_data_of(raw) == (["erp:X"], ["analytics"])


@pytest.mark.parametrize(
    ("ownership", "message"),
    [
        ({"crm": ["Email"]}, "names system 'crm', which is not in 'systems'"),
        ({"erp": "Customer"}, "must be a list of field or dataset names"),
        (["erp"], "must map each system"),
        ({"erp": ["Email"], "salesforce": ["EMAIL"]}, "owned by both"),
    ],
)
def test_ownership_of_refuses_a_bad_section(ownership: object, message: str) -> None:
    raw = {"systems": {"salesforce": {}, "erp": {}}, "ownership": ownership}
    with pytest.raises(ConfigError, match=message):
        ownership_of(raw)


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra) -> typer.Typer:
    estate = {
        "name": ESTATE,
        "source": "salesforce",
        "systems": {
            name: {"kind": name}
            for name in ("salesforce", "warehouse", "analytics", "erp")
        },
        "flows": FLOWS,
        **extra,
    }
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(estate))
    monkeypatch.setenv("LETHE_ESTATE", str(path))
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("lint")(lint_command)
    return app


def test_lint_cli_reads_ownership_from_the_estate_and_exits_1(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _cli(
        tmp_path,
        monkeypatch,
        ownership={"salesforce": ["Email", "AccountNumber"]},
        personal_data={"systems": ["analytics"]},
    )
    with ledger.session() as db:
        lineage.load_flow_edges(db, ESTATE, FLOWS)
    result = CliRunner().invoke(app, ["lint"])

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "foreign-write: erp_account_writeback: erp writes "
        "salesforce:Contact.AccountNumber, which salesforce owns",
        f"cycle: {SYNC}: through jobs erp_account_writeback; erp_sync: an erasure "
        "on one side can be written back by the next run; pause the sync or "
        "re-verify after it",
        "2 findings",
    ]


def test_lint_cli_exits_0_when_clean(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _cli(tmp_path, monkeypatch)
    with ledger.session() as db:
        lineage.load_flow_edges(db, ESTATE, FLOWS[:3])
    result = CliRunner().invoke(app, ["lint"])

    assert result.exit_code == 0 and result.stdout == "0 findings\n"


def test_lint_cli_refuses_a_ledger_without_flow_edges(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _cli(tmp_path, monkeypatch, ownership={"crm": ["Email"]})
    with ledger.session():
        pass
    bad_ownership = CliRunner().invoke(app, ["lint"])
    app = _cli(tmp_path, monkeypatch)
    empty = CliRunner().invoke(app, ["lint"])

    assert bad_ownership.exit_code == 1
    assert "ownership names system 'crm'" in bad_ownership.stderr
    assert empty.exit_code == 1
    assert "holds no flow edges for estate 'lint-test'" in empty.stderr
    assert "run `lethe lineage capture` first" in empty.stderr
