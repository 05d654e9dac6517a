"""MixpanelConnector against the Mixpanel emulator over loopback HTTP.

One virtual clock drives the emulator's task states and rate limit and the
connector's pacing, so the connector really keeps to 1 request per second
without the tests waiting for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from connectors.base import AsyncConnector, Outcome
from connectors.mixpanel import MixpanelConnector
from lethe.emulators import EmulatorServer
from lethe.emulators.mixpanel import MixpanelStore, create_app
from lethe.errors import ConfigError, ConnectorError, TransientConnectorError
from tests._servers import Served, serve

GDPR_TOKEN = "gdpr-oauth-test"
PROJECT = "project-token-a"
SUBJECT = "subject-erase-me"
BYSTANDER = "subject-bystander"
STEP = 3.0  # virtual seconds per task state


class VirtualClock:
    """Time that moves only when someone sleeps or a test moves it."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += seconds


@pytest.fixture(scope="module")
def served() -> Iterator[Served[MixpanelStore]]:
    clock = VirtualClock()
    store = MixpanelStore(clock=clock)
    app = create_app(
        store,
        gdpr_token=GDPR_TOKEN,
        project_tokens=[PROJECT],
        step_seconds=STEP,
        clock=clock,
    )
    yield from serve(store, app)


@pytest.fixture
def clock(served: Served[MixpanelStore]) -> VirtualClock:
    clock = served.store.clock
    assert isinstance(clock, VirtualClock)
    clock.now += 10  # out of the previous test's rate-limit window
    clock.slept.clear()
    return clock


@pytest.fixture
def store(served: Served[MixpanelStore], clock: VirtualClock) -> MixpanelStore:
    return served.fresh()


def _connector(
    server: EmulatorServer, clock: VirtualClock, **options: object
) -> MixpanelConnector:
    settings: dict[str, object] = {
        "system": "analytics",
        "base_url": f"{server.base_url}/api/app",
        "gdpr_token": GDPR_TOKEN,
        "project_token": PROJECT,
        "timeout": 2.0,
        "clock": clock,
        "sleep": clock.sleep,
        **options,
    }
    return MixpanelConnector(**settings)  # type: ignore[arg-type]


@pytest.fixture
def mixpanel(server, clock) -> Iterator[MixpanelConnector]:
    connector = _connector(server, clock)
    yield connector
    connector.close()


def _settle(connector: MixpanelConnector, job_id: str | None, keys) -> Outcome:
    """Poll until not pending; each poll moves virtual time by its pacing."""
    assert job_id is not None
    for _ in range(40):
        outcome = connector.poll(job_id, keys)
        if outcome.status != "pending":
            return outcome
    raise AssertionError("the deletion task did not settle")


def test_mixpanel_connector_meets_the_async_contract(mixpanel) -> None:
    capabilities = mixpanel.capabilities

    assert isinstance(mixpanel, AsyncConnector)
    assert capabilities.asynchronous and capabilities.hard_delete
    assert capabilities.batch_cap == 1999
    assert capabilities.rate_limit_per_second == 1.0
    assert not capabilities.verify_by_read


def test_mixpanel_locate_counts_the_distinct_keys_given(mixpanel) -> None:
    located = mixpanel.locate({"distinct_id": ["a", "b", "a"]})

    assert located.counts == {"distinct_id": 2}


def test_mixpanel_keys_other_than_distinct_id_are_a_config_error(mixpanel) -> None:
    with pytest.raises(ConfigError, match="distinct_id"):
        mixpanel.locate({"userId": ["a"]})


def test_mixpanel_erasure_deletes_the_subject_and_spares_the_bystander(
    mixpanel, store, clock
) -> None:
    store.add_event(PROJECT, BYSTANDER, "Signed Up", {"plan": "free"})
    store.set_profile(PROJECT, BYSTANDER, {"$name": "Bea"})
    bystander_only = store.checksum()
    store.add_event(PROJECT, SUBJECT, "Signed Up", {"plan": "pro"})
    store.add_event(PROJECT, SUBJECT, "Purchased")
    store.set_profile(PROJECT, SUBJECT, {"$name": "Sam"})
    keys = {"distinct_id": [SUBJECT]}

    submitted = mixpanel.submit(keys, idempotency_key="req-1:analytics")
    early = mixpanel.verify(keys)
    done = _settle(mixpanel, submitted.job_id, keys)
    evidence = mixpanel.verify(keys)

    assert submitted.status == "pending" and submitted.vendor_status == "PENDING"
    assert not early.verified and early.observed["status"] in ("PENDING", "STAGING")
    assert done.status == "done" and done.action == "deleted"
    assert done.vendor_status == "SUCCESS" and done.records_affected == 1
    assert done.finished_at is not None
    assert evidence.verified
    assert evidence.observed == {"status": "SUCCESS", "tasks": 1}
    assert store.events_for(PROJECT, SUBJECT) == 0
    assert not store.has_profile(PROJECT, SUBJECT)
    assert store.checksum() == bystander_only


def test_mixpanel_poll_reports_the_vendor_status_while_pending(
    mixpanel, store, clock
) -> None:
    keys = {"distinct_id": [SUBJECT]}
    job_id = mixpanel.submit(keys, idempotency_key="k").job_id

    first = mixpanel.poll(job_id, keys)
    clock.now += 2 * STEP
    later = mixpanel.poll(job_id, keys)

    assert first.status == "pending" and first.vendor_status == "PENDING"
    assert later.status == "pending" and later.vendor_status == "STARTED"


def test_mixpanel_paces_calls_a_second_apart_and_never_hits_the_limit(
    mixpanel, store, clock
) -> None:
    keys = {"distinct_id": [SUBJECT]}
    job_id = mixpanel.submit(keys, idempotency_key="k").job_id

    for _ in range(3):
        mixpanel.poll(job_id, keys)

    assert clock.slept == [pytest.approx(1.0)] * 3


def test_mixpanel_4000_ids_become_three_tasks(mixpanel, store) -> None:
    ids = [f"d-{i}" for i in range(4000)]
    keys = {"distinct_id": ids}

    submitted = mixpanel.submit(keys, idempotency_key="big")
    done = _settle(mixpanel, submitted.job_id, keys)

    tasks = store.deletions(PROJECT)
    assert len(submitted.job_id.split(",")) == 3
    assert sorted(len(t["distinct_ids"]) for t in tasks) == [2, 1999, 1999]
    assert done.status == "done" and done.records_affected == 4000
    assert mixpanel.verify(keys).observed == {"status": "SUCCESS", "tasks": 3}


def test_mixpanel_find_job_returns_the_filed_tasks_and_files_nothing(
    mixpanel, store
) -> None:
    keys = {"distinct_id": [f"d-{i}" for i in range(2500)]}
    submitted = mixpanel.submit(keys, idempotency_key="req-7:analytics")

    found = mixpanel.find_job(keys, idempotency_key="req-7:analytics")
    missing = mixpanel.find_job({"distinct_id": ["other"]}, idempotency_key="x")

    assert found == submitted.job_id
    assert missing is None
    assert len(store.deletions(PROJECT)) == 2


def test_mixpanel_resubmit_after_a_partial_failure_files_only_the_rest(
    mixpanel, server, store
) -> None:
    keys = {"distinct_id": [f"d-{i}" for i in range(4000)]}
    mixpanel.submit({"distinct_id": keys["distinct_id"][:1999]}, idempotency_key="a")
    server.faults.add("500", "/api/app/data-deletions", method="POST")

    # The submit lists, finds batch 1, files batch 2 and gets the 500.
    with pytest.raises(TransientConnectorError):
        mixpanel.submit(keys, idempotency_key="req-8")
    again = mixpanel.submit(keys, idempotency_key="req-8")

    assert len(again.job_id.split(",")) == 3
    assert len(store.deletions(PROJECT)) == 3


def test_mixpanel_failure_outcome_fails_without_naming_ids(
    mixpanel, server, store
) -> None:
    store.add_event(PROJECT, SUBJECT, "Signed Up")
    server.app.state.outcomes.add("FAILURE")
    keys = {"distinct_id": [SUBJECT]}

    submitted = mixpanel.submit(keys, idempotency_key="k")
    outcome = _settle(mixpanel, submitted.job_id, keys)
    evidence = mixpanel.verify(keys)

    assert outcome.status == "failed" and outcome.vendor_status == "FAILURE"
    assert "FAILURE" in outcome.detail
    assert SUBJECT not in outcome.detail and submitted.job_id not in outcome.detail
    assert not evidence.verified and evidence.observed["status"] == "FAILURE"
    assert store.events_for(PROJECT, SUBJECT) == 1


def test_mixpanel_accepts_the_legacy_create_shape(clock) -> None:
    store = MixpanelStore(clock=clock)
    app = create_app(
        store,
        gdpr_token=GDPR_TOKEN,
        project_tokens=[PROJECT],
        step_seconds=STEP,
        clock=clock,
        legacy_response_shape=True,
    )
    keys = {"distinct_id": [SUBJECT]}
    with EmulatorServer(app) as server:
        connector = _connector(server, clock)
        submitted = connector.submit(keys, idempotency_key="k")
        done = _settle(connector, submitted.job_id, keys)
        connector.close()

    (task,) = store.deletions(PROJECT)
    assert submitted.job_id == task["tracking_id"]
    assert done.status == "done"


def test_mixpanel_sends_the_configured_compliance_type(server, clock, store) -> None:
    connector = _connector(server, clock, compliance_type="CCPA")
    connector.submit({"distinct_id": [SUBJECT]}, idempotency_key="k")
    connector.close()

    (task,) = store.deletions(PROJECT)
    assert task["compliance_type"] == "CCPA"


def test_mixpanel_unknown_compliance_type_is_a_config_error(server, clock) -> None:
    with pytest.raises(ConfigError, match="compliance_type"):
        _connector(server, clock, compliance_type="LGPD")


def test_mixpanel_injected_429_is_transient_with_retry_after(mixpanel, server) -> None:
    server.faults.add("429", "/api/app/data-deletions", retry_after=7)

    with pytest.raises(TransientConnectorError) as caught:
        mixpanel.submit({"distinct_id": [SUBJECT]}, idempotency_key="k")

    assert caught.value.status == 429 and caught.value.retry_after == 7.0


def test_mixpanel_real_rate_limit_is_transient_without_pacing(
    server, clock, store
) -> None:
    hasty = _connector(server, clock, min_interval=0.0)
    keys = {"distinct_id": [SUBJECT]}
    job_id = hasty.submit(keys, idempotency_key="k").job_id
    assert job_id is not None

    with pytest.raises(TransientConnectorError) as caught:
        hasty.poll(job_id, keys)
    hasty.close()

    assert caught.value.status == 429 and caught.value.retry_after == 1.0
    assert PROJECT not in str(caught.value) and GDPR_TOKEN not in str(caught.value)


@pytest.mark.parametrize("kind", ["500", "503"])
def test_mixpanel_server_error_is_transient(mixpanel, server, kind) -> None:
    server.faults.add(kind, "/api/app/data-deletions")

    with pytest.raises(TransientConnectorError) as caught:
        mixpanel.submit({"distinct_id": [SUBJECT]}, idempotency_key="k")

    assert caught.value.status == int(kind)


def test_mixpanel_timeout_is_transient(server, clock, store) -> None:
    server.faults.add("timeout", "/api/app/data-deletions", delay=1.0)
    connector = _connector(server, clock, timeout=0.2)

    with pytest.raises(TransientConnectorError, match="timed out"):
        connector.submit({"distinct_id": [SUBJECT]}, idempotency_key="k")
    connector.close()

    assert store.deletions(PROJECT) == []


def test_mixpanel_wrong_base_url_is_a_config_error(server, clock) -> None:
    connector = _connector(server, clock, base_url=server.base_url)  # no /api/app

    with pytest.raises(ConfigError, match="base_url"):
        connector.submit({"distinct_id": [SUBJECT]}, idempotency_key="k")
    connector.close()


@pytest.mark.parametrize(
    "override", [{"gdpr_token": "expired"}, {"project_token": "not-a-project"}]
)
def test_mixpanel_bad_credentials_are_a_config_error(server, clock, override) -> None:
    connector = _connector(server, clock, **override)

    with pytest.raises(ConfigError) as caught:
        connector.submit({"distinct_id": [SUBJECT]}, idempotency_key="k")
    connector.close()

    message = str(caught.value)
    assert "401" in message and "gdpr_token" in message
    assert next(iter(override.values())) not in message and SUBJECT not in message


def test_mixpanel_poll_of_an_unknown_task_is_a_connector_error(mixpanel) -> None:
    with pytest.raises(ConnectorError) as caught:
        mixpanel.poll("no-such-task", {"distinct_id": [SUBJECT]})

    assert not isinstance(caught.value, ConfigError | TransientConnectorError)
    assert caught.value.status == 404 and "no-such-task" not in str(caught.value)


def test_mixpanel_submit_without_keys_files_nothing(mixpanel, store) -> None:
    outcome = mixpanel.submit({"distinct_id": []}, idempotency_key="k")

    assert outcome.status == "done" and outcome.action == "none"
    assert store.deletions(PROJECT) == []
