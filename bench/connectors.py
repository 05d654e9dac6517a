"""Each connector against its emulator: lethe's time over the raw floor.

For every connector kind this builds a store of N subjects and N bystanders,
serves it on loopback, and times two arms, each on a fresh copy of that store:

- lethe: the connector erasing all N subjects in one call per step, driven as
  flows/erasure.py drives it: locate, erase (or submit, then poll until done),
  verify;
- raw: the fewest plain ``httpx.Client`` calls (plain SQL for the warehouse)
  that do the same work against the same emulator, with the same endpoints,
  batch sizes and polling interval, and no retries, pacing or validation:
  the floor the emulator itself imposes.

It prints each arm's median over the runs, their ratio, and the requests (SQL
statements for the warehouse) each arm sent, by step. After every run it reads
the store back: every subject erased (SAP: blocked and anonymised), every
bystander as it was; a run that did not do the work fails the benchmark.

    python bench/connectors.py [--people 1000] [--only segment,sap] [--runs 3]

With LETHE_BENCH_POSTGRES_URL set, the warehouse also runs on PostgreSQL, each
run in a schema of its own that is dropped afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder heads sys.path, and this file is named
# connectors.py: drop the folder so that ``connectors`` is lethe's package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from connectors.amplitude import AmplitudeConnector  # noqa: E402
from connectors.base import AsyncConnector, Connector, Keys, SyncConnector  # noqa: E402
from connectors.mixpanel import MixpanelConnector  # noqa: E402
from connectors.salesforce import SalesforceConnector  # noqa: E402
from connectors.sap import SapBusinessPartnerConnector  # noqa: E402
from connectors.segment import SegmentConnector  # noqa: E402
from connectors.warehouse import WarehouseConnector  # noqa: E402
from lethe.emulators import EmulatorServer  # noqa: E402
from lethe.emulators import amplitude as amplitude_emulator  # noqa: E402
from lethe.emulators import mixpanel as mixpanel_emulator  # noqa: E402
from lethe.emulators import salesforce as salesforce_emulator  # noqa: E402
from lethe.emulators import sap as sap_emulator  # noqa: E402
from lethe.emulators import segment as segment_emulator  # noqa: E402

STEP_SECONDS = 0.01  # how long each async job state lasts
POLL_INTERVAL = 0.01  # how long both arms sleep between polls
PHASES = ("locate", "erase", "verify")
SECRET = "bench-secret"
LEFT = "a subject's data is still there"
TOUCHED = "a bystander's data changed"
LEFT_OR_TOUCHED = "the rows left are not exactly the bystanders' rows"
DAY = 86_400.0


# -- measuring ----------------------------------------------------------------


class Meter:
    """Requests (or SQL statements) one arm sent, counted per step."""

    def __init__(self) -> None:
        self.phase = "locate"
        self.counts: Counter[str] = Counter()

    def count(self) -> None:
        self.counts[self.phase] += 1

    def transport(self) -> httpx.BaseTransport:
        return _CountingTransport(self)


class _CountingTransport(httpx.HTTPTransport):
    """Real HTTP over loopback, counting every request sent."""

    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self._meter = meter

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._meter.count()
        return super().handle_request(request)


class WarpClock:
    """Real time until ``warp()``; then an emulated day every STEP_SECONDS, for
    at most ``days``, so job days stay inside the connector's date window."""

    def __init__(self, days: float = 20) -> None:
        self._days = days
        self._from: float | None = None

    def warp(self) -> None:
        self._from = time.time()

    def __call__(self) -> float:
        if self._from is None:
            return time.time()
        days = min((time.time() - self._from) / STEP_SECONDS, self._days)
        return self._from + days * DAY


def drive(
    connector: Connector,
    keys: Keys,
    meter: Meter,
    after_submit: Callable[[], None] = lambda: None,
) -> None:
    """The lethe arm: one erasure through the connector, as the flow runs it."""
    meter.phase = "locate"
    located = connector.locate(keys)
    meter.phase = "erase"
    if isinstance(connector, AsyncConnector):
        outcome = connector.submit(keys, idempotency_key="bench")
        after_submit()
        while outcome.status == "pending" and outcome.job_id:
            outcome = connector.poll(outcome.job_id, keys)
            if outcome.status == "pending":
                time.sleep(POLL_INTERVAL)
    else:
        assert isinstance(connector, SyncConnector)
        outcome = connector.erase(keys, idempotency_key="bench")
    meter.phase = "verify"
    evidence = connector.verify(keys)
    connector.close()
    assert located.total > 0, "locate found nothing"
    assert outcome.status == "done", f"erase ended {outcome.status}: {outcome.detail}"
    assert evidence.verified, f"verify failed: {evidence.detail}"


def poll(read: Callable[[], Any], final: Callable[[Any], bool]) -> Any:
    """The raw arms' polling: read until final, sleeping POLL_INTERVAL between."""
    deadline = time.monotonic() + 60
    while not final(answer := read()):
        assert time.monotonic() < deadline, "the vendor job never ended"
        time.sleep(POLL_INTERVAL)
    return answer


def ok(response: httpx.Response) -> Any:
    response.raise_for_status()
    return response.json() if response.content else None


def people(count: int) -> Iterator[tuple[str, bool]]:
    """(label, is subject): subjects and bystanders interleaved."""
    for i in range(count):
        yield f"s{i:05d}", True
        yield f"b{i:05d}", False


# -- the cases ----------------------------------------------------------------


@dataclass
class Served:
    """A fresh copy of a case's store, served (or opened) for one run."""

    store: Any
    url: str
    path: Path | None = None
    server: EmulatorServer | None = None
    clock: WarpClock = field(default_factory=WarpClock)


class Case:
    """One connector kind: its store, its two arms, and the check after each."""

    name = ""
    unit = "HTTP"
    setup = ""  # what the output says about this case's settings

    def build(self, folder: Path, count: int) -> None:
        """Make the template store: ``count`` subjects and as many bystanders."""
        raise NotImplementedError

    def make_store(self, path: Path, clock: WarpClock) -> Any:
        raise NotImplementedError

    def make_app(self, store: Any) -> Any:
        raise NotImplementedError

    def open(self, folder: Path, tag: str) -> Served:
        path = folder / f"{self.name}.{tag}.db"
        shutil.copyfile(folder / f"{self.name}.template.db", path)
        clock = WarpClock()
        store = self.make_store(path, clock)
        server = EmulatorServer(self.make_app(store)).start()
        return Served(store, server.base_url, path, server, clock)

    def close(self, served: Served) -> None:
        if served.server is not None:
            served.server.stop()
        served.store.close()
        if served.path is not None:
            served.path.unlink(missing_ok=True)

    def lethe(self, served: Served, meter: Meter) -> None:
        raise NotImplementedError

    def raw(self, served: Served, meter: Meter) -> None:
        raise NotImplementedError

    def check(self, served: Served) -> None:
        raise NotImplementedError


# -- Salesforce ---------------------------------------------------------------

SF_DATA = "/services/data/v60.0"
SF_JOBS = f"{SF_DATA}/jobs/ingest"
SF_ORDER = ("Case", "Contact", "Lead")  # children first, as the org requires


def soql_in_lists(ids: Sequence[str]) -> Iterator[str]:
    """IN lists of at most 200 ids and 4,000 characters, as the connector cuts."""
    chunk: list[str] = []
    for literal in (f"'{value}'" for value in ids):
        if chunk and (len(chunk) == 200 or len(",".join([*chunk, literal])) > 4000):
            yield ",".join(chunk)
            chunk = []
        chunk.append(literal)
    if chunk:
        yield ",".join(chunk)


class SalesforceCase(Case):
    name = "salesforce"
    setup = "a Contact, a Case and a Lead a person; Bulk hardDelete jobs"

    def build(self, folder: Path, count: int) -> None:
        store = salesforce_emulator.SalesforceStore(folder / "salesforce.template.db")
        self.keys: dict[str, list[str]] = {name: [] for name in SF_ORDER}
        for label, subject in people(count):
            email = f"{label}@example.org"
            contact = store.insert("Contact", {"LastName": label, "Email": email})
            records = {
                "Contact": contact,
                "Case": store.insert("Case", {"ContactId": contact, "Subject": "Hi"}),
                "Lead": store.insert(
                    "Lead", {"LastName": label, "Company": "Acme", "Email": email}
                ),
            }
            for sobject, record in records.items():
                if subject:
                    self.keys[sobject].append(record)
        self.mine = [record for ids in self.keys.values() for record in ids]
        self.bystanders = store.checksum(exclude=self.mine)
        store.close()

    def make_store(self, path: Path, clock: WarpClock) -> Any:
        return salesforce_emulator.SalesforceStore(path)

    def make_app(self, store: Any) -> Any:
        return salesforce_emulator.create_app(
            store,
            client_id="bench",
            client_secret=SECRET,
            bulk_step_seconds=STEP_SECONDS,
        )

    def lethe(self, served: Served, meter: Meter) -> None:
        connector = SalesforceConnector(
            system="salesforce",
            base_url=served.url,
            client_id="bench",
            client_secret=SECRET,
            poll_interval=POLL_INTERVAL,
            timeout=30.0,
            transport=meter.transport(),
        )
        drive(connector, self.keys, meter)

    def raw(self, served: Served, meter: Meter) -> None:
        with httpx.Client(
            base_url=served.url, transport=meter.transport(), timeout=30.0
        ) as http:
            form = {
                "grant_type": "client_credentials",
                "client_id": "bench",
                "client_secret": SECRET,
            }
            token = ok(http.post("/services/oauth2/token", data=form))
            http.headers["Authorization"] = f"Bearer {token['access_token']}"
            live = {s: self._ids(http, "query", s, ids) for s, ids in self.keys.items()}
            assert sum(map(len, live.values())) == len(self.mine)

            meter.phase = "erase"
            for sobject in SF_ORDER:
                self._hard_delete(http, sobject, live[sobject])

            # queryAll returns live and Recycle Bin rows alike: one read shows both.
            meter.phase = "verify"
            for sobject, ids in self.keys.items():
                assert not self._ids(http, "queryAll", sobject, ids)

    @staticmethod
    def _ids(http: httpx.Client, op: str, sobject: str, ids: Sequence[str]) -> list:
        found = []
        for in_list in soql_in_lists(ids):
            soql = f"SELECT Id FROM {sobject} WHERE Id IN ({in_list})"  # noqa: S608
            body = ok(http.get(f"{SF_DATA}/{op}", params={"q": soql}))
            found += body["records"]
            while not body["done"]:
                body = ok(http.get(body["nextRecordsUrl"]))
                found += body["records"]
        return [row["Id"] for row in found]

    @staticmethod
    def _hard_delete(http: httpx.Client, sobject: str, ids: Sequence[str]) -> None:
        spec = {
            "object": sobject,
            "operation": "hardDelete",
            "contentType": "CSV",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        job = ok(http.post(SF_JOBS, json=spec))["id"]
        upload = "Id\n" + "".join(f"{value}\n" for value in ids)
        csv = {"Content-Type": "text/csv"}
        ok(http.put(f"{SF_JOBS}/{job}/batches", content=upload.encode(), headers=csv))
        ok(http.patch(f"{SF_JOBS}/{job}", json={"state": "UploadComplete"}))
        info = poll(
            lambda: ok(http.get(f"{SF_JOBS}/{job}")),
            lambda info: info["state"] not in ("UploadComplete", "InProgress"),
        )
        assert info["state"] == "JobComplete" and not info["numberRecordsFailed"]

    def check(self, served: Served) -> None:
        store = served.store
        assert all(store.get(record) is None for record in self.mine), LEFT
        assert store.checksum(exclude=self.mine) == self.bystanders, TOUCHED


# -- Segment ------------------------------------------------------------------


class SegmentCase(Case):
    name = "segment"
    setup = "one SUPPRESS_WITH_DELETE regulation; connector's 10/s pacing kept"

    def build(self, folder: Path, count: int) -> None:
        store = segment_emulator.SegmentStore(folder / "segment.template.db")
        self.subjects: list[str] = []
        self.bystanders: list[str] = []
        for label, subject in people(count):
            user = f"user-{label}"
            for n, name in enumerate(("Signed Up", "Order Completed")):
                store.add_event(
                    type="track", message_id=f"{user}-{n}", user_id=user, event=name
                )
            (self.subjects if subject else self.bystanders).append(user)
        store.close()
        self.runs = 0

    def make_store(self, path: Path, clock: WarpClock) -> Any:
        return segment_emulator.SegmentStore(path)

    def make_app(self, store: Any) -> Any:
        return segment_emulator.create_app(
            store, token=SECRET, write_key="bench-write", step_seconds=STEP_SECONDS
        )

    def lethe(self, served: Served, meter: Meter) -> None:
        # One token bucket per system name and process: a name per run keeps
        # an earlier run's spent tokens from slowing this one.
        self.runs += 1
        connector = SegmentConnector(
            system=f"segment-{self.runs}",
            base_url=served.url,
            token=SECRET,
            timeout=30.0,
            transport=meter.transport(),
        )
        drive(connector, {"userId": self.subjects}, meter)

    def raw(self, served: Served, meter: Meter) -> None:
        with httpx.Client(
            base_url=served.url,
            headers={"Authorization": f"Bearer {SECRET}"},
            transport=meter.transport(),
        ) as http:
            meter.phase = "erase"  # Segment cannot look a user up: no locate
            body = {
                "regulationType": "SUPPRESS_WITH_DELETE",
                "subjectType": "USER_ID",
                "subjectIds": self.subjects,
            }
            regulation = ok(http.post("/regulations", json=body))["data"]["regulateId"]
            final = poll(
                lambda: ok(http.get(f"/regulations/{regulation}"))["data"],
                lambda data: (
                    data["regulation"]["overallStatus"]
                    not in ("INITIALIZED", "RUNNING")
                ),
            )["regulation"]
            assert final["overallStatus"] == "FINISHED"
            destinations = final["streamStatus"][0]["destinationStatus"]
            assert all(d["status"] == "FINISHED" for d in destinations)

            meter.phase = "verify"
            suppressed: set[str] = set()
            params = {"pagination[count]": "1000"}
            while True:
                data = ok(http.get("/suppressions", params=params))["data"]
                for entry in data["suppressed"]:
                    suppressed.update(entry["subjectIds"])
                if not data["pagination"].get("next"):
                    break
                params["pagination[cursor]"] = data["pagination"]["next"]
            assert suppressed >= set(self.subjects)

    def check(self, served: Served) -> None:
        store = served.store
        assert all(store.events_for(user) == 0 for user in self.subjects), LEFT
        assert all(store.events_for(user) == 2 for user in self.bystanders), TOUCHED
        assert store.count() == 2 * len(self.bystanders), TOUCHED


# -- SAP ----------------------------------------------------------------------

SAP_USER = "COMM_USER"
SAP_EXPAND = (
    "to_BusinessPartnerAddress/to_EmailAddress,"
    "to_BusinessPartnerAddress/to_PhoneNumber,to_Customer"
)
SAP_PARTNER = {
    "FirstName": "ERASED",
    "LastName": "ERASED",
    "BusinessPartnerFullName": "ERASED",
    "SearchTerm1": "ERASED",
    "BirthDate": None,
    "BusinessPartnerIsBlocked": True,
}
SAP_ADDRESS = {
    "FullName": "ERASED",
    "StreetName": "ERASED",
    "HouseNumber": "",
    "PostalCode": "",
    "CityName": "ERASED",
}
SAP_CUSTOMER = {
    "PostingIsBlocked": True,
    "OrderIsBlockedForCustomer": "01",
    "DeliveryIsBlocked": "01",
    "BillingIsBlockedForCustomer": "01",
}


class SapCase(Case):
    name = "sap"
    setup = "per partner: DELETE e-mail and phone, PATCH address, customer, partner"

    def build(self, folder: Path, count: int) -> None:
        store = sap_emulator.SapStore(folder / "sap.template.db")
        self.partners: list[str] = []
        for n, (label, subject) in enumerate(people(count)):
            partner = store.create_partner(
                first_name="Ann",
                last_name=label,
                email=f"{label}@example.de",
                phone="+49 30 1234567",
                street="Lindenstr. 5",
                postal_code="10115",
                city="Berlin",
                country="DE",
                ext_id=f"003{n:012d}AAA",
                birth_date="1980-02-03",
            )
            if subject:
                self.partners.append(partner)
        self.bystanders = store.checksum(exclude=self.partners)
        store.close()

    def make_store(self, path: Path, clock: WarpClock) -> Any:
        return sap_emulator.SapStore(path)

    def make_app(self, store: Any) -> Any:
        return sap_emulator.create_app(store, username=SAP_USER, password=SECRET)

    def lethe(self, served: Served, meter: Meter) -> None:
        connector = SapBusinessPartnerConnector(
            system="erp",
            base_url=served.url + sap_emulator.SERVICE_ROOT,
            username=SAP_USER,
            password=SECRET,
            timeout=30.0,
            transport=meter.transport(),
        )
        drive(connector, {"A_BusinessPartner": self.partners}, meter)

    def raw(self, served: Served, meter: Meter) -> None:
        with httpx.Client(
            base_url=served.url + sap_emulator.SERVICE_ROOT + "/",
            auth=(SAP_USER, SECRET),
            headers={"Accept": "application/json"},
            transport=meter.transport(),
            timeout=30.0,
        ) as http:
            partners = [self._read(http, bp) for bp in self.partners]

            meter.phase = "erase"
            fetch = http.get("", headers={"x-csrf-token": "Fetch"})
            token = {"x-csrf-token": fetch.headers["x-csrf-token"]}
            for partner in partners:
                for address in partner["to_BusinessPartnerAddress"]["results"]:
                    for nav in ("to_EmailAddress", "to_PhoneNumber"):
                        for entry in address[nav]["results"]:
                            uri = entry["__metadata"]["uri"]
                            http.delete(uri, headers=token).raise_for_status()
                    self._patch(http, address, SAP_ADDRESS, token)
                self._patch(http, partner["to_Customer"], SAP_CUSTOMER, token)
                self._patch(http, partner, SAP_PARTNER, token)

            meter.phase = "verify"
            for partner in (self._read(http, bp) for bp in self.partners):
                addresses = partner["to_BusinessPartnerAddress"]["results"]
                assert partner["BusinessPartnerIsBlocked"]
                assert partner["LastName"] == "ERASED"
                assert partner["to_Customer"]["PostingIsBlocked"]
                assert all(a["StreetName"] == "ERASED" for a in addresses)
                assert not any(
                    a[nav]["results"]
                    for a in addresses
                    for nav in ("to_EmailAddress", "to_PhoneNumber")
                )

    @staticmethod
    def _read(http: httpx.Client, bp: str) -> dict[str, Any]:
        path = f"A_BusinessPartner('{bp}')"
        found: dict[str, Any] = ok(http.get(path, params={"$expand": SAP_EXPAND}))["d"]
        return found

    @staticmethod
    def _patch(
        http: httpx.Client, entity: dict, changes: dict, token: dict[str, str]
    ) -> None:
        meta = entity["__metadata"]
        headers = {**token, "If-Match": meta["etag"]}
        http.patch(meta["uri"], json=changes, headers=headers).raise_for_status()

    def check(self, served: Served) -> None:
        store = served.store
        for bp in self.partners:
            partner = store.partner(bp)
            assert partner["BusinessPartnerIsBlocked"] and not partner["BirthDate"], (
                LEFT
            )
            assert partner["LastName"] == "ERASED", LEFT
            assert partner["customer"]["PostingIsBlocked"], LEFT
            for address in partner["addresses"]:
                assert address["StreetName"] == "ERASED", LEFT
                assert not address["emails"] and not address["phones"], LEFT
        assert store.checksum(exclude=self.partners) == self.bystanders, TOUCHED


# -- Mixpanel -----------------------------------------------------------------

MIXPANEL_PROJECT = "bench-project"
MIXPANEL_DELETIONS = "/data-deletions/v3.0/"


class MixpanelCase(Case):
    name = "mixpanel"
    setup = (
        "one deletion task; the emulator's 1 request/s raised to 10,000/s, "
        "the connector's min_interval 1 s set to 0"
    )

    def build(self, folder: Path, count: int) -> None:
        store = mixpanel_emulator.MixpanelStore(folder / "mixpanel.template.db")
        self.subjects: list[str] = []
        self.bystanders: list[str] = []
        for label, subject in people(count):
            user = f"user-{label}"
            for n, name in enumerate(("Signed Up", "Purchase")):
                store.add_event(
                    MIXPANEL_PROJECT, user, name, insert_id=f"{user}-{n}", time=1e9
                )
            store.set_profile(MIXPANEL_PROJECT, user, {"$email": f"{label}@x.org"})
            (self.subjects if subject else self.bystanders).append(user)
        store.close()

    def make_store(self, path: Path, clock: WarpClock) -> Any:
        return mixpanel_emulator.MixpanelStore(path)

    def make_app(self, store: Any) -> Any:
        return mixpanel_emulator.create_app(
            store,
            gdpr_token=SECRET,
            project_tokens=[MIXPANEL_PROJECT],
            step_seconds=STEP_SECONDS,
            rate_limit_per_second=10_000,
        )

    def lethe(self, served: Served, meter: Meter) -> None:
        connector = MixpanelConnector(
            system="mixpanel",
            base_url=served.url + mixpanel_emulator.PREFIX,
            gdpr_token=SECRET,
            project_token=MIXPANEL_PROJECT,
            timeout=30.0,
            transport=meter.transport(),
            min_interval=0.0,
        )
        drive(connector, {"distinct_id": self.subjects}, meter)

    def raw(self, served: Served, meter: Meter) -> None:
        with httpx.Client(
            base_url=served.url + mixpanel_emulator.PREFIX,
            headers={"Authorization": f"Bearer {SECRET}"},
            params={"token": MIXPANEL_PROJECT},
            transport=meter.transport(),
        ) as http:
            # Mixpanel cannot look a user up or read events back: locate sends
            # nothing, and the SUCCESS the last poll read is all the evidence
            # there is, so verify sends nothing either.
            meter.phase = "erase"
            body = {"distinct_ids": self.subjects, "compliance_type": "GDPR"}
            task = ok(http.post(MIXPANEL_DELETIONS, json=body))["results"]["task_id"]
            final = poll(
                lambda: ok(http.get(f"{MIXPANEL_DELETIONS}{task}/"))["results"],
                lambda task: task["status"] not in ("PENDING", "STAGING", "STARTED"),
            )
            assert final["status"] == "SUCCESS"

    def check(self, served: Served) -> None:
        store, project = served.store, MIXPANEL_PROJECT
        for user in self.subjects:
            assert not store.events_for(project, user), LEFT
            assert not store.has_profile(project, user), LEFT
        for user in self.bystanders:
            assert store.events_for(project, user) == 2, TOUCHED
            assert store.has_profile(project, user), TOUCHED
        assert store.count() == 2 * len(self.bystanders), TOUCHED


# -- Amplitude ----------------------------------------------------------------

AMPLITUDE = ("web", "bench-key", SECRET)  # one project: name, API key, secret
AMPLITUDE_DELETIONS = "/api/2/deletions/users"


class AmplitudeCase(Case):
    name = "amplitude"
    setup = (
        "one project, 100 ids a request; the 1 request/s limit lifted in "
        "the emulator and the connector; an emulated day per 0.01 s once filed"
    )

    def build(self, folder: Path, count: int) -> None:
        store = amplitude_emulator.AmplitudeStore(folder / "amplitude.template.db")
        self.subjects: list[str] = []
        self.bystanders: list[str] = []
        for label, subject in people(count):
            user = f"user-{label}"
            for name in ("Opened", "Purchased"):
                store.add_event(AMPLITUDE[0], user, name)
            (self.subjects if subject else self.bystanders).append(user)
        store.close()

    def make_store(self, path: Path, clock: WarpClock) -> Any:
        return amplitude_emulator.AmplitudeStore(path, clock=clock)

    def make_app(self, store: Any) -> Any:
        name, key, secret = AMPLITUDE
        return amplitude_emulator.create_app(
            store, projects={name: (key, secret)}, rate_limit_per_second=None
        )

    def lethe(self, served: Served, meter: Meter) -> None:
        name, key, secret = AMPLITUDE
        connector = AmplitudeConnector(
            system="amplitude",
            base_url=served.url,
            projects={name: {"api_key": key, "secret_key": secret}},
            timeout=30.0,
            transport=meter.transport(),
            rate_limit_per_second=None,
        )
        drive(connector, {"user_id": self.subjects}, meter, served.clock.warp)

    def raw(self, served: Served, meter: Meter) -> None:
        _, key, secret = AMPLITUDE
        with httpx.Client(
            base_url=served.url, auth=(key, secret), transport=meter.transport()
        ) as http:
            assert all(self._found(http, user) for user in self.subjects)

            meter.phase = "erase"
            days = set()
            for start in range(0, len(self.subjects), 100):
                body = {
                    "user_ids": self.subjects[start : start + 100],
                    "amplitude_ids": [],
                    "requester": "bench",
                    "ignore_invalid_ids": True,
                    "delete_from_org": False,
                    "include_mapped_user_ids": False,
                }
                days.add(ok(http.post(AMPLITUDE_DELETIONS, json=body))["day"])
            served.clock.warp()
            window = {"start_day": min(days), "end_day": max(days)}
            jobs = poll(
                lambda: ok(http.get(AMPLITUDE_DELETIONS, params=window)),
                lambda jobs: all(job["status"] == "done" for job in jobs),
            )
            assert {job["day"] for job in jobs} == days

            meter.phase = "verify"
            assert not any(self._found(http, user) for user in self.subjects)

    @staticmethod
    def _found(http: httpx.Client, user: str) -> bool:
        matches = ok(http.get("/api/2/usersearch", params={"user": user}))["matches"]
        return any(match["user_id"] == user for match in matches)

    def check(self, served: Served) -> None:
        store, project = served.store, AMPLITUDE[0]
        assert all(store.events_for(project, u) == 0 for u in self.subjects), LEFT
        assert all(store.events_for(project, u) == 2 for u in self.bystanders), TOUCHED
        assert store.count() == 2 * len(self.bystanders), TOUCHED


# -- the SQL warehouse --------------------------------------------------------

WAREHOUSE_DDL = (
    "CREATE TABLE {s}raw_sf_contact (sf_id VARCHAR(18) PRIMARY KEY, "
    "email VARCHAR(255), first_name VARCHAR(80), last_name VARCHAR(80))",
    "CREATE TABLE {s}raw_sf_case (case_id VARCHAR(18) PRIMARY KEY, "
    "contact_id VARCHAR(18) NOT NULL, subject VARCHAR(255), "
    "CONSTRAINT fk_case_contact FOREIGN KEY (contact_id) "
    "REFERENCES {s}raw_sf_contact (sf_id))",
    "CREATE INDEX raw_sf_case_contact ON {s}raw_sf_case (contact_id)",
    "CREATE TABLE {s}mart_customer_summary (sf_id VARCHAR(18) PRIMARY KEY, "
    "full_name VARCHAR(170), email VARCHAR(255), lifetime_value NUMERIC(12, 2))",
)
# In the plan's order, contact first: the connector has to put the cases first.
WAREHOUSE_TABLES = {
    "raw.sf_contact": ("raw_sf_contact", "sf_id"),
    "raw.sf_case": ("raw_sf_case", "contact_id"),
    "mart.customer_summary": ("mart_customer_summary", "sf_id"),
}
WAREHOUSE_DELETE_ORDER = ("raw.sf_case", "mart.customer_summary", "raw.sf_contact")


class WarehouseCase(Case):
    """The warehouse on a SQLite file, copied for each run."""

    name = "warehouse"
    unit = "SQL"
    setup = "SQLite file, 3 tables, one foreign key; SQL statements are counted"
    schema = ""  # "name." on PostgreSQL
    mark = "?"

    def build(self, folder: Path, count: int) -> None:
        self._rows(count)
        db = sqlite3.connect(folder / "warehouse.template.db")
        self._load(db)
        db.close()

    def _rows(self, count: int) -> None:
        self.rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in WAREHOUSE_TABLES}
        self.subjects: list[str] = []
        for n, (label, subject) in enumerate(people(count)):
            key = f"003{n:012d}AAA"
            email = f"{label}@example.org"
            self.rows["raw.sf_contact"].append((key, email, "Dana", label))
            self.rows["raw.sf_case"].append((f"500{n:012d}AAA", key, "Order"))
            self.rows["mart.customer_summary"].append((key, "Dana W", email, 12.5))
            if subject:
                self.subjects.append(key)

    def _load(self, db: Any) -> None:
        cursor = db.cursor()
        for ddl in WAREHOUSE_DDL:
            cursor.execute(ddl.format(s=self.schema))
        for dataset, rows in self.rows.items():
            marks = ", ".join([self.mark] * len(rows[0]))
            table = self.schema + WAREHOUSE_TABLES[dataset][0]
            cursor.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)  # noqa: S608
        db.commit()

    def open(self, folder: Path, tag: str) -> Served:
        path = folder / f"warehouse.{tag}.db"
        shutil.copyfile(folder / "warehouse.template.db", path)
        db = sqlite3.connect(path)
        self.expected = self._digest(db, without=self.subjects)
        return Served(db, f"sqlite:///{path}", path)

    def _connect(self, served: Served) -> Any:
        db = sqlite3.connect(str(served.path))
        # The connector's own connection settings: enforced FKs, zeroed pages.
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA secure_delete=ON")
        return db

    def lethe(self, served: Served, meter: Meter) -> None:
        def counted(*_: Any) -> None:
            meter.count()

        tables = {
            dataset: {"table": self.schema + table, "key_column": key}
            for dataset, (table, key) in WAREHOUSE_TABLES.items()
        }
        event.listen(Engine, "before_cursor_execute", counted)
        try:
            connector = WarehouseConnector(
                system="warehouse", url=served.url, tables=tables
            )
            keys = {dataset: self.subjects for dataset in WAREHOUSE_TABLES}
            drive(connector, keys, meter)
        finally:
            event.remove(Engine, "before_cursor_execute", counted)

    def raw(self, served: Served, meter: Meter) -> None:
        """Count, delete in one transaction, children first, and count again."""
        db = self._connect(served)
        cursor = db.cursor()
        where = f" IN ({', '.join([self.mark] * len(self.subjects))})"

        def execute(sql: str) -> Any:
            meter.count()
            cursor.execute(sql + where, self.subjects)
            return cursor

        def counts() -> int:
            selects = (
                f"SELECT count(*) FROM {self.schema}{table} WHERE {key}"  # noqa: S608
                for table, key in WAREHOUSE_TABLES.values()
            )
            return sum(execute(select).fetchone()[0] for select in selects)

        try:
            assert counts() == 3 * len(self.subjects)
            meter.phase = "erase"
            for dataset in WAREHOUSE_DELETE_ORDER:
                table, key = WAREHOUSE_TABLES[dataset]
                execute(f"DELETE FROM {self.schema}{table} WHERE {key}")  # noqa: S608
            db.commit()
            self._purge(db, meter)
            meter.phase = "verify"
            assert counts() == 0
        finally:
            db.close()

    def _purge(self, db: Any, meter: Meter) -> None:
        """Nothing more: secure_delete zeroed the freed pages as the rows went."""

    def _digest(self, db: Any, without: Sequence[str] = ()) -> str:
        """sha256 over the rows of every table, leaving out the keys ``without``."""
        digest, skip, cursor = hashlib.sha256(), set(without), db.cursor()
        for table, key in WAREHOUSE_TABLES.values():
            cursor.execute(f"SELECT * FROM {self.schema}{table} ORDER BY 1")  # noqa: S608
            at = [column[0] for column in cursor.description].index(key)
            for row in cursor.fetchall():
                if row[at] not in skip:
                    digest.update(repr(row).encode())
        return digest.hexdigest()

    def check(self, served: Served) -> None:
        assert self._digest(served.store) == self.expected, LEFT_OR_TOUCHED


class PostgresWarehouseCase(WarehouseCase):
    """The warehouse on PostgreSQL: a fresh schema per run, dropped after."""

    name = "warehouse-pg"
    setup = "as warehouse, on PostgreSQL; both arms VACUUM the three tables"
    mark = "%s"

    def __init__(self, url: str) -> None:
        self.url = url

    def build(self, folder: Path, count: int) -> None:
        self._rows(count)  # loaded into a fresh schema for each run

    def _connect(self, served: Served) -> Any:
        import psycopg2  # type: ignore[import-untyped]

        return psycopg2.connect(self.url.replace("+psycopg2", "", 1))

    def open(self, folder: Path, tag: str) -> Served:
        self.schema = f"lethe_bench_{uuid.uuid4().hex[:10]}."
        db = self._connect(Served(None, self.url))
        db.cursor().execute(f"CREATE SCHEMA {self.schema[:-1]}")
        self._load(db)
        self.expected = self._digest(db, without=self.subjects)
        db.commit()
        return Served(db, self.url)

    def _purge(self, db: Any, meter: Meter) -> None:
        db.autocommit = True
        for dataset in WAREHOUSE_DELETE_ORDER:
            meter.count()
            db.cursor().execute(f"VACUUM {self.schema}{WAREHOUSE_TABLES[dataset][0]}")

    def check(self, served: Served) -> None:
        served.store.rollback()  # a new snapshot, one that sees the arm's commit
        super().check(served)

    def close(self, served: Served) -> None:
        served.store.rollback()
        served.store.autocommit = True
        served.store.cursor().execute(f"DROP SCHEMA {self.schema[:-1]} CASCADE")
        served.store.close()


# -- running and reporting ----------------------------------------------------


@dataclass
class Result:
    seconds: float
    counts: Counter[str]

    @property
    def requests(self) -> int:
        return sum(self.counts.values())


@dataclass
class Row:
    case: Case
    raw: list[Result] = field(default_factory=list)
    lethe: list[Result] = field(default_factory=list)


def median(results: list[Result]) -> Result:
    """The run of median time (its request counts come with it)."""
    return sorted(results, key=lambda r: r.seconds)[(len(results) - 1) // 2]


def run_arm(case: Case, arm: str, folder: Path, tag: str) -> Result:
    served = case.open(folder, tag)
    meter = Meter()
    try:
        start = time.perf_counter()
        getattr(case, arm)(served, meter)
        seconds = time.perf_counter() - start
        case.check(served)
    except AssertionError as exc:
        raise AssertionError(f"{case.name}, {arm} arm, run {tag}: {exc}") from exc
    finally:
        case.close(served)
    return Result(seconds, meter.counts)


def bench(case: Case, folder: Path, count: int, runs: int) -> Row:
    """Build the template, then alternate the arms, each on a fresh copy."""
    case.build(folder, count)
    row = Row(case)
    for n in range(runs):
        row.raw.append(run_arm(case, "raw", folder, f"raw{n}"))
        row.lethe.append(run_arm(case, "lethe", folder, f"lethe{n}"))
    return row


def report(rows: list[Row], count: int, runs: int, folder: Path) -> None:
    print(
        f"\n{count:,} subjects and {count:,} bystanders a store, stores in "
        f"{folder}; median of {runs} runs an arm; async job states last "
        f"{STEP_SECONDS} s and both arms poll every {POLL_INTERVAL} s\n"
    )
    header = (
        f"{'connector':<13} {'subjects':>8} {'raw s':>8} {'lethe s':>8} "
        f"{'lethe/raw':>9} {'raw req':>8} {'lethe req':>9}  unit  each run"
    )
    print(header + "\n" + "-" * len(header))
    for row in rows:
        raw, lethe = median(row.raw), median(row.lethe)
        pairs = zip(row.raw, row.lethe, strict=True)
        each = " ".join(f"{b.seconds / a.seconds:.2f}" for a, b in pairs)
        print(
            f"{row.case.name:<13} {count:>8,} {raw.seconds:>8.3f} "
            f"{lethe.seconds:>8.3f} {lethe.seconds / raw.seconds:>8.2f}x "
            f"{raw.requests:>8,} {lethe.requests:>9,}  {row.case.unit:<4}  {each}"
        )
    print("\nrequests by step (locate / erase, polls included / verify):")
    for row in rows:
        arms = (median(row.raw).counts, median(row.lethe).counts)
        steps = [" / ".join(f"{c[p]:,}" for p in PHASES) for c in arms]
        print(f"  {row.case.name:<13} raw {steps[0]:<22} lethe {steps[1]}")
    print("\nsettings, the same in both arms:")
    for row in rows:
        print(f"  {row.case.name:<13} {row.case.setup}")
    print(
        f"\nchecked after each of the {2 * runs * len(rows)} runs: all {count:,} "
        "subjects erased (SAP: blocked and anonymised), every bystander as it was"
    )


CASES: dict[str, Callable[[], Case]] = {
    "salesforce": SalesforceCase,
    "segment": SegmentCase,
    "sap": SapCase,
    "mixpanel": MixpanelCase,
    "amplitude": AmplitudeCase,
    "warehouse": WarehouseCase,
}


def default_folder() -> str | None:
    """tmpfs when there is one: the emulators' fsyncs are no vendor's floor."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--people", type=int, default=1000, help="subjects a store")
    parser.add_argument("--runs", type=int, default=3, help="runs an arm")
    parser.add_argument("--only", default="", help="e.g. segment,sap")
    parser.add_argument("--workdir", default=default_folder(), help="for the stores")
    args = parser.parse_args(argv)
    cases = dict(CASES)
    if url := os.environ.get("LETHE_BENCH_POSTGRES_URL"):
        cases["warehouse-pg"] = lambda: PostgresWarehouseCase(url)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(cases))
    if unknown:
        parser.error(f"unknown connector {', '.join(unknown)}; one of {list(cases)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lethe-bench-", dir=args.workdir) as tmp:
        for name in wanted or cases:
            started = time.perf_counter()
            try:
                rows.append(bench(cases[name](), Path(tmp), args.people, args.runs))
            except AssertionError as exc:
                print(f"FAILED, the work was not done: {exc}", file=sys.stderr)
                return 1
            print(f"{name}: {time.perf_counter() - started:.1f} s", flush=True)
        report(rows, args.people, args.runs, Path(tmp).parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
