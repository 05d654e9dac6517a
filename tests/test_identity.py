import pytest

from lethe.errors import InputError
from lethe.identity import (
    normalize_email,
    normalize_phone,
    salesforce_id_15,
    salesforce_id_18,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("dana.whitlock@example.org", "dana.whitlock@example.org"),
        ("Dana.Whitlock@Example.ORG", "dana.whitlock@example.org"),
        ("  dana@example.org ", "dana@example.org"),
        ("\u00a0dana@example.org\u00a0", "dana@example.org"),
        ("\tdana@example.org\t", "dana@example.org"),
        ("\ufeffdana@example.org\u200b", "dana@example.org"),
        ("jose\u0301@example.org", "jos\u00e9@example.org"),  # NFD -> NFC
        ("jos\u00e9@example.org", "jos\u00e9@example.org"),
        ("dana+news@example.org", "dana+news@example.org"),
        ("STRASSE@EXAMPLE.DE", "strasse@example.de"),
    ],
)
def test_normalize_email_canonical_form(given: str, expected: str) -> None:
    assert normalize_email(given) == expected


def test_normalize_email_strips_subaddress_when_configured() -> None:
    assert normalize_email("Dana+News@example.org", strip_subaddress=True) == (
        "dana@example.org"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "dana",
        "dana@",
        "@example.org",
        "da na@example.org",
        "a@b@c.org",
        "dana@example",
    ],
)
def test_normalize_email_rejects_malformed(bad: str) -> None:
    with pytest.raises(InputError, match="e-mail address is not valid"):
        normalize_email(bad)


@pytest.mark.parametrize(
    ("given", "region", "expected"),
    [
        ("+1 (520) 547-2228", "US", "+15205472228"),
        ("520-547-2228", "US", "+15205472228"),
        ("+49-341-184709", "US", "+49341184709"),
        ("030 1234567", "DE", "+49301234567"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("\u00a0+33 1 42 68 53 00\t", "US", "+33142685300"),
    ],
)
def test_normalize_phone_e164(given: str, region: str, expected: str) -> None:
    assert normalize_phone(given, region=region) == expected


def test_normalize_phone_rejects_garbage() -> None:
    with pytest.raises(InputError, match="phone number cannot be read"):
        normalize_phone("call me maybe")


@pytest.mark.parametrize(
    ("short", "long"),
    [
        ("001D000000IRFma", "001D000000IRFmaIAH"),
        ("001D000000Iomaz", "001D000000IomazIAB"),
        ("003xx000004TmiQ", "003xx000004TmiQAAS"),
        ("70130000001tcyI", "70130000001tcyIAAQ"),
        ("a0D30000001n7Pi", "a0D30000001n7PiEAI"),
    ],
)
def test_salesforce_id_15_to_18_and_back(short: str, long: str) -> None:
    assert salesforce_id_18(short) == long
    assert salesforce_id_18(long) == long
    assert salesforce_id_15(long) == short


def test_salesforce_15_character_ids_are_case_sensitive() -> None:
    assert salesforce_id_18("001d000000irfma") != salesforce_id_18("001D000000IRFma")


def test_salesforce_id_rejects_a_wrong_checksum() -> None:
    with pytest.raises(InputError, match="do not match"):
        salesforce_id_18("001D000000IRFmaAAA")


def test_normalize_email_rejects_addresses_too_long_to_exist() -> None:
    with pytest.raises(InputError, match="longer than an address can be"):
        normalize_email("a" * 65 + "@example.org")
    with pytest.raises(InputError, match="longer than an address can be"):
        normalize_email("a@" + "b" * 250 + ".org")
