import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from erasure.certificate import CertificateInvalid, load_public_key, sign, verify
from lethe.config import load_settings
from lethe.errors import ConfigError
from lethe.keys import KeyRing, b64url

PAYLOAD = {"request": {"id": "dsr-1", "regulation": "gdpr"}, "systems": [], "n": 1.5}


def test_certificate_round_trip_and_header(home: Path) -> None:
    ring = KeyRing.load()
    kid, key = ring.signing_key()
    jws = sign(PAYLOAD, kid=kid, key=key)
    header = json.loads(base64.urlsafe_b64decode(jws.split(".")[0] + "=="))
    assert header == {"alg": "EdDSA", "kid": kid, "typ": "lethe-certificate+jws"}
    assert verify(jws, ring.public_keys()).payload == PAYLOAD


def test_certificate_one_changed_byte_fails(home: Path) -> None:
    ring = KeyRing.load()
    kid, key = ring.signing_key()
    jws = sign(PAYLOAD, kid=kid, key=key)
    for position in (5, len(jws) // 2, len(jws) - 3):
        flipped = "A" if jws[position] != "A" else "B"
        tampered = jws[:position] + flipped + jws[position + 1 :]
        with pytest.raises(CertificateInvalid):
            verify(tampered, ring.public_keys())


def test_certificate_refuses_alg_none(home: Path) -> None:
    ring = KeyRing.load()
    kid, key = ring.signing_key()
    _, payload, _ = sign(PAYLOAD, kid=kid, key=key).split(".")
    header = b64url(json.dumps({"alg": "none"}).encode())
    with pytest.raises(CertificateInvalid, match="not accepted"):
        verify(f"{header}.{payload}.", ring.public_keys())


def test_old_certificate_verifies_after_rotation(home: Path) -> None:
    ring = KeyRing.load()
    kid, key = ring.signing_key()
    jws = sign(PAYLOAD, kid=kid, key=key)
    new_kid = ring.rotate()
    assert new_kid != kid
    assert verify(jws, ring.public_keys()).kid == kid
    jwks = load_public_key(ring.publish() / "jwks.json")
    assert set(jwks) == {kid, new_kid}


def test_key_files_are_owner_only(home: Path) -> None:
    KeyRing.load().ensure()
    for path in load_settings().keys_dir.rglob("*"):
        if (
            path.is_file()
            and path.suffix in (".key", ".pem")
            and "public" not in path.parts
        ):
            assert path.stat().st_mode & 0o077 == 0, path


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_certificate_verifies_with_openssl_alone(home: Path, tmp_path: Path) -> None:
    """The README recipe: coreutils and openssl, nothing of lethe."""
    ring = KeyRing.load()
    kid, key = ring.signing_key()
    cert = tmp_path / "cert.jws"
    cert.write_text(sign(PAYLOAD, kid=kid, key=key) + "\n")
    pem = ring.publish() / "signing-key.pub.pem"
    script = Path(__file__).resolve().parents[1] / "scripts" / "verify-with-openssl.sh"
    good = subprocess.run(
        ["bash", str(script), str(cert), str(pem)], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    assert "Signature Verified Successfully" in good.stdout
    text = cert.read_text()
    cert.write_text(text[:40] + ("x" if text[40] != "x" else "y") + text[41:])
    bad = subprocess.run(
        ["bash", str(script), str(cert), str(pem)], capture_output=True, text=True
    )
    assert bad.returncode != 0


def test_signing_key_supplied_by_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    supplied = Ed25519PrivateKey.generate()
    pem = supplied.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    monkeypatch.setenv("LETHE_SIGNING_KEY", pem.decode())
    ring = KeyRing.load()
    kid, key = ring.signing_key()
    jws = sign(PAYLOAD, kid=kid, key=key)
    assert verify(jws, ring.public_keys()).kid == kid
    assert kid in {k["kid"] for k in ring.jwks()["keys"]}
    monkeypatch.setenv("LETHE_SIGNING_KEY", "not a key")
    with pytest.raises(ConfigError, match="LETHE_SIGNING_KEY"):
        KeyRing.load().signing_key()
