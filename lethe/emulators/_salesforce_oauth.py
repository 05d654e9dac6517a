"""The emulated org's token endpoint: OAuth 2.0 client credentials and the JWT
bearer flow, answering as ``POST /services/oauth2/token`` does.

Both grants return the same token answer (``access_token``, ``signature``,
``scope``, ``instance_url``, ``id``, ``token_type``, ``issued_at``; no refresh
token). Each client id (and the JWT consumer key) is its own connected app
running as its own integration user: the session records both, and ``id`` ends
in that user's id, so ApiEvent can say who read what (``_salesforce_sessions``).

Refusals are HTTP 400 ``{"error", "error_description"}`` with the descriptions
a real org is reported to give (vendor-apis.md §1.1):

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
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from lethe.emulators._salesforce_schema import make_id
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
    """``clients``: client id → (client secret, run-as username)."""

    clients: Mapping[str, tuple[str, str]]
    clock: Callable[[], float]
    jwt: JwtApp | None = None


@dataclass(frozen=True)
class _Grant:
    """Who a granted token is for: the run-as user, its app, the app's secret."""

    username: str
    app_id: str
    secret: str


def connected_app_id(consumer_key: str) -> str:
    """A stable 0H4 (connected application) id for a consumer key."""
    number = int.from_bytes(hashlib.sha256(consumer_key.encode()).digest()[:4], "big")
    return make_id("0H4", number)


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
                granted = _check_client(form, settings)
            elif grant == JWT_BEARER:
                granted = _check_assertion(form.get("assertion", ""), settings)
            else:
                raise _Refused("unsupported_grant_type", "grant type not supported")
        except _Refused as refused:
            return _oauth_error(refused.error, refused.description)
        return JSONResponse(_token_answer(request, store, settings, granted))

    @app.post("/services/oauth2/revoke")
    async def revoke(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        store.revoke_tokens(form.get("token", ""))
        return Response(status_code=200)


def _check_client(form: dict[str, str], settings: TokenSettings) -> _Grant:
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    expected = settings.clients.get(client_id)
    if expected is None or not hmac.compare_digest(secret, expected[0]):
        raise _Refused("invalid_client", "invalid client credentials")
    return _Grant(expected[1], connected_app_id(client_id), expected[0])


def _check_assertion(assertion: str, settings: TokenSettings) -> _Grant:
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
    secret = next(iter(settings.clients.values()))[0]
    return _Grant(app.username, connected_app_id(app.consumer_key), secret)


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
    request: Request, store: SalesforceStore, settings: TokenSettings, granted: _Grant
) -> dict[str, str]:
    base = str(request.base_url).rstrip("/")
    identity = f"{base}/id/{store.org_id}/{store.user(granted.username)}"
    issued_at = str(int(settings.clock() * 1000))
    mac = hmac.new(granted.secret.encode(), (identity + issued_at).encode(), "sha256")
    return {
        "access_token": store.issue_token(
            username=granted.username, app_id=granted.app_id
        ),
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
