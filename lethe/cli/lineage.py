"""``lethe lineage``: capture lineage and ask where a person's data is."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

import lineage
from lethe import ledger
from lethe.cli._common import console, handled, needs_ledger, print_json
from lethe.identity import normalize_email
from lethe.runtime import current

app = typer.Typer(
    help="Lineage: capture it, ask where a person's data is.", no_args_is_help=True
)


@app.command()
@handled
def capture() -> None:
    """Read the estate's flow edges, source records and job manifests."""
    from flows.capture import capture_lineage
    from flows.estate import current_estate

    current_estate()  # a missing or bad estate file fails before Prefect starts
    counts = capture_lineage()
    console.print(
        f"captured {counts['flow_edges']} new flow edges, "
        f"{counts['source_copies']} new source records, "
        f"{counts['manifest_copies']} new copies from job manifests"
    )
    if counts.get("reopened_requests"):
        console.print(
            f"[red]ALERT[/]: erased subjects came back; {counts['reopened_requests']} "
            "linked re-erasure request(s) opened (`lethe dsr list`)"
        )


@app.command()
@handled
@needs_ledger
def where(
    email: Annotated[str, typer.Option(help="The person's e-mail address.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every system and dataset where lethe holds this person's data."""
    from flows.estate import current_estate

    estate = current_estate()
    vault = current().vault
    digest = vault.digest("email", normalize_email(email))
    with ledger.session() as db:
        subjects = lineage.subjects_for(db, estate.name, [digest])
        holdings = lineage.where(db, estate.name, subjects)
    rows = [
        {
            "system": h.system,
            "dataset": h.local_name,
            "keys": h.key_count,
            "last_copied_at": h.last_copied_at.isoformat()
            if h.last_copied_at
            else None,
            "learned_from": sorted(h.learned_from),
        }
        for h in holdings
    ]
    if json_out:
        print_json({"subject_digest": digest, "holdings": rows})
        return
    if not rows:
        console.print("lethe holds no lineage for this person")
        return
    table = Table("system", "dataset", "keys", "last copied (UTC)", "learned from")
    for row in rows:
        table.add_row(
            row["system"],
            row["dataset"],
            str(row["keys"]),
            row["last_copied_at"] or "",
            "; ".join(row["learned_from"]),
        )
    console.print(table)


def _register() -> None:
    from lethe.cli.lineage_dbt import import_dbt
    from lethe.cli.lineage_graph import graph_command
    from lethe.cli.lineage_import import defects, import_events
    from lethe.cli.lineage_lint import lint_command

    app.command("import")(import_events)
    app.command("defects")(defects)
    app.command("import-dbt")(import_dbt)
    app.command("lint")(lint_command)
    app.command("graph")(graph_command)


_register()


@app.command()
@handled
@needs_ledger
def divergence(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Compare downstream copies with the source of truth; exit 1 on an alert."""
    from flows.divergence import check_divergence
    from flows.estate import current_estate

    current_estate()  # a missing or bad estate file fails before Prefect starts
    results = check_divergence()
    if json_out:
        print_json(results)
    else:
        for name, r in results.items():
            flag = "ALERT" if r["alert"] else "ok"
            console.print(
                f"{name}: {r['divergent']} of {r['compared']} sampled copies differ "
                f"({r['ratio']:.1%}; threshold {r['threshold']:.1%}) {flag}",
                markup=False,
            )
    if any(r["alert"] for r in results.values()):
        raise typer.Exit(1)
