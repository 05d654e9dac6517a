"""The emulated org's token endpoint: OAuth 2.0 client credentials and the JWT
bearer flow, answering as ``POST /services/oauth2/token`` does.

Both grants return the same token answer (``access_token``, ``signature``,
``scope``, ``instance_url``, ``id``, ``token_type``, ``issued_at``; no refresh
token). Refusals are HTTP 400 ``{"error", "error_description"}`` with the
descriptions a real org is reported to give (vendor-apis.md §1.1):

- the JWT is not three base64url parts, its header is not ``alg`` RS256, or the
  signature does not verify against the app's certificate: ``invalid_grant`` /
  "invalid assertion";
- ``iss`` is not the connected app's consumer key: ``invalid_client_id`` /
  "client identifier invalid" (the org cannot even find the certificate);
- ``aud`` is neither https://login.salesforce.com nor https://test.salesforce.com:
  ``invalid_grant`` / "audience is invalid";
- ``exp`` missing or past: ``invalid_grant`` / "expired authorization code" (the
  usual symptom of clock skew). Salesforce wants ``exp`` within a few minutes;
  an ``exp`` further ahead than ``max_lifetime`` is refused as "invalid
  assertion", a description the vendor does not document for this case;
- ``sub`` is not the pre-authorised user: ``invalid_grant`` / "user hasn't
  approved this consumer".

The signature is checked with ``cryptography`` (PKCS#1 v1.5 over SHA-256 of
``b64url(header).b64url(claims)``, RFC 7518 §3.3); the key may be given as a
PEM public key or as the PEM certificate uploaded to the app.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from lethe.emulators._salesforce_store import SalesforceStore

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")


@dataclass(frozen=True)
class JwtApp:
    """A connected app with "Use digital signatures": who may assert, and how."""

    consumer_key: str
    public_key: rsa.RSAPublicKey
    username: str
    max_lifetime: float = 300.0


@dataclass(frozen=True)
class TokenSettings:
    client_id: str
    client_secret: str
    clock: Callable[[], float]
    jwt: JwtApp | None = None


class _Refused(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error, self.description = error, description


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM public key or a PEM X.509 certificate."""
    key: object
    if b"BEGIN CERTIFICATE" in pem:
        key = x509.load_pem_x509_certificate(pem).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the JWT bearer flow needs an RSA key (RS256)")
    return key


def install_oauth(
    app: FastAPI, store: SalesforceStore, settings: TokenSettings
) -> None:
    @app.post("/services/oauth2/token")
    async def token(request: Request) -> JSONResponse:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        grant = form.get("grant_type")
        try:
            if grant == "client_credentials":
                _check_client(form, settings)
            elif grant == JWT_BEARER:
                _check_assertion(form.get("assertion", ""), settings)
            else:
                raise _Refused("unsupported_grant_type", "grant type not supported")
        except _Refused as refused:
            return _oauth_error(refused.error, refused.description)
        return JSONResponse(_token_answer(request, store, settings))

    @app.post("/services/oauth2/revoke")
    async def revoke(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        store.revoke_tokens(form.get("token", ""))
        return Response(status_code=200)


def _check_client(form: dict[str, str], settings: TokenSettings) -> None:
    given = (form.get("client_id", ""), form.get("client_secret", ""))
    expected = (settings.client_id, settings.client_secret)
    if not all(hmac.compare_digest(a, b) for a, b in zip(given, expected, strict=True)):
        raise _Refused("invalid_client", "invalid client credentials")


def _check_assertion(assertion: str, settings: TokenSettings) -> None:
    """Refuse the JWT unless signature, issuer, audience, expiry and user hold."""
    invalid = _Refused("invalid_grant", "invalid assertion")
    parts = assertion.split(".")
    if len(parts) != 3:
        raise invalid
    header, claims = _json_part(parts[0]), _json_part(parts[1])
    if header is None or claims is None or header.get("alg") != "RS256":
        raise invalid
    app = settings.jwt
    if app is None or not hmac.compare_digest(
        str(claims.get("iss", "")), app.consumer_key
    ):
        raise _Refused("invalid_client_id", "client identifier invalid")
    signature = _b64url(parts[2])
    if signature is None or not _signed(app.public_key, parts, signature):
        raise invalid
    if claims.get("aud") not in AUDIENCES:
        raise _Refused("invalid_grant", "audience is invalid")
    _check_expiry(claims.get("exp"), settings.clock(), app.max_lifetime)
    if str(claims.get("sub", "")).lower() != app.username.lower():
        raise _Refused("invalid_grant", "user hasn't approved this consumer")


def _check_expiry(exp: Any, now: float, max_lifetime: float) -> None:
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= now:
        raise _Refused("invalid_grant", "expired authorization code")
    if exp > now + max_lifetime:
        raise _Refused("invalid_grant", "invalid assertion")


def _signed(key: rsa.RSAPublicKey, parts: list[str], signature: bytes) -> bool:
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    try:
        key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _b64url(part: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        return None


def _json_part(part: str) -> dict[str, Any] | None:
    raw = _b64url(part)
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _token_answer(
    request: Request, store: SalesforceStore, settings: TokenSettings
) -> dict[str, str]:
    base = str(request.base_url).rstrip("/")
    identity = f"{base}/id/{store.org_id}/{store.user_id}"
    issued_at = str(int(settings.clock() * 1000))
    mac = hmac.new(
        settings.client_secret.encode(), (identity + issued_at).encode(), "sha256"
    )
    return {
        "access_token": store.issue_token(),
        "signature": base64.b64encode(mac.digest()).decode(),
        "scope": "api",
        "instance_url": base,
        "id": identity,
        "token_type": "Bearer",
        "issued_at": issued_at,
    }


def _oauth_error(error: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=400
    )
