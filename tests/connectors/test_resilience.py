"""Retries and pacing: the shared helpers, then each connector over loopback.

Waits are recorded by a fake sleep, never slept, so the suite stays fast.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from connectors._resilience import (
    NO_PACING,
    RetryPolicy,
    TokenBucket,
    call_with_retries,
    pacer_for,
    parse_retry_after,
)
from connectors.salesforce import SalesforceConnector
from connectors.sap import SapBusinessPartnerConnector
from connectors.segment import SegmentConnector
from lethe.emulators import EmulatorServer
from lethe.emulators.salesforce import SalesforceStore
from lethe.emulators.salesforce import create_app as salesforce_app
from lethe.emulators.sap import SERVICE_ROOT, SapStore
from lethe.emulators.sap import create_app as sap_app
from lethe.emulators.segment import SegmentStore
from lethe.emulators.segment import create_app as segment_app
from lethe.errors import ConfigError, ConnectorError, TransientConnectorError

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
V = "/services/data/v60.0"
ATTEMPTS = 3


def _answer(**headers: str) -> httpx.Response:
    return httpx.Response(429, headers=headers)


def _busy(retry_after: float | None = None) -> TransientConnectorError:
    return TransientConnectorError("busy", status=503, retry_after=retry_after)


class _Flaky:
    """Fails with the given errors in turn, then answers "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class _CountingPacer:
    def __init__(self) -> None:
        self.acquired = 0

    def acquire(self) -> None:
        self.acquired += 1


class _Counting(httpx.BaseTransport):
    """Real HTTP, counting the requests that leave the connector."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class _FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# -- Retry-After ---------------------------------------------------------------


def test_parse_retry_after_reads_delta_seconds() -> None:
    assert parse_retry_after(_answer(**{"Retry-After": "7"})) == 7.0


def test_parse_retry_after_reads_an_http_date() -> None:
    when = format_datetime(NOW + timedelta(seconds=90), usegmt=True)

    assert parse_retry_after(_answer(**{"Retry-After": when}), now=NOW) == 90.0


def test_parse_retry_after_past_date_is_zero_and_junk_is_none() -> None:
    past = format_datetime(NOW - timedelta(minutes=5), usegmt=True)

    assert parse_retry_after(_answer(**{"Retry-After": past}), now=NOW) == 0.0
    assert parse_retry_after(_answer(**{"Retry-After": "soon"}), now=NOW) is None
    assert parse_retry_after(_answer(), now=NOW) is None


def test_parse_retry_after_falls_back_to_x_ratelimit_reset() -> None:
    reset = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    both = {"Retry-After": "2", "X-RateLimit-Reset": reset}

    assert parse_retry_after(_answer(**{"X-RateLimit-Reset": reset}), now=NOW) == 30
    assert parse_retry_after(_answer(**both), now=NOW) == 2.0


# -- backoff -------------------------------------------------------------------


def test_retry_waits_at_least_the_retry_after() -> None:
    sleeps: list[float] = []
    send = _Flaky(_busy(retry_after=3.0))

    result = call_with_retries(send, policy=RetryPolicy(), sleep=sleeps.append)

    assert result == "ok" and send.calls == 2
    assert len(sleeps) == 1 and 3.0 <= sleeps[0] <= 3.0 * 1.2


def test_retry_honours_an_http_date_retry_after_end_to_end() -> None:
    when = format_datetime(NOW + timedelta(seconds=5), usegmt=True)
    wait = parse_retry_after(_answer(**{"Retry-After": when}), now=NOW)
    sleeps: list[float] = []

    call_with_retries(_Flaky(_busy(retry_after=wait)), sleep=sleeps.append)

    assert sleeps and sleeps[0] >= 5.0


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=2.0, jitter=0.0)
    sleeps: list[float] = []

    with pytest.raises(TransientConnectorError):
        call_with_retries(_Flaky(*[_busy()] * 6), policy=policy, sleep=sleeps.append)

    assert sleeps == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_backoff_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=1.0, max_delay=100.0, jitter=0.2)

    lowest = policy.delay(3, draw=lambda: 0.0)
    highest = policy.delay(3, draw=lambda: 0.999999)
    spread = {policy.delay(3) for _ in range(200)}

    assert lowest == pytest.approx(3.2) and highest == pytest.approx(4.8)
    assert all(3.2 <= d <= 4.8 for d in spread if d is not None)
    assert len(spread) > 1


def test_jitter_never_pushes_past_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=1.0, max_delay=4.0, jitter=0.2)

    assert policy.delay(5, draw=lambda: 0.999999) == 4.0


def test_non_transient_errors_are_not_retried() -> None:
    sleeps: list[float] = []
    send = _Flaky(ConnectorError("refused", status=400))

    with pytest.raises(ConnectorError, match="refused"):
        call_with_retries(send, sleep=sleeps.append)

    assert send.calls == 1 and sleeps == []


def test_exhausted_retries_reraise_the_last_transient_error() -> None:
    errors = [_busy() for _ in range(ATTEMPTS)]
    sleeps: list[float] = []
    send = _Flaky(*errors)

    with pytest.raises(TransientConnectorError) as caught:
        call_with_retries(
            send, policy=RetryPolicy(max_attempts=ATTEMPTS), sleep=sleeps.append
        )

    assert caught.value is errors[-1]
    assert send.calls == ATTEMPTS and len(sleeps) == ATTEMPTS - 1


def test_retry_after_beyond_the_cap_gives_up_at_once() -> None:
    sleeps: list[float] = []
    send = _Flaky(_busy(retry_after=3600.0))

    with pytest.raises(TransientConnectorError) as caught:
        call_with_retries(
            send, policy=RetryPolicy(max_retry_after=120.0), sleep=sleeps.append
        )

    assert caught.value.retry_after == 3600.0
    assert send.calls == 1 and sleeps == []


def test_retry_if_narrows_what_is_retried() -> None:
    daily_limit = TransientConnectorError("limit", status=403)
    send = _Flaky(daily_limit)

    with pytest.raises(TransientConnectorError):
        call_with_retries(
            send, sleep=lambda _: None, retry_if=lambda e: e.status != 403
        )

    assert send.calls == 1


def test_the_pacer_is_acquired_before_every_attempt() -> None:
    pacer = _CountingPacer()
    notes: list[tuple[int, float]] = []

    call_with_retries(
        _Flaky(_busy(), _busy()),
        pacer=pacer,
        sleep=lambda _: None,
        on_retry=lambda attempt, _error, delay: notes.append((attempt, delay)),
    )

    assert pacer.acquired == 3
    assert [attempt for attempt, _ in notes] == [1, 2]


def test_retry_policy_rejects_fewer_than_one_attempt() -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


# -- pacing --------------------------------------------------------------------


def test_token_bucket_paces_calls_at_its_rate() -> None:
    fake = _FakeTime()
    bucket = TokenBucket(2.0, clock=fake.clock, sleep=fake.sleep)

    for _ in range(4):
        bucket.acquire()

    assert fake.slept == [0.5, 0.5, 0.5]


def test_token_bucket_lets_a_burst_through_then_refills() -> None:
    fake = _FakeTime()
    bucket = TokenBucket(10.0, burst=3, clock=fake.clock, sleep=fake.sleep)

    for _ in range(3):
        bucket.acquire()
    first_burst = list(fake.slept)
    bucket.acquire()
    fake.now += 10.0  # idle: the bucket refills to its burst, no further
    for _ in range(3):
        bucket.acquire()

    assert first_burst == []
    assert fake.slept == [pytest.approx(0.1)]


def test_token_bucket_reserves_distinct_slots_across_threads() -> None:
    waits: list[float] = []
    lock = threading.Lock()

    def record(seconds: float) -> None:
        with lock:
            waits.append(seconds)

    bucket = TokenBucket(4.0, clock=lambda: 0.0, sleep=record)
    threads = [threading.Thread(target=bucket.acquire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(waits) == pytest.approx([0.25 * n for n in range(1, 8)])


def test_pacer_for_shares_one_bucket_per_vendor_key() -> None:
    first = pacer_for("test-vendor:shared", 5.0)
    again = pacer_for("test-vendor:shared", 5.0)
    other = pacer_for("test-vendor:other", 5.0)

    assert first is again and first is not other
    assert pacer_for("test-vendor:unlimited", None) is NO_PACING


def test_pacer_for_keeps_the_lower_of_two_rates() -> None:
    bucket = pacer_for("test-vendor:two-settings", 10.0)
    pacer_for("test-vendor:two-settings", 2.0)
    pacer_for("test-vendor:two-settings", 50.0)

    assert isinstance(bucket, TokenBucket) and bucket.rate == 2.0


def test_connectors_of_one_system_share_its_limiter(segment_server) -> None:
    server, _store = segment_server
    a, b = (
        SegmentConnector(system="shared-seg", base_url=server.base_url, token="t")
        for _ in range(2)
    )

    assert a._pacer is b._pacer is pacer_for("segment:shared-seg", 10.0)
    assert a.capabilities.rate_limit_per_second == 10.0
    a.close()
    b.close()


def test_token_bucket_rejects_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ConfigError, match="rate_limit_per_second"):
        TokenBucket(0.0)


# -- Segment over loopback -----------------------------------------------------

SEGMENT_TOKEN = "sgp_resilience"


class _LosesFirstAnswer(httpx.BaseTransport):
    """Real HTTP to the emulator, but the first answer to ``method path`` is
    dropped and the client sees a read timeout: the vendor acted, the caller
    never heard.

    The emulator's ``slow`` fault cannot stage this: it sleeps before the
    handler, and a handler that reads the body after the client gave up gets
    ClientDisconnect, so nothing is created.
    """

    def __init__(self, method: str, path: str) -> None:
        self._inner = httpx.HTTPTransport()
        self._method, self._path = method, path
        self.sent = 0
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if (request.method, request.url.path) != (self._method, self._path):
            return response
        self.sent += 1
        if self.lost:
            return response
        response.read()
        response.close()
        self.lost += 1
        raise httpx.ReadTimeout("the answer was lost", request=request)

    def close(self) -> None:
        self._inner.close()


@pytest.fixture(scope="module")
def segment_server() -> Iterator[tuple[EmulatorServer, SegmentStore]]:
    store = SegmentStore()
    app = segment_app(store, token=SEGMENT_TOKEN, write_key="wk", step_seconds=0.02)
    with EmulatorServer(app) as server:
        yield server, store


@pytest.fixture
def segment(segment_server) -> Iterator[tuple[EmulatorServer, SegmentStore]]:
    server, store = segment_server
    store.reset()
    server.faults.clear()
    server.faults.injected.clear()
    yield server, store
    server.faults.clear()


def _segment(server: EmulatorServer, sleeps: list[float], **options: Any):
    settings: dict[str, Any] = {
        "system": "analytics-resilience",
        "base_url": server.base_url,
        "token": SEGMENT_TOKEN,
        "max_attempts": ATTEMPTS,
        "rate_limit_per_second": None,
        "sleep": sleeps.append,
    }
    return SegmentConnector(**(settings | options))


def test_segment_429_is_retried_after_its_retry_after(segment) -> None:
    server, store = segment
    sleeps: list[float] = []
    connector = _segment(server, sleeps)
    server.faults.add("429", "/regulations", method="POST", retry_after=1)

    outcome = connector.submit({"userId": ["u-429"]}, idempotency_key="k")
    connector.close()

    assert outcome.status == "pending" and outcome.job_id
    assert len(server.faults.injected) == 1
    assert len(sleeps) == 1 and sleeps[0] >= 1.0
    assert len(store.regulations()) == 1


def test_segment_503_throughout_fails_after_max_attempts(segment) -> None:
    server, _store = segment
    sleeps: list[float] = []
    connector = _segment(server, sleeps)
    submitted = connector.submit({"userId": ["u-503"]}, idempotency_key="k")
    server.faults.add("503", "/regulations/", method="GET", times=10)

    with pytest.raises(TransientConnectorError) as caught:
        connector.poll(submitted.job_id or "", {"userId": ["u-503"]})
    connector.close()

    assert caught.value.status == 503
    assert len(server.faults.injected) == ATTEMPTS
    assert len(sleeps) == ATTEMPTS - 1


def test_segment_lost_create_answer_finds_the_filed_regulation(segment) -> None:
    server, store = segment
    transport = _LosesFirstAnswer("POST", "/regulations")
    connector = _segment(server, [], transport=transport, timeout=2.0)

    outcome = connector.submit({"userId": ["u-lost"]}, idempotency_key="k")
    connector.close()

    regulations = [r for r in store.regulations() if "u-lost" in r["subjects"]]
    assert transport.lost == 1 and transport.sent == 1
    assert len(regulations) == 1
    assert outcome.job_id == regulations[0]["id"]


def test_segment_503_on_create_posts_again_when_nothing_was_filed(segment) -> None:
    server, store = segment
    connector = _segment(server, [])
    server.faults.add("503", "/regulations", method="POST")

    outcome = connector.submit({"userId": ["u-again"]}, idempotency_key="k")
    connector.close()

    assert len(server.faults.injected) == 1
    assert [r["id"] for r in store.regulations()] == [outcome.job_id]


def test_segment_every_request_waits_on_the_pacer(segment) -> None:
    server, _store = segment
    pacer, transport = _CountingPacer(), _Counting()
    connector = _segment(server, [], pacer=pacer, transport=transport)
    server.faults.add("429", "/regulations", method="POST", retry_after=1)
    server.faults.add("timeout", "/regulations", method="POST", delay=0.05)

    connector.submit({"userId": ["u-paced"]}, idempotency_key="k")
    connector.verify({"userId": ["u-paced"]})
    connector.close()

    assert transport.requests >= 6  # 429, 504, list, POST; then verify reads
    assert pacer.acquired == transport.requests


# -- Salesforce over loopback --------------------------------------------------


@pytest.fixture
def org() -> Iterator[tuple[EmulatorServer, SalesforceStore]]:
    store = SalesforceStore()
    app = salesforce_app(
        store, client_id="cid", client_secret="secret", bulk_step_seconds=0.02
    )
    with EmulatorServer(app) as server:
        yield server, store


def _salesforce(server: EmulatorServer, sleeps: list[float], **options: Any):
    settings: dict[str, Any] = {
        "system": "crm-resilience",
        "base_url": server.base_url,
        "client_id": "cid",
        "client_secret": "secret",
        "timeout": 2.0,
        "max_attempts": ATTEMPTS,
        "sleep": sleeps.append,
    }
    return SalesforceConnector(**(settings | options))


def test_salesforce_429_is_retried_after_its_retry_after(org) -> None:
    server, store = org
    contact = store.insert("Contact", {"LastName": "R", "Email": "r@example.org"})
    sleeps: list[float] = []
    connector = _salesforce(server, sleeps)
    server.faults.add("429", f"{V}/query", retry_after=1)

    located = connector.locate({"Contact": [contact]})
    connector.close()

    assert located.total == 1
    assert len(server.faults.injected) == 1
    assert len(sleeps) == 1 and sleeps[0] >= 1.0


def test_salesforce_503_throughout_fails_after_max_attempts(org) -> None:
    server, store = org
    contact = store.insert("Contact", {"LastName": "R", "Email": "r@example.org"})
    sleeps: list[float] = []
    connector = _salesforce(server, sleeps)
    server.faults.add("503", f"{V}/query", times=10)

    with pytest.raises(TransientConnectorError) as caught:
        connector.locate({"Contact": [contact]})
    connector.close()

    assert caught.value.status == 503
    assert len(server.faults.injected) == ATTEMPTS
    assert len(sleeps) == ATTEMPTS - 1


def test_salesforce_lost_job_create_adopts_the_job_it_filed(org) -> None:
    server, store = org
    lead = store.insert("Lead", {"LastName": "L", "Company": "C"})
    transport = _LosesFirstAnswer("POST", f"{V}/jobs/ingest")
    connector = _salesforce(server, [], transport=transport)

    outcome = connector.submit({"Lead": [lead]}, idempotency_key="k")
    connector.close()

    jobs = store.jobs()
    assert transport.lost == 1 and transport.sent == 1
    assert len(jobs) == 1 and outcome.job_id == jobs[0]["id"]
    assert jobs[0]["state"] != "Open"


def test_salesforce_every_request_waits_on_the_pacer(org) -> None:
    server, store = org
    lead = store.insert("Lead", {"LastName": "L", "Company": "C"})
    pacer, transport = _CountingPacer(), _Counting()
    connector = _salesforce(server, [], pacer=pacer, transport=transport)
    server.faults.add("503", f"{V}/jobs/ingest", method="POST")

    connector.submit({"Lead": [lead]}, idempotency_key="k")
    connector.close()

    # token, query, 503, job list, POST, upload, close
    assert transport.requests == 7
    assert pacer.acquired == transport.requests


def test_salesforce_503_on_job_create_files_exactly_one_job(org) -> None:
    server, store = org
    lead = store.insert("Lead", {"LastName": "L", "Company": "C"})
    connector = _salesforce(server, [])
    server.faults.add("503", f"{V}/jobs/ingest", method="POST")

    outcome = connector.submit({"Lead": [lead]}, idempotency_key="k")
    connector.close()

    assert len(server.faults.injected) == 1
    assert [job["id"] for job in store.jobs()] == [outcome.job_id]


def test_salesforce_daily_limit_on_job_create_is_not_retried() -> None:
    store = SalesforceStore()
    lead = store.insert("Lead", {"LastName": "L", "Company": "C"})
    # One API call left: the query for live Leads; the job create is refused.
    app = salesforce_app(store, client_id="cid", client_secret="secret", api_limit=1)
    sleeps: list[float] = []
    with EmulatorServer(app) as server:
        connector = _salesforce(server, sleeps)
        with pytest.raises(TransientConnectorError, match="REQUEST_LIMIT_EXCEEDED"):
            connector.submit({"Lead": [lead]}, idempotency_key="k")
        connector.close()

    assert sleeps == [] and store.jobs() == []


# -- SAP over loopback ---------------------------------------------------------


@pytest.fixture
def erp() -> Iterator[tuple[EmulatorServer, SapStore]]:
    store = SapStore()
    app = sap_app(store, username="U", password="P")
    with EmulatorServer(app) as server:
        yield server, store


def _sap(server: EmulatorServer, sleeps: list[float]) -> SapBusinessPartnerConnector:
    return SapBusinessPartnerConnector(
        system="erp-resilience",
        base_url=server.base_url + SERVICE_ROOT,
        username="U",
        password="P",
        timeout=2.0,
        max_attempts=ATTEMPTS,
        sleep=sleeps.append,
    )


def _partner(store: SapStore) -> str:
    return store.create_partner(
        first_name="Ann", last_name="Lee", email="ann@example.com", country="DE"
    )


def test_sap_429_is_retried_after_its_retry_after(erp) -> None:
    server, store = erp
    partner = _partner(store)
    sleeps: list[float] = []
    connector = _sap(server, sleeps)
    server.faults.add("429", SERVICE_ROOT, retry_after=1)

    outcome = connector.erase({"A_BusinessPartner": [partner]}, idempotency_key="k")
    verified = connector.verify({"A_BusinessPartner": [partner]}).verified
    connector.close()

    assert outcome.records_affected == 1 and verified
    assert len(server.faults.injected) == 1
    assert len(sleeps) == 1 and sleeps[0] >= 1.0


def test_sap_503_throughout_fails_after_max_attempts(erp) -> None:
    server, store = erp
    partner = _partner(store)
    sleeps: list[float] = []
    connector = _sap(server, sleeps)
    server.faults.add("503", SERVICE_ROOT, times=10)

    with pytest.raises(TransientConnectorError) as caught:
        connector.erase({"A_BusinessPartner": [partner]}, idempotency_key="k")
    connector.close()

    assert caught.value.status == 503
    assert len(server.faults.injected) == ATTEMPTS
    assert len(sleeps) == ATTEMPTS - 1
    assert store.partner(partner)["BusinessPartnerIsBlocked"] is False
