"""The Amplitude emulator: id caps, invalid ids, org-wide jobs, the job clock,
staging removal, the six-month range, User Search, rate limit and faults."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from lethe.emulators import EmulatorServer
from lethe.emulators.amplitude import AmplitudeStore, Schedule, create_app
from tests._servers import Served, serve

PROJECTS = {
    "web": ("web-key", "web-secret"),
    "app": ("app-key", "app-secret"),
    "ios": ("ios-key", "ios-secret"),
}
DAY = 86_400.0
START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, days: int) -> None:
        self.now += days * DAY

    def rewind(self) -> None:
        self.now = START

    def today(self) -> date:
        return datetime.fromtimestamp(self.now, UTC).date()


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


@pytest.fixture
def api(server: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5.0) as client:
        yield client


def _auth(project: str) -> tuple[str, str]:
    return PROJECTS[project]


def _delete(api: httpx.Client, project: str = "web", **body: Any) -> httpx.Response:
    body.setdefault("requester", "dpo@example.com")
    return api.post("/api/2/deletions/users", json=body, auth=_auth(project))


def _jobs(api: httpx.Client, project: str, start: date, end: date) -> Any:
    response = api.get(
        "/api/2/deletions/users",
        params={"start_day": start.isoformat(), "end_day": end.isoformat()},
        auth=_auth(project),
    )
    assert response.status_code == 200, response.text
    return response.json()


def _all_jobs(api: httpx.Client, project: str, clock: Clock) -> Any:
    return _jobs(
        api,
        project,
        clock.today() - timedelta(days=60),
        clock.today() + timedelta(days=60),
    )


def test_deletion_accepts_100_ids_and_refuses_101(
    api: httpx.Client, store: AmplitudeStore, clock: Clock
) -> None:
    ids = [f"user-{i}" for i in range(101)]
    for user_id in ids:
        store.add_event("web", user_id, "Page Viewed")

    refused = _delete(api, user_ids=ids)
    accepted = _delete(
        api,
        user_ids=ids[:99],
        amplitude_ids=[store.search("web", ids[100])[1][0]["amplitude_id"]],
    )

    assert refused.status_code == 400
    assert "100" in refused.json()["error"]
    assert accepted.status_code == 200
    assert len(accepted.json()["amplitude_ids"]) == 100
    assert accepted.json()["day"] == (clock.today() + timedelta(days=3)).isoformat()
    assert accepted.json()["status"] == "staging"


def test_deletion_with_an_unknown_id_marks_nothing(
    api: httpx.Client, store: AmplitudeStore, clock: Clock
) -> None:
    store.add_event("web", "known", "Signed Up")

    response = _delete(api, user_ids=["known", "stranger"])

    assert response.status_code == 400
    assert response.json()["invalid_ids"] == ["stranger"]
    assert _all_jobs(api, "web", clock) == []


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("ignore_invalid_ids", True),
        ("ignore_invalid_id", True),
        ("ignore_invalid_id", "True"),
        ("ignore_invalid_ids", "true"),
    ],
)
def test_deletion_ignoring_invalid_ids_lists_them(
    api: httpx.Client, store: AmplitudeStore, clock: Clock, flag: str, value: object
) -> None:
    known = store.add_event("web", "known", "Signed Up")

    response = _delete(
        api,
        user_ids=["known", "stranger"],
        amplitude_ids=[42],
        include_mapped_user_ids=True,
        **{flag: value},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["invalid_ids"] == [42, "stranger"]
    assert body["user_ids"] == ["known"]
    assert body["amplitude_ids"] == [
        {
            "amplitude_id": known,
            "requester": "dpo@example.com",
            "requested_on_day": clock.today().isoformat(),
            "user_id": "known",
        }
    ]
    assert "app" not in body
    listed = _all_jobs(api, "web", clock)
    assert [e["amplitude_id"] for e in listed[0]["amplitude_ids"]] == [known]


def test_deletion_from_org_files_one_job_per_project_holding_the_user(
    api: httpx.Client, store: AmplitudeStore, clock: Clock
) -> None:
    in_web = store.add_event("web", "roamer", "Opened")
    in_app = store.add_event("app", "roamer", "Opened")
    store.add_event("ios", "someone-else", "Opened")

    response = _delete(
        api,
        user_ids=["roamer", "stranger"],
        delete_from_org="true",
        ignore_invalid_ids=False,
    )

    assert response.status_code == 200, response.text
    answers = response.json()
    assert [a["amplitude_ids"][0]["amplitude_id"] for a in answers] == [in_web, in_app]
    assert len({a["app"] for a in answers}) == 2
    assert all(a["invalid_ids"] == ["stranger"] for a in answers)
    assert _all_jobs(api, "ios", clock) == []
    app_jobs = _all_jobs(api, "app", clock)
    assert app_jobs[0]["amplitude_ids"][0]["amplitude_id"] == in_app
    assert "app" in app_jobs[0]


def test_deletion_refuses_an_empty_or_malformed_body(
    api: httpx.Client, store: AmplitudeStore
) -> None:
    assert _delete(api).status_code == 400
    assert _delete(api, user_ids="not-a-list").status_code == 400
    assert _delete(api, user_ids=["x"], ignore_invalid_ids="maybe").status_code == 400
    bad_json = api.post(
        "/api/2/deletions/users",
        content=b"{",
        auth=_auth("web"),
        headers={"Content-Type": "application/json"},
    )
    assert bad_json.status_code == 400


def test_requests_join_the_open_staging_job(
    api: httpx.Client, store: AmplitudeStore, clock: Clock
) -> None:
    store.add_event("web", "first", "Opened")
    store.add_event("web", "second", "Opened")

    day = _delete(api, user_ids=["first"]).json()["day"]
    clock.advance(1)
    joined = _delete(api, user_ids=["second"]).json()

    assert joined["day"] == day
    jobs = _all_jobs(api, "web", clock)
    assert len(jobs) == 1
    assert [e["requested_on_day"] for e in jobs[0]["amplitude_ids"]] == [
        (clock.today() - timedelta(days=1)).isoformat(),
        clock.today().isoformat(),
    ]


def test_job_states_follow_the_simulated_days(
    api: httpx.Client, store: AmplitudeStore, clock: Clock
) -> None:
    subject = store.add_event("web", "leaver", "Purchased")
    store.add_event("web", "leaver", "Purchased")
    store.add_event("web", "stayer", "Purchased")
    day = date.fromisoformat(_delete(api, user_ids=["leaver"]).json()["day"])

    def job() -> dict[str, Any]:
        return _jobs(api, "web", day, day)[0]

    assert job()["status"] == "staging"
    clock.advance(3)
    assert job()["status"] == "submitted"
    assert "active_scrub_done_date" not in job()
    assert store.events_for("web", "leaver") == 2
    clock.advance(7)
    scrubbed = job()
    assert scrubbed["status"] == "submitted"
    assert scrubbed["active_scrub_done_date"] == (day + timedelta(days=7)).isoformat()
    assert store.events_for("web", "leaver") == 0
    assert store.events_for("web", "stayer") == 1
    clock.advance(4)
    assert job()["status"] == "submitted"
    clock.advance(1)
    assert job()["status"] == "done"
    assert job()["amplitude_ids"][0]["amplitude_id"] == subject


def test_staging_job_member_can_be_removed_until_the_run_day(
    api: httpx.Client, store: AmplitudeStore, clock: Clock
) -> None:
    kept = store.add_event("web", "kept", "Opened")
    removed = store.add_event("web", "removed", "Opened")
    day = _delete(api, user_ids=["kept", "removed"]).json()["day"]

    response = api.delete(f"/api/2/deletions/users/{removed}/{day}", auth=_auth("web"))

    assert response.status_code == 200
    assert response.json() == {
        "amplitude_id": removed,
        "requester": "dpo@example.com",
        "requested_on_day": clock.today().isoformat(),
    }
    clock.advance(3)
    locked = api.delete(f"/api/2/deletions/users/{kept}/{day}", auth=_auth("web"))
    assert locked.status_code == 400
    clock.advance(7)
    assert store.events_for("web", "removed") == 1
    assert store.events_for("web", "kept") == 0


def test_removal_from_an_unknown_job_is_refused(
    api: httpx.Client, store: AmplitudeStore
) -> None:
    response = api.delete("/api/2/deletions/users/123/2026-03-05", auth=_auth("web"))
    assert response.status_code == 400
    not_a_day = api.delete("/api/2/deletions/users/123/soon", auth=_auth("web"))
    assert not_a_day.status_code == 400


@pytest.mark.parametrize(
    ("start", "end", "status"),
    [
        ("2026-01-31", "2026-07-31", 200),
        ("2026-01-31", "2026-08-01", 400),
        ("2026-02-01", "2026-01-31", 400),
        ("20260201", "20260301", 200),
        ("2026-02-01", None, 400),
        ("yesterday", "2026-03-01", 400),
    ],
)
def test_job_list_range_is_at_most_six_months(
    api: httpx.Client, store: AmplitudeStore, start: str, end: str | None, status: int
) -> None:
    params = {"start_day": start} | ({"end_day": end} if end else {})
    response = api.get("/api/2/deletions/users", params=params, auth=_auth("web"))
    assert response.status_code == status


def test_job_list_shows_only_the_callers_project(
    api: httpx.Client, store: AmplitudeStore, clock: Clock
) -> None:
    store.add_event("web", "someone", "Opened")
    _delete(api, user_ids=["someone"])

    assert len(_all_jobs(api, "web", clock)) == 1
    assert _all_jobs(api, "app", clock) == []


def test_usersearch_finds_by_user_device_and_amplitude_id(
    api: httpx.Client, store: AmplitudeStore
) -> None:
    amplitude_id = store.add_event("web", "u-1", "Opened", device_id="dev-1")
    store.add_event("app", "u-1", "Opened")

    def search(term: str, project: str = "web") -> Any:
        response = api.get(
            "/api/2/usersearch", params={"user": term}, auth=_auth(project)
        )
        assert response.status_code == 200
        return response.json()

    expected = [{"amplitude_id": amplitude_id, "user_id": "u-1"}]
    assert search("u-1") == {"matches": expected, "type": "match_user_or_device_id"}
    assert search("dev-1")["matches"] == expected
    assert search(str(amplitude_id)) == {
        "matches": expected,
        "type": "match_amplitude_id",
    }
    assert search("nobody") == {"matches": [], "type": "nomatch"}
    assert search("u-1", "app")["matches"][0]["amplitude_id"] != amplitude_id
    missing = api.get("/api/2/usersearch", auth=_auth("web"))
    assert missing.status_code == 400


def test_usersearch_no_longer_finds_a_scrubbed_user(
    api: httpx.Client, store: AmplitudeStore, clock: Clock
) -> None:
    old = store.add_event("web", "returner", "Opened")
    _delete(api, user_ids=["returner"])
    clock.advance(10)

    found = api.get("/api/2/usersearch", params={"user": "returner"}, auth=_auth("web"))
    new = store.add_event("web", "returner", "Opened")

    assert found.json()["matches"] == []
    assert new != old


@pytest.mark.parametrize("auth", [("web-key", "wrong"), ("nobody", "web-secret"), None])
def test_wrong_credentials_get_401(
    api: httpx.Client, store: AmplitudeStore, auth: tuple[str, str] | None
) -> None:
    for method, path in (
        ("POST", "/api/2/deletions/users"),
        ("GET", "/api/2/deletions/users"),
        ("GET", "/api/2/usersearch"),
    ):
        response = api.request(method, path, auth=auth, json={"user_ids": ["x"]})
        assert response.status_code == 401


def test_injected_faults_answer_before_the_api(
    api: httpx.Client,
    store: AmplitudeStore,
    server: EmulatorServer,
) -> None:
    store.add_event("web", "someone", "Opened")
    server.faults.add("503", "/api/2/deletions", retry_after=2)

    failed = _delete(api, user_ids=["someone"])
    passed = _delete(api, user_ids=["someone"])

    assert failed.status_code == 503
    assert failed.headers["Retry-After"] == "2"
    assert passed.status_code == 200


def test_rate_limit_answers_429_with_retry_after() -> None:
    store = AmplitudeStore()
    store.add_event("web", "someone", "Opened")
    app = create_app(store, projects=PROJECTS, rate_limit_per_second=1.0)
    with EmulatorServer(app) as server, httpx.Client(base_url=server.base_url) as api:
        first = _delete(api, user_ids=["someone"])
        second = _delete(api, user_ids=["someone"])
        other_project = _jobs(api, "app", date(2026, 1, 1), date(2026, 2, 1))
        search = api.get(
            "/api/2/usersearch", params={"user": "someone"}, auth=_auth("web")
        )

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "1"
    assert other_project == []
    assert search.status_code == 200


def test_store_keeps_users_and_jobs_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "amplitude.db"
    clock = Clock()
    store = AmplitudeStore(path, clock=clock)
    amplitude_id = store.add_event("web", "durable", "Opened")
    members, _ = store.resolve("web", [], ["durable"])
    store.schedule_deletion("web", members, requester="dpo", schedule=Schedule())
    checksum = store.checksum()
    store.close()

    reopened = AmplitudeStore(path, clock=clock)
    jobs = reopened.jobs("web", clock.today(), clock.today() + timedelta(days=5))

    assert reopened.checksum() == checksum
    assert jobs[0]["amplitude_ids"][0]["amplitude_id"] == amplitude_id
    assert reopened.add_event("web", "newcomer", "Opened") == amplitude_id + 1
    reopened.close()


def test_store_clock_defaults_to_real_time() -> None:
    store = AmplitudeStore()
    assert store.today() == datetime.fromtimestamp(time.time(), UTC).date()
