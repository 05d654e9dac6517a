"""AmplitudeConnector against the Amplitude emulator over loopback HTTP.

The emulator's clock starts at the real present (the connector reads job lists
over a window around today) and tests move it forward by whole days.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from connectors.amplitude import AmplitudeConnector
from connectors.base import AsyncConnector
from lethe.emulators import EmulatorServer
from lethe.emulators.amplitude import AmplitudeStore, create_app
from lethe.errors import ConfigError, ConnectorError, TransientConnectorError
from tests._servers import Served, serve

PROJECTS = {
    "web": ("web-key", "web-secret"),
    "app": ("app-key", "app-secret"),
    "ios": ("ios-key", "ios-secret"),
}
SUBJECT = "user-erase-me"
BYSTANDER = "user-bystander"
KEYS = {"user_id": [SUBJECT]}
DAY = 86_400.0


class Clock:
    def __init__(self) -> None:
        self.start = time.time()
        self.now = self.start

    def __call__(self) -> float:
        return self.now

    def advance(self, days: int) -> None:
        self.now += days * DAY

    def rewind(self) -> None:
        self.now = self.start

    def today(self) -> date:
        return datetime.fromtimestamp(self.now, UTC).date()


class CountingTransport(httpx.HTTPTransport):
    """Real HTTP, counting requests by (method, path)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        return super().handle_request(request)


@pytest.fixture(scope="module")
def served() -> Iterator[Served[AmplitudeStore]]:
    clock = Clock()
    store = AmplitudeStore(clock=clock)
    app = create_app(store, projects=PROJECTS, rate_limit_per_second=None)
    yield from serve(store, app, on_fresh=clock.rewind)


@pytest.fixture
def clock(store: AmplitudeStore) -> Clock:
    assert isinstance(store.clock, Clock)
    return store.clock


def _connector(
    server: EmulatorServer, projects: tuple[str, ...] = ("web", "app", "ios"), **kw
) -> AmplitudeConnector:
    options = {"timeout": 2.0, "rate_limit_per_second": None} | kw
    return AmplitudeConnector(
        system="analytics",
        base_url=options.pop("base_url", server.base_url),
        projects={
            name: {"api_key": PROJECTS[name][0], "secret_key": PROJECTS[name][1]}
            for name in projects
        },
        **options,
    )


@pytest.fixture
def amplitude(server: EmulatorServer) -> Iterator[AmplitudeConnector]:
    connector = _connector(server)
    yield connector
    connector.close()


def _jobs(server: EmulatorServer, project: str, clock: Clock) -> list[dict]:
    response = httpx.get(
        f"{server.base_url}/api/2/deletions/users",
        params={
            "start_day": (clock.today() - timedelta(days=30)).isoformat(),
            "end_day": (clock.today() + timedelta(days=30)).isoformat(),
        },
        auth=PROJECTS[project],
    )
    response.raise_for_status()
    return response.json()


def test_connector_is_an_async_connector(amplitude: AmplitudeConnector) -> None:
    assert isinstance(amplitude, AsyncConnector)
    assert amplitude.capabilities.asynchronous
    assert amplitude.capabilities.hard_delete
    assert amplitude.capabilities.batch_cap == 100


def test_locate_counts_the_subject_in_every_project(
    amplitude: AmplitudeConnector, store: AmplitudeStore
) -> None:
    store.add_event("web", SUBJECT, "Opened")
    store.add_event("app", SUBJECT, "Opened")
    store.add_event("web", BYSTANDER, "Opened")

    located = amplitude.locate(KEYS)

    assert located.counts == {"web": 1, "app": 1, "ios": 0}
    assert located.total == 2


def test_submit_poll_verify_over_simulated_days(
    amplitude: AmplitudeConnector, store: AmplitudeStore, clock: Clock
) -> None:
    store.add_event("web", BYSTANDER, "Purchased")
    store.add_event("ios", BYSTANDER, "Purchased")
    before = store.checksum()
    store.add_event("web", SUBJECT, "Purchased")
    store.add_event("app", SUBJECT, "Purchased")
    run_day = clock.today() + timedelta(days=3)

    submitted = amplitude.submit(KEYS, idempotency_key="dsr-1:analytics")

    assert submitted.status == "pending"
    assert submitted.job_id == f"web:{run_day},app:{run_day}"
    assert amplitude.poll(submitted.job_id, KEYS).vendor_status == "staging"
    clock.advance(3)
    assert amplitude.poll(submitted.job_id, KEYS).vendor_status == "submitted"
    clock.advance(7)
    scrubbed = amplitude.poll(submitted.job_id, KEYS)
    assert scrubbed.status == "pending"
    assert f"scrubbed by {run_day + timedelta(days=7)}" in scrubbed.detail
    assert not amplitude.verify(KEYS).verified
    clock.advance(5)
    done = amplitude.poll(submitted.job_id, KEYS)
    evidence = amplitude.verify(KEYS)

    assert done.status == "done"
    assert done.action == "deleted"
    assert done.vendor_status == "done"
    assert done.records_affected == 2
    assert f"scrubbed by {run_day + timedelta(days=7)}" in done.detail
    assert done.finished_at == datetime.combine(
        run_day + timedelta(days=7), datetime.min.time(), UTC
    )
    assert evidence.verified
    assert evidence.observed == {
        "status": "done",
        "active_scrub_done_date": str(run_day + timedelta(days=7)),
        "projects": 2,
        "found": 0,
    }
    assert store.checksum() == before
    assert store.events_for("web", BYSTANDER) == 1


def test_poll_fails_when_the_subject_was_removed_from_a_staging_job(
    amplitude: AmplitudeConnector,
    store: AmplitudeStore,
    clock: Clock,
    server: EmulatorServer,
) -> None:
    store.add_event("web", "other-leaver", "Opened")
    removed = store.add_event("web", SUBJECT, "Opened")
    keys = {"user_id": [SUBJECT, "other-leaver"]}
    submitted = amplitude.submit(keys, idempotency_key="dsr-2:analytics")
    day = submitted.job_id.split(":", 1)[1]
    clock.advance(1)
    response = httpx.delete(
        f"{server.base_url}/api/2/deletions/users/{removed}/{day}",
        auth=PROJECTS["web"],
    )
    assert response.status_code == 200
    clock.advance(14)

    outcome = amplitude.poll(submitted.job_id, keys)
    evidence = amplitude.verify(keys)

    assert outcome.status == "failed"
    assert outcome.vendor_status == "done"
    assert "project web" in outcome.detail
    assert "not in its deletion job" in outcome.detail
    assert SUBJECT not in outcome.detail
    assert not evidence.verified
    assert evidence.observed["found"] == 1


def test_a_second_project_holding_the_subject_gets_its_own_job(
    amplitude: AmplitudeConnector,
    store: AmplitudeStore,
    clock: Clock,
    server: EmulatorServer,
) -> None:
    store.add_event("web", SUBJECT, "Opened")
    in_app = store.add_event("app", SUBJECT, "Opened")

    submitted = amplitude.submit(KEYS, idempotency_key="dsr-3:analytics")

    app_jobs = _jobs(server, "app", clock)
    assert [e["amplitude_id"] for e in app_jobs[0]["amplitude_ids"]] == [in_app]
    assert _jobs(server, "ios", clock) == []
    assert {part.split(":")[0] for part in submitted.job_id.split(",")} == {
        "web",
        "app",
    }


def test_poll_fails_when_a_project_holds_the_subject_without_a_job(
    amplitude: AmplitudeConnector, store: AmplitudeStore, clock: Clock
) -> None:
    store.add_event("web", SUBJECT, "Opened")
    submitted = amplitude.submit(KEYS, idempotency_key="dsr-4:analytics")
    store.add_event("ios", SUBJECT, "Opened")  # tracked there after the submit
    clock.advance(15)

    outcome = amplitude.poll(submitted.job_id, KEYS)

    assert outcome.status == "failed"
    assert "project ios" in outcome.detail
    assert "no deletion job" in outcome.detail


def test_submit_sends_150_ids_in_two_requests(
    server: EmulatorServer, store: AmplitudeStore, clock: Clock
) -> None:
    ids = [f"user-{i:03d}" for i in range(150)]
    for user_id in ids:
        store.add_event("web", user_id, "Opened")
    transport = CountingTransport()
    connector = _connector(server, ("web",), transport=transport)

    submitted = connector.submit({"user_id": ids}, idempotency_key="dsr-5:analytics")
    connector.close()

    posts = [s for s in transport.seen if s[0] == "POST"]
    assert posts == [("POST", "/api/2/deletions/users")] * 2
    assert submitted.status == "pending"
    assert len(_jobs(server, "web", clock)[0]["amplitude_ids"]) == 150


def test_submit_of_unknown_users_files_nothing(
    amplitude: AmplitudeConnector, store: AmplitudeStore
) -> None:
    outcome = amplitude.submit(KEYS, idempotency_key="dsr-6:analytics")
    evidence = amplitude.verify(KEYS)

    assert outcome.status == "done"
    assert outcome.action == "already_absent"
    assert outcome.job_id is None
    assert evidence.observed["status"] == "absent"


def test_find_job_returns_the_jobs_an_earlier_submit_filed(
    amplitude: AmplitudeConnector, store: AmplitudeStore, clock: Clock
) -> None:
    store.add_event("web", SUBJECT, "Opened")
    store.add_event("app", SUBJECT, "Opened")
    assert amplitude.find_job(KEYS, idempotency_key="dsr-7:analytics") is None

    submitted = amplitude.submit(KEYS, idempotency_key="dsr-7:analytics")
    clock.advance(11)  # scrubbed: the users are gone, the tagged jobs remain

    found = amplitude.find_job(KEYS, idempotency_key="dsr-7:analytics")
    assert found == submitted.job_id
    other = amplitude.find_job({"user_id": [BYSTANDER]}, idempotency_key="x")
    assert other is None


def test_resubmitting_joins_the_same_staging_job(
    amplitude: AmplitudeConnector,
    store: AmplitudeStore,
    clock: Clock,
    server: EmulatorServer,
) -> None:
    store.add_event("web", SUBJECT, "Opened")

    first = amplitude.submit(KEYS, idempotency_key="dsr-8:analytics")
    clock.advance(1)
    second = amplitude.submit(KEYS, idempotency_key="dsr-8:analytics")

    assert first.job_id == second.job_id
    assert len(_jobs(server, "web", clock)) == 1


def test_delete_from_org_finds_each_projects_job(
    server: EmulatorServer, store: AmplitudeStore, clock: Clock
) -> None:
    store.add_event("web", SUBJECT, "Opened")
    store.add_event("ios", SUBJECT, "Opened")
    connector = _connector(server, delete_from_org=True)

    submitted = connector.submit(KEYS, idempotency_key="dsr-9:analytics")
    clock.advance(15)
    outcome = connector.poll(submitted.job_id or "", KEYS)
    connector.close()

    day = clock.today() - timedelta(days=12)
    assert submitted.job_id == f"web:{day},ios:{day}"
    assert outcome.status == "done"
    assert _jobs(server, "app", clock) == []
    assert "app" in _jobs(server, "ios", clock)[0]


def test_delete_from_org_names_jobs_it_cannot_poll(
    server: EmulatorServer, store: AmplitudeStore, clock: Clock
) -> None:
    store.add_event("web", SUBJECT, "Opened")
    store.add_event("ios", SUBJECT, "Opened")
    connector = _connector(server, ("web",), delete_from_org=True)

    submitted = connector.submit(KEYS, idempotency_key="dsr-9b:analytics")
    connector.close()

    assert submitted.job_id == f"web:{clock.today() + timedelta(days=3)}"
    assert "1 more in projects without keys here" in submitted.detail


def test_connector_keeps_to_the_rate_limit(store: AmplitudeStore) -> None:
    ids = [f"user-{i:03d}" for i in range(250)]
    for user_id in ids:
        store.add_event("web", user_id, "Opened")
    app = create_app(store, projects=PROJECTS, rate_limit_per_second=4.0)
    with EmulatorServer(app) as limited:
        connector = _connector(limited, ("web",), rate_limit_per_second=3.0)
        started = time.monotonic()
        outcome = connector.submit({"user_id": ids}, idempotency_key="dsr-10")
        elapsed = time.monotonic() - started
        connector.close()

    assert outcome.status == "pending"
    assert elapsed >= 0.6


def test_rate_limited_answer_raises_transient_with_retry_after(
    amplitude: AmplitudeConnector, store: AmplitudeStore, server: EmulatorServer
) -> None:
    store.add_event("web", SUBJECT, "Opened")
    server.faults.add("429", "/api/2/deletions/users", retry_after=7)

    with pytest.raises(TransientConnectorError) as caught:
        amplitude.submit(KEYS, idempotency_key="dsr-11")

    assert caught.value.status == 429
    assert caught.value.retry_after == 7.0
    assert SUBJECT not in str(caught.value)


@pytest.mark.parametrize("kind", ["500", "503"])
def test_server_error_raises_transient(
    amplitude: AmplitudeConnector, store: AmplitudeStore, server: EmulatorServer, kind
) -> None:
    server.faults.add(kind, "/api/2/usersearch")

    with pytest.raises(TransientConnectorError) as caught:
        amplitude.locate(KEYS)

    assert caught.value.status == int(kind)


def test_timeout_raises_transient(
    server: EmulatorServer, store: AmplitudeStore
) -> None:
    store.add_event("web", SUBJECT, "Opened")
    server.faults.add("timeout", "/api/2/deletions/users", delay=0.6)
    connector = _connector(server, timeout=0.2)

    with pytest.raises(TransientConnectorError, match="timed out"):
        connector.submit(KEYS, idempotency_key="dsr-12")
    connector.close()


def test_poll_after_a_server_error_never_reports_done(
    amplitude: AmplitudeConnector,
    store: AmplitudeStore,
    clock: Clock,
    server: EmulatorServer,
) -> None:
    store.add_event("web", SUBJECT, "Opened")
    submitted = amplitude.submit(KEYS, idempotency_key="dsr-13")
    clock.advance(15)
    server.faults.add("502", "/api/2/deletions/users", method="GET")

    with pytest.raises(TransientConnectorError):
        amplitude.poll(submitted.job_id or "", KEYS)
    assert amplitude.poll(submitted.job_id or "", KEYS).status == "done"


def test_wrong_base_url_raises_config_error(
    server: EmulatorServer, store: AmplitudeStore
) -> None:
    connector = _connector(server, base_url=f"{server.base_url}/not-amplitude")

    with pytest.raises(ConfigError, match="base_url"):
        connector.locate(KEYS)
    connector.close()


def test_wrong_secret_raises_config_error(server: EmulatorServer, store) -> None:
    connector = AmplitudeConnector(
        system="analytics",
        base_url=server.base_url,
        projects={"web": {"api_key": "web-key", "secret_key": "not-it"}},
        rate_limit_per_second=None,
    )

    with pytest.raises(ConfigError, match="secret_key of project 'web'"):
        connector.submit(KEYS, idempotency_key="dsr-14")
    connector.close()


def test_settings_and_keys_are_checked(
    amplitude: AmplitudeConnector, server: EmulatorServer
) -> None:
    with pytest.raises(ConfigError):
        AmplitudeConnector(system="analytics", base_url=server.base_url, projects={})
    with pytest.raises(ConfigError):
        AmplitudeConnector(
            system="analytics",
            base_url=server.base_url,
            projects={"web": {"api_key": "k"}},
        )
    with pytest.raises(ConfigError):
        amplitude.locate({"email": ["a@example.com"]})
    with pytest.raises(ConfigError):
        amplitude.poll("elsewhere:2026-01-01", KEYS)
    with pytest.raises(ConnectorError):
        amplitude.poll("web:soon", KEYS)
