"""WarehouseConnector against real databases: SQLite files, and PostgreSQL when
``LETHE_TEST_POSTGRES_URL`` points at a server (scripts/test.sh starts one).

Each PostgreSQL test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import sqlite3
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    Engine,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    create_engine,
    select,
    text,
)
from sqlalchemy.engine import make_url

from connectors.base import SyncConnector
from connectors.warehouse import WarehouseConnector
from lethe.errors import ConfigError, ConnectorError, TransientConnectorError

CANARY_EMAIL = "dana.canary.7f3a9@example.org"
CANARY_KEY = "003CANARY000001AAA"
OTHER_KEY = "003BYSTAND00001AAA"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    url = os.environ.get("LETHE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("LETHE_TEST_POSTGRES_URL is not set (scripts/test.sh sets it)")
    return url


@dataclass
class Warehouse:
    """A test estate: raw + mart tables, plus tables a test adds later."""

    url: str
    engine: Engine
    metadata: MetaData
    schema: str | None

    def name(self, table: str) -> str:
        return f"{self.schema}.{table}" if self.schema else table

    def table(self, name: str) -> Table:
        return self.metadata.tables[self.name(name)]

    def connector(self, **options: Any) -> WarehouseConnector:
        tables = {
            "raw.sf_contact": {
                "table": self.name("raw_sf_contact"),
                "key_column": "sf_id",
            },
            "mart.customer_summary": {
                "table": self.name("mart_customer_summary"),
                "key_column": "sf_id",
            },
            "raw.sf_case": {
                "table": self.name("raw_sf_case"),
                "key_column": "contact_id",
            },
            "erp.vendor": {
                "table": self.name("erp_vendor"),
                "key_column": "vendor_key",
            },
        }
        return WarehouseConnector(
            system="warehouse", url=self.url, tables=tables, **options
        )

    def rows(self, name: str) -> list[tuple[Any, ...]]:
        t = self.table(name)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key))]

    def checksum(self, name: str) -> tuple[int, str]:
        rows = self.rows(name)
        return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.fixture
def warehouse(db_url: str) -> Iterator[Warehouse]:
    url = make_url(db_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    engine = create_engine(url)
    schema = None
    if engine.dialect.name == "postgresql":
        schema = f"lethe_{secrets.token_hex(4)}"
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        metadata = MetaData(schema=schema)
        _estate(metadata)
        metadata.create_all(engine)
        _seed(engine, metadata, schema)
        yield Warehouse(db_url, engine, metadata, schema)
    finally:
        if schema:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def _estate(metadata: MetaData) -> None:
    Table(
        "raw_sf_contact",
        metadata,
        Column("sf_id", String(18), primary_key=True),
        Column("email", String(80), nullable=False, unique=True),
        Column("last_name", String(40)),
        Column("is_deleted", Boolean, nullable=False, default=False),
    )
    Table(
        "mart_customer_summary",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("sf_id", String(18), nullable=False),
        Column("email", String(80)),
        Column("lifetime_value", Numeric(12, 2)),
    )


def _seed(engine: Engine, metadata: MetaData, schema: str | None) -> None:
    contacts = [
        {"sf_id": CANARY_KEY, "email": CANARY_EMAIL, "last_name": "Canary"},
        {"sf_id": OTHER_KEY, "email": "other@example.org", "last_name": "Other"},
    ] + [
        {
            "sf_id": f"003BULK{i:08d}AAA",
            "email": f"bystander-{i:04d}@example.org",
            "last_name": None,
        }
        for i in range(40)
    ]
    summaries = [
        {"id": 1, "sf_id": CANARY_KEY, "email": CANARY_EMAIL, "lifetime_value": 10},
        {"id": 2, "sf_id": CANARY_KEY, "email": CANARY_EMAIL, "lifetime_value": 5},
        {
            "id": 3,
            "sf_id": OTHER_KEY,
            "email": "other@example.org",
            "lifetime_value": 7,
        },
    ]
    prefix = f"{schema}." if schema else ""
    with engine.begin() as conn:
        conn.execute(metadata.tables[f"{prefix}raw_sf_contact"].insert(), contacts)
        conn.execute(
            metadata.tables[f"{prefix}mart_customer_summary"].insert(), summaries
        )


def _add_case_table(wh: Warehouse) -> None:
    """A child of raw_sf_contact with ON DELETE RESTRICT semantics."""
    case = Table(
        "raw_sf_case",
        wh.metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("contact_id", String(18), nullable=False),
        Column("subject", String(80)),
        ForeignKeyConstraint(
            ["contact_id"], [wh.table("raw_sf_contact").c.sf_id], name="fk_case_contact"
        ),
    )
    case.create(wh.engine)
    with wh.engine.begin() as conn:
        conn.execute(
            case.insert(),
            [
                {"id": 1, "contact_id": CANARY_KEY, "subject": "refund"},
                {"id": 2, "contact_id": CANARY_KEY, "subject": "address"},
                {"id": 3, "contact_id": OTHER_KEY, "subject": "login"},
            ],
        )


def _add_loyalty_table(wh: Warehouse) -> None:
    """Added by a later migration; not in the plan; references a mart row."""
    loyalty = Table(
        "loyalty_enrolment",
        wh.metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("summary_id", Integer, nullable=False),
        ForeignKeyConstraint(
            ["summary_id"],
            [wh.table("mart_customer_summary").c.id],
            name="fk_loyalty_summary",
        ),
    )
    loyalty.create(wh.engine)
    with wh.engine.begin() as conn:
        conn.execute(loyalty.insert(), [{"id": 1, "summary_id": 2}])


def _add_vendor_table(wh: Warehouse, *checks: CheckConstraint) -> Table:
    vendor = Table(
        "erp_vendor",
        wh.metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("vendor_key", String(18), nullable=False),
        Column("email", String(80), nullable=False),
        Column("contact_email", String(20), nullable=False),
        Column("phone", String(20), nullable=False),
        Column("birth_date", Date, nullable=True),
        Column("credit_limit", Integer, nullable=False),
        Column("onboarded_on", Date, nullable=False),
        CheckConstraint("email LIKE '%_@_%'", name="ck_vendor_email"),
        *checks,
    )
    vendor.create(wh.engine)
    row = {
        "email": CANARY_EMAIL,
        "contact_email": "d.c@example.org",
        "phone": "+14155550123",
        "birth_date": date(1985, 4, 2),
        "credit_limit": 5000,
        "onboarded_on": date(2021, 6, 1),
    }
    with wh.engine.begin() as conn:
        conn.execute(
            vendor.insert(),
            [
                {"id": 1, "vendor_key": CANARY_KEY, **row},
                {"id": 2, "vendor_key": OTHER_KEY, **row, "email": "o@example.org"},
            ],
        )
    return vendor


SUBJECT = {"raw.sf_contact": [CANARY_KEY], "mart.customer_summary": [CANARY_KEY]}


def test_warehouse_connector_is_a_sync_connector(warehouse: Warehouse) -> None:
    connector = warehouse.connector()

    assert isinstance(connector, SyncConnector)
    assert connector.capabilities.hard_delete
    assert connector.capabilities.batch_cap == 1000
    connector.close()


def test_erase_removes_raw_and_mart_rows_and_leaves_bystanders(
    warehouse: Warehouse,
) -> None:
    connector = warehouse.connector()
    raw_before = warehouse.rows("raw_sf_contact")
    mart_before = warehouse.rows("mart_customer_summary")

    assert connector.locate(SUBJECT).counts == {
        "raw.sf_contact": 1,
        "mart.customer_summary": 2,
    }
    outcome = connector.erase(SUBJECT, idempotency_key="att-1")
    evidence = connector.verify(SUBJECT)
    connector.close()

    assert (outcome.status, outcome.action, outcome.records_affected) == (
        "done",
        "deleted",
        3,
    )
    expected = (
        "rows deleted; freed pages zeroed (SQLite secure_delete)"
        if warehouse.schema is None
        else "rows deleted; VACUUM run"
    )
    assert outcome.detail == expected
    assert evidence.verified
    assert evidence.observed == {"raw.sf_contact": 0, "mart.customer_summary": 0}
    assert warehouse.rows("raw_sf_contact") == [
        r for r in raw_before if r[0] != CANARY_KEY
    ]
    assert warehouse.rows("mart_customer_summary") == [
        r for r in mart_before if r[1] != CANARY_KEY
    ]


def test_erase_blocked_by_foreign_key_outside_plan_changes_nothing(
    warehouse: Warehouse,
) -> None:
    _add_loyalty_table(warehouse)
    connector = warehouse.connector()
    before = [
        warehouse.checksum(t) for t in ("raw_sf_contact", "mart_customer_summary")
    ]

    # raw.sf_contact is deleted first; the mart delete then fails.
    with pytest.raises(ConnectorError) as caught:
        connector.erase(SUBJECT, idempotency_key="att-1")
    located = connector.locate(SUBJECT).counts
    connector.close()

    message = str(caught.value)
    assert "fk_loyalty_summary" in message
    assert "loyalty_enrolment" in message
    assert "rolled back" in message
    assert not isinstance(caught.value, TransientConnectorError)
    assert CANARY_KEY not in message and CANARY_EMAIL not in message
    assert located == {"raw.sf_contact": 1, "mart.customer_summary": 2}
    assert [
        warehouse.checksum(t) for t in ("raw_sf_contact", "mart_customer_summary")
    ] == before


def test_erase_deletes_child_rows_before_parent_when_child_in_plan(
    warehouse: Warehouse,
) -> None:
    _add_case_table(warehouse)
    connector = warehouse.connector()
    keys = {"raw.sf_contact": [CANARY_KEY], "raw.sf_case": [CANARY_KEY]}

    outcome = connector.erase(keys, idempotency_key="att-1")
    evidence = connector.verify(keys)
    connector.close()

    assert outcome.records_affected == 3
    assert evidence.observed == {"raw.sf_contact": 0, "raw.sf_case": 0}
    assert [r[0] for r in warehouse.rows("raw_sf_case")] == [3]


def test_erase_deletes_soft_deleted_rows_too(warehouse: Warehouse) -> None:
    t = warehouse.table("raw_sf_contact")
    with warehouse.engine.begin() as conn:
        conn.execute(t.update().values(is_deleted=True))
    connector = warehouse.connector(physical_purge=False)

    assert connector.locate({"raw.sf_contact": [CANARY_KEY]}).total == 1
    outcome = connector.erase({"raw.sf_contact": [CANARY_KEY]}, idempotency_key="a")
    evidence = connector.verify({"raw.sf_contact": [CANARY_KEY]})
    connector.close()

    assert outcome.action == "deleted"
    assert evidence.verified
    if warehouse.schema is not None:
        assert outcome.detail == "rows deleted; VACUUM not run"
    remaining = {r[0] for r in warehouse.rows("raw_sf_contact")}
    assert CANARY_KEY not in remaining and OTHER_KEY in remaining


def test_erase_reports_already_absent_when_nothing_matches(
    warehouse: Warehouse,
) -> None:
    connector = warehouse.connector()
    keys = {"raw.sf_contact": ["003NOTHERE00001AAA"]}
    before = warehouse.checksum("raw_sf_contact")

    outcome = connector.erase(keys, idempotency_key="att-1")
    evidence = connector.verify(keys)
    connector.close()

    assert (outcome.status, outcome.action, outcome.records_affected) == (
        "done",
        "already_absent",
        0,
    )
    assert evidence.verified
    assert warehouse.checksum("raw_sf_contact") == before


def test_verify_reports_rows_still_present(warehouse: Warehouse) -> None:
    connector = warehouse.connector()

    evidence = connector.verify(SUBJECT)
    connector.close()

    assert not evidence.verified
    assert evidence.observed == {"raw.sf_contact": 1, "mart.customer_summary": 2}


def test_locate_and_erase_chunk_keys_above_batch_cap(warehouse: Warehouse) -> None:
    t = warehouse.table("mart_customer_summary")
    with warehouse.engine.begin() as conn:
        conn.execute(
            t.insert(), [{"id": 100 + i, "sf_id": f"K{i:06d}"} for i in range(1500)]
        )
    keys = [f"K{i:06d}" for i in range(2500)] + ["K000001", "K001200"]
    connector = warehouse.connector()

    located = connector.locate({"mart.customer_summary": keys})
    outcome = connector.erase({"mart.customer_summary": keys}, idempotency_key="a")
    connector.close()

    assert located.total == 1500
    assert outcome.records_affected == 1500
    assert len(warehouse.rows("mart_customer_summary")) == 3


def test_anonymise_writes_placeholders_that_fit_constraints(
    warehouse: Warehouse,
) -> None:
    _add_vendor_table(warehouse)
    connector = warehouse.connector()
    keys = {"erp.vendor": [CANARY_KEY]}
    pii = [
        "email",
        "contact_email",
        "phone",
        "birth_date",
        "credit_limit",
        "onboarded_on",
    ]
    bystander = warehouse.rows("erp_vendor")[1]

    first = connector.anonymise(keys, {"erp.vendor": pii}, idempotency_key="a")
    row = warehouse.rows("erp_vendor")[0]
    connector.anonymise(keys, {"erp.vendor": pii}, idempotency_key="b")
    again = warehouse.rows("erp_vendor")[0]
    connector.close()

    _, _, email, contact_email, phone, birth_date, credit, onboarded = row
    assert (first.action, first.records_affected) == ("anonymised", 1)
    assert re.fullmatch(r"erased-[0-9a-f]{8}@invalid\.example", email)
    assert re.fullmatch(r"[0-9a-f]{8}@x\.invalid", contact_email)
    assert phone.startswith("erased-") and len(phone) == 20
    assert (birth_date, credit, onboarded) == (None, 0, date(1970, 1, 1))
    assert again[2] != email and again[4] != phone
    assert warehouse.rows("erp_vendor")[1] == bystander


def test_anonymise_constraint_failure_rolls_back_and_names_it(
    warehouse: Warehouse,
) -> None:
    impossible = CheckConstraint("phone NOT LIKE 'erased-%'", name="ck_vendor_phone")
    _add_vendor_table(warehouse, impossible)
    connector = warehouse.connector()
    before = warehouse.checksum("erp_vendor")

    with pytest.raises(ConnectorError) as caught:
        connector.anonymise(
            {"erp.vendor": [CANARY_KEY]},
            {"erp.vendor": ["email", "phone"]},
            idempotency_key="a",
        )
    connector.close()

    message = str(caught.value)
    assert "ck_vendor_phone" in message and "erp.vendor" in message
    assert not isinstance(caught.value, TransientConnectorError)
    assert CANARY_KEY not in message and CANARY_EMAIL not in message
    assert warehouse.checksum("erp_vendor") == before


def test_errors_and_logs_never_carry_bound_values(
    warehouse: Warehouse, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    _add_loyalty_table(warehouse)
    impossible = CheckConstraint("phone NOT LIKE 'erased-%'", name="ck_vendor_phone")
    _add_vendor_table(warehouse, impossible)
    caplog.clear()
    connector = warehouse.connector()
    raised: list[BaseException] = []

    connector.locate(SUBJECT)
    with pytest.raises(ConnectorError) as blocked:
        connector.erase(SUBJECT, idempotency_key="att-1")
    raised.append(blocked.value)
    with pytest.raises(ConnectorError) as rejected:
        connector.anonymise(
            {"erp.vendor": [CANARY_KEY]},
            {"erp.vendor": ["email", "phone"]},
            idempotency_key="att-2",
        )
    raised.append(rejected.value)
    connector.erase({"raw.sf_contact": [CANARY_KEY]}, idempotency_key="att-3")
    connector.close()

    logged = [r.getMessage() for r in caplog.records]
    shown = ["".join(traceback.format_exception(e)) + repr(e) for e in raised]
    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records)
    assert any("hidden" in line for line in logged)
    for text_ in logged + shown:
        assert CANARY_KEY not in text_ and CANARY_EMAIL not in text_
    assert all(e.__context__ is None and e.__cause__ is None for e in raised)


def test_timeout_on_a_locked_table_is_transient(warehouse: Warehouse) -> None:
    connector = warehouse.connector(statement_timeout_seconds=0.2)

    with _locked(warehouse), pytest.raises(TransientConnectorError) as caught:
        connector.erase(SUBJECT, idempotency_key="att-1")
    connector.close()

    assert "erase failed" in str(caught.value)
    assert warehouse.checksum("raw_sf_contact")[0] == 42


def test_unknown_dataset_and_missing_table_raise_config_error(
    warehouse: Warehouse,
) -> None:
    connector = warehouse.connector()

    with pytest.raises(ConfigError, match="not configured"):
        connector.locate({"raw.nope": [CANARY_KEY]})
    with pytest.raises(ConfigError, match="does not exist"):
        connector.locate({"raw.sf_case": [CANARY_KEY]})  # table never created
    connector.close()


def test_unsupported_url_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="supports sqlite and postgresql"):
        WarehouseConnector(system="wh", url="mysql://u@h/db", tables={})


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_sqlite_erase_leaves_no_canary_bytes_in_the_file(
    tmp_path: Path, journal_mode: str
) -> None:
    path = tmp_path / "canary.db"
    _write_canary_db(path, journal_mode)
    connector = WarehouseConnector(
        system="wh",
        url=f"sqlite:///{path}",
        tables={"raw.sf_contact": {"table": "raw_sf_contact", "key_column": "sf_id"}},
    )

    outcome = connector.erase({"raw.sf_contact": [CANARY_KEY]}, idempotency_key="a")
    # Read while the connector's connections are open: closing the last one
    # would checkpoint the WAL and hide a missing checkpoint.
    data = b"".join(p.read_bytes() for p in tmp_path.glob("canary.db*"))
    connector.close()

    assert outcome.records_affected == 1
    assert CANARY_EMAIL.encode() not in data and CANARY_KEY.encode() not in data
    assert b"bystander-0100@example.org" in data
    if journal_mode == "wal":
        assert outcome.detail.endswith("WAL checkpointed")


def test_sqlite_plain_delete_would_leave_canary_bytes(tmp_path: Path) -> None:
    """The premise of the test above: without secure_delete the bytes stay."""
    path = tmp_path / "plain.db"
    _write_canary_db(path, "delete")

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA secure_delete=OFF")
        conn.execute("DELETE FROM raw_sf_contact WHERE sf_id = ?", (CANARY_KEY,))

    assert CANARY_EMAIL.encode() in path.read_bytes()


def _write_canary_db(path: Path, journal_mode: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute(
        "CREATE TABLE raw_sf_contact (sf_id TEXT PRIMARY KEY, email TEXT UNIQUE)"
    )
    rows = [
        (f"003BULK{i:08d}AAA", f"bystander-{i:04d}@example.org") for i in range(300)
    ]
    rows.insert(150, (CANARY_KEY, CANARY_EMAIL))
    conn.executemany("INSERT INTO raw_sf_contact VALUES (?, ?)", rows)
    conn.commit()
    conn.close()


class _locked:
    """Hold an exclusive lock on raw_sf_contact from a second session."""

    def __init__(self, wh: Warehouse) -> None:
        self.wh = wh

    def __enter__(self) -> None:
        if self.wh.schema is None:
            path = make_url(self.wh.url).database
            self.conn = sqlite3.connect(str(path), isolation_level=None)
            self.conn.execute("BEGIN EXCLUSIVE")
            return
        self.pg = self.wh.engine.connect()
        self.pg.execute(text(f"LOCK TABLE {self.wh.name('raw_sf_contact')}"))

    def __exit__(self, *exc: object) -> None:
        if self.wh.schema is None:
            self.conn.rollback()
            self.conn.close()
        else:
            self.pg.rollback()
            self.pg.close()
