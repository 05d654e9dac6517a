"""The Segment emulator: regulation clock, validation, tracking intake, faults."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from lethe.emulators import EmulatorServer
from lethe.emulators.segment import SegmentStore, create_app
from tests._servers import Served, serve

TOKEN = "sgp_test_token"
WRITE_KEY = "wk_test"
STEP = 10.0
FIXTURES = Path("/work/shared/data/analytics/segment-analytics-go-fixtures")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _track(message_id: str, user_id: str) -> dict[str, object]:
    return {
        "type": "track",
        "event": "Download",
        "messageId": message_id,
        "userId": user_id,
        "properties": {"plan": "pro"},
    }


@pytest.fixture(scope="module")
def served() -> Iterator[Served[SegmentStore]]:
    store = SegmentStore(clock=Clock())
    yield from serve(
        store, create_app(store, token=TOKEN, write_key=WRITE_KEY, step_seconds=STEP)
    )


@pytest.fixture
def api(server: EmulatorServer) -> Iterator[tuple[httpx.Client, EmulatorServer]]:
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        yield client, server


def _regulate(
    client: httpx.Client, ids: list[str], **overrides: object
) -> httpx.Response:
    body = {
        "regulationType": "SUPPRESS_WITH_DELETE",
        "subjectType": "USER_ID",
        "subjectIds": ids,
        **overrides,
    }
    return client.post("/regulations", json=body)


def _read(store: SegmentStore, regulate_id: str) -> dict[str, Any]:
    regulation = store.regulation(regulate_id)
    assert regulation is not None
    return regulation


def test_store_regulation_moves_on_the_clock_and_deletes_at_finish() -> None:
    clock = Clock()
    store = SegmentStore(clock=clock)
    store.add_event(type="track", message_id="m1", user_id="u1", event="A")
    store.add_event(type="track", message_id="m2", user_id="u2", event="A")
    regulate_id = store.create_regulation(
        regulation_type="SUPPRESS_WITH_DELETE",
        subject_type="USER_ID",
        subject_ids=["u1"],
        destinations=["Amplitude (Actions)"],
        step_seconds=10,
    )

    seen = [_read(store, regulate_id)["status"]]
    assert store.is_suppressed("u1") and store.events_for("u1") == 1
    clock.now += 10
    seen.append(_read(store, regulate_id)["status"])
    assert store.events_for("u1") == 1
    clock.now += 10
    final = _read(store, regulate_id)

    assert seen + [final["status"]] == ["INITIALIZED", "RUNNING", "FINISHED"]
    assert store.events_for("u1") == 0 and store.events_for("u2") == 1
    assert final["finishedAt"].endswith("Z")
    assert [d["status"] for d in final["destinationStatus"]] == ["FINISHED"]


def test_store_delete_only_deletes_without_suppressing() -> None:
    clock = Clock()
    store = SegmentStore(clock=clock)
    store.add_event(type="identify", message_id="m1", user_id="u1")
    store.create_regulation(
        regulation_type="DELETE_ONLY",
        subject_type="USER_ID",
        subject_ids=["u1"],
        step_seconds=1,
    )
    clock.now += 2

    assert store.events_for("u1") == 0
    assert not store.is_suppressed("u1")
    assert store.add_event(type="identify", message_id="m2", user_id="u1")


def test_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "segment.sqlite"
    first = SegmentStore(path)
    first.add_event(type="track", message_id="m1", user_id="u1", event="A")
    regulate_id = first.create_regulation(
        regulation_type="SUPPRESS_ONLY", subject_type="USER_ID", subject_ids=["u9"]
    )
    first.close()

    again = SegmentStore(path)

    assert again.count() == 1
    assert again.is_suppressed("u9")
    assert again.regulation(regulate_id) is not None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"regulationType": "DELETE_SUPPRESS"}, "regulationType"),
        ({"regulationType": "DELETE_ARCHIVE_ONLY"}, "regulationType"),
        ({"subjectType": "ANONYMOUS_ID"}, "subjectType"),
        ({"subjectIds": []}, "subjectIds"),
        ({"subjectIds": [f"u{i}" for i in range(5001)]}, "subjectIds"),
    ],
)
def test_create_regulation_rejects_invalid_bodies(api, overrides, field) -> None:
    client, _ = api
    response = _regulate(client, ["u1"], **overrides)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


def test_source_regulation_accepts_anonymous_ids_and_archive_only(api) -> None:
    client, _ = api
    body = {
        "regulationType": "DELETE_ARCHIVE_ONLY",
        "subjectType": "ANONYMOUS_ID",
        "subjectIds": ["anon-1"],
    }

    ok = client.post("/regulations/sources/src_emulated", json=body)
    unknown = client.post("/regulations/sources/src_other", json=body)

    assert ok.status_code == 200 and ok.json()["data"]["regulateId"]
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["type"]


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}"])
def test_public_api_needs_the_bearer_token(api, header) -> None:
    _, server = api
    headers = {"Authorization": header} if header else {}
    response = httpx.get(f"{server.base_url}/regulations", headers=headers)

    assert response.status_code == 401
    assert response.json()["errors"][0]["type"] == "unauthorized"


def test_get_regulation_unknown_id_is_a_documented_404(api) -> None:
    client, _ = api
    response = client.get("/regulations/1qJkfE1tpwvQcklImGksLN629wn")

    assert response.status_code == 404
    assert response.json()["errors"][0]["type"] == "not-found"


def test_get_regulation_has_the_documented_shape(api) -> None:
    client, _ = api
    regulate_id = _regulate(client, ["u1"]).json()["data"]["regulateId"]

    regulation = client.get(f"/regulations/{regulate_id}").json()["data"]["regulation"]

    assert regulation["id"] == regulate_id
    assert regulation["workspaceId"] == "ws_emulated"
    assert regulation["overallStatus"] == "INITIALIZED"
    assert "finishedAt" not in regulation
    destinations = regulation["streamStatus"][0]["destinationStatus"]
    assert {d["name"] for d in destinations} == {
        "Amplitude (Actions)",
        "Google Analytics 4",
    }
    assert set(destinations[0]) == {"name", "id", "status", "errString", "finishedAt"}


def test_list_regulations_filters_and_paginates(api) -> None:
    client, _ = api
    _regulate(client, ["u1"])
    _regulate(client, ["u2"])
    _regulate(client, ["u3"], regulationType="SUPPRESS_ONLY")
    params = {"regulationTypes": "SUPPRESS_WITH_DELETE", "pagination[count]": 1}

    first = client.get("/regulations", params=params).json()["data"]
    cursor = first["pagination"]["next"]
    second = client.get(
        "/regulations", params={**params, "pagination[cursor]": cursor}
    ).json()["data"]

    assert first["pagination"]["totalEntries"] == 2
    assert [r["subjects"] for r in first["regulations"] + second["regulations"]] == [
        ["u2"],
        ["u1"],
    ]
    assert "next" not in second["pagination"]
    assert set(first["regulations"][0]) >= {
        "id",
        "subjectType",
        "subjects",
        "status",
        "createdAt",
        "regulationType",
    }


def test_list_regulations_rejects_a_page_over_1000(api) -> None:
    client, _ = api
    response = client.get("/regulations", params={"pagination[count]": 1001})

    assert response.status_code == 422


@pytest.mark.parametrize(
    "name",
    [
        "test-enqueue-identify.json",
        "test-enqueue-track.json",
        "test-enqueue-page.json",
        "test-enqueue-alias.json",
        "test-context-track.json",
    ],
)
def test_batch_stores_the_go_library_payloads(api, store, name) -> None:
    if not FIXTURES.is_dir():
        pytest.skip("shared Segment fixtures are not on this machine")
    client, _ = api
    payload = json.loads((FIXTURES / name).read_text())
    user_id = payload["batch"][0]["userId"]

    response = client.post("/v1/batch", json=payload, headers=_basic(WRITE_KEY))

    assert response.status_code == 200 and response.json() == {"success": True}
    assert store.events_for(user_id) == 1


def test_batch_deduplicates_by_message_id(api, store) -> None:
    client, _ = api
    body = {"batch": [_track("same", "u1"), _track("same", "u1"), _track("m2", "u1")]}

    client.post("/v1/batch", json=body, headers=_basic(WRITE_KEY))

    assert store.events_for("u1") == 2


def test_batch_accepts_the_write_key_in_the_body(api, store) -> None:
    client, _ = api
    body = {"writeKey": WRITE_KEY, "batch": [_track("m1", "u1")]}

    httpx.post(f"{client.base_url}/v1/batch", json=body)

    assert store.count() == 1


def test_batch_with_a_wrong_write_key_answers_200_and_keeps_nothing(api, store) -> None:
    client, _ = api
    response = client.post(
        "/v1/batch", json={"batch": [_track("m1", "u1")]}, headers=_basic("nope")
    )

    assert response.status_code == 200
    assert store.count() == 0


def test_batch_drops_messages_without_identity_or_event_name(api, store) -> None:
    client, _ = api
    body = {
        "batch": [
            {"type": "track", "event": "A", "messageId": "m1"},
            {"type": "track", "messageId": "m2", "userId": "u1"},
            {"type": "identify", "messageId": "m3", "anonymousId": "anon-1"},
        ]
    }

    client.post("/v1/batch", json=body, headers=_basic(WRITE_KEY))

    assert store.count() == 1 and store.events_for_anonymous("anon-1") == 1


def test_batch_over_the_size_limit_is_400(api, store) -> None:
    client, _ = api
    big = _track("m1", "u1") | {"properties": {"blob": "x" * 33_000}}

    response = client.post(
        "/v1/batch", json={"batch": [big]}, headers=_basic(WRITE_KEY)
    )

    assert response.status_code == 400 and store.count() == 0


def test_suppressed_user_events_are_dropped_at_intake(api, store) -> None:
    client, _ = api
    _regulate(client, ["u1"])
    body = {"batch": [_track("m1", "u1"), _track("m2", "u2")]}

    client.post("/v1/batch", json=body, headers=_basic(WRITE_KEY))
    suppressed = client.get("/suppressions").json()["data"]["suppressed"]

    assert store.events_for("u1") == 0 and store.events_for("u2") == 1
    assert suppressed == [{"subjectType": "USER_ID", "subjectIds": ["u1"]}]


def _finish(client: httpx.Client, store: SegmentStore, ids: list[str]) -> dict:
    """File a regulation, move the vendor clock past its end, read it back."""
    regulate_id = _regulate(client, ids).json()["data"]["regulateId"]
    store.clock.now += 2 * STEP  # type: ignore[attr-defined]
    return client.get(f"/regulations/{regulate_id}").json()["data"]["regulation"]


def test_planned_destination_failure_finishes_with_one_destination_failed(api, store):
    client, server = api
    store.add_event(type="track", message_id="m1", user_id="u1", event="A")
    httpx.post(
        f"{server.base_url}/__emulator/outcomes",
        json={"destination_failed": "Google Analytics 4"},
    )

    regulation = _finish(client, store, ["u1"])

    statuses = {
        d["name"]: d["status"]
        for d in regulation["streamStatus"][0]["destinationStatus"]
    }
    assert regulation["overallStatus"] == "FINISHED"
    assert statuses == {
        "Amplitude (Actions)": "FINISHED",
        "Google Analytics 4": "FAILED",
    }
    assert store.events_for("u1") == 0


@pytest.mark.parametrize(("overall", "left"), [("FAILED", 1), ("PARTIAL_SUCCESS", 0)])
def test_planned_overall_outcome_ends_the_next_regulation(api, store, overall, left):
    client, _ = api
    store.add_event(type="track", message_id="m1", user_id="u1", event="A")
    store.outcomes.add(overall)

    regulation = _finish(client, store, ["u1"])
    after = _finish(client, store, ["u2"])

    assert regulation["overallStatus"] == overall
    assert after["overallStatus"] == "FINISHED"
    assert store.events_for("u1") == left


def test_injected_429_carries_the_rate_limit_headers(api, store) -> None:
    client, server = api
    server.faults.add("429", "/regulations", method="POST", retry_after=7)

    response = _regulate(client, ["u1"])

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert parsedate_to_datetime(response.headers["X-RateLimit-Reset"])
    assert store.regulations() == []


def test_regulation_creation_is_rate_limited_per_minute() -> None:
    app = create_app(
        SegmentStore(), token=TOKEN, write_key=WRITE_KEY, regulations_per_minute=3
    )
    with (
        EmulatorServer(app) as server,
        httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client,
    ):
        answers = [_regulate(client, [f"u{i}"]) for i in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[2].headers["X-RateLimit-Remaining"] == "0"
    assert int(answers[3].headers["Retry-After"]) > 0
    assert answers[3].json()["errors"][0]["type"] == "too-many-requests"


def test_planning_an_unknown_destination_failure_is_refused(api, store) -> None:
    _, server = api
    response = httpx.post(
        f"{server.base_url}/__emulator/outcomes", json={"destination_failed": "Nowhere"}
    )

    assert response.status_code == 422
    assert store.outcomes.pending() == 0
