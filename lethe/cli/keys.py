"""``lethe keys``: create, rotate and publish lethe's keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lethe.cli._common import console, handled
from lethe.errors import InputError
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
    ring = _existing()
    console.print(f"new signing key {ring.rotate()}")


@app.command("export-public")
@handled
def export_public(
    out: Annotated[Path | None, typer.Option(help="Folder to write to.")] = None,
) -> None:
    """Write the JWKS and PEM public keys."""
    ring = _existing()
    console.print(f"public keys in {ring.publish(out)}")


def _existing() -> KeyRing:
    """The home's keys; never a fresh set made by accident in the wrong folder."""
    ring = KeyRing.load()
    if not ring.exists() and not os.environ.get("LETHE_SIGNING_KEY"):
        raise InputError(
            f"no lethe keys in {ring.dir}: run lethe where its .lethe folder is, set "
            "LETHE_HOME, or create keys with `lethe keys init`"
        )
    return ring
