"""OpenLineage in: real Marquez and OpenLineage events validate (or are refused
with the field named), map to flow edges, aliases merge names whichever comes
first, writing runs without outputs are defects, and HTTP and the CLI agree."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import networkx as nx
import pytest
import typer
import yaml
from sqlmodel import func, select
from typer.testing import CliRunner

import lineage
from lethe import ledger
from lethe.cli import lineage_import
from lethe.emulators import EmulatorServer
from lineage._ol_names import namer_from_settings
from lineage._ol_schema import _places
from lineage.models import FlowEdge
from lineage.openlineage import Entry
from lineage.openlineage_api import create_app
from lineage.openlineage_models import (
    DatasetAlias,
    LineageDefect,
    OpenLineageEvent,
    OpenLineageRun,
    OpenLineageRunDataset,
)
from tests.conftest import SAMPLE_DATA

STANDARDS = SAMPLE_DATA.parent / "reference" / "standards"
MARQUEZ_TESTS = STANDARDS / "marquez" / "open_lineage"
SEED = SAMPLE_DATA / "lineage" / "marquez"
JAFFLE = SAMPLE_DATA / "lineage" / "openlineage"
SPEC_TESTS = STANDARDS / "openlineage" / "spec-tests"
pytestmark = pytest.mark.skipif(
    not (SEED.exists() and STANDARDS.exists()),
    reason=f"no shared sample data and reference files at {SAMPLE_DATA.parent}",
)
ESTATE = "ol-test"
SF = "salesforce://acme.my.salesforce.com"
SNOWFLAKE = "snowflake://acme-eu"
NAMESPACES: dict[str, Any] = {
    "food_delivery": {"system": "warehouse", "engine": "postgres"},
    SF: "salesforce",
    SNOWFLAKE: {"system": "warehouse", "database": "analytics"},
    "postgres://erp-db:5432": "erp",
}
TABLES: tuple[type, ...] = (
    OpenLineageEvent,
    OpenLineageRun,
    OpenLineageRunDataset,
    FlowEdge,
    DatasetAlias,
    LineageDefect,
)


@pytest.fixture
def estate(home: Path) -> lineage.Intake:
    home.mkdir(parents=True, exist_ok=True)
    (home / "estate.yaml").write_text(
        yaml.safe_dump(
            {
                "name": ESTATE,
                "source": "salesforce",
                "systems": {"salesforce": {"kind": "salesforce"}, "warehouse": {}},
                "openlineage_namespaces": NAMESPACES,
            }
        )
    )
    return lineage.current_intake()


def _import(intake: lineage.Intake, entries, *, lenient: bool = False):
    with ledger.session() as db:
        return lineage.import_events(db, intake, entries, lenient=lenient)


def _counts() -> dict[str, int]:
    with ledger.session() as db:
        return {
            model.__name__: db.exec(select(func.count()).select_from(model)).one()
            for model in TABLES
        }


def _edges(estate: str = ESTATE) -> dict[tuple[str, str], FlowEdge]:
    with ledger.session() as db:
        rows = db.exec(select(FlowEdge).where(FlowEdge.estate == estate))
        return {(e.source, e.target): e for e in rows}


def _seed_events() -> str:
    """The Marquez seed as docker/seed.sh makes it: placeholders become times."""
    text = (SEED / "metadata.template.json").read_text()
    start = "2026-12-01T02:00:00.000Z"

    def when(match: re.Match[str]) -> str:
        minutes = int(match.group(1) or 0)
        return f"2026-12-01T02:{minutes:02d}:00.000Z" if minutes else start

    return re.sub(
        r"\{\{RUN_(?:START_TIME|END_TIME_AFTER_(\d+)_MINUTES)\}\}", when, text
    )


def _event(kind: str = "COMPLETE", *, run_id: str | None = None, **body: Any) -> dict:
    event: dict[str, Any] = {
        "eventTime": "2026-12-01T02:00:00Z",
        "producer": "https://example.org/lethe-tests",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
    }
    if kind != "DATASET":
        event |= {"eventType": kind, "run": {"runId": run_id or str(uuid.uuid4())}}
    return event | body


def _ds(namespace: str, name: str, **facets: Any) -> dict:
    base = {"_producer": "https://example.org", "_schemaURL": "https://example.org/f"}
    return {
        "namespace": namespace,
        "name": name,
        "facets": {key: base | value for key, value in facets.items()},
    }


def _job(namespace: str, name: str, sql: str | None = None) -> dict:
    job: dict[str, Any] = {"namespace": namespace, "name": name}
    if sql:
        job["facets"] = {
            "sql": {
                "_producer": "https://example.org",
                "_schemaURL": "https://example.org/sql",
                "query": sql,
            }
        }
    return job


# The Marquez seed ---------------------------------------------------------


def test_marquez_seed_validates_strictly_and_becomes_flow_edges(estate) -> None:
    entries = lineage.parse_events(_seed_events(), "metadata.template.json")
    report = _import(estate, entries)

    assert (report.stored, report.rejected, report.warnings) == (26, [], [])
    assert report.defects == [] and report.unmapped_namespaces == set()
    edges = _edges()
    assert report.flow_edges == len(edges) == 14
    email = edges[("warehouse:public.customers", "warehouse:public.delivery_7_days")]
    assert email.job == "food_delivery.etl_delivery_7_days"
    assert email.field_map == {  # source field -> target field, as estate files
        "address": "customer_address",
        "email": "customer_email",
    }
    feeds = edges[("warehouse:public.delivery_7_days", "warehouse:public.discounts")]
    assert feeds.field_map["order_delivered_on"] == "amount_off"
    assert feeds.field_map["order_placed_on"] == "amount_off"
    # email_discounts only reads (SELECT): no outputs, and no defect either
    assert not any(t == "warehouse:public.email_discounts" for _, t in edges)


def test_importing_the_same_events_twice_stores_nothing_new(any_ledger, estate) -> None:
    entries = lineage.parse_events(_seed_events(), "metadata.template.json")
    _import(estate, entries)
    before = _counts()

    again = _import(estate, entries)

    assert (again.stored, again.duplicates, again.flow_edges) == (0, 26, 0)
    assert _counts() == before


def test_marquez_seed_with_fixed_times_has_no_schema_url(estate) -> None:
    # data/lineage/marquez/metadata.json predates schemaURL in the seed
    entries = lineage.read_events(SEED / "metadata.json")

    strict = _import(estate, entries)
    assert strict.stored == 0 and len(strict.rejected) == 26
    assert all(r.problems[0].pointer == "/schemaURL" for r in strict.rejected)
    assert _counts()["OpenLineageEvent"] == 0 and _edges() == {}

    lenient = _import(estate, entries, lenient=True)
    assert lenient.stored == 26 and lenient.rejected == []
    assert {w.problem.pointer for w in lenient.warnings} == {"/schemaURL"}
    assert lenient.flow_edges == 14


# Marquez's own test events ------------------------------------------------

MARQUEZ_CASES = {
    "event_additional_facet.json": "/job/facets/sourceCodeLocation/url",
    "event_dataset_event.json": None,
    "event_full.json": "/inputs/0/inputFacets/dataQualityMetrics/columnMetrics",
    "event_job_event.json": None,
    "event_large.json": "/inputs/0/facets/dataSource/uri",
    "event_namespace_naming.json": None,
    "event_required_nanoseconds.json": None,
    "event_required_no_timezone.json": "/eventTime",
    "event_required_only.json": None,
    "event_simple.json": None,
    "event_unicode.json": None,
    "event_without_schema_url.json": "/schemaURL",
    "listener/1.json": "/schemaURL",
    "listener/2.json": "/schemaURL",
    "null_nominal_end_time.json": None,
}


def test_marquez_test_events_are_all_covered() -> None:
    found = {
        p.relative_to(MARQUEZ_TESTS).as_posix() for p in MARQUEZ_TESTS.rglob("*.json")
    }
    assert found == set(MARQUEZ_CASES)


@pytest.mark.parametrize(("name", "broken"), sorted(MARQUEZ_CASES.items()))
def test_marquez_test_event_strict_names_the_field_lenient_accepts(
    estate, name: str, broken: str | None
) -> None:
    entries = lineage.read_events(MARQUEZ_TESTS / name)

    strict = _import(estate, entries)
    if broken is None:
        assert strict.rejected == [] and strict.stored == 1
        return
    assert strict.stored == 0 and len(strict.rejected) == 1
    assert broken in {p.pointer for p in strict.rejected[0].problems}
    assert broken in strict.rejected[0].reason
    assert all(count == 0 for count in _counts().values())

    lenient = _import(estate, entries, lenient=True)
    assert lenient.rejected == [] and lenient.stored == 1
    assert any(broken.startswith(w.problem.pointer) for w in lenient.warnings)


def test_lenient_time_without_zone_is_read_as_utc(estate) -> None:
    _import(
        estate,
        lineage.read_events(MARQUEZ_TESTS / "event_required_no_timezone.json"),
        lenient=True,
    )
    with ledger.session() as db:
        stored = db.exec(select(OpenLineageEvent)).one()
    assert (
        stored.event_time.replace(tzinfo=None).isoformat()
        == "2020-12-28T19:51:01.641499"
    )
    assert any("assumed UTC" in w for w in stored.warnings)


def test_listener_run_spans_two_events(estate) -> None:
    """A RUNNING and a COMPLETE of one run: every input feeds every output."""
    entries = [
        *lineage.read_events(MARQUEZ_TESTS / "listener" / "1.json"),
        *lineage.read_events(MARQUEZ_TESTS / "listener" / "2.json"),
    ]
    report = _import(estate, entries, lenient=True)
    assert report.stored == 2
    sources = {s.split(":", 1)[1] for s, _ in _edges()}
    targets = {t.split(":", 1)[1] for _, t in _edges()}
    assert sources == {f"file://localhost/in_file{n}.txt" for n in (1, 2, 3)}
    assert targets == {f"file://localhost/out_file{n}.txt" for n in (1, 2)}


def test_job_event_and_lineage_facet_declare_edges(estate) -> None:
    """A JobEvent's inputs and outputs, and a LineageFacet on a DatasetEvent,
    are declared lineage: edges at once, no run needed."""
    declared = json.loads(
        (SPEC_TESTS / "LineageFacet" / "dataset-to-dataset.json").read_text()
    )
    dataset_event = _event(
        "DATASET",
        dataset={"namespace": "postgres://erp-db", "name": "erp.public.summary"}
        | {"facets": declared},
    )
    entries = [
        *lineage.read_events(MARQUEZ_TESTS / "event_job_event.json"),
        Entry("declared", 0, dataset_event),
    ]

    report = _import(estate, entries)

    assert report.rejected == [] and report.flow_edges == 2
    ns = "my-datasource-namespace"
    job_edge = _edges()[
        (f"{ns}:instance.schema.input-1", f"{ns}:instance.schema.output-1")
    ]
    assert job_edge.job == "my-scheduler-namespace.myjob"
    facet_edge = _edges()[
        ("postgres-warehouse-5432:public.customers", "erp:erp.public.summary")
    ]
    assert facet_edge.field_map == {"id": "customer_id"}


# jaffle_shop (dbt integration expectations with test matchers) -----------


def test_jaffle_shop_placeholder_run_ids_are_rejected_strictly(estate) -> None:
    entries = lineage.read_events(JAFFLE / "dbt-jaffle_shop-postgres" / "result.json")

    report = _import(estate, entries)

    assert report.stored == 0 and len(report.rejected) == len(entries) == 10
    for rejection in report.rejected:
        pointers = {p.pointer for p in rejection.problems}
        assert {"/run/runId", "/schemaURL"} <= pointers
        assert "'{{ any(result) }}' is not a valid uuid" in rejection.reason
    assert all(count == 0 for count in _counts().values())


def test_jaffle_shop_lenient_derives_run_ids_and_maps_the_models(estate) -> None:
    entries = lineage.read_events(JAFFLE / "dbt-jaffle_shop-postgres" / "result.json")

    report = _import(estate, entries, lenient=True)

    assert report.stored == 10 and report.rejected == []
    assert "/run/runId" in {w.problem.pointer for w in report.warnings}
    system = "postgres-postgres_host-1234"
    assert report.unmapped_namespaces == {"postgres://postgres_host:1234"}
    assert set(_edges()) == {
        (f"{system}:postgres.public.stg_{name}", f"{system}:postgres.public.{model}")
        for model, names in (
            ("customers", ("customers", "orders", "payments")),
            ("orders", ("orders", "payments")),
        )
        for name in names
    }


def test_jaffle_shop_duckdb_matchers_are_not_recoverable(estate) -> None:
    """The duckdb expectations have no eventTime, producer or runId at all."""
    entries = lineage.read_events(JAFFLE / "dbt-jaffle_shop-duckdb" / "result.json")
    for lenient in (False, True):
        report = _import(estate, entries, lenient=lenient)
        assert report.stored == 0 and len(report.rejected) == 2
        pointers = {p.pointer for p in report.rejected[0].problems}
        assert {"/eventTime", "/producer", "/run/runId"} <= pointers


# Facets are validated by key ----------------------------------------------


def _wrap_facet(place: str, facet: dict) -> dict:
    dataset = {"namespace": "ns", "name": "t"}
    event = _event(job=_job("ns", "job"))
    if place == "run":
        event["run"]["facets"] = facet
    elif place == "job":
        event["job"]["facets"] = facet
    elif place == "input":
        event["inputs"] = [dataset | {"inputFacets": facet}]
    elif place == "output":
        event["outputs"] = [dataset | {"outputFacets": facet}]
    else:
        event["outputs"] = [dataset | {"facets": facet}]
    return event


SPEC_EXAMPLES = sorted(p for p in SPEC_TESTS.glob("*/*.json"))


@pytest.mark.parametrize(
    "path", SPEC_EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_spec_facet_examples_pass_their_facet_schema(path: Path) -> None:
    facet = json.loads(path.read_text())
    for place in _places(path.parent.name):
        checked = lineage.validate_event(_wrap_facet(place, facet))
        assert checked.problems == ()


def test_spec_has_all_its_facet_examples() -> None:
    assert len(SPEC_EXAMPLES) == 46


def test_a_broken_known_facet_is_rejected_by_its_own_schema() -> None:
    facet = {"columnLineage": {"_producer": "https://x", "_schemaURL": "https://x"}}
    checked = lineage.validate_event(_wrap_facet("dataset", facet))
    assert [str(p) for p in checked.problems] == [
        "/outputs/0/facets/columnLineage/fields: is required"
    ]


def test_example_full_event_validates() -> None:
    event = json.loads((SPEC_TESTS / "example_full_event.json").read_text())
    assert lineage.validate_event(event).problems == ()


# Dataset names and aliases ------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "name", "expected"),
    [
        (SNOWFLAKE, "ANALYTICS.PUBLIC.CONTACTS", "warehouse:public.contacts"),
        (
            "SNOWFLAKE://ACME-EU/",
            '"ANALYTICS"."PUBLIC"."CONTACTS"',
            "warehouse:public.contacts",
        ),
        (SNOWFLAKE, 'analytics.public."contacts"', 'warehouse:public."contacts"'),
        (SNOWFLAKE, "other_db.public.contacts", "warehouse:other_db.public.contacts"),
        ("postgresql://erp-db", "erp.Public.Customers", "erp:erp.public.customers"),
        (
            "postgres://user:secret@erp-db:5432/",
            "erp.public.customers",
            "erp:erp.public.customers",
        ),
        (
            "postgres://erp-db:5432",
            'erp.public."Customers"',
            'erp:erp.public."Customers"',
        ),
        ("postgres://other:5433", "customers", "postgres-other-5433:public.customers"),
        ("food_delivery", "PUBLIC.Customers", "warehouse:public.customers"),
        ("s3://acme-lake", "Raw/Contacts.parquet", "s3-acme-lake:Raw/Contacts.parquet"),
        ("bigquery", "Project.Dataset.Table", "bigquery:Project.Dataset.Table"),
        (SF, "Contact", "salesforce:Contact"),
    ],
)
def test_dataset_names_are_normalised(namespace: str, name: str, expected: str) -> None:
    namer = namer_from_settings(NAMESPACES)
    assert namer.dataset(namespace, name).name == expected


def _b13_events() -> list[dict]:
    """DSR-0113: Spark writes a lake path, dbt reads the table, an alias later."""
    spark_run = str(uuid.uuid4())
    lake = ("s3://acme-lake", "warehouse/contacts")
    return [
        _event(
            "START",
            run_id=spark_run,
            job=_job("spark", "load_contacts"),
            inputs=[_ds(SF, "Contact")],
        ),
        _event(
            "COMPLETE",
            run_id=spark_run,
            job=_job("spark", "load_contacts"),
            outputs=[_ds(*lake)],
        ),
        _event(
            job=_job("dbt", "ltv"),
            inputs=[_ds(SNOWFLAKE, "analytics.public.contacts")],
            outputs=[_ds(SNOWFLAKE, "ANALYTICS.MARTS.LTV")],
        ),
        _event(
            "DATASET",
            dataset=_ds(
                *lake,
                symlinks={
                    "identifiers": [
                        {
                            "namespace": SNOWFLAKE,
                            "name": "ANALYTICS.PUBLIC.CONTACTS",
                            "type": "TABLE",
                        }
                    ]
                },
            ),
        ),
    ]


def _reachable(estate: str) -> set[str]:
    with ledger.session() as db:
        graph = lineage.build_graph(db, estate)
    return (
        nx.descendants(graph, "salesforce:Contact")
        if "salesforce:Contact" in graph
        else set()
    )


def test_alias_merges_lineage_whichever_arrives_first(any_ledger, estate) -> None:
    events = _b13_events()
    _import(
        dataclasses.replace(estate, estate="no-alias"),
        [lineage.parse_events(json.dumps(e), "b13")[0] for e in events[:3]],
    )
    assert _reachable("no-alias") == {"s3-acme-lake:warehouse/contacts"}

    seen = []
    for number, order in enumerate(itertools.permutations(range(len(events)))):
        intake = dataclasses.replace(estate, estate=f"order-{number}")
        entries = [lineage.parse_events(json.dumps(events[i]), "b13")[0] for i in order]
        report = _import(intake, entries)
        assert report.rejected == []
        seen.append(_reachable(intake.estate))
    assert len(seen) == 24
    assert all(found == seen[0] for found in seen)
    assert seen[0] == {"warehouse:public.contacts", "warehouse:marts.ltv"}


def test_where_reports_a_copy_under_its_canonical_name(estate) -> None:
    from lethe.runtime import current

    vault = current().vault
    _import(estate, [lineage.parse_events(json.dumps(_b13_events()[3]), "b13")[0]])
    with ledger.session() as db:
        lineage.record_discovered(
            db,
            vault,
            ESTATE,
            "s3-acme-lake:warehouse/contacts",
            ["k1"],
            identity_kind="email",
            identity_digest="digest-1",
        )
        found = lineage.where(db, ESTATE, ["digest-1"])
        names = lineage.aliases_of(db, ESTATE, ["warehouse:public.contacts"])
    assert [h.dataset for h in found] == ["warehouse:public.contacts"]
    assert names == {"warehouse:public.contacts", "s3-acme-lake:warehouse/contacts"}


# Defects (B12) --------------------------------------------------------------


def _b12_events() -> list[dict]:
    return [
        _event(
            job=_job(
                "erp",
                "erp_sync",
                "MERGE INTO erp_stage.customers USING raw.sf_contact ON 1=1",
            ),
            inputs=[],
            outputs=[],
        ),
        _event(
            job=_job(
                "adhoc",
                "snapshot",
                "CREATE TABLE analytics.contacts_snap_2024q4 AS "
                "SELECT * FROM raw.sf_contact",
            ),
            inputs=[_ds(SNOWFLAKE, "raw.sf_contact")],
            outputs=[],
        ),
        _event(
            job=_job(
                "bi", "report", "SELECT count(*) FROM raw.sf_contact -- no INSERT"
            ),
            inputs=[_ds(SNOWFLAKE, "raw.sf_contact")],
            outputs=[],
        ),
    ]


def test_complete_writing_run_without_outputs_is_a_defect(any_ledger, estate) -> None:
    entries = [
        lineage.parse_events(json.dumps(e), "b12.json")[0] for e in _b12_events()
    ]

    report = _import(estate, entries)

    assert report.stored == 3 and report.flow_edges == 0
    assert sorted(d.job for d in report.defects) == ["adhoc.snapshot", "erp.erp_sync"]
    by_job = {d.job: d for d in report.defects}
    assert by_job["erp.erp_sync"].origin == "b12.json#0"
    assert "MERGE INTO" in by_job["erp.erp_sync"].detail
    assert "warehouse:raw.sf_contact" in by_job["adhoc.snapshot"].detail
    with ledger.session() as db:
        assert len(lineage.list_defects(db, ESTATE)) == 2


def test_outputs_arriving_late_resolve_the_defect(estate) -> None:
    run_id = str(uuid.uuid4())
    job = _job("erp", "erp_sync", "MERGE INTO erp_stage.customers USING raw.sf_contact")
    complete = _event(run_id=run_id, job=job)
    start = _event(
        "START",
        run_id=run_id,
        job=job,
        inputs=[_ds(SNOWFLAKE, "raw.sf_contact")],
        outputs=[_ds("postgres://erp-db:5432", "erp.erp_stage.customers")],
    )

    first = _import(estate, [Entry("late", 0, complete)])
    second = _import(estate, [Entry("late", 1, start)])

    assert len(first.defects) == 1 and second.flow_edges == 1
    with ledger.session() as db:
        assert lineage.list_defects(db, ESTATE) == []
        assert len(lineage.list_defects(db, ESTATE, include_resolved=True)) == 1
    assert set(_edges()) == {
        ("warehouse:raw.sf_contact", "erp:erp.erp_stage.customers")
    }


def test_a_job_that_wrote_before_is_a_writer_without_sql(estate) -> None:
    job = _job("spark", "nightly")
    wrote = _event(
        job=job, inputs=[_ds(SF, "Contact")], outputs=[_ds(SNOWFLAKE, "raw.sf_contact")]
    )
    silent = _event(job=job, inputs=[_ds(SF, "Contact")], outputs=[])

    report = _import(estate, [Entry("x", 0, silent), Entry("x", 1, wrote)])

    assert [d.origin for d in report.defects] == ["x#0"]
    assert "another run of this job" in report.defects[0].detail


# HTTP ---------------------------------------------------------------------


def test_http_endpoint_stores_valid_and_refuses_invalid_events(estate) -> None:
    valid = _event(
        job=_job("dbt", "ltv"),
        inputs=[_ds(SNOWFLAKE, "public.contacts")],
        outputs=[_ds(SNOWFLAKE, "marts.ltv")],
    )
    invalid = {k: v for k, v in valid.items() if k != "schemaURL"}
    with EmulatorServer(create_app()) as server:
        url = f"{server.base_url}/api/v1/lineage"
        created = httpx.post(url, json=valid)
        again = httpx.post(url, json=valid)
        refused = httpx.post(url, json=invalid)
        not_json = httpx.post(
            url, content=b"{not json", headers={"content-type": "application/json"}
        )
        array = httpx.post(url, json=[valid])
        zipped = httpx.post(
            url,
            content=gzip.compress(json.dumps(_event(job=_job("dbt", "z"))).encode()),
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )

    assert (created.status_code, created.content) == (201, b"")
    assert again.status_code == 201
    assert refused.status_code == 422
    assert refused.json()["problems"] == [
        {"path": "/schemaURL", "message": "is required"}
    ]
    assert "/schemaURL" in refused.json()["error"]
    assert not_json.status_code == 400 and array.status_code == 400
    assert zipped.status_code == 201
    assert _counts()["OpenLineageEvent"] == 2
    assert set(_edges()) == {("warehouse:public.contacts", "warehouse:marts.ltv")}


def test_http_lenient_app_accepts_a_time_without_zone(estate) -> None:
    event = _event(job=_job("dbt", "ltv"))
    event["eventTime"] = "2026-12-01T02:00:00"
    with EmulatorServer(create_app(lenient=True)) as server:
        answer = httpx.post(f"{server.base_url}/api/v1/lineage", json=event)
    assert answer.status_code == 201


# CLI ----------------------------------------------------------------------

cli = typer.Typer()
cli.command("import")(lineage_import.import_events)
cli.command("defects")(lineage_import.defects)
runner = CliRunner()


def test_cli_import_exits_0_when_every_event_is_stored(estate, tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(_seed_events())

    result = runner.invoke(cli, ["import", str(seed)])

    assert result.exit_code == 0, result.output
    assert (
        "stored 26 events (0 seen before, 0 rejected): 14 new flow edges"
        in result.stdout
    )
    again = runner.invoke(cli, ["import", str(seed)])
    assert again.exit_code == 0 and "stored 0 events (26 seen before" in again.stdout


def test_cli_import_exits_2_naming_file_index_and_field(estate, tmp_path: Path) -> None:
    good = _event(
        job=_job("dbt", "ltv"),
        inputs=[_ds(SNOWFLAKE, "public.contacts")],
        outputs=[_ds(SNOWFLAKE, "marts.ltv")],
    )
    bad = _event(
        job=_job("dbt", "bad"),
        inputs=[_ds(SNOWFLAKE, "public.contacts")],
        outputs=[_ds(SNOWFLAKE, "marts.bad")],
    )
    bad["run"]["runId"] = "{{ any(result) }}"
    mixed = tmp_path / "mixed.ndjson"
    mixed.write_text("\n".join(json.dumps(e) for e in (good, bad)) + "\n")
    no_zone = MARQUEZ_TESTS / "event_required_no_timezone.json"

    result = runner.invoke(cli, ["import", str(mixed), str(no_zone)])

    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("rejected")]
    assert lines == [
        f"rejected {mixed}#1: /run/runId: '{{{{ any(result) }}}}' is not a valid uuid",
        f"rejected {no_zone}#0: /eventTime: '2020-12-28T19:51:01.641499' is not a "
        "valid date-time",
    ]
    assert "stored 1 events (0 seen before, 2 rejected)" in result.stdout
    assert set(_edges()) == {("warehouse:public.contacts", "warehouse:marts.ltv")}
    assert _counts()["OpenLineageRun"] == 1


def test_cli_lenient_and_defects(estate, tmp_path: Path) -> None:
    b12 = tmp_path / "b12.json"
    b12.write_text(json.dumps(_b12_events()))
    no_zone = MARQUEZ_TESTS / "event_required_no_timezone.json"

    result = runner.invoke(cli, ["import", "--lenient", str(b12), str(no_zone)])
    listed = runner.invoke(cli, ["defects", "--json"])

    assert result.exit_code == 0, result.output
    assert (
        f"warning {no_zone}#0: /eventTime: has no time zone; assumed UTC"
        in result.stderr
    )
    assert f"defect {b12}#0: COMPLETE run of job erp.erp_sync" in result.stderr
    assert listed.exit_code == 0
    assert [d["origin"] for d in json.loads(listed.stdout)["defects"]] == [
        f"{b12}#0",
        f"{b12}#1",
    ]


def test_cli_import_refuses_an_unreadable_file_before_storing(
    estate, tmp_path: Path
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_event(job=_job("dbt", "ltv"))))

    result = runner.invoke(cli, ["import", str(good), str(tmp_path / "missing.json")])

    assert result.exit_code == 1 and "missing.json" in result.stderr
    assert _counts()["OpenLineageEvent"] == 0
