"""Shared fixtures: an isolated LETHE_HOME, a ledger on each backend, and the
sample estate with a canary person planted, serving on loopback (``estate``).

The ``ledger_url`` fixture runs a test on SQLite and on PostgreSQL. PostgreSQL
comes from ``LETHE_TEST_POSTGRES_URL`` (scripts/test.sh starts a server and sets
it); without it those cases skip, unless ``LETHE_REQUIRE_POSTGRES=1`` (as in CI),
where a missing server is a failure.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lethe import ledger, runtime
from tests.helpers import Estate, plant_canary_estate

# Prefect's home must outlive every test's LETHE_HOME (scripts/test.sh sets it).
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="lethe-prefect-"))
REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = Path(os.environ.get("LETHE_SAMPLE_DATA", REPO.parent / "shared" / "data"))
POSTGRES_URL = os.environ.get("LETHE_TEST_POSTGRES_URL")


def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (dropped afterwards)."""
    if not POSTGRES_URL:
        if os.environ.get("LETHE_REQUIRE_POSTGRES") == "1":
            pytest.fail("LETHE_REQUIRE_POSTGRES=1 but LETHE_TEST_POSTGRES_URL is unset")
        pytest.skip("PostgreSQL not configured: set LETHE_TEST_POSTGRES_URL")
    import psycopg2

    name = f"lethe_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    base = POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        ledger.reset_engines()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield from postgres_database()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty LETHE_HOME with a SQLite ledger inside it."""
    path = tmp_path / "home"
    monkeypatch.setenv("LETHE_HOME", str(path))
    monkeypatch.delenv("LETHE_DATABASE_URL", raising=False)
    monkeypatch.delenv("LETHE_ESTATE", raising=False)
    ledger.reset_engines()
    runtime.reset()
    yield path
    ledger.reset_engines()
    runtime.reset()


@pytest.fixture
def any_ledger(home: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """LETHE_HOME as ``home``, with the ledger on each backend in turn."""
    monkeypatch.setenv("LETHE_DATABASE_URL", ledger_url)
    ledger.reset_engines()
    runtime.reset()
    return ledger_url


@pytest.fixture
def estate(home: Path, tmp_path: Path) -> Iterator[Estate]:
    """The sample estate with a canary first, on the SQLite ledger in ``home``.

    A test file that needs both ledgers, or slower vendor jobs, defines its own.
    """
    planted = plant_canary_estate(tmp_path / "estate", step_seconds=0.05)
    try:
        yield planted
    finally:
        planted.servers.stop()
