"""``lethe lineage graph``: draw the dataset graph as Mermaid, DOT or SVG."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lethe import ledger
from lethe.cli._common import errors, handled, needs_ledger
from lethe.errors import InputError


@handled
@needs_ledger
def graph_command(
    format: Annotated[
        str, typer.Option("--format", help="mermaid, dot or svg (svg needs Graphviz).")
    ] = "mermaid",
    out: Annotated[
        Path | None, typer.Option(help="Write here instead of to standard output.")
    ] = None,
) -> None:
    """Draw the estate's datasets by system, with each flow edge's job."""
    from flows.estate import current_estate
    from lineage.draw import FORMATS, draw

    if format not in FORMATS:
        raise InputError(
            f"unknown graph format {format!r}; use one of {', '.join(FORMATS)}"
        )
    estate = current_estate()
    with ledger.session() as db:
        text = draw(db, estate.name, format)  # type: ignore[arg-type]
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text, encoding="utf-8")
    errors.print(f"wrote {out}", markup=False)
