"""The ``lethe`` command line (Typer + Rich)."""

from __future__ import annotations

import typer

from lethe.cli import (
    certificate,
    demo,
    dsr,
    estate,
    hold,
    keys,
    lineage,
    policy,
    serve,
)

app = typer.Typer(
    help="lethe: erase a person's data everywhere lineage says it went, and prove it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(dsr.app, name="dsr")
app.add_typer(lineage.app, name="lineage")
app.add_typer(hold.app, name="hold")
app.add_typer(policy.app, name="policy")
app.add_typer(certificate.app, name="certificate")
app.add_typer(keys.app, name="keys")
app.add_typer(estate.app, name="estate")
app.command("demo")(demo.demo)
app.command("serve")(serve.serve)


def main() -> None:
    app()
