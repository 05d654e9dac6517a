"""``lethe keys``: create, rotate and publish lethe's keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lethe.cli._common import console, handled
from lethe.keys import KeyRing

app = typer.Typer(help="Keys: init, rotate, export-public.", no_args_is_help=True)


@app.command()
@handled
def init() -> None:
    """Create the signing, digest and master keys (those that do not exist)."""
    ring = KeyRing.load()
    created = ring.init()
    console.print(
        ("created keys in " if created else "keys already exist in ") + str(ring.dir)
    )


@app.command()
@handled
def rotate() -> None:
    """Make a new signing key; old public keys stay published."""
    ring = KeyRing.load()
    ring.ensure()
    console.print(f"new signing key {ring.rotate()}")


@app.command("export-public")
@handled
def export_public(
    out: Annotated[Path | None, typer.Option(help="Folder to write to.")] = None,
) -> None:
    """Write the JWKS and PEM public keys."""
    ring = KeyRing.load()
    ring.ensure()
    console.print(f"public keys in {ring.publish(out)}")
