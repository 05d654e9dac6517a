"""`lethe demo --sample-data` on the real public sample data, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from erasure.certificate import verify
from lethe.cli import app
from lethe.estate.people import from_sample_data
from lethe.runtime import current
from tests.conftest import SAMPLE_DATA

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(not SAMPLE_DATA.exists(), reason=f"no sample data at {SAMPLE_DATA}")
def test_demo_on_sample_data_exits_zero_and_certifies(
    home: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "estate"
    result = CliRunner().invoke(
        app, ["demo", "--workdir", str(workdir), "--sample-data", str(SAMPLE_DATA)]
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    certificates = list(workdir.glob("*.certificate.jws"))
    assert len(certificates) == 1
    payload = verify(certificates[0].read_text(), current().keys.public_keys()).payload
    assert {s["system"] for s in payload["systems"]} == {
        "salesforce",
        "warehouse",
        "analytics",
        "erp",
    }
    featured = from_sample_data(SAMPLE_DATA).people[0]
    for text in (result.stdout, result.stderr, json.dumps(payload)):
        assert featured.email.lower() not in text.lower()
        assert featured.last_name not in text
    listed = CliRunner().invoke(app, ["dsr", "list", "--json"])
    assert json.loads(listed.stdout)[0]["state"] == "completed"
