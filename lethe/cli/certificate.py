"""``lethe certificate``: export a request's certificate and verify one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from erasure import duplicates
from erasure.certificate import CertificateInvalid, header_of, load_public_key
from erasure.certificate import verify as verify_jws
from erasure.models import (
    Certificate,
)
from erasure.requests import get
from lethe import ledger
from lethe.cli._common import console, fail, handled, needs_ledger, print_json
from lethe.errors import InputError
from lethe.keys import KeyRing
from lethe.runtime import current

app = typer.Typer(
    help="Certificates: export, verify, and interim statements.", no_args_is_help=True
)


@app.command()
@handled
@needs_ledger
def export(
    request_id: Annotated[str, typer.Argument(help="The request id.")],
    out: Annotated[Path, typer.Option(help="File to write the JWS to.")],
    certificate_id: Annotated[
        str | None,
        typer.Option("--id", help="A certificate it superseded (default: the newest)."),
    ] = None,
) -> None:
    """Write a request's certificate (a compact JWS) to a file: the newest one,
    which names any it supersedes, or an earlier one by --id. A duplicate's id
    writes the certificate of the request it duplicates, which names it."""
    from erasure.certify import latest_certificate

    with ledger.session() as db:
        given = get(request_id, db)
        request = duplicates.canonical(db, given)
        if certificate_id is None:
            certificate = latest_certificate(db, request.id)
        else:
            certificate = db.get(Certificate, certificate_id)
            if certificate is None or certificate.request_id != request.id:
                raise InputError(
                    f"request {request.id} has no certificate {certificate_id!r}"
                )
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
    whose = (
        ""
        if request.id == given.id
        else f", the certificate of {request.id}, the request {given.id} duplicates"
    )
    console.print(f"wrote {out}{whose} (public keys: {folder})", markup=False)


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
    decision = verified.payload.get("decision") or {}
    kind = verified.payload.get("kind", "completion")
    if decision.get("outcome") == "denied":
        closed = f"denied ({decision.get('reason')}) {decision.get('decided_at')}"
    elif kind == "interim":
        closed = f"INTERIM statement of {request.get('stated_at')}, not complete"
    elif kind == "partial":
        closed = "PARTIAL: parts deferred by a legal hold"
    else:
        closed = f"completed {request['completed_at']}"
    if verified.payload.get("supersedes"):
        closed += f"; supersedes {verified.payload['supersedes']}"
    console.print(
        f"certificate verifies: request {request['id']} ({request['regulation']}), "
        f"{closed}, signed by key {verified.kid}"
    )


@app.command()
@handled
@needs_ledger
def interim(
    request_id: Annotated[str, typer.Argument(help="An unfinished request's id.")],
    out: Annotated[Path | None, typer.Option(help="Also write the JWS here.")] = None,
) -> None:
    """Sign a statement of where an unfinished request stands (awaiting a vendor,
    failed, deferred), e.g. to answer at the deadline; the completion
    certificate supersedes it."""
    from erasure.certify import interim as sign_interim

    stated = _planned_request(request_id)
    certificate = sign_interim(stated)
    if out is not None:
        try:
            out.write_text(certificate.jws + "\n")
        except OSError:
            raise InputError(f"cannot write {out}") from None
    whose = "" if stated == request_id.strip() else f" (which {request_id} duplicates)"
    console.print(f"interim statement {certificate.id} for {stated}{whose}")


def _planned_request(request_id: str) -> str:
    """The request an interim statement is about: a duplicate's canonical one
    (certify.interim says why, in the request's own terms, when it has no plan)."""
    with ledger.session() as db:
        return duplicates.canonical(db, get(request_id, db)).id


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
