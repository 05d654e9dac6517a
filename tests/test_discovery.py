"""The fideslang discovery scan: Fides annotations say which columns identify a
person; the warehouse connector finds a person's keys there; the erasure flow
records them as copies learned by discovery and erases them.

The real annotations are read in place from ../shared/data/fides. The tables
are built from what the annotation declares, filled with Faker rows and one
canary person written the ways people write addresses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from faker import Faker
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlmodel import select as sql_select
from typer.testing import CliRunner

from connectors.warehouse import WarehouseConnector
from lethe.errors import ConfigError
from lethe.estate.config import load_estate
from lethe.fides import identity_kind, is_known_category, load_annotations
from lethe.identity import normalize_email
from tests.conftest import SAMPLE_DATA, postgres_database
from tests.helpers import Estate

FIDES = SAMPLE_DATA / "fides"
POSTGRES_EXAMPLE = FIDES / "dataset" / "postgres_example_test_dataset.yml"
UNKNOWN_CATEGORY = FIDES / "fideslang-taxonomy" / "demo_dataset.yml"
needs_fides = pytest.mark.skipif(
    not POSTGRES_EXAMPLE.exists(), reason=f"no Fides sample data at {FIDES}"
)
CANARY = "canary.q7c1@example.net"


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        yield from postgres_database()


# -- the annotations -----------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "known"),
    [
        ("user.contact.email", True),
        ("user.contact.address.state", True),
        ("user", True),
        ("user.contact.state", False),  # the demo dataset's stale key
        ("", False),
    ],
)
def test_is_known_category_follows_the_fideslang_taxonomy(
    category: str, known: bool
) -> None:
    assert is_known_category(category) is known


@pytest.mark.parametrize(
    ("category", "kind"),
    [
        ("user.contact.email", "email"),
        ("user.contact.phone_number", "phone"),
        ("user.contact.emailish", None),  # a sibling, not a descendant
        ("user.contact.address.street", None),
        ("user.contact", None),  # broader than an identity
    ],
)
def test_identity_kind_covers_a_category_and_its_descendants(
    category: str, kind: str | None
) -> None:
    assert identity_kind(category) == kind


@needs_fides
def test_fides_annotations_of_the_postgres_example_name_identifying_columns() -> None:
    found = load_annotations(POSTGRES_EXAMPLE)

    by_table = {t.collection: (t.key, t.emails, t.phones) for t in found.tables}
    assert by_table == {
        "customer": ("id", ("email",), ()),
        "employee": ("id", ("email",), ()),
        "report": ("id", ("email",), ()),
        # alt_email by category, email by `identity: email` alone
        "service_request": ("id", ("alt_email", "email"), ()),
        # no primary key and no id: the address is the key
        "visit": ("email", ("email",), ()),
    }
    # address, login, order_item, orders, payment_card, product
    assert found.skipped == 6 and found.nested == 0


@needs_fides
def test_unknown_data_category_names_file_line_collection_and_field() -> None:
    with pytest.raises(ConfigError) as raised:
        load_annotations(UNKNOWN_CATEGORY)

    message = str(raised.value)
    assert message.startswith(f"{UNKNOWN_CATEGORY}:31: ")
    assert "collection 'users', field 'state'" in message
    assert "'user.contact.state'" in message


def _estate_file(tmp_path: Path, system: dict[str, Any]) -> Path:
    path = tmp_path / "estate.yaml"
    systems = {"salesforce": {"kind": "salesforce"}, "warehouse": system}
    path.write_text(yaml.safe_dump({"name": "t", "systems": systems}))
    return path


@pytest.mark.parametrize(
    ("fides_datasets", "kind", "content", "message"),
    [
        (["missing.yml"], "warehouse", None, r"missing\.yml does not exist"),
        (["bad.yml"], "warehouse", "dataset: [\n  {fides_key: x\n", r"bad\.yml:3: "),
        (["plain.yml"], "warehouse", "collections: []\n", r"holds 'dataset:'"),
        ("bad.yml", "warehouse", "", r"fides_datasets lists Fides dataset files"),
        (["bad.yml"], "segment", "", r"for warehouse systems only"),
        (
            ["bad.yml"],
            "warehouse",
            "dataset:\n- fides_key: d\n  collections:\n  - name: c\n    fields:\n"
            "    - {name: e, data_categories: [user.contact.mail]}\n",
            r"bad\.yml:6: collection 'c', field 'e': unknown data category",
        ),
    ],
)
def test_estate_fides_datasets_are_checked_when_the_estate_loads(
    tmp_path: Path,
    fides_datasets: Any,
    kind: str,
    content: str | None,
    message: str,
) -> None:
    if content is not None:
        (tmp_path / "bad.yml").write_text(content)
        (tmp_path / "plain.yml").write_text(content)
    system = {"kind": kind, "url": "sqlite://", "fides_datasets": fides_datasets}
    path = _estate_file(tmp_path, system)

    with pytest.raises(ConfigError, match=message):
        load_estate(path)


@needs_fides
def test_estate_fides_datasets_resolve_relative_to_the_estate_file(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "estate"
    folder.mkdir()
    absolute = str(POSTGRES_EXAMPLE)
    system = {"kind": "warehouse", "url": "sqlite://", "tables": {}}
    system["fides_datasets"] = ["../local.yml", absolute]
    (tmp_path / "local.yml").write_text(POSTGRES_EXAMPLE.read_text())
    path = _estate_file(folder, system)

    estate = load_estate(path)

    assert estate.systems["warehouse"]["fides_datasets"] == [
        str((folder / "../local.yml").absolute()),
        absolute,
    ]


# -- the scan over real tables -------------------------------------------------


@dataclass
class Planted:
    """The annotated tables, filled; ``canary`` holds the keys to be found."""

    engine: Engine
    tables: dict[str, Table]
    canary: dict[str, list[str]] = field(default_factory=dict)


def _columns(collection: Any) -> list[Column[Any]]:
    columns = []
    for item in collection.fields:
        numeric = item.name == "id" or item.name.endswith("_id")
        primary = bool(item.fides_meta and item.fides_meta.primary_key)
        kind = Integer() if numeric else String(255)
        columns.append(Column(item.name, kind, primary_key=primary))
    return columns


def _fake_row(fake: Faker, table: Table, number: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column in table.columns:
        if column.primary_key:
            row[column.name] = number
        elif isinstance(column.type, Integer):
            row[column.name] = fake.random_int(1, 500)
        elif "email" in column.name:
            row[column.name] = fake.unique.email()
        else:
            row[column.name] = fake.word()
    return row


# How the canary is written in each table (stored spellings vary), and decoys
# the loose SQL match lets through but the exact comparison must refuse.
CANARY_ROWS: dict[str, list[dict[str, Any]]] = {
    "customer": [{"email": f"  {CANARY.upper()}\u00a0"}],
    "employee": [{"email": CANARY}],
    "report": [{"email": "Canary.Q7C1@Example.Net"}, {"email": f"\u200b{CANARY}"}],
    "service_request": [{"alt_email": f"\t{CANARY}", "email": "desk@example.org"}],
    "visit": [{"email": f"{CANARY.title()} "}],
}
DECOY_ROWS: dict[str, list[dict[str, Any]]] = {
    "customer": [{"email": f"x{CANARY}"}],
    "employee": [{"email": CANARY.replace("@", "+news@")}],
    "visit": [{"email": f"{CANARY}.org"}],
    "service_request": [{"alt_email": None, "email": f"re-{CANARY}"}],
}


def _plant(url: str) -> Planted:
    from fideslang.models import Dataset

    raw = yaml.safe_load(POSTGRES_EXAMPLE.read_text())["dataset"][0]
    dataset = Dataset(**raw)
    metadata = MetaData()
    tables = {
        c.name: Table(c.name, metadata, *_columns(c)) for c in dataset.collections
    }
    engine = create_engine(url)
    metadata.create_all(engine)
    planted = Planted(engine=engine, tables=tables)
    fake = Faker()
    fake.seed_instance(5)
    with engine.begin() as db:
        for name, table in tables.items():
            rows = [_fake_row(fake, table, n) for n in range(1, 16)]
            for number, extra in enumerate(CANARY_ROWS.get(name, []), start=100):
                rows.append({**_fake_row(fake, table, number), **extra})
                key = extra["email"] if name == "visit" else str(number)
                planted.canary.setdefault(name, []).append(key)
            for number, extra in enumerate(DECOY_ROWS.get(name, []), start=200):
                rows.append({**_fake_row(fake, table, number), **extra})
            db.execute(insert(table), rows)
    return planted


def _scanner(url: str) -> WarehouseConnector:
    """A warehouse connector whose only datasets are the real Fides example's."""
    return WarehouseConnector(
        system="warehouse", url=url, tables={}, fides_datasets=[str(POSTGRES_EXAMPLE)]
    )


@needs_fides
def test_scan_finds_exactly_the_canarys_keys_in_each_annotated_table(
    warehouse_url: str,
) -> None:
    planted = _plant(warehouse_url)
    connector = _scanner(warehouse_url)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "LIKE" in statement.upper():
            statements.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        found = connector.find_by_identity(emails=[f" {CANARY.upper()} "])
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
        connector.close()

    assert found == {name: sorted(keys) for name, keys in planted.canary.items()}
    # one parameterised statement per annotated table, the address bound
    assert len(statements) == len(connector.searchable_datasets) == 5
    assert not any("canary" in s.lower() for s in statements)
    # everyone else in the same tables stays unfound
    with planted.engine.connect() as db:
        total = db.execute(text("SELECT count(*) FROM customer")).scalar_one()
    assert total == 15 + len(CANARY_ROWS["customer"]) + len(DECOY_ROWS["customer"])
    planted.engine.dispose()


@needs_fides
def test_scan_for_nobody_finds_nothing_and_erases_what_it_found(
    warehouse_url: str,
) -> None:
    planted = _plant(warehouse_url)
    connector = _scanner(warehouse_url)
    try:
        assert connector.find_by_identity(emails=["nobody@example.org"]) == {}
        found = connector.find_by_identity(emails=[CANARY])
        outcome = connector.erase(found, idempotency_key="dsr-test:warehouse:delete")
        again = connector.find_by_identity(emails=[CANARY])
        evidence = connector.verify(found)
    finally:
        connector.close()

    assert outcome.records_affected == sum(len(k) for k in planted.canary.values())
    assert again == {} and evidence.verified
    with planted.engine.connect() as db:
        left = db.execute(select(planted.tables["visit"].c.email)).scalars().all()
    assert len(left) == 15 + len(DECOY_ROWS["visit"])
    assert all(normalize_email(v) != CANARY for v in left if "@" in v)
    planted.engine.dispose()


def _phone_annotation(schema: str | None) -> str:
    dataset: dict[str, Any] = {
        "fides_key": "crm",
        "collections": [
            {
                "name": "callers",
                "fields": [
                    {"name": "caller_id", "fides_meta": {"primary_key": True}},
                    {
                        "name": "mobile",
                        "data_categories": ["user.contact.phone_number"],
                    },
                    {"name": "note", "data_categories": ["system.operations"]},
                ],
            }
        ],
    }
    if schema:
        dataset["fides_meta"] = {"namespace": {"schema": schema}}
    return yaml.safe_dump({"dataset": [dataset]})


def test_scan_matches_phone_numbers_however_they_are_punctuated(
    warehouse_url: str, tmp_path: Path
) -> None:
    engine = create_engine(warehouse_url)
    schema = "crm" if engine.dialect.name == "postgresql" else None
    if schema:
        with engine.begin() as db:
            db.execute(text("CREATE SCHEMA crm"))
    path = tmp_path / "crm.fides.yml"
    path.write_text(_phone_annotation(schema))
    callers = Table(
        "callers",
        MetaData(),
        Column("caller_id", String(8), primary_key=True),
        Column("mobile", String(40)),
        Column("note", String(40)),
        schema=schema,
    )
    callers.metadata.create_all(engine)
    numbers = {
        "c1": "+1 (555) 555-0199",
        "c2": "555.555.0199",
        "c3": "+1 555 555 0198",
        "c4": "not a number",
        "c5": None,
    }
    with engine.begin() as db:
        db.execute(
            insert(callers),
            [{"caller_id": k, "mobile": v, "note": "x"} for k, v in numbers.items()],
        )
    engine.dispose()
    connector = WarehouseConnector(
        system="warehouse", url=warehouse_url, tables={}, fides_datasets=[str(path)]
    )
    try:
        found = connector.find_by_identity(phones=["+15555550199"])
    finally:
        connector.close()

    dataset = f"{schema}.callers" if schema else "callers"
    assert connector.searchable_datasets == (dataset,)
    assert found == {dataset: ["c1", "c2"]}


def test_scan_uses_the_configured_dataset_and_key_of_an_annotated_table(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = create_engine(url)
    with engine.begin() as db:
        db.execute(
            text("CREATE TABLE raw_people (pk TEXT PRIMARY KEY, id TEXT, mail TEXT)")
        )
        db.execute(
            text("INSERT INTO raw_people VALUES ('k1', 'i1', :mail)"), {"mail": CANARY}
        )
    engine.dispose()
    path = tmp_path / "w.fides.yml"
    path.write_text(
        "dataset:\n- fides_key: w\n  collections:\n  - name: raw_people\n"
        "    fields:\n    - {name: id}\n"
        "    - {name: mail, fides_meta: {identity: email}}\n    - {name: pk}\n"
    )
    connector = WarehouseConnector(
        system="warehouse",
        url=url,
        tables={"raw.people": {"table": "raw_people", "key_column": "pk"}},
        fides_datasets=[str(path)],
    )
    try:
        found = connector.find_by_identity(emails=[CANARY])
    finally:
        connector.close()

    assert found == {"raw.people": ["k1"]}  # the estate's key, not the annotation's


# -- end to end: a copy only the scan finds ------------------------------------


def _newsletter_rows(e: Estate) -> list[str]:
    engine = create_engine(e.settings["systems"]["warehouse"]["url"])
    with engine.connect() as db:
        rows = db.execute(text("SELECT email FROM crm_newsletter")).scalars().all()
    engine.dispose()
    return list(rows)


def _discovered() -> list[tuple[str, str]]:
    from lethe import ledger
    from lineage.models import Copy

    with ledger.session() as db:
        rows = db.exec(
            sql_select(Copy.dataset, Copy.key_digest).where(
                Copy.learned_from == "discovery"
            )
        ).all()
    return sorted((str(d), str(k)) for d, k in rows)


def _where(email: str) -> dict[str, list[str]]:
    from lethe.cli import app

    result = CliRunner().invoke(app, ["lineage", "where", "--email", email, "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    holdings = json.loads(result.stdout)["holdings"]
    return {f"{h['system']}:{h['dataset']}": h["learned_from"] for h in holdings}


@pytest.mark.e2e
def test_a_copy_only_the_scan_finds_is_erased_end_to_end(estate: Estate) -> None:
    from erasure import requests
    from flows.capture import capture_lineage
    from flows.erasure import erase_requests
    from flows.search import search_systems

    e = estate
    email = e.canary.email or ""
    canary = normalize_email(email)
    newsletter_before = _newsletter_rows(e)
    assert sum(normalize_email(r) == canary for r in newsletter_before) == 1
    capture_lineage()
    assert "warehouse:crm.newsletter" not in _where(email)  # lineage alone

    request = requests.submit(email=email, regulation="gdpr")
    search_systems.fn([request.id])
    first = _discovered()
    search_systems.fn([request.id])  # the scan run twice records nothing new

    assert _discovered() == first
    where = _where(email)
    assert where["warehouse:crm.newsletter"] == ["discovery scan"]
    assert "discovery scan" in where["warehouse:raw.sf_contact"]
    assert "manifest of nightly_extract" in where["warehouse:raw.sf_contact"]
    assert "identity search" in where["erp:A_BusinessPartner"]  # SAP's, as before

    assert erase_requests([request.id]) == {request.id: "completed"}

    assert _discovered() == first  # the flow's own search added no duplicate
    warehouse = {s["system"]: s for s in requests.describe(request.id)["systems"]}
    assert warehouse["warehouse"]["observed"]["crm.newsletter"] == 0
    newsletter_after = _newsletter_rows(e)
    assert len(newsletter_after) == len(newsletter_before) - 1
    assert all(normalize_email(r) != canary for r in newsletter_after)
    assert "warehouse:crm.newsletter" not in _where(email)


def test_sample_estate_annotation_is_valid_and_tags_the_newsletter(
    tmp_path: Path,
) -> None:
    from lethe.estate import jobs

    path = tmp_path / "warehouse.fides.yml"
    path.write_text(yaml.safe_dump(jobs.warehouse_annotations()))

    found = {t.collection: t for t in load_annotations(path).tables}

    assert set(found) == {str(t.name) for t in jobs.metadata.sorted_tables}
    assert found["crm_newsletter"].key == "subscriber_id"
    assert found["raw_sf_contact"].phones == ("phone",)
    assert all(t.emails == ("email",) for t in found.values())
