"""Every vendor fault, through a real erasure flow run: the request is not
complete, the failure is visible in `lethe dsr show`, and the other systems
still finish."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from erasure import requests
from lethe.cli import app
from lethe.config import load_settings
from tests.helpers import Estate, plant_canary_estate

pytestmark = pytest.mark.e2e
SAP_ROOT = "/sap/opu/odata/sap/API_BUSINESS_PARTNER/"
FAULTS: dict[str, tuple[str, str, dict[str, Any], str]] = {
    # name: (system, kind, fault options, what `dsr show` must say)
    "429 with Retry-After": (
        "analytics",
        "429",
        {
            "path_prefix": "/regulations",
            "method": "POST",
            "retry_after": 1,
            "times": 99,
        },
        "429",
    ),
    "5xx": (
        "salesforce",
        "503",
        {"path_prefix": "/services/data/v60.0/jobs/ingest", "times": 99},
        "503",
    ),
    "timeout": (
        "erp",
        "timeout",
        {"path_prefix": SAP_ROOT, "method": "PATCH", "delay": 3.0, "times": 99},
        "timed out",
    ),
    "slow answer": (
        "analytics",
        "slow",
        {"path_prefix": "/regulations", "method": "POST", "delay": 3.0, "times": 99},
        "timed out",
    ),
}
OUTCOMES = {
    "job FAILED": ({"overall": "FAILED"}, "FAILED"),
    "job PARTIAL_SUCCESS": ({"overall": "PARTIAL_SUCCESS"}, "PARTIAL_SUCCESS"),
    "destination FAILED": (
        {"overall": "FINISHED", "destination_failed": "Amplitude (Actions)"},
        "Amplitude (Actions)",
    ),
}


@pytest.fixture
def estate(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Estate]:
    monkeypatch.setenv("LETHE_STEP_RETRIES", "0")
    planted = plant_canary_estate(tmp_path / "estate", step_seconds=0.05)
    path = load_settings().estate_file
    settings = yaml.safe_load(path.read_text())
    for system in ("salesforce", "analytics", "erp"):
        settings["systems"][system] |= {"max_attempts": 2, "timeout": 1.0}
    path.write_text(yaml.safe_dump(settings))
    try:
        yield planted
    finally:
        planted.servers.stop()


def _server(e: Estate, system: str):  # noqa: ANN202
    return {
        "salesforce": e.servers.salesforce,
        "analytics": e.servers.analytics,
        "erp": e.servers.erp,
    }[system]


def _run_and_show(e: Estate) -> tuple[str, dict[str, Any], str]:
    from flows.capture import capture_lineage
    from flows.erasure import erase_requests

    capture_lineage()
    request_id = requests.submit(email=e.canary.email, regulation="gdpr").id
    state = erase_requests([request_id])[request_id]
    shown = CliRunner().invoke(app, ["dsr", "show", request_id])
    as_json = json.loads(
        CliRunner().invoke(app, ["dsr", "show", request_id, "--json"]).stdout
    )
    return state, as_json, shown.stdout


def _assert_visible_failure(
    state: str, shown: dict, text: str, system: str, says: str
) -> None:
    assert state == "incomplete"
    assert shown["certificate_id"] is None
    steps = {s["system"]: s for s in shown["systems"]}
    assert steps[system]["state"] == "failed" and not steps[system]["verified"]
    assert says in steps[system]["detail"]
    assert "failed" in text and system in text
    others = [s for name, s in steps.items() if name != system]
    assert all(s["state"] == "done" and s["verified"] for s in others)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_vendor_fault_leaves_the_request_incomplete_and_visible(
    estate: Estate, fault: str
) -> None:
    system, kind, options, says = FAULTS[fault]
    faults = _server(estate, system).app.state.faults
    faults.add(kind, **options)
    state, shown, text = _run_and_show(estate)
    _assert_visible_failure(state, shown, text, system, says)
    assert faults.injected, "the fault was never served"


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_async_job_that_ends_badly_is_not_done(estate: Estate, outcome: str) -> None:
    planned, says = OUTCOMES[outcome]
    estate.servers.analytics.app.state.outcomes.add(**planned)
    state, shown, text = _run_and_show(estate)
    _assert_visible_failure(state, shown, text, "analytics", says)
