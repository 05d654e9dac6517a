"""dbt manifests: the real jaffle_shop artifacts import, their faults are named,
and a second import stores nothing new."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from sqlmodel import func, select
from typer.testing import CliRunner

from lethe import ledger
from lethe.cli.lineage_dbt import import_dbt
from lethe.errors import InputError
from lineage.dbt import BrokenLink, PiiContradiction, import_dbt_manifest
from lineage.models import FlowEdge
from tests.conftest import SAMPLE_DATA

ESTATE = "dbt-test"
DBT = SAMPLE_DATA / "lineage" / "openlineage"
DUCKDB = DBT / "dbt-jaffle_shop-duckdb" / "manifest.json"
POSTGRES = DBT / "dbt-jaffle_shop-postgres" / "manifest.json"
V12 = "https://schemas.getdbt.com/dbt/manifest/v12.json"


def _real(path: Path) -> dict:
    if not path.is_file():
        pytest.skip(f"sample data not found at {path}; set LETHE_SAMPLE_DATA")
    return json.loads(path.read_text())


def _stored(estate: str = ESTATE) -> set[tuple[str, str, str]]:
    with ledger.session() as db:
        rows = db.exec(select(FlowEdge).where(FlowEdge.estate == estate))
        return {(e.source, e.target, e.job) for e in rows}


def _import(manifest: dict, **kwargs):
    with ledger.session() as db:
        return import_dbt_manifest(db, ESTATE, manifest, **kwargs)


def test_dbt_postgres_manifest_v7_imports_every_edge(home: Path) -> None:
    result = _import(_real(POSTGRES))

    customers, orders = (
        "dbt:model.jaffle_shop.customers",
        "dbt:model.jaffle_shop.orders",
    )
    expected = {
        ("warehouse:public.raw_customers", "warehouse:public.stg_customers"),
        ("warehouse:public.raw_orders", "warehouse:public.stg_orders"),
        ("warehouse:public.raw_payments", "warehouse:public.stg_payments"),
    }
    jobs = {(s, t, f"dbt:model.jaffle_shop.{t.split('.')[-1]}") for s, t in expected}
    jobs |= {
        ("warehouse:public.stg_customers", "warehouse:public.customers", customers),
        ("warehouse:public.stg_orders", "warehouse:public.customers", customers),
        ("warehouse:public.stg_payments", "warehouse:public.customers", customers),
        ("warehouse:public.stg_orders", "warehouse:public.orders", orders),
        ("warehouse:public.stg_payments", "warehouse:public.orders", orders),
    }
    assert _stored() == jobs
    assert (result.schema_version, result.edges, result.added) == (7, 8, 8)
    assert result.datasets == 8
    assert result.clean and result.findings == []


def test_dbt_duckdb_manifest_v12_names_its_broken_links_and_pii_contradiction(
    home: Path,
) -> None:
    result = _import(_real(DUCKDB), system="analytics_db")

    model = "model.jaffle_shop."
    depends = ("depends_on.nodes",)
    assert result.broken_links == (
        BrokenLink(f"{model}customers", f"{model}stg_customers", depends),
        BrokenLink(f"{model}customers", f"{model}stg_orders", depends),
        BrokenLink(f"{model}customers", f"{model}stg_payments", depends),
        BrokenLink(f"{model}orders", f"{model}stg_orders", depends),
        BrokenLink(f"{model}orders", f"{model}stg_payments", depends),
        BrokenLink(
            "seed.jaffle_shop.raw_customers", f"{model}stg_customers", ("child_map",)
        ),
        BrokenLink("seed.jaffle_shop.raw_orders", f"{model}stg_orders", ("child_map",)),
        BrokenLink(
            "seed.jaffle_shop.raw_payments", f"{model}stg_payments", ("child_map",)
        ),
    )
    # schema.yml documents first_name and last_name as "PII.", while the
    # customers model's meta says pii: false.
    says = ("description", "column name")
    assert result.pii_contradictions == (
        PiiContradiction(
            f"{model}customers", "first_name", says, ("node meta pii=false",)
        ),
        PiiContradiction(
            f"{model}customers", "last_name", says, ("node meta pii=false",)
        ),
    )
    # Every model depends only on the missing staging models: nothing to store.
    assert (result.schema_version, result.edges, result.added) == (12, 0, 0)
    assert _stored() == set()
    assert not result.clean and len(result.findings) == 10
    assert result.findings[-1] == (
        "PII contradiction: model.jaffle_shop.customers column last_name is personal "
        "data per description, column name, but not per node meta pii=false"
    )


@pytest.mark.parametrize("path", [POSTGRES, DUCKDB], ids=["postgres", "duckdb"])
def test_dbt_import_twice_adds_nothing(any_ledger: str, path: Path) -> None:
    manifest = _real(path)
    first = _import(manifest)
    before = _stored()
    second = _import(manifest)

    assert second.added == 0 and second.edges == first.edges
    assert second.findings == first.findings
    assert _stored() == before
    with ledger.session() as db:
        assert db.exec(select(func.count()).select_from(FlowEdge)).one() == first.added


def _manifest(nodes: dict, sources: dict | None = None, **maps) -> dict:
    return {
        "metadata": {"dbt_schema_version": V12},
        "nodes": nodes,
        "sources": sources or {},
        **maps,
    }


def _model(name: str, *parents: str, **extra) -> dict:
    return {
        "resource_type": "model",
        "schema": "Analytics",
        "name": name,
        "depends_on": {"nodes": list(parents)},
        **extra,
    }


def test_dbt_looks_through_ephemeral_models_and_names_sources(home: Path) -> None:
    manifest = _manifest(
        {
            "model.p.base": _model(
                "base", "source.p.crm.Contacts", config={"materialized": "ephemeral"}
            ),
            "model.p.mart": _model("mart", "model.p.base", alias="Mart_People"),
            "test.p.not_null": {
                "resource_type": "test",
                "schema": "x",
                "name": "t",
                "depends_on": {"nodes": ["model.p.mart"]},
            },
        },
        {
            "source.p.crm.Contacts": {
                "resource_type": "source",
                "schema": "RAW",
                "name": "contacts",
                "identifier": "SF_Contact",
            }
        },
    )
    result = _import(manifest)

    assert _stored() == {
        (
            "warehouse:raw.sf_contact",
            "warehouse:analytics.mart_people",
            "dbt:model.p.mart",
        )
    }
    assert result.clean


@pytest.mark.parametrize(
    ("column", "node", "contradiction"),
    [
        ({"name": "email", "description": "Hashed, not PII."}, {}, ("column name",)),
        (
            {"name": "note", "tags": ["pii"], "meta": {"contains_pii": False}},
            {},
            ("tags pii",),
        ),
        (
            {"name": "nick", "meta": {"personal_data": "yes"}},
            {"tags": ["no-pii"]},
            ("meta personal_data=true",),
        ),
        (
            {"name": "first_name", "description": "Customer's first name. PII."},
            {},
            None,
        ),
        ({"name": "status", "meta": {"pii": False}}, {"meta": {"pii": True}}, None),
        (
            {"name": "city", "description": "Not personal data"},
            {"config": {"meta": {"pii": False}}},
            None,
        ),
    ],
    ids=[
        "name-vs-description",
        "tags-vs-meta",
        "meta-vs-node-tags",
        "agreeing",
        "pii-node-plain-column",
        "both-say-not",
    ],
)
def test_dbt_pii_contradiction_rule(
    home: Path, column: dict, node: dict, contradiction: tuple | None
) -> None:
    manifest = _manifest({"model.p.m": _model("m", columns={"c": column}, **node)})
    found = _import(manifest).pii_contradictions

    if contradiction is None:
        assert found == ()
    else:
        assert len(found) == 1 and found[0].column == column["name"]
        assert found[0].says_pii == contradiction and found[0].says_not_pii


def test_dbt_node_that_says_both_is_a_contradiction(home: Path) -> None:
    node = _model(
        "m",
        meta={"pii": True},
        config={"meta": {"contains_pii": "false"}},
        columns={"email": {"name": "email"}},
    )
    found = _import(_manifest({"model.p.m": node})).pii_contradictions

    assert found == (
        PiiContradiction(
            "model.p.m", None, ("meta pii=true",), ("config.meta contains_pii=false",)
        ),
        PiiContradiction(
            "model.p.m",
            "email",
            ("column name",),
            ("node config.meta contains_pii=false",),
        ),
    )


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"nodes": {}}, "not a dbt manifest"),
        ({"metadata": {"dbt_schema_version": V12}}, "not a dbt manifest"),
        (
            {"metadata": {"dbt_schema_version": V12.replace("v12", "v6")}, "nodes": {}},
            "v6 is not supported; lethe reads v7 to v12",
        ),
        (
            _manifest(
                {
                    "model.p.m": _model("m", "seed.p.s"),
                    "seed.p.s": {"resource_type": "seed", "name": "s"},
                }
            ),
            "seed.p.s has no schema",
        ),
    ],
)
def test_dbt_refuses_what_is_not_a_usable_manifest(
    home: Path, manifest: dict, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        _import(manifest)
    assert _stored() == set()


def _cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    estate = {
        "name": ESTATE,
        "source": "salesforce",
        "systems": {
            "salesforce": {"kind": "salesforce"},
            "warehouse": {"kind": "warehouse"},
        },
    }
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(estate))
    monkeypatch.setenv("LETHE_ESTATE", str(path))
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("import-dbt")(import_dbt)
    return app


def test_dbt_cli_exits_1_and_prints_each_finding(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _real(DUCKDB)
    result = CliRunner().invoke(
        _cli(tmp_path, monkeypatch), ["import-dbt", str(DUCKDB)]
    )

    lines = result.stdout.splitlines()
    assert result.exit_code == 1
    assert lines[0] == (
        "dbt manifest v12: 0 flow edges over 0 datasets, 0 new; "
        "8 broken links, 2 PII contradictions"
    )
    assert len(lines) == 11 and lines[1].startswith(
        "broken link: model.jaffle_shop.customers"
    )


def test_dbt_cli_exits_0_on_a_clean_manifest(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _real(POSTGRES)
    app = _cli(tmp_path, monkeypatch)
    runner = CliRunner()
    first = runner.invoke(app, ["import-dbt", str(POSTGRES)])
    again = runner.invoke(app, ["import-dbt", str(POSTGRES), "--system", "warehouse"])

    assert first.exit_code == 0 and again.exit_code == 0
    assert "8 flow edges over 8 datasets, 8 new" in first.stdout
    assert "8 flow edges over 8 datasets, 0 new" in again.stdout


def _broken_json(tmp_path: Path) -> Path:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    return path


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda tmp: tmp / "manifest.json", ["--system", "erp"], "system 'erp' is not"),
        (lambda tmp: tmp / "missing.json", [], "no dbt manifest at"),
        (_broken_json, [], "is not valid JSON at line 1"),
    ],
    ids=["unknown-system", "missing-file", "bad-json"],
)
def test_dbt_cli_bad_input_is_one_line_and_stores_nothing(
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make,
    args: list[str],
    message: str,
) -> None:
    app = _cli(tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["import-dbt", str(make(tmp_path)), *args])

    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _stored() == set()
