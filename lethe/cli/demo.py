"""``lethe demo``: the whole job on a sample estate, end to end.

Builds the estate in a work directory, starts its emulators, captures lineage,
submits and runs an erasure for one person, prints each system's outcome,
exports and verifies the certificate, and exits non-zero if any step failed.
The ledger is ``LETHE_HOME``'s, so later commands see the demo's request.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from erasure.clocks import REGULATIONS
from lethe.cli._common import console, handled
from lethe.config import load_settings
from lethe.dburl import parse_database_url
from lethe.errors import InputError


@handled
def demo(
    workdir: Annotated[
        Path | None,
        typer.Option(help="Folder for the estate (default: a new temp dir)."),
    ] = None,
    email: Annotated[
        str | None, typer.Option(help="Whom to erase (default: the featured person).")
    ] = None,
    sample_data: Annotated[
        Path | None, typer.Option(help="Build the estate from ../shared/data instead.")
    ] = None,
    warehouse_url: Annotated[
        str | None, typer.Option(help="A PostgreSQL URL for the warehouse.")
    ] = None,
    regulation: Annotated[str, typer.Option(help="gdpr or ccpa.")] = "gdpr",
) -> None:
    """Erase one person from a four-system sample estate and certify it."""
    from erasure import requests
    from erasure.certificate import verify
    from lethe.cli.dsr import print_request
    from lethe.estate.build import build
    from lethe.identity import normalize_email
    from lethe.runtime import current

    # Bad input fails before anything is built or changed.
    if email is not None:
        normalize_email(email)
    if regulation.strip().lower() not in REGULATIONS:
        raise InputError(
            f"unknown regulation {regulation!r}: use one of {', '.join(REGULATIONS)}"
        )
    if warehouse_url is not None:
        parse_database_url(warehouse_url, setting="--warehouse-url")
    if workdir is not None and workdir.exists() and not workdir.is_dir():
        raise InputError(f"--workdir {workdir} is a file; give a folder")
    settings = load_settings()
    folder = workdir or Path(tempfile.mkdtemp(prefix="lethe-demo-"))
    console.print(f"[bold]1.[/] building the sample estate in {folder}")
    try:
        built, servers = build(
            folder, sample_data=sample_data, warehouse_url=warehouse_url
        )
    except BaseException:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        console.print(f"   people: {built.origin}; {built.counts}")
        settings.home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built.estate_file, settings.estate_file)
        settings.estate_file.chmod(0o600)
        console.print("[bold]2.[/] capturing lineage (Prefect flow capture-lineage)")
        from flows.capture import capture_lineage
        from flows.erasure import erase_requests

        console.print(f"   {capture_lineage()}")
        request = requests.submit(
            email=email or built.featured_email,
            regulation=regulation,
            channel="demo",
            estate=built.estate_name,
        )
        console.print(
            f"[bold]3.[/] submitted request {request.id}; running the "
            "erasure (Prefect flow erase-requests)"
        )
        states = erase_requests([request.id])
    finally:
        servers.stop()
    print_request(requests.describe(request.id))
    if states.get(request.id) != "completed":
        console.print("[red]the request did not complete; see the table above[/]")
        raise typer.Exit(1)
    path = folder / f"{request.id}.certificate.jws"
    from sqlmodel import select

    from erasure.models import Certificate
    from lethe import ledger

    with ledger.session() as db:
        jws = db.exec(
            select(Certificate.jws).where(Certificate.request_id == request.id)
        ).one()
    path.write_text(jws + "\n")
    public = current().keys.publish()
    verified = verify(path.read_text(), current().keys.public_keys())
    console.print(f"[bold]4.[/] certificate {path}")
    console.print(f"   verifies with key {verified.kid} (public keys in {public})")
