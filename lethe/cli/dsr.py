"""``lethe dsr``: submit, run, show and list data subject requests."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from erasure import requests
from lethe.cli._common import console, handled, needs_ledger, print_json
from lethe.errors import InputError

app = typer.Typer(
    help="Data subject requests: submit, run, show, list, resolve, extend, pause, "
    "resume, purge.",
    no_args_is_help=True,
)


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
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Store an erasure request and print its id."""
    request = requests.submit(
        estate=_estate_name(),
        email=email,
        phone=phone,
        regulation=regulation,
        received_at=_instant(received_at) if received_at else None,
        jurisdiction=jurisdiction,
        idempotency_key=idempotency_key,
    )
    if json_out:
        print_json(requests.describe(request.id))
    elif request.duplicate_of:
        console.print(
            f"{request.id} (a duplicate of open request {request.duplicate_of})"
        )
    else:
        console.print(request.id)


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
    if any(state != "completed" for state in states.values()):
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
    described = requests.describe(request_id)
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
    table = Table(
        "request",
        "regulation",
        "state",
        "received (UTC)",
        "due",
        "flag",
        "certificate",
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


def _estate_name() -> str:
    from flows.estate import current_estate
    from lethe.errors import ConfigError

    try:
        return current_estate().name
    except ConfigError:
        return ""  # no estate yet: the request takes the one it is first run in


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
    if system["state"] == "no_data":
        return "no data held"
    if system["action"] == "retained":
        return f"retained under {system['basis']} until {system['retained_until']}"
    if system["state"] == "done":
        return {
            "deleted": "deleted",
            "anonymised": "anonymised",
            "already_absent": "already absent",
        }.get(system["action"] or "", "done")
    return system["detail"] or system["state"]


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
    table = Table(
        "system", "state", "keys found", "records", "outcome", "verified", "vendor job"
    )
    for system in item["systems"]:
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
    if item["candidates"] and item["state"] == "needs_disambiguation":
        console.print(
            "the identity matched several people; choose with "
            f"`lethe dsr resolve {item['request_id']} --record ID`:"
        )
        for candidate in item["candidates"]:
            console.print(f"  {candidate['object']} {candidate['record_id']}")
    if item["certificate_id"]:
        console.print(f"certificate: {item['certificate_id']}")
