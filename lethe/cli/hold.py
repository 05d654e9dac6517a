"""``lethe hold``: place, list and release legal holds."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from lethe.cli._common import console, handled, needs_ledger, print_json
from lethe.errors import InputError

app = typer.Typer(
    help="Legal holds: defer part of an erasure (a system, dataset or data "
    "category) until released; the rest proceeds.",
    no_args_is_help=True,
)


def _day(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"--ends {text!r} is not a date: use YYYY-MM-DD") from None


@app.command()
@handled
def place(
    system: Annotated[str, typer.Option("--system", help="The system to hold.")],
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            help="Why (kept in the ledger only, never on a certificate); "
            "name the matter, not the person.",
        ),
    ],
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only this dataset.")
    ] = None,
    category: Annotated[
        str | None,
        typer.Option(
            "--category", help="Only datasets holding this fideslang category."
        ),
    ] = None,
    request: Annotated[
        str | None,
        typer.Option("--request", help="Only this request (default: every request)."),
    ] = None,
    ends: Annotated[
        str | None, typer.Option("--ends", help="End date, YYYY-MM-DD (default: none).")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Your staff handle.")] = None,
) -> None:
    """Place a legal hold; held parts of requests are deferred when they run."""
    from erasure import holds
    from flows.estate import current_estate

    hold = holds.place(
        current_estate(),
        system=system,
        dataset=dataset,
        category=category,
        request_id=request,
        reason=reason,
        ends_on=_day(ends),
        by=by,
    )
    covered = f"request {hold.request_id}" if hold.request_id else "every request"
    until = f"active through {hold.ends_on}" if hold.ends_on else "no end date"
    console.print(
        f"placed {hold.id} on {holds.scope(hold)} for {covered} ({until})",
        markup=False,
    )
    if request is not None and hold.request_id != request.strip():
        console.print(
            f"{request.strip()} is a duplicate: the hold covers {hold.request_id}, "
            "the request it duplicates, which is the one that runs",
            markup=False,
        )
    if hold.reason != reason.strip():
        console.print(
            "the reason held an e-mail address or phone number: it was stored "
            "redacted; name the matter, not the person",
            markup=False,
        )


@app.command("list")
@handled
@needs_ledger
def list_(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """Every hold of the estate, active or released."""
    from erasure import holds
    from flows.estate import current_estate

    found = holds.listing(current_estate().name)
    if json_out:
        print_json(found)
        return
    table = Table()
    table.add_column("hold", no_wrap=True, min_width=_widest(found, "id"))
    table.add_column("system", overflow="fold")
    table.add_column("dataset", overflow="fold")
    table.add_column("category", overflow="fold")
    table.add_column("request", no_wrap=True, min_width=_widest(found, "request_id"))
    table.add_column("ends", no_wrap=True)
    table.add_column("state", overflow="fold")
    table.add_column("reason", overflow="fold")
    for hold in found:
        if hold["active"]:
            state = "active"
        elif hold["released_by"]:
            state = f"released by {hold['released_by']}"
        else:
            state = "released" if hold["released_at"] else "expired"
        table.add_row(
            hold["id"],
            hold["system"],
            Text(hold["dataset"] or "all"),
            Text(hold["category"] or "all"),
            hold["request_id"] or "all",
            hold["ends_on"] or "none",
            state,
            Text(hold["reason"]),
        )
    console.print(table)


def _widest(rows: list[dict], key: str) -> int:
    """Ids are copied into commands: their column never wraps or truncates."""
    return max((len(row[key] or "") for row in rows), default=0) or 1


@app.command()
@handled
@needs_ledger
def release(
    hold_ids: Annotated[
        list[str] | None, typer.Argument(help="Holds to release.")
    ] = None,
    expired: Annotated[
        bool, typer.Option("--expired", help="Also run parts of holds past their end.")
    ] = False,
    by: Annotated[str | None, typer.Option("--by", help="Your staff handle.")] = None,
) -> None:
    """Release holds and run the parts they deferred; each request affected gets a
    new certificate that supersedes its partial one."""
    from erasure import holds, requests
    from flows.estate import current_estate

    estate = current_estate()
    if not hold_ids and not expired:
        raise InputError("name the holds to release, or pass --expired")
    freed: set[str] = set()
    if hold_ids:  # every id is checked before any hold is released
        freed.update(holds.release_all(hold_ids, by=by))
    if expired:
        freed.update(holds.free_parts(hold_ids=holds.expired(estate.name)))
    if not freed:
        console.print("no deferred parts were waiting on these holds")
        return
    from flows.erasure import erase_requests
    from lethe.cli.dsr import print_request

    states = erase_requests(sorted(freed))
    for request_id in sorted(freed):
        print_request(requests.describe(request_id))
    if any(state not in ("completed", "held") for state in states.values()):
        raise typer.Exit(1)
