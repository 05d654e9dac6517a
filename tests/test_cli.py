"""The command line: one-line errors, non-zero exits, nothing stored on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import func, select
from typer.testing import CliRunner

from erasure.models import AuditEvent, Request
from lethe import ledger
from lethe.cli import app
from lethe.vault import DataKey, SealedIdentity

runner = CliRunner()


def _rows() -> dict[str, int]:
    with ledger.session() as db:
        return {
            model.__name__: db.exec(select(func.count()).select_from(model)).one()
            for model in (Request, SealedIdentity, DataKey, AuditEvent)
        }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["dsr", "submit", "--email", "not-an-email", "--regulation", "gdpr"],
            "e-mail address is not valid",
        ),
        (
            ["dsr", "submit", "--email", "a@example.org", "--regulation", "lgpd"],
            "unknown regulation 'lgpd'",
        ),
        (
            ["dsr", "submit", "--email", " ", "--regulation", "ccpa"],
            "e-mail address is not valid",
        ),
        (["dsr", "show", "dsr-doesnotexist"], "no request has id 'dsr-doesnotexist'"),
        (["dsr", "run", "dsr-doesnotexist"], "no request has id 'dsr-doesnotexist'"),
        (["certificate", "export", "dsr-nope", "--out", "x.jws"], "no request has id"),
        (["dsr", "submit", "--regulation", "gdpr"], "needs an identity"),
        (
            ["dsr", "submit", "--phone", "call me", "--regulation", "gdpr"],
            "phone number cannot be read",
        ),
        (
            [
                "dsr",
                "submit",
                "--email",
                "a@example.org",
                "--phone",
                "12",
                "--regulation",
                "gdpr",
            ],
            "phone number cannot be read",
        ),
        (
            ["dsr", "resolve", "dsr-nope", "--record", "003000000000001AAA"],
            "no request has id",
        ),
        (["dsr", "purge", "dsr-nope"], "no request has id"),
        (["dsr", "purge"], "give a request id or --expired"),
        (["dsr", "purge", "dsr-x", "--expired"], "give a request id or --expired"),
    ],
)
def test_cli_bad_input_one_line_error_and_nothing_stored(
    home: Path, args: list[str], message: str
) -> None:
    before = _rows()
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert result.stdout == ""
    assert _rows() == before


def test_cli_bad_email_is_not_echoed(home: Path) -> None:
    result = runner.invoke(
        app, ["dsr", "submit", "--email", "secret person@x.org", "--regulation", "gdpr"]
    )
    assert result.exit_code == 2
    assert "secret" not in result.stderr


def test_cli_submit_show_list_json(home: Path) -> None:
    submitted = runner.invoke(
        app, ["dsr", "submit", "--email", "Jo@Example.org", "--regulation", "ccpa"]
    )
    assert submitted.exit_code == 0, submitted.stderr
    request_id = submitted.stdout.strip()
    assert request_id.startswith("dsr-")
    shown = json.loads(runner.invoke(app, ["dsr", "show", request_id, "--json"]).stdout)
    assert shown["request_id"] == request_id
    assert shown["state"] == "received" and shown["regulation"] == "ccpa"
    assert shown["received_at"].endswith("Z") and shown["deadline"]
    assert shown["systems"] == []
    listed = json.loads(runner.invoke(app, ["dsr", "list", "--json"]).stdout)
    assert [item["request_id"] for item in listed] == [request_id]
    assert "jo@example.org" not in json.dumps(listed).lower()


def test_cli_certificate_verify_rejects_garbage(home: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.jws"
    bogus.write_text("this.is.not-a-certificate")
    result = runner.invoke(app, ["certificate", "verify", str(bogus)])
    assert result.exit_code == 1
    assert "does NOT verify" in result.stderr


def test_cli_keys_rotate_keeps_old_keys_published(home: Path) -> None:
    assert runner.invoke(app, ["keys", "init"]).exit_code == 0
    first = json.loads((home / "keys" / "public" / "jwks.json").read_text())
    assert runner.invoke(app, ["keys", "rotate"]).exit_code == 0
    second = json.loads((home / "keys" / "public" / "jwks.json").read_text())
    assert len(second["keys"]) == len(first["keys"]) + 1
    assert {k["kid"] for k in first["keys"]} < {k["kid"] for k in second["keys"]}


def test_cli_demo_rejects_bad_email_before_building(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["demo", "--workdir", str(tmp_path / "w"), "--email", "nope"]
    )
    assert result.exit_code == 2
    assert not (tmp_path / "w").exists()


def test_cli_purge_and_resolve_refuse_a_request_in_the_wrong_state(home: Path) -> None:
    request_id = runner.invoke(
        app, ["dsr", "submit", "--email", "x@example.org", "--regulation", "gdpr"]
    ).stdout.strip()
    before = _rows()
    purged = runner.invoke(app, ["dsr", "purge", request_id])
    assert purged.exit_code == 2 and "only a completed request" in purged.stderr
    resolved = runner.invoke(
        app, ["dsr", "resolve", request_id, "--record", "003000000000001AAA"]
    )
    assert resolved.exit_code == 2 and "not needs_disambiguation" in resolved.stderr
    assert _rows() == before


def test_cli_purge_expired_with_nothing_due(home: Path) -> None:
    _submit("gdpr")
    result = runner.invoke(app, ["dsr", "purge", "--expired"])
    assert result.exit_code == 0 and "purged 0 request(s)" in result.stdout


def test_cli_bad_proof_period_is_a_config_error(home: Path, monkeypatch) -> None:
    _submit("gdpr")
    monkeypatch.setenv("LETHE_PROOF_PERIOD_DAYS", "soon")
    result = runner.invoke(app, ["dsr", "purge", "--expired"])
    assert result.exit_code == 1 and "LETHE_PROOF_PERIOD_DAYS" in result.stderr


def _submit(*extra: str) -> str:
    result = runner.invoke(
        app, ["dsr", "submit", "--email", "clock@example.org", "--regulation", *extra]
    )
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def _show(request_id: str) -> dict:
    return json.loads(runner.invoke(app, ["dsr", "show", request_id, "--json"]).stdout)


def test_cli_received_at_and_jurisdiction_give_the_local_deadline(home: Path) -> None:
    # 22:30 UTC on 31 March is 1 April in Berlin: one month later is 1 May, a
    # public holiday, then a weekend, so the deadline is Monday 4 May (counted
    # from the UTC date it would have been Thursday 30 April).
    request_id = _submit(
        "gdpr", "--received-at", "2026-03-31T22:30:00Z", "--jurisdiction", "DE"
    )
    shown = _show(request_id)
    assert shown["jurisdiction"] == "DE" and shown["rule_version"]
    assert shown["deadline"] == "2026-05-04"
    ccpa = _show(_submit("ccpa", "--received-at", "2026-11-20T10:00:00-08:00"))
    assert ccpa["deadline"] == "2027-01-04" and ccpa["acknowledge_by"]


def test_cli_extend_pause_resume_and_due_flags(home: Path) -> None:
    request_id = _submit("gdpr", "--jurisdiction", "DE")
    before = _show(request_id)["deadline"]
    extended = runner.invoke(
        app, ["dsr", "extend", request_id, "--reason", "several systems hold copies"]
    )
    assert extended.exit_code == 0, extended.stderr
    shown = _show(request_id)
    assert shown["extended_deadline"] > before
    again = runner.invoke(app, ["dsr", "extend", request_id, "--reason", "more"])
    assert again.exit_code == 2 and "already" in again.stderr
    assert runner.invoke(app, ["dsr", "pause", request_id]).exit_code == 0
    paused = runner.invoke(app, ["dsr", "pause", request_id])
    assert paused.exit_code == 2 and "already paused" in paused.stderr
    assert runner.invoke(app, ["dsr", "resume", request_id]).exit_code == 0
    listed = json.loads(
        runner.invoke(app, ["dsr", "list", "--json", "--due-within", "400d"]).stdout
    )
    assert listed[0]["due_state"] == "due_soon"
    listed = json.loads(
        runner.invoke(app, ["dsr", "list", "--json", "--due-within", "5d"]).stdout
    )
    assert listed[0]["due_state"] == "on_time"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--received-at", "2026-12-01T10:00:00"], "needs a UTC offset"),
        (["--received-at", "yesterday"], "not an ISO 8601 time"),
        (["--received-at", "2999-01-01T00:00:00Z"], "in the future"),
        (["--jurisdiction", "XX"], "XX"),
    ],
)
def test_cli_bad_clock_input_is_refused(
    home: Path, args: list[str], message: str
) -> None:
    before = _rows()
    result = runner.invoke(
        app,
        ["dsr", "submit", "--email", "a@example.org", "--regulation", "gdpr", *args],
    )
    assert result.exit_code == 2 and message in result.stderr
    assert _rows() == before


def test_cli_bad_due_within_and_resume_of_a_running_clock(home: Path) -> None:
    request_id = _submit("ccpa")
    bad = runner.invoke(app, ["dsr", "list", "--due-within", "soon"])
    assert bad.exit_code == 2 and "--due-within" in bad.stderr
    resumed = runner.invoke(app, ["dsr", "resume", request_id])
    assert resumed.exit_code == 2 and "not paused" in resumed.stderr


def test_cli_read_commands_do_not_create_a_ledger(home: Path) -> None:
    for args in (
        ["dsr", "list"],
        ["dsr", "show", "dsr-x"],
        ["lineage", "where", "--email", "a@b.org"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "no ledger in" in result.stderr, args
    assert not home.exists()


def test_cli_verify_needs_no_home_and_names_the_missing_key(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from erasure.certificate import sign
    from lethe.keys import KeyRing

    ring = KeyRing.load()
    kid, key = ring.signing_key()
    cert = tmp_path / "c.jws"
    cert.write_text(
        sign(
            {"request": {"id": "dsr-1", "regulation": "gdpr", "completed_at": "x"}},
            kid=kid,
            key=key,
        )
    )
    old_pem = ring.publish() / f"{kid}.pub.pem"
    new_kid = ring.rotate()
    new_pem = ring.publish() / f"{new_kid}.pub.pem"
    monkeypatch.setenv("LETHE_HOME", str(tmp_path / "empty-home"))
    wrong = runner.invoke(
        app, ["certificate", "verify", str(cert), "--key", str(new_pem)]
    )
    assert wrong.exit_code == 1 and f"signed by key {kid}" in wrong.stderr
    right = runner.invoke(
        app, ["certificate", "verify", str(cert), "--key", str(old_pem)]
    )
    assert right.exit_code == 0, right.stderr
    none = runner.invoke(app, ["certificate", "verify", str(cert)])
    assert none.exit_code == 2 and "pass the signer's key with --key" in none.stderr
    assert not (tmp_path / "empty-home").exists()


def test_cli_bad_ledger_url_is_one_line(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for url, says in (
        ("nonsense", "not a database URL"),
        ("mysql://u@h/db", "SQLite or PostgreSQL"),
        ("postgresql://nobody@127.0.0.1:1/x", "cannot reach the ledger"),
    ):
        monkeypatch.setenv("LETHE_DATABASE_URL", url)
        from lethe import ledger

        ledger.reset_engines()
        result = runner.invoke(
            app, ["dsr", "submit", "--email", "a@example.org", "--regulation", "gdpr"]
        )
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and says in lines[0], url
        assert "Traceback" not in result.stderr


def _estate_file(home: Path, name: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "estate.yaml").write_text(
        f"name: {name}\nsource: salesforce\n"
        "systems:\n  salesforce: {kind: salesforce}\n"
    )


def test_cli_run_refuses_a_request_of_another_estate(home: Path) -> None:
    _estate_file(home, "estate-a")
    request_id = _submit("gdpr")
    assert _show(request_id)["estate"] == "estate-a"
    _estate_file(home, "estate-b")
    result = runner.invoke(app, ["dsr", "run", request_id])
    assert result.exit_code == 2
    assert "belongs to estate estate-a" in result.stderr and "estate-b" in result.stderr
    assert _show(request_id)["state"] == "received"


def test_cli_keys_export_and_rotate_refuse_a_home_without_keys(home: Path) -> None:
    for args in (["keys", "export-public", "--out", "."], ["keys", "rotate"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "no lethe keys" in result.stderr, args
    assert not home.exists()
