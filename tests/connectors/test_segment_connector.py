"""SegmentConnector against the Segment emulator over loopback HTTP."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import pytest

from connectors.base import AsyncConnector, Outcome
from connectors.segment import SegmentConnector
from lethe.emulators import EmulatorServer
from lethe.emulators.segment import SegmentStore, create_app
from lethe.errors import ConfigError, ConnectorError, TransientConnectorError
from tests._servers import Served, serve

TOKEN = "sgp_test_token"
WRITE_KEY = "wk_test"
SOURCE = "src_emulated"
SUBJECT = "user-erase-me"
BYSTANDER = "user-bystander"


@pytest.fixture(scope="module")
def served() -> Iterator[Served[SegmentStore]]:
    store = SegmentStore()
    yield from serve(
        store, create_app(store, token=TOKEN, write_key=WRITE_KEY, step_seconds=0.03)
    )


@pytest.fixture
def segment(server: EmulatorServer) -> Iterator[SegmentConnector]:
    connector = SegmentConnector(
        system="analytics",
        base_url=server.base_url,
        token=TOKEN,
        source_id=SOURCE,
        timeout=2.0,
        rate_limit_per_second=None,  # pacing is tested in test_resilience.py
    )
    yield connector
    connector.close()


def _one_attempt(server: EmulatorServer, **options: float) -> SegmentConnector:
    """A connector that does not retry, to see the first transient error."""
    return SegmentConnector(
        system="analytics",
        base_url=server.base_url,
        token=TOKEN,
        max_attempts=1,
        **options,  # type: ignore[arg-type]
    )


def _send(server: EmulatorServer, *messages: dict[str, object]) -> None:
    auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    response = httpx.post(
        f"{server.base_url}/v1/batch",
        json={"batch": list(messages)},
        headers={"Authorization": f"Basic {auth}"},
    )
    response.raise_for_status()


def _track(message_id: str, user_id: str) -> dict[str, object]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": user_id,
        "properties": {"total": 12},
    }


def _poll_until_settled(
    connector: SegmentConnector, job_id: str, keys: dict[str, list[str]]
) -> Outcome:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        outcome = connector.poll(job_id, keys)
        if outcome.status != "pending":
            return outcome
        time.sleep(0.02)
    raise AssertionError("the regulation did not settle in time")


def test_segment_connector_meets_the_async_contract(segment) -> None:
    assert isinstance(segment, AsyncConnector)
    assert segment.capabilities.asynchronous and segment.capabilities.hard_delete
    assert segment.capabilities.batch_cap == 5000


def test_segment_locate_counts_the_keys_given(segment) -> None:
    located = segment.locate({"userId": ["a", "b", "a"], "anonymousId": ["x"]})

    assert located.counts == {"userId": 2, "anonymousId": 1}


def test_segment_erasure_deletes_the_subject_and_spares_the_bystander(
    segment, server, store
) -> None:
    _send(server, _track("b1", BYSTANDER), _track("b2", BYSTANDER))
    bystander_only = store.checksum()
    _send(server, _track("s1", SUBJECT), _track("s2", SUBJECT))
    keys = {"userId": [SUBJECT]}

    submitted = segment.submit(keys, idempotency_key="req-1:analytics")
    done = _poll_until_settled(segment, submitted.job_id, keys)
    evidence = segment.verify(keys)

    assert submitted.status == "pending" and submitted.job_id
    assert done.status == "done" and done.action == "deleted"
    assert done.vendor_status == "FINISHED" and done.records_affected == 1
    assert done.finished_at is not None
    assert evidence.verified
    assert evidence.observed == {"regulation": "FINISHED", "suppressed": 1}
    assert store.events_for(SUBJECT) == 0
    assert store.checksum() == bystander_only


def test_segment_suppression_keeps_later_events_out(segment, server, store) -> None:
    segment.submit({"userId": [SUBJECT]}, idempotency_key="req-1:analytics")

    _send(server, _track("late", SUBJECT))

    assert store.events_for(SUBJECT) == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_segment_poll_and_verify_follow_the_vendor_clock() -> None:
    clock = Clock()
    app = create_app(
        SegmentStore(clock=clock), token=TOKEN, write_key=WRITE_KEY, step_seconds=60
    )
    keys = {"userId": [SUBJECT]}
    with EmulatorServer(app) as server:
        connector = SegmentConnector(
            system="analytics", base_url=server.base_url, token=TOKEN
        )
        job_id = connector.submit(keys, idempotency_key="k").job_id
        assert job_id is not None
        seen = [connector.poll(job_id, keys)]
        early = connector.verify(keys)
        clock.now += 60
        seen.append(connector.poll(job_id, keys))
        clock.now += 60
        seen.append(connector.poll(job_id, keys))
        late = connector.verify(keys)
        connector.close()

    assert [(o.status, o.vendor_status) for o in seen] == [
        ("pending", "INITIALIZED"),
        ("pending", "RUNNING"),
        ("done", "FINISHED"),
    ]
    assert not early.verified and early.observed["regulation"] == "INITIALIZED"
    assert late.verified


def test_segment_verify_without_any_regulation_is_not_verified(segment) -> None:
    evidence = segment.verify({"userId": [SUBJECT]})

    assert not evidence.verified
    assert evidence.observed == {"regulation": "MISSING", "suppressed": 0}


def test_segment_find_job_returns_the_regulation_already_filed(segment, store) -> None:
    keys = {"userId": [SUBJECT, BYSTANDER]}
    submitted = segment.submit(keys, idempotency_key="req-1:analytics")

    found = segment.find_job({"userId": [BYSTANDER, SUBJECT]}, idempotency_key="x")
    other = segment.find_job({"userId": [SUBJECT]}, idempotency_key="y")

    assert found == submitted.job_id
    assert other is None
    assert len(store.regulations()) == 1


def test_segment_anonymous_ids_go_to_a_source_regulation(segment, store, server):
    _send(
        server,
        {"type": "page", "name": "Home", "messageId": "p1", "anonymousId": "anon-1"},
    )
    keys = {"userId": [SUBJECT], "anonymousId": ["anon-1"]}

    submitted = segment.submit(keys, idempotency_key="req-1:analytics")
    done = _poll_until_settled(segment, submitted.job_id, keys)

    scopes = sorted(
        (r["sourceId"] or "", r["subjectType"]) for r in store.regulations()
    )
    assert scopes == [("", "USER_ID"), (SOURCE, "ANONYMOUS_ID")]
    assert done.status == "done" and done.records_affected == 2
    assert store.events_for_anonymous("anon-1") == 0
    assert segment.verify(keys).verified


def test_segment_anonymous_ids_need_a_source_id(server) -> None:
    connector = SegmentConnector(
        system="analytics", base_url=server.base_url, token=TOKEN
    )

    with pytest.raises(ConfigError, match="source_id"):
        connector.submit({"anonymousId": ["anon-1"]}, idempotency_key="k")
    connector.close()


def test_segment_batches_over_5000_ids_into_several_regulations(segment, store):
    keys = {"userId": [f"user-{i}" for i in range(5001)]}

    submitted = segment.submit(keys, idempotency_key="req-1:analytics")
    done = _poll_until_settled(segment, submitted.job_id, keys)

    sizes = sorted(len(r["subjects"]) for r in store.regulations())
    assert sizes == [1, 5000]
    assert len(submitted.job_id.split(",")) == 2
    assert done.status == "done" and done.records_affected == 5001


def test_segment_resubmit_files_only_the_batches_not_yet_filed(segment, store):
    ids = [f"user-{i}" for i in range(5001)]
    first = segment.submit({"userId": ids[:5000]}, idempotency_key="req-1:analytics")

    again = segment.submit({"userId": ids}, idempotency_key="req-1:analytics")

    assert len(store.regulations()) == 2
    assert again.job_id.split(",")[0] == first.job_id


def test_segment_failed_destination_is_a_failed_outcome(segment, store) -> None:
    store.outcomes.add("FINISHED", destination_failed="Google Analytics 4")
    keys = {"userId": [SUBJECT]}

    submitted = segment.submit(keys, idempotency_key="req-1:analytics")
    outcome = _poll_until_settled(segment, submitted.job_id, keys)
    evidence = segment.verify(keys)

    assert outcome.status == "failed" and outcome.vendor_status == "FINISHED"
    assert "Google Analytics 4" in outcome.detail
    assert SUBJECT not in outcome.detail
    assert not evidence.verified
    assert evidence.observed["regulation"] == "DESTINATION_FAILED"


@pytest.mark.parametrize("overall", ["FAILED", "PARTIAL_SUCCESS"])
def test_segment_bad_overall_status_is_a_failed_outcome(segment, store, overall):
    store.outcomes.add(overall)
    keys = {"userId": [SUBJECT]}

    submitted = segment.submit(keys, idempotency_key="req-1:analytics")
    outcome = _poll_until_settled(segment, submitted.job_id, keys)

    assert outcome.status == "failed" and outcome.vendor_status == overall
    assert outcome.action == "none"


def test_segment_429_is_transient_with_retry_after(server, store) -> None:
    server.faults.add("429", "/regulations", method="POST", retry_after=7)
    segment = _one_attempt(server)

    with pytest.raises(TransientConnectorError) as caught:
        segment.submit({"userId": [SUBJECT]}, idempotency_key="k")
    segment.close()

    assert caught.value.status == 429 and caught.value.retry_after == 7
    assert SUBJECT not in str(caught.value)
    assert store.regulations() == []


def test_segment_429_without_retry_after_uses_the_reset_header() -> None:
    app = create_app(
        SegmentStore(), token=TOKEN, write_key=WRITE_KEY, regulations_per_minute=1
    )
    with EmulatorServer(app) as server:
        connector = _one_attempt(server)
        connector.submit({"userId": ["u1"]}, idempotency_key="k1")
        with pytest.raises(TransientConnectorError) as caught:
            connector.submit({"userId": ["u2"]}, idempotency_key="k2")
        connector.close()

    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 60


def test_segment_500_on_poll_is_transient(server) -> None:
    keys = {"userId": [SUBJECT]}
    segment = _one_attempt(server)
    submitted = segment.submit(keys, idempotency_key="k")
    server.faults.add("500", "/regulations/", method="GET")

    with pytest.raises(TransientConnectorError) as caught:
        segment.poll(submitted.job_id, keys)
    segment.close()

    assert caught.value.status == 500


def test_segment_timeout_is_transient(server) -> None:
    server.faults.add("timeout", "/regulations", delay=1.0)
    connector = _one_attempt(server, timeout=0.2)

    with pytest.raises(TransientConnectorError, match="timed out"):
        connector.submit({"userId": [SUBJECT]}, idempotency_key="k")
    connector.close()


def test_segment_wrong_base_url_is_a_config_error(server) -> None:
    connector = SegmentConnector(
        system="analytics", base_url=f"{server.base_url}/v2", token=TOKEN
    )

    with pytest.raises(ConfigError, match="base_url"):
        connector.submit({"userId": [SUBJECT]}, idempotency_key="k")
    connector.close()


def test_segment_wrong_token_is_a_config_error(server) -> None:
    connector = SegmentConnector(
        system="analytics", base_url=server.base_url, token="wrong"
    )

    with pytest.raises(ConfigError, match="token"):
        connector.submit({"userId": [SUBJECT]}, idempotency_key="k")
    connector.close()


def test_segment_unknown_source_is_a_config_error(server) -> None:
    connector = SegmentConnector(
        system="analytics",
        base_url=server.base_url,
        token=TOKEN,
        source_id="src_missing",
    )

    with pytest.raises(ConfigError, match="source_id"):
        connector.submit({"anonymousId": ["anon-1"]}, idempotency_key="k")
    connector.close()


def test_segment_unknown_regulation_is_a_connector_error(segment) -> None:
    with pytest.raises(ConnectorError) as caught:
        segment.poll("1qJkfE1tpwvQcklImGksLN629wn", {"userId": [SUBJECT]})

    assert caught.value.status == 404
    assert not isinstance(caught.value, TransientConnectorError)


def test_segment_unknown_dataset_is_a_config_error(segment) -> None:
    with pytest.raises(ConfigError, match="userId or anonymousId"):
        segment.locate({"email": ["someone@example.com"]})
