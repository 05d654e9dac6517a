"""Identity resolution on the real sample data in ../shared/data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from erasure import plan, requests
from lethe.config import load_settings
from lethe.emulators.salesforce import SalesforceStore
from lethe.emulators.sap import SapStore
from lethe.errors import InputError
from lethe.estate.build import build
from lethe.estate.people import from_sample_data
from tests.conftest import SAMPLE_DATA

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not SAMPLE_DATA.exists(), reason=f"no sample data at {SAMPLE_DATA}"
    ),
]
SHARED_PHONE = "+1 (520) 547-2228"  # four easy-spaces-lwc contacts share it
SHARED_EMAIL = "max.vrsic@flight.example.de"  # two cap-sflight customers share it


def _systems(request_id: str) -> dict[str, dict]:
    return {s["system"]: s for s in requests.describe(request_id)["systems"]}


def test_resolution_on_sample_data(home: Path, tmp_path: Path) -> None:
    from flows.capture import capture_lineage
    from flows.erasure import erase_requests

    built, servers = build(
        tmp_path / "estate", sample_data=SAMPLE_DATA, step_seconds=0.05
    )
    try:
        load_settings().home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built.estate_file, load_settings().estate_file)
        capture_lineage()
        featured = from_sample_data(SAMPLE_DATA).people[0]
        assert (
            featured.ref and featured.ref.startswith("coral-cloud/") and featured.cases
        )
        by_email = requests.submit(email=featured.email.upper(), regulation="gdpr")
        by_phone = requests.submit(phone="520.547.2228", regulation="ccpa")
        shared = requests.submit(email=SHARED_EMAIL, regulation="gdpr")
        states = erase_requests([by_email.id, by_phone.id, shared.id])

        # A coral-cloud e-mail resolves to its Contact and the Cases that reference it.
        assert states[by_email.id] == "completed"
        sf = _systems(by_email.id)["salesforce"]
        assert sf["keys_found"] == 1 + len(featured.cases) == sf["records_affected"]

        # One e-mail shared by two ERP customers resolves to both.
        assert states[shared.id] == "completed"
        erp = _systems(shared.id)["erp"]
        assert erp["keys_found"] == 2 and erp["records_affected"] == 2
        assert _systems(shared.id)["salesforce"]["state"] == "no_data"
        sap = SapStore(built.workdir / "erp.db")
        blocked = [
            p for p in sap.rows("A_BusinessPartner") if p["BusinessPartnerIsBlocked"]
        ]
        sap.close()
        assert len(blocked) >= 2

        # A phone several contacts share needs disambiguation; nothing is erased.
        assert states[by_phone.id] == "needs_disambiguation"
        shown = requests.describe(by_phone.id)
        candidates = [c["record_id"] for c in shown["candidates"]]
        assert len(candidates) == 4 and shown["systems"] == []
        store = SalesforceStore(built.workdir / "salesforce.db")
        assert all(store.get(c) is not None for c in candidates)
        store.close()
        with pytest.raises(InputError, match="not one of the request's candidate"):
            plan.choose(by_phone.id, ["003000000000000AAA"])

        # The officer chooses one; only that one is erased.
        plan.choose(by_phone.id, [candidates[0]])
        assert erase_requests([by_phone.id]) == {by_phone.id: "completed"}
        store = SalesforceStore(built.workdir / "salesforce.db")
        assert store.get(candidates[0]) is None
        assert all(store.get(c) is not None for c in candidates[1:])
        store.close()
        with pytest.raises(InputError, match="not needs_disambiguation"):
            plan.choose(by_phone.id, [candidates[1]])
    finally:
        servers.stop()
