"""``lethe certificate``: export a request's certificate and verify one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlmodel import select

from erasure.certificate import CertificateInvalid, header_of, load_public_key
from erasure.certificate import verify as verify_jws
from erasure.models import Certificate
from erasure.requests import get
from lethe import ledger
from lethe.cli._common import console, fail, handled, needs_ledger, print_json
from lethe.errors import InputError
from lethe.keys import KeyRing
from lethe.runtime import current

app = typer.Typer(
    help="Completion certificates: export and verify.", no_args_is_help=True
)


@app.command()
@handled
@needs_ledger
def export(
    request_id: Annotated[str, typer.Argument(help="The request id.")],
    out: Annotated[Path, typer.Option(help="File to write the JWS to.")],
) -> None:
    """Write a completed request's certificate (a compact JWS) to a file."""
    with ledger.session() as db:
        request = get(request_id, db)
        certificate = db.exec(
            select(Certificate).where(Certificate.request_id == request.id)
        ).first()
    if certificate is None:
        raise InputError(
            f"request {request.id} has no certificate: it is {request.state}; "
            "`lethe dsr show` says which systems are outstanding"
        )
    try:
        out.write_text(certificate.jws + "\n")
    except OSError:
        raise InputError(f"cannot write {out}") from None
    folder = current().keys.publish()
    console.print(f"wrote {out} (public keys: {folder})")


@app.command()
@handled
def verify(
    file: Annotated[Path, typer.Argument(help="A certificate file (compact JWS).")],
    key: Annotated[Path | None, typer.Option(help="A PEM public key or JWKS.")] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the payload.")
    ] = False,
) -> None:
    """Check a certificate's signature with lethe's published keys (or --key)."""
    jws = _read_certificate(file)
    try:
        header_of(jws)
    except CertificateInvalid as exc:
        fail(f"certificate does NOT verify: {exc}")
    keys = load_public_key(key) if key else _published_keys()
    try:
        verified = verify_jws(jws, keys)
    except CertificateInvalid as exc:
        fail(f"certificate does NOT verify: {exc}")
        return
    if json_out:
        print_json(verified.payload)
        return
    request = verified.payload["request"]
    console.print(
        f"certificate verifies: request {request['id']} ({request['regulation']}), "
        f"completed {request['completed_at']}, signed by key {verified.kid}"
    )


def _read_certificate(file: Path) -> str:
    if file.is_dir():
        raise InputError(f"{file} is a folder; give the certificate file")
    try:
        return file.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise InputError(
            f"{file} is not a certificate (a compact JWS is ASCII)"
        ) from None
    except OSError:
        raise InputError(f"cannot read the certificate file {file}") from None


def _published_keys() -> dict:
    """The home's public keys, without ever creating keys to verify with."""
    ring = KeyRing.load()
    if not ring.exists():
        raise InputError(
            f"no lethe keys in {ring.dir}: pass the signer's key with --key "
            "(signing-key.pub.pem, <kid>.pub.pem or jwks.json)"
        )
    return ring.public_keys()
