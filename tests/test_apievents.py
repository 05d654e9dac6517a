"""ApiEvent lineage: the loopback org logs who read which records, the connector
reads the log past a watermark, and capture turns each read into copies in the
reader's downstream dataset, once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from connectors.salesforce import SalesforceConnector
from lethe import ledger
from lethe.emulators import EmulatorServer
from lethe.emulators.salesforce import DEFAULT_USERNAME, SalesforceStore, create_app
from lethe.errors import ConfigError
from lethe.estate.jobs import SalesforceAccess, soql
from lethe.identity import salesforce_id_18
from lethe.runtime import current
from lineage import SourceRecord, record_source_snapshot, subject_digest, where
from lineage.apievent_models import ApiEventWatermark
from lineage.apievents import apievent_watermark, record_api_events, record_ids
from lineage.models import Copy

ESTATE = "apievent-estate"
V = "/services/data/v60.0"
WAREHOUSE = ("wh-cid", "wh-secret", "etl.warehouse@integration.example")
BI = ("bi-cid", "bi-secret", "etl.bi@integration.example")
ANALYST = ("ws-cid", "ws-secret", "analyst@acme.example")
ATTRIBUTION = {
    "nightly_extract": "warehouse:raw.sf_contact",  # by pipeline_id header
    BI[2]: "analytics:crm_users",  # by Username
    DEFAULT_USERNAME: "",  # lethe's own reads make no copy
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_780_000_000.0  # 2026-05-28T20:26:40Z

    def __call__(self) -> float:
        return self.now


@dataclass
class Org:
    store: SalesforceStore
    base_url: str
    clock: Clock
    contacts: list[str]

    def read(
        self, who: tuple[str, str, str], ids: list[str], pipeline: str | None = None
    ) -> list[str]:
        """One downstream extractor's read, as its own integration user."""
        access = SalesforceAccess(self.base_url, who[0], who[1], pipeline_id=pipeline)
        in_list = ",".join(f"'{i}'" for i in ids)
        text = f"SELECT Id, Email FROM Contact WHERE Id IN ({in_list})"  # noqa: S608
        rows = soql(access, text)
        return [row["Id"] for row in rows]

    def connector(self) -> SalesforceConnector:
        return SalesforceConnector(
            system="salesforce",
            base_url=self.base_url,
            client_id="lethe-cid",
            client_secret="lethe-secret",
        )

    def events(self, since: str | None = None, after: str | None = None) -> list[dict]:
        """The ApiEvent stream past a watermark, read by lethe's connector."""
        with closing(self.connector()) as sf:
            return list(sf.api_events(since, after=after))


@contextmanager
def serving(**settings: Any) -> Iterator[Org]:
    """A loopback org with six Contacts and three integration users."""
    store = SalesforceStore()
    contacts = [
        store.insert("Contact", {"LastName": f"P{n}", "Email": f"p{n}@example.org"})
        for n in range(6)
    ]
    clock = Clock()
    app = create_app(
        store,
        client_id="lethe-cid",
        client_secret="lethe-secret",
        integrations={who[0]: (who[1], who[2]) for who in (WAREHOUSE, BI, ANALYST)},
        clock=clock,
        **settings,
    )
    with EmulatorServer(app) as server:
        yield Org(store, server.base_url, clock, contacts)
    store.close()


@pytest.fixture
def org() -> Iterator[Org]:
    with serving() as running:
        yield running


def _capture(events: list[dict], attribution: dict[str, str] = ATTRIBUTION) -> Any:
    with ledger.session() as db:
        return record_api_events(
            db, current().vault, ESTATE, events, attribution=attribution
        )


def _copies() -> list[Copy]:
    with ledger.session() as db:
        return list(db.exec(select(Copy).where(Copy.estate == ESTATE)))


def _keys_by_dataset() -> dict[str, set[str]]:
    vault = current().vault
    found: dict[str, set[str]] = {}
    with ledger.session() as db:
        for copy in db.exec(select(Copy).where(Copy.estate == ESTATE)):
            assert copy.key_sealed is not None
            key = vault.open(db, "lineage", copy.key_sealed)
            found.setdefault(copy.dataset, set()).add(key)
    return found


# -- the stream yields copies in the right downstream ----------------------------


def test_api_events_yield_copies_attributed_to_each_downstream(
    home: Path, org: Org
) -> None:
    a, b = org.contacts[:3], org.contacts[3:5]
    assert sorted(org.read(WAREHOUSE, a, pipeline="nightly_extract")) == sorted(a)
    assert sorted(org.read(BI, b)) == sorted(b)

    capture = _capture(org.events())

    assert _keys_by_dataset() == {
        "warehouse:raw.sf_contact": set(a),
        "analytics:crm_users": set(b),
    }
    assert capture.copies == 5 and capture.attributed_events == 2
    assert capture.unattributed == {} and capture.complete
    copies = {c.dataset: c for c in _copies()}
    warehouse = copies["warehouse:raw.sf_contact"]
    assert warehouse.system == "warehouse" and warehouse.learned_from == "apievent"
    assert warehouse.job == "nightly_extract"
    assert copies["analytics:crm_users"].job == BI[2]
    event_ids = {e["EventIdentifier"] for e in org.events()}
    assert {c.run_id for c in _copies()} <= event_ids
    # Lineage now answers "where is this person?" from the read alone.
    vault = current().vault
    with ledger.session() as db:
        held = where(db, ESTATE, [subject_digest(vault, a[0])], vault=vault)
    assert [(h.dataset, h.keys) for h in held] == [("warehouse:raw.sf_contact", {a[0]})]


def test_unattributed_reader_is_counted_never_guessed(home: Path, org: Org) -> None:
    org.read(ANALYST, org.contacts[:2])
    org.read(ANALYST, org.contacts[2:3], pipeline="adhoc_export")

    capture = _capture(org.events())

    assert capture.copies == 0 and _copies() == []
    assert capture.unattributed == {ANALYST[2]: 1, "adhoc_export": 1}
    assert capture.unattributed_events == 2
    assert ANALYST[2] not in repr(capture)
    with ledger.session() as db:
        mark = db.exec(select(ApiEventWatermark)).one()
    assert mark.unattributed_events == 2 and mark.copies == 0


def test_lethe_own_reads_are_known_and_make_no_copy(home: Path, org: Org) -> None:
    with closing(org.connector()) as sf:
        sf.locate({"Contact": org.contacts[:2]})

    capture = _capture(org.events())

    assert capture.events == 1 and capture.ignored_events == 1
    assert capture.copies == 0 and capture.unattributed == {}


# -- incremental and idempotent ---------------------------------------------------


def test_capture_twice_adds_nothing(home: Path, org: Org) -> None:
    org.read(WAREHOUSE, org.contacts[:3], pipeline="nightly_extract")
    events = org.events()
    first = _capture(events)

    again = _capture(events)

    assert first.copies == 3
    assert again.copies == 0 and again.events == 0 and again.skipped == len(events)
    assert len(_copies()) == 3
    with ledger.session() as db:
        since, after = apievent_watermark(db, ESTATE)  # type: ignore[misc]
    assert org.events(since, after) == []


def test_new_reads_after_the_watermark_are_the_only_ones_captured(
    home: Path, org: Org
) -> None:
    org.read(WAREHOUSE, org.contacts[:2], pipeline="nightly_extract")
    _capture(org.events())
    with ledger.session() as db:
        since, after = apievent_watermark(db, ESTATE)  # type: ignore[misc]
    org.clock.now += 60
    org.read(BI, org.contacts[4:6])

    new = org.events(since, after)
    capture = _capture(new)

    assert [e["Username"] for e in new] == [BI[2]]
    assert capture.events == 1 and capture.copies == 2
    assert _keys_by_dataset() == {
        "warehouse:raw.sf_contact": set(org.contacts[:2]),
        "analytics:crm_users": set(org.contacts[4:6]),
    }
    with ledger.session() as db:
        assert apievent_watermark(db, ESTATE) == (
            new[0]["EventDate"],
            new[0]["EventIdentifier"],
        )


def test_events_sharing_an_event_date_are_split_by_identifier(
    home: Path, org: Org
) -> None:
    org.read(WAREHOUSE, org.contacts[:1], pipeline="nightly_extract")
    org.read(WAREHOUSE, org.contacts[1:2], pipeline="nightly_extract")
    events = org.events()  # the clock stood still: one EventDate
    assert len({e["EventDate"] for e in events}) == 1
    first, second = events

    assert org.events(first["EventDate"], first["EventIdentifier"]) == [second]
    assert org.events(first["EventDate"]) == []  # no identifier: all at it seen
    assert first["EventIdentifier"] < second["EventIdentifier"]


def test_the_watermark_belongs_to_one_estate(home: Path, org: Org) -> None:
    org.read(WAREHOUSE, org.contacts[:1], pipeline="nightly_extract")
    events = org.events()
    _capture(events)

    with ledger.session() as db:
        other = record_api_events(
            db, current().vault, "other-estate", events, attribution=ATTRIBUTION
        )

    assert other.copies == 1 and other.skipped == 0


# -- what ApiEvent does not say ---------------------------------------------------


def test_truncated_records_is_flagged_not_passed_off_as_complete(
    home: Path,
) -> None:
    with serving(api_event_records_limit=300) as org:
        org.read(WAREHOUSE, org.contacts, pipeline="nightly_extract")
        (event,) = org.events()
        assert len(event["Records"]) == 300 and event["RowsReturned"] == 6

        capture = _capture([event])

    assert not capture.complete
    (defect,) = capture.defects
    assert defect.kind == "truncated" and defect.event_identifier
    assert 0 < capture.copies < 6 and defect.missing == 6 - capture.copies
    with ledger.session() as db:
        assert db.exec(select(ApiEventWatermark)).one().incomplete_events == 1


def _records(ids: list[str]) -> str:
    rows = [{"attributes": {"type": "Contact"}, "Id": i} for i in ids]
    return json.dumps({"totalSize": len(ids), "done": True, "records": rows})


IDS = [salesforce_id_18("003Dn0000000001"), salesforce_id_18("003Dn0000000002")]


@pytest.mark.parametrize(
    ("records", "returned", "kind", "found"),
    [
        (_records(IDS), 2, None, 2),
        (_records(IDS[:1]), 2, "short", 1),
        (None, 3, "missing", 0),
        (None, 0, None, 0),
        (_records(IDS)[:-40], 2, "truncated", 1),
        ("not json at all", 1, "truncated", 0),
        (json.dumps([{"Id": IDS[0]}]), 1, "unrecognised", 1),
    ],
)
def test_record_ids_say_what_records_misses(
    records: str | None, returned: int, kind: str | None, found: int
) -> None:
    event = {"EventIdentifier": "e-1", "Records": records, "RowsReturned": returned}

    ids, defect = record_ids(event)

    assert len(ids) == found
    assert (defect.kind if defect else None) == kind
    if defect:
        assert defect.missing == returned - found


def test_a_case_read_belongs_to_its_contact_when_the_snapshot_knows(
    home: Path, org: Org
) -> None:
    contact = org.contacts[0]
    case = org.store.insert("Case", {"ContactId": contact, "Subject": "hello"})
    vault = current().vault
    with ledger.session() as db:
        snapshot = [SourceRecord("Case", case, parent_id=contact)]
        record_source_snapshot(db, vault, ESTATE, "salesforce", snapshot)
    access = SalesforceAccess(org.base_url, *WAREHOUSE[:2], "nightly_extract")
    list(soql(access, f"SELECT Id FROM Case WHERE Id = '{case}'"))  # noqa: S608

    _capture(org.events())

    copy = next(c for c in _copies() if c.learned_from == "apievent")
    assert copy.subject_digest == subject_digest(vault, contact)
    assert copy.key_digest != subject_digest(vault, contact)


def test_bad_attribution_is_a_config_error(home: Path) -> None:
    with pytest.raises(ConfigError, match="system:dataset"):
        _capture([], {"nightly_extract": "raw.sf_contact"})


# -- the emulator's ApiEvent ------------------------------------------------------


def _token(org: Org, who: tuple[str, str, str]) -> str:
    form = {"grant_type": "client_credentials", "client_id": who[0]}
    form["client_secret"] = who[1]
    answer = httpx.post(f"{org.base_url}/services/oauth2/token", data=form)
    return str(answer.json()["access_token"])


def _query(org: Org, token: str, text: str, **headers: str) -> httpx.Response:
    return httpx.get(
        f"{org.base_url}{V}/query",
        params={"q": text},
        headers={"Authorization": f"Bearer {token}", **headers},
    )


def test_connected_app_id_only_on_the_call_that_authenticated(org: Org) -> None:
    token = _token(org, WAREHOUSE)
    _query(org, token, "SELECT Id FROM Contact").raise_for_status()
    _query(org, token, "SELECT Id FROM Contact").raise_for_status()
    _query(org, _token(org, BI), "SELECT Id FROM Contact").raise_for_status()
    direct = org.store.issue_token(username=BI[2])
    _query(org, direct, "SELECT Id FROM Contact").raise_for_status()

    apps = [e["ConnectedAppId"] for e in org.store.api_events()]

    assert apps[0] and apps[0].startswith("0H4") and apps[1] is None
    assert apps[2] and apps[2] != apps[0]  # each integration is its own app
    assert apps[3] is None  # no OAuth flow made that session


def test_api_event_row_says_who_read_what(org: Org) -> None:
    token = _token(org, WAREHOUSE)
    query = "SELECT Email FROM Contact WHERE Email = 'p1@example.org'"
    headers = {
        "x-sfdc-addinfo-pipeline_id": "nightly_extract",
        "X-SFDC-AddInfo-Run": "42",
        "x-sfdc-addinfo-a": "one character is too short",
        "x-sfdc-addinfo-" + "n" * 30: "thirty is too long",
        "x-other": "not kept",
    }
    _query(org, token, query, **headers).raise_for_status()

    (event,) = org.store.api_events()

    assert event["Username"] == WAREHOUSE[2]
    assert event["UserId"].startswith("005") and event["UserId"] != org.store.user_id
    assert (event["ApiType"], event["Operation"]) == ("REST", "Query")
    assert event["QueriedEntities"] == "Contact" and event["Query"] == query
    assert (event["RowsProcessed"], event["RowsReturned"]) == (1, 1)
    assert json.loads(event["AdditionalInfo"]) == {
        "pipeline_id": "nightly_extract",
        "run": "42",
    }
    records = json.loads(event["Records"])
    assert [r["Id"] for r in records["records"]] == [org.contacts[1]]


def test_every_page_of_a_long_read_is_its_own_event() -> None:
    with serving(page_size=4) as org:
        assert len(org.read(WAREHOUSE, org.contacts, "nightly_extract")) == 6
        events = org.store.api_events()
        for _ in range(3):
            org.read(BI, org.contacts[:1])
        # Reading the log pages too (5 rows, 4 a page), and logs nothing.
        assert len(org.events()) == 5 and len(org.store.api_events()) == 5

    assert [e["Operation"] for e in events] == ["Query", "QueryMore"]
    assert [e["RowsReturned"] for e in events] == [4, 2]
    assert {e["RowsProcessed"] for e in events} == {6}
    ids = [r["Id"] for e in events for r in json.loads(e["Records"])["records"]]
    assert sorted(ids) == sorted(org.contacts)


def test_api_event_queries_filter_on_event_date_and_are_not_logged(
    org: Org,
) -> None:
    token = _token(org, WAREHOUSE)
    _query(org, token, "SELECT Id FROM Contact").raise_for_status()
    org.clock.now += 3600
    _query(org, token, "SELECT Id FROM Contact LIMIT 1").raise_for_status()
    early, late = org.store.api_events()
    cut = "2026-05-28T21:00:00Z"  # between the two
    assert early["EventDate"] < "2026-05-28T21:00" < late["EventDate"]

    def ids(where: str) -> list[str]:
        text = f"SELECT EventIdentifier FROM ApiEvent WHERE {where}"  # noqa: S608
        answer = _query(org, token, text).json()
        return [row["EventIdentifier"] for row in answer["records"]]

    assert ids(f"EventDate > {cut}") == [late["EventIdentifier"]]
    assert ids(f"EventDate <= {cut}") == [early["EventIdentifier"]]
    assert ids("EventDate >= 2026-05-28") == [
        early["EventIdentifier"],
        late["EventIdentifier"],
    ]
    assert len(org.store.api_events()) == 2
    refused = _query(org, token, "SELECT Id FROM Contact WHERE LastName > 'a'")
    assert refused.status_code == 400
    assert refused.json()[0]["errorCode"] == "INVALID_FIELD"


# -- the sample estate ------------------------------------------------------------


def test_sample_estate_jobs_read_as_their_own_users(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.capture_apievents import capture_api_events
    from lethe.estate.build import build

    built, servers = build(tmp_path / "estate", step_seconds=0.05)
    try:
        monkeypatch.setenv("LETHE_ESTATE", str(built.estate_file))
        store = SalesforceStore(built.workdir / "salesforce.db")
        events = store.api_events()
        store.close()
        readers = {
            (e["Username"], json.loads(e["AdditionalInfo"])["pipeline_id"])
            for e in events
        }

        first = capture_api_events.fn()
        again = capture_api_events.fn()
    finally:
        servers.stop()

    assert readers == {
        ("nightly_extract@integration.example", "nightly_extract"),
        ("erp_sync@integration.example", "erp_sync"),
    }
    assert first == built.counts["contacts"] and again == 0
    with ledger.session() as db:
        datasets = set(
            db.exec(select(Copy.dataset).where(Copy.learned_from == "apievent"))
        )
        mark = db.exec(select(ApiEventWatermark)).one()
    assert datasets == {"warehouse:raw.sf_contact"}  # erp_sync: its manifests
    assert mark.unattributed_events == 0 and mark.incomplete_events == 0
