"""The Mixpanel emulator: deletion-task clock, shapes, caps, auth, cancel, 429."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lethe.emulators import EmulatorServer
from lethe.emulators.mixpanel import MixpanelStore, create_app
from tests._servers import Served, serve

GDPR_TOKEN = "gdpr-oauth-test"
PROJECT = "project-token-a"
OTHER = "project-token-b"
STEP = 10.0
DELETIONS = "/api/app/data-deletions/v3.0/"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def served() -> Iterator[Served[MixpanelStore]]:
    clock, rate_clock = Clock(), Clock()
    store = MixpanelStore(clock=clock)
    app = create_app(
        store,
        gdpr_token=GDPR_TOKEN,
        project_tokens=[PROJECT, OTHER],
        step_seconds=STEP,
        clock=rate_clock,
    )
    app.state.rate_clock = rate_clock

    def out_of_the_last_rate_window() -> None:
        rate_clock.now += 10

    yield from serve(store, app, on_fresh=out_of_the_last_rate_window)


@pytest.fixture
def clock(served: Served[MixpanelStore]) -> Clock:
    clock = served.store.clock
    assert isinstance(clock, Clock)
    return clock


@pytest.fixture
def api(server: EmulatorServer) -> Iterator[httpx.Client]:
    """A client whose every request comes a second after the last one."""
    rate_clock: Clock = server.app.state.rate_clock

    def one_second_later(_request: httpx.Request) -> None:
        rate_clock.now += 1.0

    with httpx.Client(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {GDPR_TOKEN}"},
        event_hooks={"request": [one_second_later]},
    ) as client:
        yield client


def _create(
    client: httpx.Client, ids: list[str], token: str = PROJECT, **body: object
) -> httpx.Response:
    payload = {"distinct_ids": ids, "compliance_type": "GDPR", **body}
    return client.post(DELETIONS, params={"token": token}, json=payload)


def _status(client: httpx.Client, tracking_id: str, token: str = PROJECT) -> str:
    response = client.get(f"{DELETIONS}{tracking_id}/", params={"token": token})
    assert response.status_code == 200
    return str(response.json()["results"]["status"])


def _task_id(client: httpx.Client, ids: list[str]) -> str:
    response = _create(client, ids)
    assert response.status_code == 201
    return str(response.json()["results"]["task_id"])


def test_store_task_moves_on_the_clock_and_erases_at_success() -> None:
    clock = Clock()
    store = MixpanelStore(clock=clock)
    store.add_event(PROJECT, "u1", "Signed Up", {"plan": "pro"})
    store.set_profile(PROJECT, "u1", {"$email": "u1@example.com"})
    store.add_event(PROJECT, "u2", "Signed Up")
    store.add_event(OTHER, "u1", "Signed Up")
    task = store.create_deletion(
        PROJECT, project_id=1, distinct_ids=["u1"], step_seconds=STEP
    )

    seen = []
    for _ in range(4):
        current = store.deletion(PROJECT, task["tracking_id"])
        assert current is not None
        seen.append(current["status"])
        if current["status"] != "SUCCESS":
            assert store.events_for(PROJECT, "u1") == 1
        clock.now += STEP

    assert seen == ["PENDING", "STAGING", "STARTED", "SUCCESS"]
    assert store.events_for(PROJECT, "u1") == 0
    assert not store.has_profile(PROJECT, "u1")
    assert store.events_for(PROJECT, "u2") == 1
    assert store.events_for(OTHER, "u1") == 1


def test_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "mixpanel.sqlite"
    first = MixpanelStore(path)
    first.add_event(PROJECT, "u1", "A", insert_id="i1")
    task = first.create_deletion(PROJECT, project_id=1, distinct_ids=["u9"])
    first.close()

    again = MixpanelStore(path)

    assert again.count() == 1
    assert again.deletion(PROJECT, task["tracking_id"]) is not None
    assert not again.add_event(PROJECT, "u1", "A", insert_id="i1")


def test_create_answers_201_with_a_task_id_and_status_has_every_field(
    api, clock
) -> None:
    created = _create(api, ["u1", "u2"], compliance_type="CCPA")
    task_id = created.json()["results"]["task_id"]

    status = api.get(f"{DELETIONS}{task_id}", params={"token": PROJECT}).json()

    assert created.status_code == 201 and created.json()["status"] == "ok"
    assert status["status"] == "ok"
    result = status["results"]
    assert result["tracking_id"] == task_id and result["status"] == "PENDING"
    assert result["compliance_type"] == "CCPA"
    assert result["distinct_ids"] == ["u1", "u2"]
    assert isinstance(result["project_id"], int) and result["requesting_user"]
    assert result["date_requested"].startswith("2023-11-14T22:13:20")


def test_task_status_follows_the_clock_over_http(api, clock, store) -> None:
    store.add_event(PROJECT, "u1", "A")
    task_id = _task_id(api, ["u1"])

    seen = []
    for _ in range(4):
        seen.append(_status(api, task_id))
        clock.now += STEP

    assert seen == ["PENDING", "STAGING", "STARTED", "SUCCESS"]
    assert store.events_for(PROJECT, "u1") == 0


def test_legacy_response_shape_lists_the_task_with_a_count() -> None:
    store = MixpanelStore()
    app = create_app(
        store,
        gdpr_token=GDPR_TOKEN,
        project_tokens=[PROJECT],
        legacy_response_shape=True,
    )
    with EmulatorServer(app) as server:
        response = httpx.post(
            f"{server.base_url}{DELETIONS}",
            params={"token": PROJECT},
            headers={"Authorization": f"Bearer {GDPR_TOKEN}"},
            json={"distinct_ids": ["u1", "u2", "u3"], "compliance_type": "GDPR"},
        )

    body = response.json()
    assert response.status_code == 201 and body["status"] == "ok"
    (task,) = body["results"]
    assert task["status"] == "PENDING" and task["distinct_id_count"] == 3
    assert task["compliance_type"] == "gdpr" and task["project_id"] == 3_100_001
    assert store.deletion(PROJECT, task["tracking_id"]) is not None
    assert {"date_requested", "requesting_user"} <= task.keys()


def test_create_takes_1999_ids_and_refuses_2000(api) -> None:
    accepted = _create(api, [f"u{i}" for i in range(1999)])
    refused = _create(api, [f"u{i}" for i in range(2000)])

    assert accepted.status_code == 201
    assert refused.status_code == 400
    assert refused.json()["status"] == "error" and "1999" in refused.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"distinct_ids": []},
        {"compliance_type": "GDPR"},
        {"distinct_ids": ["u1"], "compliance_type": "HIPAA"},
        {"distinct_ids": ["u1", ""]},
        {"distinct_ids": "u1"},
    ],
)
def test_create_refuses_bad_bodies_with_the_error_envelope(api, body) -> None:
    response = api.post(DELETIONS, params={"token": PROJECT}, json=body)

    assert response.status_code == 400
    assert response.json()["status"] == "error" and response.json()["error"]


def test_compliance_type_defaults_to_gdpr(api, store) -> None:
    response = api.post(
        DELETIONS, params={"token": PROJECT}, json={"distinct_ids": ["u1"]}
    )

    (task,) = store.deletions(PROJECT)
    assert response.status_code == 201 and task["compliance_type"] == "GDPR"


@pytest.mark.parametrize(
    ("headers", "params", "status"),
    [
        ({}, {"token": PROJECT}, 401),
        ({"Authorization": "Bearer wrong"}, {"token": PROJECT}, 401),
        ({"Authorization": f"Basic {GDPR_TOKEN}"}, {"token": PROJECT}, 401),
        ({"Authorization": f"Bearer {GDPR_TOKEN}"}, {}, 400),
        ({"Authorization": f"Bearer {GDPR_TOKEN}"}, {"token": "nope"}, 401),
    ],
)
def test_every_call_needs_the_oauth_token_and_a_project_token(
    server, headers, params, status
) -> None:
    response = httpx.get(
        f"{server.base_url}{DELETIONS}", headers=headers, params=params
    )

    assert response.status_code == status
    assert response.json()["status"] == "error" and response.json()["error"]


def test_unknown_or_foreign_tracking_id_is_a_404_with_the_envelope(api) -> None:
    task_id = _task_id(api, ["u1"])

    unknown = api.get(f"{DELETIONS}no-such-task/", params={"token": PROJECT})
    foreign = api.get(f"{DELETIONS}{task_id}/", params={"token": OTHER})

    for response in (unknown, foreign):
        assert response.status_code == 404
        assert response.json()["status"] == "error"


def test_list_shows_only_the_projects_tasks_newest_first(api) -> None:
    first = _task_id(api, ["u1"])
    second = _task_id(api, ["u2", "u3"])
    _create(api, ["u4"], token=OTHER)

    listed = api.get(DELETIONS, params={"token": PROJECT}).json()["results"]

    assert [t["tracking_id"] for t in listed] == [second, first]
    assert listed[0]["distinct_ids"] == ["u2", "u3"]
    assert listed[0]["status"] == "PENDING"


@pytest.mark.parametrize("elapsed", [0.0, STEP])
def test_cancel_while_pending_or_staging_revokes_and_keeps_the_data(
    api, clock, store, elapsed
) -> None:
    store.add_event(PROJECT, "u1", "A")
    task_id = _task_id(api, ["u1"])
    clock.now += elapsed

    cancelled = api.delete(f"{DELETIONS}{task_id}/", params={"token": PROJECT})
    clock.now += 3 * STEP

    assert cancelled.status_code == 204 and cancelled.content == b""
    assert _status(api, task_id) == "REVOKED"
    assert store.events_for(PROJECT, "u1") == 1


@pytest.mark.parametrize("elapsed", [2 * STEP, 3 * STEP])
def test_cancel_once_started_is_a_405(api, clock, elapsed) -> None:
    task_id = _task_id(api, ["u1"])
    clock.now += elapsed

    refused = api.delete(f"{DELETIONS}{task_id}", params={"token": PROJECT})

    assert refused.status_code == 405 and refused.json()["status"] == "error"
    assert _status(api, task_id) in ("STARTED", "SUCCESS")


def test_cancel_unknown_task_is_a_404(api) -> None:
    response = api.delete(f"{DELETIONS}no-such-task", params={"token": PROJECT})

    assert response.status_code == 404


@pytest.mark.parametrize("ending", ["FAILURE", "REVOKED", "NOT_FOUND", "UNKNOWN"])
def test_planned_outcome_ends_the_next_task_and_deletes_nothing(
    api, clock, store, ending
) -> None:
    store.add_event(PROJECT, "u1", "A")
    planned = api.post("/__emulator/outcomes", json={"status": ending})
    unlucky = _task_id(api, ["u1"])
    lucky = _task_id(api, ["u2"])
    clock.now += 3 * STEP

    assert planned.status_code == 200
    assert _status(api, unlucky) == ending
    assert _status(api, lucky) == "SUCCESS"
    assert store.events_for(PROJECT, "u1") == 1


def test_planned_outcome_rejects_an_unknown_status(api) -> None:
    response = api.post("/__emulator/outcomes", json={"status": "STAGED"})

    assert response.status_code == 422


def test_more_than_one_request_a_second_per_project_is_a_429(server, store) -> None:
    rate_clock: Clock = server.app.state.rate_clock
    url = f"{server.base_url}{DELETIONS}"
    headers = {"Authorization": f"Bearer {GDPR_TOKEN}"}

    first = httpx.get(url, headers=headers, params={"token": PROJECT})
    second = httpx.get(url, headers=headers, params={"token": PROJECT})
    other_project = httpx.get(url, headers=headers, params={"token": OTHER})
    rate_clock.now += 1.0
    later = httpx.get(url, headers=headers, params={"token": PROJECT})

    assert first.status_code == 200
    assert second.status_code == 429 and second.headers["Retry-After"] == "1"
    assert second.json()["status"] == "error"
    assert other_project.status_code == 200
    assert later.status_code == 200


def test_rate_limit_is_configurable(store) -> None:
    app = create_app(
        store,
        gdpr_token=GDPR_TOKEN,
        project_tokens=[PROJECT],
        clock=Clock(),
        rate_limit_per_second=3,
    )
    with EmulatorServer(app) as server:
        codes = [
            httpx.get(
                f"{server.base_url}{DELETIONS}",
                headers={"Authorization": f"Bearer {GDPR_TOKEN}"},
                params={"token": PROJECT},
            ).status_code
            for _ in range(4)
        ]

    assert codes == [200, 200, 200, 429]


def test_paths_work_with_and_without_the_trailing_slash(api) -> None:
    task_id = _task_id(api, ["u1"])
    bare = "/api/app/data-deletions/v3.0"

    assert api.get(bare, params={"token": PROJECT}).status_code == 200
    assert api.get(f"{bare}/{task_id}", params={"token": PROJECT}).status_code == 200
    assert api.get(f"{bare}/{task_id}/", params={"token": PROJECT}).status_code == 200


def test_unknown_path_is_a_404_without_the_mixpanel_envelope(api) -> None:
    response = api.get("/data-deletions/v3.0/", params={"token": PROJECT})

    assert response.status_code == 404
    assert "status" not in response.json()


def test_injected_fault_answers_before_the_api(api, server, store) -> None:
    server.faults.add("503", "/api/app/data-deletions", retry_after=4)

    response = _create(api, ["u1"])

    assert response.status_code == 503 and response.headers["Retry-After"] == "4"
    assert store.deletions(PROJECT) == []


def _basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{token}:".encode()).decode()}


def test_import_and_engage_fill_the_project(server, store) -> None:
    event = {
        "event": "Signed Up",
        "properties": {
            "time": 1_700_000_000_000,
            "distinct_id": "u1",
            "$insert_id": "ins-1",
            "plan": "pro",
        },
    }
    imported = httpx.post(
        f"{server.base_url}/import",
        params={"strict": "1"},
        headers=_basic(PROJECT),
        json=[event, event],
    )
    engaged = httpx.post(
        f"{server.base_url}/engage",
        json=[{"$token": PROJECT, "$distinct_id": "u1", "$set": {"$name": "Ada"}}],
    )
    refused = httpx.post(
        f"{server.base_url}/import", headers=_basic("nope"), json=[event]
    )

    assert imported.status_code == 200
    assert imported.json()["num_records_imported"] == 2
    assert store.events_for(PROJECT, "u1") == 1  # deduplicated by $insert_id
    assert engaged.text == "1" and store.has_profile(PROJECT, "u1")
    assert refused.status_code == 401 and store.count() == 1


def test_import_reports_invalid_records_and_keeps_the_rest(server, store) -> None:
    good = {
        "event": "A",
        "properties": {"time": 1, "distinct_id": "u1", "$insert_id": "a"},
    }
    bad = {"event": "A", "properties": {"distinct_id": "u2", "$insert_id": "b"}}

    response = httpx.post(
        f"{server.base_url}/import", headers=_basic(PROJECT), json=[good, bad]
    )

    body = response.json()
    assert response.status_code == 400 and body["num_records_imported"] == 1
    assert body["failed_records"][0]["field"] == "properties.time"
    assert store.events_for(PROJECT, "u1") == 1 and store.events_for(PROJECT, "u2") == 0
