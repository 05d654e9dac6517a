"""``lethe policy``: check the policy file and show what it decides where."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lethe.cli._common import console, handled, print_json
from lethe.errors import InputError

app = typer.Typer(
    help="The erasure policy: check it, and show the action it takes per system "
    "and dataset.",
    no_args_is_help=True,
)


@app.command()
@handled
def check() -> None:
    """Validate the estate's policy file (errors name the file and line)."""
    from flows.estate import current_estate

    policy = current_estate().policy
    approval = "required" if policy.approval_required else "not required"
    console.print(
        f"policy {policy.source}: valid ({_count(len(policy.rules), 'rule')}, "
        f"{_count(len(policy.domains), 'domain')}, approval {approval}) "
        f"{policy.digest}".rstrip()
    )


@app.command()
@handled
def show(
    regulation: Annotated[
        str, typer.Option("--regulation", help="gdpr or ccpa (any case).")
    ] = "gdpr",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The decision for every dataset the estate knows of, and the rule behind it."""
    from flows.estate import current_estate
    from lethe.policy import REGULATIONS

    regulation = regulation.strip().lower()
    if regulation not in REGULATIONS:
        raise InputError(f"--regulation must be one of {', '.join(REGULATIONS)}")
    estate = current_estate()
    rows = []
    for system, dataset in _datasets(estate):
        decision = estate.policy.decide(system, dataset, regulation)
        rows.append({"system": system, "dataset": dataset, **decision.as_json()})
    if json_out:
        print_json(rows)
        return
    table = Table("system", "dataset", "action")
    table.add_column("basis / retention", ratio=1, overflow="fold")
    table.add_column("rule", no_wrap=True)
    for row in rows:
        kept = ""
        if row["basis"]:
            kept = f"{row['basis']}; {row['retention_rule']}"
        action = row["action"] + (
            " + anonymise the rest" if row["also_anonymise"] else ""
        )
        table.add_row(row["system"], row["dataset"] or "*", action, kept, row["rule"])
    console.print(table)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _datasets(estate) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Every dataset the policy knows of per system (flow edges, settings, Fides
    annotations, its own ``datasets:``), or the system as a whole."""
    found = {
        (system, dataset)
        for system, names in estate.policy.known.items()
        for dataset in names
    }
    for system in estate.systems:
        if not any(s == system for s, _ in found):
            found.add((system, ""))
    return sorted(found)
