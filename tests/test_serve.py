"""`lethe serve` registers the scheduled deployments on a real Prefect server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.serve import schedules_of
from lethe.cli import app
from lethe.errors import ConfigError

ESTATE = """name: serve-test
source: salesforce
systems:
  salesforce: {kind: salesforce}
schedules:
  capture: "15 1 * * *"
"""


def test_schedules_default_and_validate() -> None:
    assert schedules_of({"capture": "5 4 * * *"}) == {
        "capture": "5 4 * * *",
        "recheck": "30 3 * * *",
        "divergence": "0 5 * * *",
        "holds": "0 4 * * *",
    }
    with pytest.raises(ConfigError, match="five fields"):
        schedules_of({"capture": "daily"})
    with pytest.raises(ConfigError, match="unknown flow"):
        schedules_of({"nightly": "0 0 * * *"})


def test_serve_without_a_prefect_server_says_how_to_start_one(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 1 and "prefect server start" in result.stderr


@pytest.mark.e2e
@pytest.mark.skipif(
    not os.environ.get("PREFECT_API_URL"), reason="needs a Prefect server"
)
def test_serve_registers_scheduled_deployments(home: Path) -> None:
    from prefect.client.orchestration import get_client

    home.mkdir(parents=True)
    (home / "estate.yaml").write_text(ESTATE)
    process = subprocess.Popen(
        [sys.executable, "-c", "from lethe.cli import main; main()", "serve"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        found: dict[str, str] = {}
        deadline = time.monotonic() + 60
        with get_client(sync_client=True) as client:
            while len(found) < 4 and time.monotonic() < deadline:
                assert process.poll() is None, process.stdout.read().decode()
                for deployment in client.read_deployments():
                    if "lethe" in (deployment.tags or []) and deployment.schedules:
                        found[deployment.name] = deployment.schedules[0].schedule.cron
                time.sleep(0.2)
        assert found == {
            "capture-lineage": "15 1 * * *",
            "recheck-requests": "30 3 * * *",
            "check-divergence": "0 5 * * *",
            "release-expired-holds": "0 4 * * *",
        }
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
