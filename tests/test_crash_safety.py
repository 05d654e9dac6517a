"""SIGKILL a real `lethe dsr run` at chosen points and run it again.

Each case ends with exactly one vendor job for the subject and a correct,
verified outcome; a step that completed before the kill is not executed again.
The estate's emulators run in this test process; the run is a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from erasure import requests
from erasure.models import Attempt
from lethe import ledger
from lethe.emulators.segment import SegmentStore
from lethe.estate.jobs import device_id
from tests.helpers import Estate, plant_canary_estate

pytestmark = pytest.mark.e2e
DEADLINE_SECONDS = 90


@pytest.fixture
def estate(home: Path, tmp_path: Path) -> Iterator[Estate]:
    # Slow vendor clocks leave time to kill the run mid-job.
    planted = plant_canary_estate(tmp_path / "estate", step_seconds=0.5)
    try:
        yield planted
    finally:
        planted.servers.stop()


def _run(request_id: str) -> subprocess.Popen[bytes]:
    code = "from lethe.cli import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "dsr", "run", request_id],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            pytest.fail(f"the run ended before the kill point:\n{output}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the kill point was never reached")
        time.sleep(0.05)


def _attempt(request_id: str, system: str) -> Attempt | None:
    with ledger.session() as db:
        return db.exec(
            select(Attempt).where(
                Attempt.request_id == request_id, Attempt.system == system
            )
        ).first()


def _regulations_for(e: Estate) -> int:
    """Regulations naming the canary: by userId, or by anonymousId (per source)."""
    ids = {e.user_id, device_id(e.contact_id)}
    store = SegmentStore(e.workdir / "analytics.db")
    try:
        return len([r for r in store.regulations() if ids & set(r["subjects"])])
    finally:
        store.close()


def _kill_and_rerun(e: Estate, request_id: str, condition: Callable[[], bool]) -> None:
    first = _run(request_id)
    _wait_for(condition, first)
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    second = _run(request_id)
    output = second.communicate(timeout=240)[0].decode()
    assert second.returncode == 0, output
    described = requests.describe(request_id)
    assert described["state"] == "completed", output
    assert all(s["verified"] for s in described["systems"])
    assert _regulations_for(e) == 2  # one per subject type: never a second one


def _submit(e: Estate) -> str:
    from flows.capture import capture_lineage

    capture_lineage()
    return requests.submit(email=e.canary.email, regulation="gdpr").id


def _faults(e: Estate):  # noqa: ANN202 - the analytics emulator's fault plan
    return e.servers.analytics.app.state.faults


def test_sigkill_before_the_vendor_took_the_submit(estate: Estate) -> None:
    e = estate
    request_id = _submit(e)
    _faults(e).add("timeout", "/regulations", method="POST", delay=8.0)
    _kill_and_rerun(e, request_id, lambda: bool(_faults(e).injected))
    assert _attempt(request_id, "analytics").runs == 2


def test_sigkill_after_the_vendor_took_the_submit_but_before_lethe_heard(
    estate: Estate,
) -> None:
    e = estate
    request_id = _submit(e)
    # The regulation is created, then the answer stalls until after the kill.
    _faults(e).add("lost_answer", "/regulations", method="POST", delay=8.0)

    def filed_but_unrecorded() -> bool:
        attempt = _attempt(request_id, "analytics")
        return (
            bool(_faults(e).injected)
            and _regulations_for(e) >= 1
            and attempt is not None
            and attempt.vendor_job_id is None
        )

    _kill_and_rerun(e, request_id, filed_but_unrecorded)
    assert _attempt(request_id, "analytics").runs == 2


def test_sigkill_after_submit_before_the_poll_finishes(estate: Estate) -> None:
    e = estate
    request_id = _submit(e)

    def job_recorded() -> bool:
        attempt = _attempt(request_id, "analytics")
        return attempt is not None and attempt.vendor_job_id is not None

    _kill_and_rerun(e, request_id, job_recorded)
    warehouse = _attempt(request_id, "warehouse")
    assert warehouse is not None and warehouse.state == "finished"


def test_sigkill_during_verification(estate: Estate) -> None:
    e = estate
    request_id = _submit(e)
    _faults(e).add("slow", "/suppressions", method="GET", delay=8.0)
    _kill_and_rerun(e, request_id, lambda: bool(_faults(e).injected))
    attempt = _attempt(request_id, "analytics")
    assert attempt is not None and attempt.state == "finished" and attempt.runs == 1
