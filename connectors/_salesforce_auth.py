"""How the Salesforce connector proves who it is: the OAuth 2.0 client
credentials flow, or the JWT bearer flow (vendor-apis.md §1.1).

The JWT bearer flow needs no shared secret on lethe's side: the connected app
holds a certificate, lethe holds its private key and signs a short assertion
for every token request. The assertion is built here with ``cryptography``
alone, as RFC 7515 compact serialisation with ``alg`` RS256 (RSASSA-PKCS1-v1_5
over SHA-256 of ``b64url(header).b64url(claims)``, RFC 7518 §3.3):

- ``iss`` is the consumer key (the connector's ``client_id``),
- ``sub`` the pre-authorised integration user's username,
- ``aud`` https://login.salesforce.com (https://test.salesforce.com for a
  sandbox, or an Experience Cloud site URL),
- ``exp`` a few minutes ahead: Salesforce refuses an assertion that expires
  too far out, and one whose ``exp`` has passed by its own clock, so a host
  clock that runs slow is the usual failure.

A token request builds a fresh assertion, so retries and renewals never send a
stale one. Settings are checked when the connector is made: a missing
username or key is a ``ConfigError`` naming the setting, and no message ever
carries the key, the username or the assertion.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from lethe.errors import ConfigError

__all__ = ["AUTH_FLOWS", "JWT_BEARER", "TokenGrant", "build_grant", "jwt_assertion"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AUTH_FLOWS = ("client_credentials", "jwt_bearer")
_LIFETIME = 180.0


@dataclass(frozen=True)
class TokenGrant:
    """One way to ask the token endpoint for a session.

    ``form`` builds the request body (called once per token request);
    ``refused`` says which settings to check when the org refuses the grant.
    """

    name: str
    form: Callable[[], dict[str, str]]
    refused: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_assertion(
    key: rsa.RSAPrivateKey,
    *,
    issuer: str,
    subject: str,
    audience: str,
    expires_at: float,
) -> str:
    """A compact RS256 JWT carrying the four claims Salesforce reads."""
    header = {"alg": "RS256"}
    claims = {"iss": issuer, "sub": subject, "aud": audience, "exp": int(expires_at)}
    parts = [
        _b64url(json.dumps(part, separators=(",", ":")).encode())
        for part in (header, claims)
    ]
    signing_input = ".".join(parts).encode("ascii")
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{parts[0]}.{parts[1]}.{_b64url(signature)}"


def build_grant(
    system: str,
    *,
    auth: str,
    client_id: str,
    client_secret: str | None,
    username: str | None,
    private_key_pem: str | bytes | None,
    private_key_file: str | Path | None,
    audience: str,
    jwt_lifetime: float = _LIFETIME,
    clock: Callable[[], float] = time.time,
) -> TokenGrant:
    """The grant the settings describe, or a ConfigError naming what is wrong."""
    if not client_id:
        raise ConfigError(f"{system}: client_id is required; check the estate file")
    if auth == "client_credentials":
        if not client_secret:
            raise ConfigError(
                f"{system}: client_secret is required for the client credentials "
                "flow; set it, or use auth: jwt_bearer"
            )
        return _client_credentials(client_id, client_secret)
    if auth != "jwt_bearer":
        raise ConfigError(
            f"{system}: auth must be one of {', '.join(AUTH_FLOWS)}; check the "
            "estate file"
        )
    if not username:
        raise ConfigError(
            f"{system}: username (the pre-authorised integration user) is "
            "required for auth: jwt_bearer"
        )
    if not audience.startswith("https://"):
        raise ConfigError(
            f"{system}: audience must be an https URL such as "
            "https://login.salesforce.com"
        )
    if not 0 < jwt_lifetime <= 300:
        raise ConfigError(f"{system}: jwt_lifetime must be within (0, 300] seconds")
    key = _private_key(system, private_key_pem, private_key_file)

    def form() -> dict[str, str]:
        assertion = jwt_assertion(
            key,
            issuer=client_id,
            subject=username,
            audience=audience,
            expires_at=clock() + jwt_lifetime,
        )
        return {"grant_type": JWT_BEARER, "assertion": assertion}

    return TokenGrant(
        "JWT bearer assertion",
        form,
        "check client_id (the consumer key), username, that private_key matches "
        "the certificate on the connected app, audience, that the user is "
        "pre-authorised, and this host's clock",
    )


def _client_credentials(client_id: str, client_secret: str) -> TokenGrant:
    body = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
    }
    return TokenGrant(
        "client credentials",
        lambda: dict(body),
        "check client_id and client_secret, and that the connected app allows "
        "the client credentials flow",
    )


def _private_key(
    system: str, pem: str | bytes | None, path: str | Path | None
) -> rsa.RSAPrivateKey:
    if pem and path:
        raise ConfigError(
            f"{system}: give private_key_pem or private_key_file, not both"
        )
    setting = "private_key_pem" if pem else "private_key_file"
    if not pem and not path:
        raise ConfigError(
            f"{system}: private_key_pem or private_key_file is required for "
            "auth: jwt_bearer"
        )
    if path:
        try:
            pem = Path(path).read_bytes()
        except OSError:
            raise ConfigError(
                f"{system}: private_key_file cannot be read; check the path and "
                "its permissions"
            ) from None
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data or b"", password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(
            f"{system}: {setting} is not an unencrypted RSA private key in PEM "
            "(the JWT bearer flow signs with RS256)"
        )
    return key
