"""``lethe dsr``: submit, approve, deny, run, show and list data subject requests."""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from erasure import requests
from lethe.cli._common import console, handled, needs_ledger, print_json
from lethe.errors import ConfigError, InputError

if TYPE_CHECKING:
    from lethe.estate.config import Estate

app = typer.Typer(
    help="Data subject requests: submit, approve, deny, run, show, list, resolve, "
    "extend, pause, resume, purge.",
    no_args_is_help=True,
)
By = Annotated[
    str | None,
    typer.Option(
        "--by",
        help="Your staff handle, e.g. officer-7 (default $LETHE_OFFICER, else the "
        "OS user name); never an e-mail address.",
    ),
]
Approver = Annotated[
    str | None,
    typer.Option(
        "--by",
        help="Your staff handle, e.g. officer-7 (default $LETHE_OFFICER; an "
        "approval never falls back to the OS user name).",
    ),
]
Note = Annotated[
    str | None,
    typer.Option(help="Why, for the ledger only: never on the certificate."),
]


@app.command()
@handled
def submit(
    regulation: Annotated[str, typer.Option(help="gdpr or ccpa.")],
    email: Annotated[
        str | None, typer.Option(help="The requester's e-mail address.")
    ] = None,
    phone: Annotated[
        str | None, typer.Option(help="The requester's phone number.")
    ] = None,
    received_at: Annotated[
        str | None,
        typer.Option(help="When it arrived elsewhere: ISO 8601 with an offset."),
    ] = None,
    jurisdiction: Annotated[
        str | None,
        typer.Option(help="ISO 3166 code of the controller (default DE / US-CA)."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="A client's retry key: the same key returns the same id."),
    ] = None,
    require_approval: Annotated[
        bool,
        typer.Option(
            "--require-approval",
            help="A second officer must approve it (`dsr approve`) before it runs.",
        ),
    ] = False,
    by: By = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Store an erasure request and print its id."""
    submitter = requests.officer(by)
    estate = _estate()
    request = requests.submit(
        estate=estate.name if estate else "",
        email=email,
        phone=phone,
        regulation=regulation,
        received_at=_instant(received_at) if received_at else None,
        jurisdiction=jurisdiction,
        idempotency_key=idempotency_key,
        submitted_by=submitter,
        require_approval=require_approval
        or (estate is not None and estate.approval_required),
    )
    if json_out:
        print_json(requests.describe(request.id))
    elif request.duplicate_of:
        console.print(
            f"{request.id} (a duplicate of open request {request.duplicate_of})"
        )
    elif request.state == "awaiting_approval":
        console.print(f"{request.id} (awaiting a second officer's approval)")
    else:
        console.print(request.id)


@app.command()
@handled
@needs_ledger
def approve(
    request_id: Annotated[str, typer.Argument(help="The request id.")],
    by: Approver = None,
    note: Note = None,
) -> None:
    """Approve a request awaiting a second officer; it can then run."""
    from erasure import decisions

    request = decisions.approve(request_id, by=by, note=note)
    console.print(
        f"{request.id} approved by {request.approved_by}: "
        f"`lethe dsr run {request.id}` runs it"
    )


@app.command()
@handled
@needs_ledger
def deny(
    request_id: Annotated[str, typer.Argument(help="The request id.")],
    reason: Annotated[
        str,
        typer.Option(
            help="suspected_fraud, insufficient_verification, no_match, exempt, "
            "outside_jurisdiction or other (other needs --note)."
        ),
    ],
    note: Note = None,
    by: By = None,
) -> None:
    """Deny a request whose erasure has not started; issues a signed certificate."""
    from erasure import decisions

    certificate = decisions.deny(request_id, reason=reason, note=note, by=by)
    code, denied = decisions.reason_code(reason), certificate.request_id
    intakes = decisions.intakes(denied)
    if denied != request_id.strip():
        console.print(
            f"{request_id.strip()} is a duplicate of {denied}: the original request "
            f"{denied} and all its linked intakes ({', '.join(intakes)}) are denied "
            f"({code}); certificate {certificate.id}"
        )
    elif len(intakes) > 1:
        console.print(
            f"{denied} denied ({code}) with all its linked intakes "
            f"({', '.join(intakes[1:])}); certificate {certificate.id}"
        )
    else:
        console.print(f"{denied} denied ({code}); certificate {certificate.id}")


@app.command()
@handled
@needs_ledger
def run(
    request_ids: Annotated[list[str], typer.Argument(help="One or more request ids.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Execute requests: plan from lineage, erase, verify, certify."""
    from flows.estate import current_estate

    # fail fast, before Prefect starts
    requests.check_estate(requests.get_many(request_ids), current_estate().name)
    from erasure import decisions

    canonical = requests.canonical_ids(request_ids)
    if len(decisions.not_runnable(canonical)) == len(canonical):
        for rid in canonical:  # awaiting approval or denied: nothing can run
            print_request(requests.describe(rid))
        raise typer.Exit(1)
    from flows.erasure import erase_requests

    states = erase_requests(list(request_ids))
    from erasure.purge import purge_expired

    purge_expired()
    described = [requests.describe(rid) for rid in request_ids]
    if json_out:
        print_json(described if len(described) > 1 else described[0])
    else:
        for item in described:
            print_request(item)
    # held: all it could do is done and certified; the rest waits for a hold
    if any(state not in ("completed", "held") for state in states.values()):
        raise typer.Exit(1)


@app.command()
@handled
@needs_ledger
def resolve(
    request_id: Annotated[str, typer.Argument(help="The request id.")],
    record: Annotated[
        list[str], typer.Option(help="A candidate record id that is the subject's.")
    ],
) -> None:
    """Choose which candidate records an ambiguous request means."""
    from erasure.plan import choose

    choose(request_id, record)
    console.print(f"{request_id} is ready to run: `lethe dsr run {request_id}`")


@app.command()
@handled
@needs_ledger
def purge(
    request_id: Annotated[
        str | None, typer.Argument(help="A completed request to purge now.")
    ] = None,
    expired: Annotated[
        bool, typer.Option(help="Purge every request past its proof period.")
    ] = False,
) -> None:
    """Destroy a finished request's identifiers (crypto-shredding)."""
    from erasure.purge import purge as purge_one
    from erasure.purge import purge_expired

    if (request_id is None) == (not expired):
        raise InputError("give a request id or --expired, not both or neither")
    purged = [purge_one(request_id).id] if request_id else purge_expired()
    console.print(f"purged {len(purged)} request(s): {' '.join(purged)}".rstrip(": "))


@app.command()
@handled
@needs_ledger
def recheck(
    now: Annotated[
        str | None, typer.Option(help="Pretend it is this time (ISO 8601, offset).")
    ] = None,
) -> None:
    """Re-read finished requests whose re-check interval (+7, +30 days) has come."""
    from flows.recheck import recheck_requests

    results = recheck_requests(now)
    for request_id, reopened in results.items():
        if reopened:
            console.print(f"[red]{request_id}: found again, re-erasure {reopened}[/]")
        else:
            console.print(f"{request_id}: clean")
    if not results:
        console.print("no re-check is due")


@app.command()
@handled
@needs_ledger
def show(
    request_id: Annotated[str, typer.Argument(help="The request id.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print each system's state and outcome for one request."""
    from erasure import decisions

    described = requests.describe(request_id) | decisions.notes(request_id)
    if json_out:
        print_json(described)
    else:
        print_request(described)


@app.command("list")
@handled
@needs_ledger
def list_(
    due_within: Annotated[
        str, typer.Option(help="Flag requests due within this long, e.g. 5d.")
    ] = "7d",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every request with its due date, flagging overdue and due soon."""
    from erasure import timeline

    days = _days(due_within)
    described = []
    for request in requests.list_requests():
        item = requests.describe(request.id)
        item |= timeline.due(request, within_days=days)
        described.append(item)
    if json_out:
        print_json(described)
        return
    table = Table()
    # ids are copied into the next command: never wrapped or cut
    table.add_column(
        "request", no_wrap=True, min_width=_widest(described, "request_id")
    )
    for heading in ("regulation", "state", "received (UTC)", "due", "flag", "decision"):
        table.add_column(heading)
    table.add_column(
        "certificate", no_wrap=True, min_width=_widest(described, "certificate_id")
    )
    for item in described:
        flag = {"overdue": "[red]OVERDUE[/]", "due_soon": "[yellow]due soon[/]"}.get(
            item["due_state"], ""
        )
        if item["paused"]:
            flag = (flag + " paused").strip()
        table.add_row(
            item["request_id"],
            item["regulation"],
            item["state"],
            item["received_at"],
            item["due_by"],
            flag,
            decision_text(item),
            item["certificate_id"] or "",
        )
    console.print(table)


@app.command()
@handled
@needs_ledger
def extend(
    request_id: Annotated[str, typer.Argument(help="The request id.")],
    reason: Annotated[str, typer.Option(help="Why, as told to the subject.")],
    notified_on: Annotated[
        str | None, typer.Option(help="Date the subject was told (default today).")
    ] = None,
) -> None:
    """Record the one extension of the deadline (notified to the subject)."""
    from erasure import timeline

    request = timeline.extend(
        request_id, reason, notified_on=_day(notified_on) if notified_on else None
    )
    console.print(f"{request.id} extended: due {request.extended_deadline}")


@app.command()
@handled
@needs_ledger
def pause(
    request_id: Annotated[str, typer.Argument(help="The request id.")],
) -> None:
    """Stop the clock while waiting for the subject (identity, clarification)."""
    from erasure import timeline

    request = timeline.pause(request_id)
    console.print(f"{request.id} paused since {request.paused_since}")


@app.command()
@handled
@needs_ledger
def resume(
    request_id: Annotated[str, typer.Argument(help="The request id.")],
) -> None:
    """Restart the clock; a GDPR deadline moves by the paused days."""
    from erasure import timeline

    request = timeline.resume(request_id)
    due = request.extended_deadline or request.deadline
    console.print(f"{request.id} resumed: due {due}")


def _widest(rows: list[dict[str, Any]], key: str) -> int:
    return max((len(row[key] or "") for row in rows), default=0) or 1


def _estate() -> Estate | None:
    """The current estate; None when there is no estate file yet (the request
    then takes the estate it is first run in)."""
    from flows.estate import current_estate

    try:
        return current_estate()
    except ConfigError:
        if _estate_path().exists():
            raise  # an unreadable estate file cannot say whether approval is needed
        return None


def _estate_path() -> Path:
    from lethe.config import load_settings

    named = os.environ.get("LETHE_ESTATE")
    return Path(named) if named else load_settings().estate_file


def _days(text: str) -> int:
    value = text.strip().lower().removesuffix("d")
    if not value.isdigit():
        raise InputError(f"--due-within takes days like 5d, not {text!r}")
    return int(value)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{text!r} is not a date like 2026-12-03") from None


def _instant(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{text!r} is not an ISO 8601 time like 2026-12-01T18:30:00+01:00"
        ) from None


def outcome_text(system: dict[str, Any]) -> str:
    if system["state"] in ("done", "no_data", "deferred"):
        return str(system["outcome"])
    return system["detail"] or system["state"]


def decision_text(item: dict[str, Any]) -> str:
    """Approval and denial in a few words (never the officers' notes)."""
    approval, denial = item["approval"], item["denial"]
    if denial:
        return f"denied {denial['at'][:10]}: {denial['reason']}"
    if approval["by"]:
        return f"approved {approval['at'][:10]} by {approval['by']}"
    return "awaits approval" if approval["required"] else ""


def _print_decision(item: dict[str, Any]) -> None:
    approval, denial = item["approval"], item["denial"]
    if item["state"] == "awaiting_approval":
        console.print(
            "awaiting a second officer's approval (submitted by "
            f"{item['submitted_by'] or 'an unnamed officer'}); nothing runs before "
            f"`lethe dsr approve {item['request_id']} --by HANDLE`"
        )
    elif approval["by"]:
        console.print(f"approved by {approval['by']} at {approval['at']}")
    if denial:
        console.print(
            f"denied ({denial['reason']}) by {denial['by']} at {denial['at']}; "
            "nothing was erased"
        )
    for name in ("approval_note", "denial_note"):
        if item.get(name):
            console.print(f"{name.replace('_', ' ')}: {item[name]}", markup=False)


def print_request(item: dict[str, Any]) -> None:
    console.print(
        f"[bold]{item['request_id']}[/] {item['regulation'].upper()} {item['type']}: "
        f"[bold]{item['state']}[/] (received {item['received_at']}, "
        f"due {item['extended_deadline'] or item['deadline']}"
        f"{' (extended)' if item['extended_deadline'] else ''}, "
        f"{item['jurisdiction']})"
    )
    if item.get("detail"):
        console.print(item["detail"], markup=False)
    _print_decision(item)
    if item["systems"] or item["state"] not in ("awaiting_approval", "denied"):
        _print_systems(item["systems"])
    if item["candidates"] and item["state"] == "needs_disambiguation":
        console.print(
            "the identity matched several people; choose with "
            f"`lethe dsr resolve {item['request_id']} --record ID`:"
        )
        for candidate in item["candidates"]:
            console.print(f"  {candidate['object']} {candidate['record_id']}")
    if item["certificate_id"]:
        console.print(f"certificate: {item['certificate_id']}")


def _print_systems(systems: list[dict[str, Any]]) -> None:
    table = Table(
        "system", "state", "keys found", "records", "outcome", "verified", "vendor job"
    )
    for system in systems:
        table.add_row(
            system["system"],
            system["state"],
            str(system["keys_found"]),
            str(system["records_affected"]),
            outcome_text(system),
            "yes" if system["verified"] else "no",
            system["vendor_job_id"] or "",
        )
    console.print(table)
