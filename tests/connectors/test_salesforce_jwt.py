"""The OAuth 2.0 JWT bearer flow: the connector signs, the loopback org checks."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from connectors._salesforce_auth import JWT_BEARER, jwt_assertion
from connectors.salesforce import SalesforceConnector
from lethe.emulators import EmulatorServer
from lethe.emulators.salesforce import SalesforceStore, create_app
from lethe.errors import ConfigError
from tests._salesforce import Swap, serve_swapped

USER = "integration@example.org"
KEY = "3MVG9consumer.key"
TOKEN = "/services/oauth2/token"


class Clock:
    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lethe")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return tuple(  # type: ignore[return-value]
        rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)
    )


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[EmulatorServer, Swap]]:
    yield from serve_swapped()


@pytest.fixture
def org(server: Any, keys: Any) -> Iterator[Any]:
    """Mount an org whose app trusts keys[0]; return a connector factory."""
    running, swap = server
    store, clock = SalesforceStore(), Clock()
    swap.app = create_app(
        store,
        client_id="cid",
        client_secret="secret",
        clock=clock,
        jwt_consumer_key=KEY,
        jwt_public_key_pem=_certificate(keys[0]),
        jwt_username=USER,
    )
    made: list[SalesforceConnector] = []

    def connect(**options: Any) -> SalesforceConnector:
        settings: dict[str, Any] = {
            "system": "crm",
            "base_url": running.base_url,
            "auth": "jwt_bearer",
            "client_id": KEY,
            "username": USER,
            "private_key_pem": _pem(keys[0]),
            "max_attempts": 1,
            "timeout": 5.0,
        }
        made.append(SalesforceConnector(**(settings | options)))
        return made[-1]

    yield SimpleNamespace(store=store, clock=clock, connect=connect, http=running)
    for connector in made:
        connector.close()


def _locate(connector: SalesforceConnector, store: SalesforceStore) -> int:
    contact = store.insert("Contact", {"LastName": "Jwt"})
    return connector.locate({"Contact": [contact]}).total


def test_jwt_bearer_good_assertion_gets_a_session(org: Any) -> None:
    connector = org.connect(client_secret=None)

    assert _locate(connector, org.store) == 1
    org.store.revoke_tokens()  # the renewal signs a fresh assertion
    assert _locate(connector, org.store) == 1


def test_jwt_bearer_reads_the_key_from_a_file(
    org: Any, keys: Any, tmp_path: Path
) -> None:
    path = tmp_path / "server.key"
    path.write_bytes(_pem(keys[0]))

    connector = org.connect(private_key_pem=None, private_key_file=str(path))

    assert _locate(connector, org.store) == 1


def test_jwt_bearer_tolerates_a_little_clock_skew(org: Any) -> None:
    org.clock.offset = 90  # the org's clock is 90 s ahead of ours

    assert _locate(org.connect(), org.store) == 1


@pytest.mark.parametrize(
    ("change", "skew", "answer"),
    [
        ({}, 600, "invalid_grant: expired authorization code"),
        ({}, -400, "invalid_grant: invalid assertion"),  # exp too far ahead
        ({"audience": "https://example.org"}, 0, "invalid_grant: audience is invalid"),
        ({"client_id": "someone-else"}, 0, "invalid_client_id"),
        ({"username": "other@example.org"}, 0, "user hasn't approved this consumer"),
        ({"signed_by": 1}, 0, "invalid_grant: invalid assertion"),
    ],
)
def test_jwt_bearer_refusal_is_a_config_error_without_secrets(
    org: Any, keys: Any, change: dict[str, Any], skew: float, answer: str
) -> None:
    org.clock.offset = skew
    options = {k: v for k, v in change.items() if k != "signed_by"}
    pem = _pem(keys[change.get("signed_by", 0)])
    connector = org.connect(private_key_pem=pem, **options)

    with pytest.raises(ConfigError, match="JWT bearer") as caught:
        _locate(connector, org.store)

    message = str(caught.value)
    assert answer in message and "this host's clock" in message
    assert USER not in message and "other@example.org" not in message
    assert "PRIVATE KEY" not in message and "eyJ" not in message
    assert KEY not in message


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"private_key_pem": None}, "private_key_pem or private_key_file"),
        ({"username": None}, "username"),
        ({"private_key_pem": "not a key"}, "private_key_pem"),
        ({"private_key_pem": None, "private_key_file": "/no/such.key"}, "file"),
        ({"auth": "password"}, "auth"),
        ({"auth": "client_credentials", "client_secret": None}, "client_secret"),
    ],
)
def test_jwt_bearer_bad_settings_are_config_errors_naming_them(
    org: Any, options: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigError, match=setting) as caught:
        org.connect(**options)

    assert "not a key" not in str(caught.value)


def test_jwt_assertion_is_rs256_over_the_four_claims(keys: Any) -> None:
    token = jwt_assertion(
        keys[0],
        issuer=KEY,
        subject=USER,
        audience="https://test.salesforce.com",
        expires_at=1_700_000_000.9,
    )
    header, claims, signature = token.split(".")

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    assert json.loads(decode(header)) == {"alg": "RS256"}
    assert json.loads(decode(claims)) == {
        "iss": KEY,
        "sub": USER,
        "aud": "https://test.salesforce.com",
        "exp": 1_700_000_000,
    }
    keys[0].public_key().verify(  # raises if the signature is wrong
        decode(signature),
        f"{header}.{claims}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_emulator_refuses_malformed_or_unsigned_assertions(org: Any, keys: Any) -> None:
    def b64(value: dict[str, Any]) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    audience = "https://login.salesforce.com"
    claims = {"iss": KEY, "sub": USER, "aud": audience, "exp": int(time.time()) + 60}
    unsigned = f"{b64({'alg': 'none'})}.{b64(claims)}."
    good = jwt_assertion(
        keys[0],
        issuer=KEY,
        subject=USER,
        audience="https://login.salesforce.com",
        expires_at=time.time() + 60,
    )
    with httpx.Client(base_url=org.http.base_url) as http:
        answers = [
            http.post(TOKEN, data={"grant_type": JWT_BEARER, "assertion": text})
            for text in ("garbage", unsigned, good)
        ]

    assert [a.status_code for a in answers] == [400, 400, 200]
    assert answers[0].json() == {
        "error": "invalid_grant",
        "error_description": "invalid assertion",
    }
    assert answers[1].json()["error"] == "invalid_grant"
    body = answers[2].json()
    assert body["token_type"] == "Bearer" and "refresh_token" not in body
    assert set(body) >= {"access_token", "instance_url", "id", "issued_at"}


def test_emulator_needs_the_whole_jwt_app_or_none_of_it() -> None:
    with pytest.raises(ValueError, match="together"):
        create_app(
            SalesforceStore(), client_id="c", client_secret="s", jwt_consumer_key=KEY
        )
