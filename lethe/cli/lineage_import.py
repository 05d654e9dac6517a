"""``lethe lineage import`` and ``lethe lineage defects``: OpenLineage in.

Register on the lineage app with ``app.command("import")(import_events)`` and
``app.command()(defects)``. ``import`` exits 0 when every event was stored (or
seen before) and 2 when any was rejected, with one line per rejected event on
stderr: ``rejected FILE#INDEX: /json/pointer: what is wrong``. Rejected events
store nothing; the others in the same run are stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lethe import ledger
from lethe.cli._common import console, errors, handled, needs_ledger, print_json
from lineage import openlineage
from lineage.openlineage_models import LineageDefect


@handled
def import_events(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Files of OpenLineage events: JSON, a JSON array or NDJSON."
        ),
    ],
    lenient: Annotated[
        bool,
        typer.Option(
            "--lenient",
            help="Repair known, recoverable schema breaks (no schemaURL, a time "
            "without zone, test placeholders as run ids) and warn, instead of "
            "rejecting.",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate OpenLineage events and store them as lineage in the estate."""
    intake = openlineage.current_intake()
    entries = [entry for path in files for entry in openlineage.read_events(path)]
    with ledger.session() as db:
        report = openlineage.import_events(db, intake, entries, lenient=lenient)
        defects = [_defect_row(d) for d in report.defects]
    if json_out:
        print_json(
            {
                "stored": report.stored,
                "seen_before": report.duplicates,
                "flow_edges": report.flow_edges,
                "aliases": report.aliases,
                "rejected": [
                    {
                        "file": r.origin,
                        "index": r.index,
                        "problems": [
                            {"path": p.pointer or "/", "message": p.message}
                            for p in r.problems
                        ],
                    }
                    for r in report.rejected
                ],
                "warnings": [str(w) for w in report.warnings],
                "defects": defects,
                "unmapped_namespaces": sorted(report.unmapped_namespaces),
            }
        )
    else:
        _print_report(report, defects, lenient=lenient)
    if report.rejected:
        raise typer.Exit(2)


def _print_report(
    report: openlineage.ImportReport, defects: list[dict], *, lenient: bool = False
) -> None:
    for rejection in report.rejected:
        errors.print(f"rejected {rejection}", markup=False, soft_wrap=True)
    for warning in report.warnings:
        errors.print(f"warning {warning}", markup=False, soft_wrap=True)
    for defect in defects:
        errors.print(
            f"defect {defect['origin']}: {defect['detail']}",
            markup=False,
            soft_wrap=True,
        )
    if report.unmapped_namespaces:
        errors.print(
            "note: no system is mapped for namespaces "
            f"{', '.join(sorted(report.unmapped_namespaces))}; each became its own "
            "system (map them under openlineage_namespaces in the estate file)",
            markup=False,
            soft_wrap=True,
        )
    console.print(
        f"stored {report.stored} events ({report.duplicates} seen before, "
        f"{len(report.rejected)} rejected): {report.flow_edges} new flow edges, "
        f"{report.aliases} new aliases, {len(defects)} new defects",
        markup=False,
    )
    if report.rejected and not report.stored and not lenient:
        errors.print(
            "every event was rejected: if the reasons are a missing schemaURL or a "
            "time without zone, --lenient repairs them (and says so)",
            markup=False,
            soft_wrap=True,
        )


@handled
@needs_ledger
def defects(
    include_resolved: Annotated[
        bool, typer.Option("--all", help="Include defects that later events resolved.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Lineage defects: runs that wrote but reported no outputs."""
    intake = openlineage.current_intake()
    with ledger.session() as db:
        rows = [
            _defect_row(d)
            for d in openlineage.list_defects(
                db, intake.estate, include_resolved=include_resolved
            )
        ]
    if json_out:
        print_json({"defects": rows})
        return
    if not rows:
        console.print("no lineage defects")
        return
    table = Table("detected (UTC)", "job", "run", "event", "detail", "resolved")
    for row in rows:
        table.add_row(
            row["detected_at"],
            row["job"],
            row["run_id"],
            row["origin"],
            row["detail"],
            row["resolved_at"] or "",
        )
    console.print(table)


def _defect_row(defect: LineageDefect) -> dict:
    return {
        "kind": defect.kind,
        "job": defect.job,
        "run_id": defect.run_id,
        "origin": defect.origin,
        "detail": defect.detail,
        "detected_at": defect.detected_at.isoformat(timespec="seconds"),
        "resolved_at": defect.resolved_at.isoformat(timespec="seconds")
        if defect.resolved_at
        else None,
    }
