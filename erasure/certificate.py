"""Completion certificates: compact JWS (RFC 7515), Ed25519 (``alg`` EdDSA,
RFC 8037), over the RFC 8785 canonical JSON of the certificate.

The signing input is ``b64url(header) + "." + b64url(payload)`` with both parts
in canonical JSON, so an auditor can check a certificate with openssl and
coreutils alone (README). Verification pins the key type: OKP / Ed25519, alg
EdDSA or Ed25519; anything else, ``none`` included, is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from lethe.errors import InputError, LetheError
from lethe.keys import b64url, b64url_decode, public_jwk

ACCEPTED_ALGS = ("EdDSA", "Ed25519")
CERTIFICATE_TYPE = "lethe-certificate+jws"


class CertificateInvalid(LetheError):
    """The certificate does not verify; the message says why."""


@dataclass(frozen=True)
class Verified:
    kid: str | None
    payload: dict[str, Any]


def sign(payload: Mapping[str, Any], *, kid: str, key: Ed25519PrivateKey) -> str:
    header = {"alg": "EdDSA", "kid": kid, "typ": CERTIFICATE_TYPE}
    signing_input = (
        f"{b64url(rfc8785.dumps(header))}.{b64url(rfc8785.dumps(dict(payload)))}"
    )
    signature = key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"


def _parts(jws: str) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    pieces = jws.strip().split(".")
    if len(pieces) != 3:
        raise CertificateInvalid(
            "not a compact JWS: expected three dot-separated parts"
        )
    try:
        header = json.loads(b64url_decode(pieces[0]))
        payload = b64url_decode(pieces[1])
        signature = b64url_decode(pieces[2])
    except (ValueError, UnicodeDecodeError):
        raise CertificateInvalid(
            "a part of the JWS is not valid base64url JSON"
        ) from None
    if not isinstance(header, dict):
        raise CertificateInvalid("the JWS header is not a JSON object")
    return header, payload, signature, f"{pieces[0]}.{pieces[1]}".encode("ascii")


def header_of(jws: str) -> dict[str, Any]:
    """The JWS header, after checking the certificate's shape (not its signature)."""
    return _parts(jws)[0]


def verify(jws: str, keys: Mapping[str, Ed25519PublicKey]) -> Verified:
    """Check the signature against the key named by ``kid`` (or the only key)."""
    header, payload, signature, signing_input = _parts(jws)
    if header.get("alg") not in ACCEPTED_ALGS:
        raise CertificateInvalid(
            f"alg {header.get('alg')!r} is not accepted; lethe signs with EdDSA"
        )
    kid = header.get("kid")
    key = _key_for(kid, keys)
    try:
        key.verify(signature, signing_input)
    except InvalidSignature:
        raise CertificateInvalid(
            "the signature does not match the certificate"
        ) from None
    try:
        body = json.loads(payload)
    except ValueError:
        raise CertificateInvalid("the payload is not JSON") from None
    if rfc8785.dumps(body) != payload:
        raise CertificateInvalid("the payload is not in RFC 8785 canonical form")
    return Verified(kid=kid, payload=body)


def _key_for(kid: object, keys: Mapping[str, Ed25519PublicKey]) -> Ed25519PublicKey:
    """The key the header names; a single key given by file must be that key."""
    if isinstance(kid, str) and kid in keys:
        return keys[kid]
    if len(keys) == 1:
        only = next(iter(keys.values()))
        if not isinstance(kid, str) or public_jwk(only)["kid"] == kid:
            return only
    raise CertificateInvalid(
        f"the certificate was signed by key {kid}, which is not among the keys "
        f"given; pass that key ({kid}.pub.pem from the signer's published keys) "
        "or its jwks.json with --key"
    )


def load_public_key(path: Path) -> dict[str, Ed25519PublicKey]:
    """Read a PEM public key or a JWKS file as ``{kid: key}``."""
    try:
        data = path.read_bytes()
    except OSError:
        raise InputError(f"cannot read the key file {path}") from None
    if data.lstrip().startswith(b"{"):
        return _from_jwks(json.loads(data))
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise InputError(f"{path} is neither a PEM public key nor a JWKS") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path} is not an Ed25519 public key")
    return {"--key": key}


def _from_jwks(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            raw = b64url_decode(jwk["x"])
            keys[jwk.get("kid", "")] = Ed25519PublicKey.from_public_bytes(raw)
    if not keys:
        raise InputError("the JWKS holds no OKP Ed25519 key")
    return keys
