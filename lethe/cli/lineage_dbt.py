"""``lethe lineage import-dbt``: flow edges from a dbt manifest, with its faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from lethe import ledger
from lethe.cli._common import console, handled
from lethe.errors import InputError


@handled
def import_dbt(
    manifest: Annotated[
        Path, typer.Argument(help="dbt's target/manifest.json (schema v7 to v12).")
    ],
    system: Annotated[
        str, typer.Option(help="The estate's system the dbt project builds in.")
    ] = "warehouse",
) -> None:
    """Store a dbt project's flow edges; exit 1 if the manifest has findings."""
    from flows.estate import current_estate
    from lineage.dbt import import_dbt_manifest

    estate = current_estate()
    if system not in estate.systems:
        raise InputError(
            f"system {system!r} is not in the estate; choose one of "
            f"{', '.join(sorted(estate.systems))} with --system"
        )
    data = _read_manifest(manifest)
    with ledger.session() as db:
        result = import_dbt_manifest(db, estate.name, data, system=system)
    console.print(
        f"dbt manifest v{result.schema_version}: {result.edges} flow edges over "
        f"{result.datasets} datasets, {result.added} new; "
        f"{len(result.broken_links)} broken links, "
        f"{len(result.pii_contradictions)} PII contradictions",
        markup=False,
    )
    for line in result.findings:
        console.print(line, markup=False, soft_wrap=True)
    if not result.clean:
        raise typer.Exit(1)


def _read_manifest(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"no dbt manifest at {path}; dbt writes target/manifest.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = (
            f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        )
        raise InputError(f"{path} is not valid JSON{where}") from None
