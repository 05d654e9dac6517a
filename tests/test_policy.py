"""The policy file: validation that points at the line, and the decisions it makes."""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path

import pytest

from lethe.errors import ConfigError
from lethe.policy import Retention, load_policy

KINDS = {
    "salesforce": "salesforce",
    "warehouse": "warehouse",
    "analytics": "segment",
    "erp": "sap_business_partner",
}
DATASETS = {
    "salesforce": {"Contact"},
    "warehouse": {"raw.sf_contact", "mart.customer_summary"},
    "analytics": {"events"},
    "erp": {"A_BusinessPartner"},
}

ERP_RETAINS = """\
version: 1
domains:
  billing:
    owner: erp
    categories: [user.financial]
    action: retain
    basis: "HGB §257(1)"
    retention: {from: last_document, start: end_of_year, years: 10}
datasets:
  "erp:A_BusinessPartner": [user.name, user.financial]
rules:
  - system: "*"
    action: delete
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str):
    return load_policy(_write(tmp_path, text), KINDS, DATASETS)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    return str(caught.value)


def test_policy_unknown_category_names_file_line_and_key(tmp_path):
    text = ERP_RETAINS.replace(
        "[user.name, user.financial]", "[user.name, user.shoe_size]"
    )
    message = _error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'policy.yaml'}:10: ")
    assert "datasets.erp:A_BusinessPartner[1]" in message
    assert "unknown data category 'user.shoe_size'" in message


def test_policy_action_the_connector_cannot_perform_names_the_rule(tmp_path):
    text = ERP_RETAINS + "  - system: analytics\n    action: anonymise\n"
    message = _error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'policy.yaml'}:14: ")
    assert "system 'analytics'" in message and "(segment) cannot" in message
    assert "it can delete" in message


def test_policy_retention_without_basis_names_the_place(tmp_path):
    text = ERP_RETAINS.replace('    basis: "HGB §257(1)"\n', "")
    message = _error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'policy.yaml'}:7: ")
    assert "domains.billing.retention" in message
    assert "needs a basis" in message


@pytest.mark.parametrize(
    ("rule", "line", "fragment"),
    [
        ("  - {system: crm, action: delete}\n", 14, "unknown system 'crm'"),
        ("  - {system: warehouse, action: shred}\n", 14, "unknown action 'shred'"),
        (
            "  - {system: warehouse, action: deidentify, fields: [email]}\n",
            14,
            "add regulation: ccpa",
        ),
        (
            "  - {system: warehouse, action: anonymise}\n",
            14,
            "needs fields",
        ),
        (
            "  - {system: warehouse, action: delete, colour: red}\n",
            14,
            "unknown key 'colour'",
        ),
        (
            "  - {system: warehouse, action: retain, basis: X}\n",
            14,
            "retain needs a retention period",
        ),
        (
            "  - {system: warehouse, action: anonymise, fields: [email], "
            "strategy: rot13}\n",
            14,
            "unknown strategy 'rot13'",
        ),
    ],
)
def test_policy_rule_errors_point_at_the_line(tmp_path, rule, line, fragment):
    message = _error(tmp_path, ERP_RETAINS + rule)
    assert message.startswith(f"{tmp_path / 'policy.yaml'}:{line}: "), message
    assert fragment in message


def test_policy_owned_domain_cannot_be_deleted_by_the_catch_all(tmp_path):
    text = ERP_RETAINS.replace(
        "    action: retain\n"
        '    basis: "HGB §257(1)"\n'
        "    retention: {from: last_document, start: end_of_year, years: 10}\n",
        "",
    )
    message = _error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'policy.yaml'}:3: ")
    assert "domain 'billing' is owned by 'erp'" in message


def test_policy_invalid_yaml_names_the_line(tmp_path):
    message = _error(tmp_path, "version: 1\nrules: [\n  - {system: x\n")
    assert f"{tmp_path / 'policy.yaml'}:" in message and "not valid YAML" in message


def test_policy_duplicate_key_is_an_error(tmp_path):
    message = _error(tmp_path, "version: 1\ndefault: delete\ndefault: retain\n")
    assert ":3: default is given twice" in message


def test_policy_retained_domain_prevails_and_anonymises_the_rest(tmp_path):
    policy = _load(tmp_path, ERP_RETAINS)
    erp = policy.decide("erp", "A_BusinessPartner", "gdpr")
    assert (erp.action, erp.basis, erp.also_anonymise) == (
        "retain",
        "HGB §257(1)",
        True,
    )
    assert erp.where == f"{tmp_path / 'policy.yaml'}:6"
    assert policy.decide("warehouse", "raw.sf_contact", "gdpr").action == "delete"


def test_policy_most_specific_rule_wins(tmp_path):
    text = ERP_RETAINS + (
        "  - {system: warehouse, action: anonymise, fields: [email]}\n"
        "  - {system: warehouse, dataset: raw.sf_contact, action: delete}\n"
        "  - {system: warehouse, dataset: mart.customer_summary, regulation: ccpa,\n"
        "     action: deidentify, fields: [email]}\n"
    )
    policy = _load(tmp_path, text)
    assert policy.decide("warehouse", "raw.sf_contact", "gdpr").action == "delete"
    assert policy.decide("warehouse", "mart.customer_summary", "gdpr").action == (
        "anonymise"
    )
    ccpa = policy.decide("warehouse", "mart.customer_summary", "ccpa")
    assert (ccpa.action, ccpa.fields) == ("deidentify", ("email",))
    assert policy.decide("salesforce", "Contact", "ccpa").action == "delete"


def test_policy_no_file_rejects_a_system_that_cannot_delete():
    with pytest.raises(ConfigError, match="system 'erp'.*cannot; it can anonymise"):
        load_policy(None, KINDS, DATASETS)


def test_policy_sample_estate_file_loads():
    text = resources.files("lethe.estate").joinpath("sample-policy.yaml").read_text()
    assert "user.financial" in text
    path = Path(str(resources.files("lethe.estate").joinpath("sample-policy.yaml")))
    policy = load_policy(path, KINDS, DATASETS)
    erp = policy.decide("erp", "A_BusinessPartner", "gdpr")
    assert erp.action == "retain" and erp.also_anonymise
    assert policy.digest.startswith("sha256:")
    # the ownership map `lethe lineage lint` reads
    assert policy.owners() == {
        "salesforce": ("Email",),
        "erp": ("Customer", "AccountNumber"),
    }


@pytest.mark.parametrize(
    ("rule", "anchor", "until"),
    [
        # HGB §257(5): from the end of the year of the last document
        (
            Retention("last_document", "end_of_year", years=10),
            date(2026, 3, 1),
            date(2036, 12, 31),
        ),
        (
            Retention("last_document", "end_of_year", years=10),
            date(2026, 12, 31),
            date(2036, 12, 31),
        ),
        (
            Retention("last_document", "end_of_year", years=6),
            date(2025, 1, 1),
            date(2031, 12, 31),
        ),
        (
            Retention("erasure", "same_day", years=1),
            date(2028, 2, 29),
            date(2029, 2, 28),
        ),
        (
            Retention("receipt", "same_day", months=1),
            date(2027, 1, 31),
            date(2027, 2, 28),
        ),
        (
            Retention("erasure", "same_day", days=30),
            date(2026, 12, 3),
            date(2027, 1, 2),
        ),
    ],
)
def test_retention_until(rule, anchor, until):
    assert rule.until(anchor) == until
