"""One normalisation of identity, used at intake, in lineage capture, in every
connector query and in verification.

Policy (documented in docs/identity.md):

- **email**: Unicode NFC; every Unicode whitespace and zero-width character at
  either end trimmed; the whole address case-folded (local part included, as
  every mainstream mailbox provider treats it); sub-addressing (``+tag``) kept
  unless ``strip_subaddress=True``.
- **phone**: E.164 through ``phonenumbers``; numbers without a country code are
  read in the default region (``LETHE_PHONE_REGION``, default US).
- **Salesforce ids**: compared in their 18-character form. A 15-character id is
  case-sensitive and is extended with its checksum, never lower-cased.

Names are never an identifier on their own, so there is no name normaliser here.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from lethe.errors import InputError

_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
_EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_SF_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[A-Z0-5]{3})?$")
_SF_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def _trim(value: str) -> str:
    text = unicodedata.normalize("NFC", value)
    return text.strip().strip(_ZERO_WIDTH).strip()


def normalize_email(value: str, *, strip_subaddress: bool = False) -> str:
    """Return the canonical form of an e-mail address or raise InputError."""
    text = _trim(value).casefold()
    local = text.split("@", 1)[0]
    if len(text) > 254 or len(local) > 64:
        raise InputError(
            "the e-mail address is not valid: it is longer than an address can be "
            "(254 characters, 64 before the '@')"
        )
    if not _EMAIL_SHAPE.match(text):
        raise InputError(
            "the e-mail address is not valid: expected one '@' between a "
            "non-empty local part and a domain with a dot, and no spaces"
        )
    if strip_subaddress:
        local, domain = text.split("@")
        text = f"{local.split('+', 1)[0]}@{domain}"
    return text


def normalize_phone(value: str, *, region: str = "US") -> str:
    """Return a phone number in E.164 form or raise InputError."""
    text = _trim(value)
    try:
        number = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_possible_number(number):
        raise InputError(
            "the phone number cannot be read: give it with its country code, "
            f"for example +49 30 1234567, or set LETHE_PHONE_REGION (now {region})"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def salesforce_id_18(value: str) -> str:
    """Extend a 15-character Salesforce id with its checksum (18 stay as given)."""
    text = _trim(value)
    if not _SF_ID.match(text):
        raise InputError(
            "a Salesforce id has 15 or 18 letters and digits; this one does not"
        )
    base = text[:15]
    suffix = ""
    for start in (0, 5, 10):
        bits = 0
        for offset, char in enumerate(base[start : start + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << offset
        suffix += _SF_CHECKSUM_ALPHABET[bits]
    if len(text) == 18 and text[15:].upper() != suffix:
        raise InputError("the Salesforce id's last three characters do not match it")
    return base + suffix


def salesforce_id_15(value: str) -> str:
    """The case-sensitive 15-character form of a Salesforce id."""
    return salesforce_id_18(value)[:15]


def normalize(kind: str, value: str, *, phone_region: str = "US") -> str:
    """Normalise one identity of a known kind (email, phone, salesforce_id)."""
    if kind == "email":
        return normalize_email(value)
    if kind == "phone":
        return normalize_phone(value, region=phone_region)
    if kind == "salesforce_id":
        return salesforce_id_18(value)
    raise InputError(
        f"unknown identity kind {kind!r}: use email, phone or salesforce_id"
    )
