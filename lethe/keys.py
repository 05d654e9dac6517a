"""lethe's keys: the master key, the digest key and the certificate signing keys.

All live under ``LETHE_HOME/keys`` in files only their owner can read, unless
``LETHE_MASTER_KEY`` / ``LETHE_DIGEST_KEY`` (base64url, 32 bytes each) supply the
first two from the environment.

- The **master key** wraps each request's data key (AES-256-GCM, see vault.py).
- The **digest key** makes keyed digests (HMAC-SHA256) of identities, so look-ups
  never need the identity itself.
- **Signing keys** are Ed25519. Rotation makes a new current key; every earlier
  public key stays in the published JWKS so old certificates keep verifying.
  ``LETHE_SIGNING_KEY`` (a PKCS#8 PEM) supplies the current signing key from the
  environment instead (a secrets manager); its public key is published too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from lethe.config import Settings, load_settings
from lethe.errors import ConfigError

log = logging.getLogger(__name__)

PUBLIC_PEM_NAME = "signing-key.pub.pem"
JWKS_NAME = "jwks.json"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The key as an OKP JWK with its RFC 7638 thumbprint as ``kid``."""
    x = b64url(raw_public_bytes(key))
    members = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True
    )
    kid = b64url(hashlib.sha256(members.encode()).digest())
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": x,
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    }


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _signing_key_from_env() -> Ed25519PrivateKey | None:
    text = os.environ.get("LETHE_SIGNING_KEY")
    if not text:
        return None
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("LETHE_SIGNING_KEY is not an unencrypted Ed25519 PKCS#8 PEM")
    return key


@dataclass
class KeyRing:
    """Reads, creates and rotates the keys in one ``LETHE_HOME``."""

    settings: Settings

    @classmethod
    def load(cls, settings: Settings | None = None) -> KeyRing:
        return cls(settings or load_settings())

    @property
    def dir(self) -> Path:
        return self.settings.keys_dir

    @property
    def _signing_dir(self) -> Path:
        return self.dir / "signing"

    def exists(self) -> bool:
        return (self._signing_dir / "current").exists()

    def init(self) -> bool:
        """Create whatever key is missing; True when anything was created."""
        created = False
        for name, env in (
            ("master.key", "LETHE_MASTER_KEY"),
            ("digest.key", "LETHE_DIGEST_KEY"),
        ):
            if not os.environ.get(env) and not (self.dir / name).exists():
                _write_private(
                    self.dir / name, b64url(secrets.token_bytes(32)).encode()
                )
                created = True
        if not self.exists():
            self.rotate()
            created = True
        return created

    def ensure(self) -> None:
        """Create the keys on first use, so a fresh home works out of the box."""
        if self.init():
            log.info("created lethe keys in %s", self.dir)

    def _symmetric(self, name: str, env: str) -> bytes:
        text = os.environ.get(env)
        if text is None:
            path = self.dir / name
            if not path.exists():
                self.ensure()
            text = path.read_text().strip()
        try:
            key = b64url_decode(text.strip())
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError(
                f"the {name} key is not 32 bytes of base64url; fix {env} or "
                f"{self.dir / name}"
            )
        return key

    def master_key(self) -> bytes:
        return self._symmetric("master.key", "LETHE_MASTER_KEY")

    def digest_key(self) -> bytes:
        return self._symmetric("digest.key", "LETHE_DIGEST_KEY")

    def rotate(self) -> str:
        """Make a new current signing key and return its key id."""
        private = Ed25519PrivateKey.generate()
        kid = public_jwk(private.public_key())["kid"]
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(self._signing_dir / f"{kid}.pem", pem)
        current = self._signing_dir / "current"
        tmp = current.with_suffix(".tmp")
        tmp.write_text(kid)
        tmp.replace(current)
        self.publish()
        return kid

    def signing_key(self) -> tuple[str, Ed25519PrivateKey]:
        supplied = _signing_key_from_env()
        if supplied is not None:
            return public_jwk(supplied.public_key())["kid"], supplied
        self.ensure()
        kid = (self._signing_dir / "current").read_text().strip()
        data = (self._signing_dir / f"{kid}.pem").read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"signing key {kid} is not an Ed25519 key")
        return kid, key

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every signing key's public half, old ones included, by key id."""
        keys: dict[str, Ed25519PublicKey] = {}
        supplied = _signing_key_from_env()
        if supplied is not None:
            keys[public_jwk(supplied.public_key())["kid"]] = supplied.public_key()
        for path in sorted(self._signing_dir.glob("*.pem")):
            private = serialization.load_pem_private_key(path.read_bytes(), None)
            if isinstance(private, Ed25519PrivateKey):
                keys[path.stem] = private.public_key()
        return keys

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [public_jwk(key) for key in self.public_keys().values()]}

    def publish(self, out_dir: Path | None = None) -> Path:
        """Write the JWKS and the current public key as PEM; return the folder."""
        target = out_dir or self.dir / "public"
        target.mkdir(parents=True, exist_ok=True)
        (target / JWKS_NAME).write_text(json.dumps(self.jwks(), indent=2) + "\n")
        kid, _ = self.signing_key()
        (target / PUBLIC_PEM_NAME).write_bytes(public_pem(self.public_keys()[kid]))
        for old_kid, key in self.public_keys().items():
            (target / f"{old_kid}.pub.pem").write_bytes(public_pem(key))
        return target
