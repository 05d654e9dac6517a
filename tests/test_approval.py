"""Second-person approval before execution, and certified denial."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import func, select
from typer.testing import CliRunner

from erasure import decisions, requests, steps
from erasure.certificate import verify
from erasure.models import (
    AuditEvent,
    Certificate,
    Request,
    SystemStep,
)
from erasure.purge import purge_expired
from lethe import ledger
from lethe.cli import app
from lethe.errors import ConfigError, InputError
from lethe.estate.config import load_estate
from lethe.runtime import current
from lethe.vault import SealedIdentity, utcnow
from tests.helpers import Estate

runner = CliRunner()
EMAIL = "Planted.Person@Example.ORG"
NOTE = "caller gave planted.person@example.org and a wrong birth date"


def _rows() -> dict[str, int]:
    with ledger.session() as db:
        return {
            model.__name__: db.exec(select(func.count()).select_from(model)).one()
            for model in (Request, SealedIdentity, Certificate, AuditEvent)
        }


def _awaiting(by: str = "officer-1", email: str = EMAIL) -> Request:
    return requests.submit(
        email=email, regulation="gdpr", submitted_by=by, require_approval=True
    )


def _payload(jws: str) -> dict:
    part = jws.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _estate_file(home: Path, extra: str = "", *, policy: str | None = None) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "estate.yaml").write_text(
        "name: estate-a\nsource: salesforce\n"
        "systems:\n  salesforce: {kind: salesforce}\n" + extra
    )
    if policy is not None:
        (home / "policy.yaml").write_text(policy)


@pytest.mark.parametrize(
    ("handle", "ok"),
    [
        ("officer-7", True),
        ("j.smith_2", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("jane doe", False),
        ("jane@example.org", False),
        ("officer/7", False),
    ],
)
def test_officer_handle_is_a_short_staff_token(handle: str, ok: bool) -> None:
    if ok:
        assert requests.officer(handle) == handle
        return
    with pytest.raises(InputError, match="staff handle") as raised:
        requests.officer(handle)
    assert handle not in str(raised.value) or not handle


def test_officer_defaults_to_lethe_officer_then_the_os_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LETHE_OFFICER", "officer-9")
    assert requests.officer() == "officer-9"
    monkeypatch.setenv("LETHE_OFFICER", "someone@example.org")
    with pytest.raises(InputError, match="LETHE_OFFICER must be a staff handle"):
        requests.officer()
    monkeypatch.delenv("LETHE_OFFICER")
    monkeypatch.setattr("getpass.getuser", lambda: "ops-user")
    assert requests.officer() == "ops-user"


def test_approval_required_request_waits_and_records_its_submitter(
    home: Path,
) -> None:
    request = _awaiting()
    assert request.state == "awaiting_approval" and request.submitted_by == "officer-1"
    shown = requests.describe(request.id)
    assert shown["approval"] == {"required": True, "by": None, "at": None}
    assert shown["denial"] is None and shown["submitted_by"] == "officer-1"


def test_approval_needs_the_submitters_handle(home: Path) -> None:
    before = _rows()
    with pytest.raises(InputError, match="needs its submitter's handle"):
        requests.submit(email=EMAIL, regulation="gdpr", require_approval=True)
    assert _rows() == before


@pytest.mark.parametrize("approver", ["officer-1", "OFFICER-1", " officer-1 "])
def test_approval_by_the_submitter_is_refused(any_ledger: str, approver: str) -> None:
    request = _awaiting(by="officer-1")
    before = _rows()
    with pytest.raises(InputError, match="a second officer must approve it"):
        decisions.approve(request.id, by=approver)
    assert _rows() == before
    again = requests.get(request.id)
    assert again.state == "awaiting_approval" and again.approved_by is None


def test_approval_never_falls_back_to_the_os_user(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = _awaiting(by="officer-1")
    monkeypatch.delenv("LETHE_OFFICER", raising=False)
    monkeypatch.setattr("getpass.getuser", lambda: "ops-user")  # not officer-1
    before = _rows()
    with pytest.raises(InputError, match="an approval names its approver"):
        decisions.approve(request.id)
    assert _rows() == before
    again = requests.get(request.id)
    assert again.state == "awaiting_approval" and again.approved_by is None
    monkeypatch.setenv("LETHE_OFFICER", "officer-2")
    assert decisions.approve(request.id).approved_by == "officer-2"


def test_cli_approve_without_by_or_lethe_officer_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = _awaiting(by="officer-1")
    monkeypatch.delenv("LETHE_OFFICER", raising=False)
    monkeypatch.setattr("getpass.getuser", lambda: "ops-user")
    before = _rows()
    result = runner.invoke(app, ["dsr", "approve", request.id])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "pass --by HANDLE or set LETHE_OFFICER" in line and result.stdout == ""
    assert _rows() == before and requests.get(request.id).approved_by is None


def test_approval_by_a_second_officer_makes_the_request_runnable(
    any_ledger: str,
) -> None:
    request = _awaiting(by="officer-1")
    assert decisions.not_runnable([request.id]) == {request.id: "awaiting_approval"}
    approved = decisions.approve(request.id, by="officer-2", note=NOTE)
    assert approved.state == "received" and approved.approved_by == "officer-2"
    assert decisions.not_runnable([request.id]) == {}
    shown = requests.describe(request.id)
    assert shown["approval"]["by"] == "officer-2" and shown["approval"]["at"]
    assert NOTE not in json.dumps(shown)
    assert decisions.notes(request.id)["approval_note"] == NOTE
    with ledger.session() as db:
        kinds = [e.kind for e in db.exec(select(AuditEvent))]
    assert kinds[-1] == "request.approved"


def test_approval_of_a_request_not_awaiting_it_is_refused(home: Path) -> None:
    plain = requests.submit(email=EMAIL, regulation="gdpr", submitted_by="officer-1")
    assert plain.state == "received"
    with pytest.raises(InputError, match="not awaiting_approval"):
        decisions.approve(plain.id, by="officer-2")
    assert requests.get(plain.id).approved_by is None


def test_duplicate_asking_for_approval_holds_the_open_request(home: Path) -> None:
    first = requests.submit(email=EMAIL, regulation="gdpr", submitted_by="officer-1")
    second = _awaiting(by="officer-3", email=EMAIL.lower())
    assert second.duplicate_of == first.id
    assert requests.get(first.id).state == "awaiting_approval"
    decisions.approve(second.id, by="officer-2")  # decides the canonical request
    assert requests.get(first.id).approved_by == "officer-2"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("version: 1\n", False),
        ("version: 1\napproval: {}\n", False),
        ("version: 1\napproval: {required: true}\n", True),
        ("version: 1\napproval: {required: false}\n", False),
    ],
)
def test_estate_approval_required_reads_the_policy(
    home: Path, policy: str, expected: bool
) -> None:
    _estate_file(home, "policy: policy.yaml\n", policy=policy)
    estate = load_estate(home / "estate.yaml")
    assert estate.approval_required is expected


@pytest.mark.parametrize("value", ["yes please", 1, "[true]"])
def test_estate_approval_required_refuses_a_non_boolean(
    home: Path, value: object
) -> None:
    policy = f"version: 1\napproval:\n  required: {value}\n"
    _estate_file(home, "policy: policy.yaml\n", policy=policy)
    with pytest.raises(ConfigError, match=r"policy.yaml:3: approval.required: must be"):
        load_estate(home / "estate.yaml")


def test_cli_estate_policy_makes_every_request_wait(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETHE_OFFICER", "officer-1")
    _estate_file(
        home,
        "policy: policy.yaml\n",
        policy="version: 1\napproval: {required: true}\n",
    )
    result = runner.invoke(
        app, ["dsr", "submit", "--email", EMAIL, "--regulation", "gdpr"]
    )
    assert result.exit_code == 0, result.stderr
    request_id = result.stdout.split()[0]
    assert requests.get(request_id).state == "awaiting_approval"
    assert requests.get(request_id).submitted_by == "officer-1"


def test_cli_run_of_a_request_awaiting_approval_says_so(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETHE_OFFICER", "officer-1")
    _estate_file(home)
    submitted = runner.invoke(
        app,
        [
            "dsr",
            "submit",
            "--email",
            EMAIL,
            "--regulation",
            "gdpr",
            "--require-approval",
        ],
    )
    request_id = submitted.stdout.split()[0]
    before = _rows()
    result = runner.invoke(app, ["dsr", "run", request_id])
    assert result.exit_code == 1
    assert "awaiting a second officer's approval" in result.stdout
    assert f"lethe dsr approve {request_id}" in result.stdout
    assert _rows() == before and requests.get(request_id).state == "awaiting_approval"


@pytest.mark.parametrize("reason", decisions.DENIAL_REASONS)
def test_denial_is_certified_with_its_reason_and_no_personal_data(
    any_ledger: str, reason: str
) -> None:
    request = _awaiting()
    certificate = decisions.deny(request.id, reason=reason, note=NOTE, by="officer-2")
    verified = verify(certificate.jws, current().keys.public_keys())
    payload = verified.payload
    assert payload["decision"]["outcome"] == "denied"
    assert payload["decision"]["reason"] == reason
    assert payload["decision"]["decided_at"].endswith("Z")
    assert payload["systems"] == [] and payload["request"]["completed_at"] is None
    assert payload["request"]["id"] == request.id
    assert payload["subject"]["digest"] == request.subject_digest
    text = json.dumps(_payload(certificate.jws)).lower()
    for secret in ("planted.person", "example.org", "wrong birth date", "officer-2"):
        assert secret not in text
    denied = requests.get(request.id)
    assert denied.state == "denied" and denied.denial_reason == reason
    assert denied.denied_by == "officer-2" and denied.denial_note != NOTE.encode()
    assert decisions.notes(request.id)["denial_note"] == NOTE
    assert decisions.not_runnable([request.id]) == {request.id: "denied"}


def test_denial_other_needs_a_note(home: Path) -> None:
    request = requests.submit(email=EMAIL, regulation="ccpa")
    before = _rows()
    for note in (None, "   "):
        with pytest.raises(InputError, match="--reason other needs --note"):
            decisions.deny(request.id, reason="other", note=note, by="officer-2")
    assert _rows() == before and requests.get(request.id).state == "received"


def test_denial_with_an_unknown_reason_is_refused(home: Path) -> None:
    request = requests.submit(email=EMAIL, regulation="ccpa")
    with pytest.raises(InputError, match="--reason must be one of suspected_fraud"):
        decisions.deny(request.id, reason="bored", by="officer-2")
    assert requests.get(request.id).state == "received"


@pytest.mark.parametrize("incomplete", [False, True])
def test_denial_after_an_attempt_called_a_system_is_refused(
    any_ledger: str, incomplete: bool
) -> None:
    request = requests.submit(email=EMAIL, regulation="gdpr")
    steps.begin_attempt(request.id, "salesforce", "delete")
    steps.mark_calling(request.id, "salesforce", "delete")
    if incomplete:  # the run failed after calling salesforce
        requests.mark_unplanned(request.id, "erp failed")
    before = _rows()
    with pytest.raises(InputError, match="already called salesforce"):
        decisions.deny(request.id, reason="no_match", by="officer-2")
    assert _rows() == before and requests.get(request.id).denial_reason is None


def test_denial_of_a_run_that_failed_before_calling_any_system(
    any_ledger: str,
) -> None:
    request = requests.submit(email=EMAIL, regulation="gdpr")
    steps.begin_attempt(request.id, "salesforce", "delete")  # never called
    requests.mark_unplanned(request.id, "the lineage search failed")
    assert requests.get(request.id).state == "incomplete"
    certificate = decisions.deny(request.id, reason="no_match", by="officer-2")
    payload = verify(certificate.jws, current().keys.public_keys()).payload
    assert payload["decision"]["outcome"] == "denied"
    assert payload["request"]["id"] == request.id and payload["systems"] == []
    assert requests.get(request.id).state == "denied"
    assert decisions.not_runnable([request.id]) == {request.id: "denied"}


@pytest.mark.parametrize("state", ["in_progress", "held", "completed", "denied"])
def test_denial_of_a_request_past_intake_is_refused(home: Path, state: str) -> None:
    request = requests.submit(email=EMAIL, regulation="gdpr")
    with ledger.session() as db:
        row = db.get(Request, request.id)
        row.state = state
        db.add(row)
    before = _rows()
    with pytest.raises(InputError, match=f"is {state}; only a request whose erasure"):
        decisions.deny(request.id, reason="exempt", by="officer-2")
    assert _rows() == before and requests.get(request.id).state == state


def test_denial_of_a_duplicate_denies_its_canonical_request(any_ledger: str) -> None:
    first = requests.submit(email=EMAIL, regulation="gdpr", channel="web")
    second = requests.submit(email=EMAIL.upper(), regulation="gdpr", channel="mail")
    certificate = decisions.deny(second.id, reason="suspected_fraud", by="officer-2")
    assert certificate.request_id == first.id
    assert requests.get(first.id).state == "denied"
    assert _payload(certificate.jws)["request"]["intake_ids"] == [first.id, second.id]


def test_cli_deny_of_a_duplicate_says_the_original_and_its_intakes_are_denied(
    home: Path,
) -> None:
    first = requests.submit(email=EMAIL, regulation="gdpr", channel="web")
    second = requests.submit(email=EMAIL.upper(), regulation="gdpr", channel="mail")
    third = requests.submit(email=EMAIL.lower(), regulation="gdpr", channel="phone")
    result = runner.invoke(
        app, ["dsr", "deny", third.id, "--reason", "suspected_fraud", "--by", "o-2"]
    )
    assert result.exit_code == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert said.startswith(
        f"{third.id} is a duplicate of {first.id}: the original request {first.id} "
        f"and all its linked intakes ({first.id}, {second.id}, {third.id}) are "
        "denied (suspected_fraud); certificate cert-"
    )
    assert requests.get(first.id).state == "denied"


def test_cli_deny_of_an_original_names_its_linked_intakes(home: Path) -> None:
    first = requests.submit(email=EMAIL, regulation="gdpr", channel="web")
    second = requests.submit(email=EMAIL.upper(), regulation="gdpr", channel="mail")
    result = runner.invoke(
        app, ["dsr", "deny", first.id, "--reason", "exempt", "--by", "o-2"]
    )
    assert result.exit_code == 0, result.stderr
    assert " ".join(result.stdout.split()).startswith(
        f"{first.id} denied (exempt) with all its linked intakes ({second.id}); "
    )


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        ("awaiting", "it awaits a second officer's approval"),
        ("awaiting", "approve it first (`lethe dsr approve {id} --by HANDLE`)"),
        ("unplanned", "request {id} has no plan: its search failed before planning; "),
        (
            "unplanned",
            "`lethe dsr show {id}` says why; re-run with `lethe dsr run {id}`",
        ),
        ("received", "request {id} has not been planned yet: run it first"),
    ],
)
def test_cli_interim_without_a_plan_says_why_in_its_states_terms(
    home: Path, prepare: str, message: str
) -> None:
    if prepare == "awaiting":
        request = _awaiting()
    else:
        request = requests.submit(email=EMAIL, regulation="gdpr")
    if prepare == "unplanned":
        requests.mark_unplanned(request.id, "the lineage search failed")
    before = _rows()
    result = runner.invoke(app, ["certificate", "interim", request.id])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert message.replace("{id}", request.id) in line
    assert _rows() == before


def test_cli_list_never_cuts_request_or_certificate_ids(home: Path) -> None:
    made = [_awaiting(email=f"person.{n}@example.net").id for n in range(3)] + [
        requests.submit(email="x@example.net", regulation="ccpa").id
    ]
    certificate = decisions.deny(made[0], reason="no_match", by="officer-2")
    listed = runner.invoke(app, ["dsr", "list"])
    assert listed.exit_code == 0, listed.stderr
    assert max(len(line) for line in listed.stdout.splitlines()) <= 120
    for request_id in made:
        assert request_id in listed.stdout
    assert certificate.id in listed.stdout


def test_denied_request_is_purged_after_its_proof_period(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETHE_PROOF_PERIOD_DAYS", "10")
    old, recent = _awaiting(), _awaiting(email="someone.else@example.net")
    for request in (old, recent):
        decisions.deny(request.id, reason="no_match", note=NOTE, by="officer-2")
    with ledger.session() as db:
        row = db.get(Request, old.id)
        row.denied_at = utcnow() - timedelta(days=11)
        db.add(row)
    assert purge_expired() == [old.id]
    purged = requests.get(old.id)
    assert purged.purged_at is not None and purged.denial_note is None
    assert decisions.notes(old.id)["denial_note"] is None
    assert decisions.notes(recent.id)["denial_note"] == NOTE
    with ledger.session() as db:
        jws = db.exec(select(Certificate.jws).where(Certificate.request_id == old.id))
        assert verify(jws.one(), current().keys.public_keys()).payload["decision"]
    assert b"wrong birth date" not in (home / "ledger.db").read_bytes()


def test_cli_show_and_list_show_decisions_but_list_never_the_note(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETHE_OFFICER", "officer-1")
    approved, denied = _awaiting().id, _awaiting(email="other@example.net").id
    ok = runner.invoke(app, ["dsr", "approve", approved, "--by", "officer-2"])
    assert ok.exit_code == 0 and "approved by officer-2" in ok.stdout
    no = runner.invoke(
        app, ["dsr", "deny", denied, "--reason", "no_match", "--note", NOTE]
    )
    assert no.exit_code == 0 and "denied (no_match)" in no.stdout
    shown = json.loads(runner.invoke(app, ["dsr", "show", denied, "--json"]).stdout)
    assert shown["denial"]["reason"] == "no_match" and shown["denial"]["at"]
    assert shown["denial_note"] == NOTE and shown["certificate_id"]
    text = runner.invoke(app, ["dsr", "show", approved]).stdout
    assert "approved by officer-2" in text
    for args in (["dsr", "list"], ["dsr", "list", "--json"]):
        listed = runner.invoke(app, args)
        assert listed.exit_code == 0
        assert "wrong birth date" not in listed.stdout
        assert "officer-2" in listed.stdout and "no_match" in listed.stdout


def test_cli_certificate_verify_reads_a_denial(home: Path, tmp_path: Path) -> None:
    request = _awaiting()
    decisions.deny(request.id, reason="outside_jurisdiction", by="officer-2")
    out = tmp_path / "denial.jws"
    exported = runner.invoke(
        app, ["certificate", "export", request.id, "--out", str(out)]
    )
    assert exported.exit_code == 0, exported.stderr
    checked = runner.invoke(app, ["certificate", "verify", str(out)])
    assert checked.exit_code == 0, checked.stderr
    assert "denied (outside_jurisdiction)" in checked.stdout
    out.write_text(out.read_text().replace(".", ".x", 1))
    assert runner.invoke(app, ["certificate", "verify", str(out)]).exit_code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dsr", "approve", "{id}", "--by", "officer-1"], "a second officer must"),
        (["dsr", "approve", "{id}", "--by", "boss@example.org"], "staff handle"),
        (["dsr", "deny", "{id}", "--reason", "bored"], "--reason must be one of"),
        (["dsr", "deny", "{id}", "--reason", "other"], "needs --note"),
        (["dsr", "deny", "{id}", "--reason", "exempt", "--by", "a b"], "staff handle"),
        (["dsr", "approve", "dsr-nope", "--by", "officer-2"], "no request has id"),
        (
            [
                "dsr",
                "submit",
                "--email",
                EMAIL,
                "--regulation",
                "gdpr",
                "--by",
                "me@x.io",
            ],
            "staff handle",
        ),
    ],
)
def test_cli_decision_errors_are_one_line_and_change_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setenv("LETHE_OFFICER", "officer-1")
    request_id = _awaiting().id
    before = _rows()
    result = runner.invoke(app, [a.replace("{id}", request_id) for a in args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "example.org" not in result.stderr and "x.io" not in result.stderr
    assert result.stdout == ""
    assert _rows() == before
    assert requests.get(request_id).state == "awaiting_approval"


def test_cli_approve_of_a_request_not_awaiting_it_is_an_error(home: Path) -> None:
    request_id = requests.submit(email=EMAIL, regulation="gdpr").id
    result = runner.invoke(app, ["dsr", "approve", request_id, "--by", "officer-2"])
    assert result.exit_code == 2 and "not awaiting_approval" in result.stderr


def _tripwire(e: Estate) -> list:
    """Any request to any emulator is answered 500 and recorded."""
    servers = (e.servers.salesforce, e.servers.analytics, e.servers.erp)
    for server in servers:
        server.faults.add("500", "/", times=1_000_000)
    return [server.faults for server in servers]


def test_flow_touches_no_system_before_approval(estate: Estate) -> None:
    from flows.erasure import erase_requests, plan_requests

    request = _awaiting(email=estate.canary.email)
    wires = _tripwire(estate)
    assert erase_requests.fn([request.id]) == {request.id: "awaiting_approval"}
    assert plan_requests.fn([request.id], {request.id: 1}) == []
    assert all(w.injected == [] for w in wires)
    with ledger.session() as db:
        planned = db.exec(select(SystemStep).where(SystemStep.request_id == request.id))
        assert planned.all() == []
    assert steps.attempts_of(request.id) == []
    assert requests.get(request.id).state == "awaiting_approval"
    assert requests.get(request.id).resolved_at is None


@pytest.mark.e2e
def test_approved_request_runs_completes_and_can_no_longer_be_denied(
    estate: Estate,
) -> None:
    from flows.capture import load_edges, read_manifests, snapshot_source
    from flows.erasure import erase_requests

    load_edges.fn()
    snapshot_source.fn()
    read_manifests.fn()
    request = _awaiting(email=estate.canary.email)
    decisions.approve(request.id, by="officer-2")
    assert erase_requests([request.id]) == {request.id: "completed"}
    shown = requests.describe(request.id)
    assert {s["system"] for s in shown["systems"]} >= {"salesforce", "erp"}
    assert all(s["verified"] for s in shown["systems"])
    with ledger.session() as db:
        jws = db.exec(
            select(Certificate.jws).where(Certificate.request_id == request.id)
        ).one()
    payload = verify(jws, current().keys.public_keys()).payload
    assert payload["systems"] and "decision" not in payload
    before = _rows()
    with pytest.raises(InputError, match="is completed; only a request whose erasure"):
        decisions.deny(request.id, reason="no_match", by="officer-3")
    assert _rows() == before and requests.get(request.id).state == "completed"
