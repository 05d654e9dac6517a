"""The policy file: validation that points at the line, and the decisions it makes."""

from __future__ import annotations

import json
import re
from datetime import date
from importlib import resources
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lethe.cli import app
from lethe.errors import ConfigError
from lethe.estate.config import load_estate
from lethe.fides import load_annotations
from lethe.policy import Retention, load_policy

runner = CliRunner()

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
    assert erp.where == "policy.yaml:6"  # short: plans and certificates carry it
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
    assert erp.fields == ()  # a domain's fields are what it owns, not columns
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


# -- rules that would match nothing ---------------------------------------------

RETAIN = 'action: retain, basis: "HGB §257(1)", retention: {years: 10}'


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            ERP_RETAINS
            + f"  - {{system: warehouse, dataset: mart.customer_sumary, {RETAIN}}}\n",
            14,
            "rules[1].dataset: unknown dataset 'mart.customer_sumary' in system "
            "'warehouse'; known: mart.customer_summary, raw.sf_contact",
        ),
        (
            ERP_RETAINS + f"  - {{system: '*', dataset: Contacts, {RETAIN}}}\n",
            14,
            "no system of the estate has a dataset 'Contacts'",
        ),
        (
            ERP_RETAINS
            + f"  - {{system: warehouse, category: user.financial, {RETAIN}}}\n",
            14,
            "rules[1].category: user.financial matches no dataset in system "
            "'warehouse': declare which datasets hold it under datasets: or in the "
            "system's Fides annotations",
        ),
        (
            ERP_RETAINS
            + "  - {system: erp, dataset: A_BusinessPartner, category: user.contact,\n"
            "     action: anonymise}\n",
            14,
            "user.contact matches no dataset in dataset 'A_BusinessPartner' of "
            "system 'erp'",
        ),
        (
            ERP_RETAINS.replace("[user.name, user.financial]", "[user.name]"),
            5,
            "domains.billing.categories[0]: user.financial matches no dataset in "
            "system 'erp'",
        ),
        (
            ERP_RETAINS.replace('"erp:A_BusinessPartner"', '"erp:Nope"'),
            10,
            "datasets.erp:Nope: unknown dataset 'Nope' in system 'erp'; known: "
            "A_BusinessPartner",
        ),
    ],
)
def test_policy_rule_matching_nothing_is_an_error(tmp_path, text, line, fragment):
    message = _error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'policy.yaml'}:{line}: "), message
    assert fragment in message


def test_policy_datasets_define_a_system_the_estate_knows_nothing_of(tmp_path):
    datasets = {**DATASETS, "erp": set()}
    text = (
        ERP_RETAINS + "  - {system: erp, dataset: A_BusinessPartner, " + RETAIN + "}\n"
    )
    policy = load_policy(_write(tmp_path, text), KINDS, datasets)
    assert policy.known["erp"] == ("A_BusinessPartner",)
    assert policy.decide("erp", "A_BusinessPartner", "gdpr").where == "policy.yaml:14"


# -- categories from the Fides annotations --------------------------------------

FIDES_FILE = """\
dataset:
  - fides_key: shop
    collections:
      - name: crm_newsletter
        fields:
          - {name: email, data_categories: [user.contact.email]}
          - {name: subscriber_id, data_categories: [user.unique_id.pseudonymous],
             fides_meta: {primary_key: true}}
          - {name: source, data_categories: [system.operations]}
      - name: orders
        fields:
          - {name: buyer_email, data_categories: [user.contact.email]}
          - {name: iban, data_categories: [user.financial.bank_account]}
"""
FIDES_POLICY = """\
version: 1
datasets:
  "warehouse:crm.newsletter": [user.name]
rules:
  - {system: warehouse, category: user.financial, action: anonymise, fields: [iban]}
  - {system: "*", action: delete}
"""


def _fides_estate(tmp_path: Path, policy: str = FIDES_POLICY) -> Path:
    (tmp_path / "shop.fides.yml").write_text(FIDES_FILE, encoding="utf-8")
    (tmp_path / "policy.yaml").write_text(policy, encoding="utf-8")
    warehouse = {
        "kind": "warehouse",
        "url": "sqlite://",
        "tables": {
            "crm.newsletter": {"table": "crm_newsletter", "key_column": "subscriber_id"}
        },
        "fides_datasets": ["shop.fides.yml"],
    }
    estate = {
        "name": "t",
        "source": "salesforce",
        "policy": "policy.yaml",
        "systems": {"salesforce": {"kind": "salesforce"}, "warehouse": warehouse},
    }
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(estate), encoding="utf-8")
    return path


def test_policy_categories_come_from_the_fides_annotations(tmp_path):
    policy = load_estate(_fides_estate(tmp_path)).policy
    # the policy's own entry first, then the annotated fields' personal categories
    assert policy.dataset_categories["warehouse:crm.newsletter"] == (
        "user.name",
        "user.contact.email",
        "user.unique_id.pseudonymous",
    )
    assert policy.dataset_categories["warehouse:orders"] == (
        "user.contact.email",
        "user.financial.bank_account",
    )
    assert policy.known["warehouse"] == ("crm.newsletter", "orders")
    orders = policy.decide("warehouse", "orders", "gdpr")
    assert (orders.action, orders.fields) == ("anonymise", ("iban",))
    assert policy.decide("warehouse", "crm.newsletter", "gdpr").action == "delete"


def test_policy_category_rule_without_annotations_matches_nothing(tmp_path):
    path = _fides_estate(tmp_path)
    estate = yaml.safe_load(path.read_text())
    del estate["systems"]["warehouse"]["fides_datasets"]
    path.write_text(yaml.safe_dump(estate))
    with pytest.raises(ConfigError, match="user.financial matches no dataset"):
        load_estate(path)


# -- YAML that is not plain data ------------------------------------------------

BILLION_LAUGHS = (
    "version: 1\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(
        f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]\n"
        for p, x in zip("abcdefgh", "bcdefghi", strict=True)
    )
)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (BILLION_LAUGHS, 2, "anchors and aliases are not supported in {file}:2"),
        (
            "version: 1\nbase: {action: delete}\nrules:\n  - {<<: *base}\n",
            4,
            "anchors and aliases are not supported in {file}:4",
        ),
        (
            "version: 1\nrules:\n  - <<: {action: delete}\n",
            3,
            "merge keys (<<) are not supported in {file}:3",
        ),
        (
            "version: 1\ndefault: !!python/object/apply:os.system [id]\n",
            2,
            "{file}:2: the YAML tag",
        ),
        ("version: 1\ndefault: !shred all\n", 2, "{file}:2: this value cannot be read"),
        ("version: 1\nrules: !!set {a, b}\n", 2, "{file}:2: the YAML tag"),
        ("version: !!int one\n", 1, "{file}:1: this value is not a valid int"),
    ],
)
def test_policy_yaml_beyond_plain_data_is_one_line_error(
    tmp_path, text, line, fragment
):
    message = _error(tmp_path, text)
    assert fragment.format(file=tmp_path / "policy.yaml") in message, message
    assert "\n" not in message


def test_fides_file_refuses_aliases_too(tmp_path):
    path = tmp_path / "shop.fides.yml"
    path.write_text(FIDES_FILE.replace("- name: orders", "- name: &o orders"))
    with pytest.raises(
        ConfigError, match=r"anchors and aliases are not supported in .*:10"
    ):
        load_annotations(path)


# -- messages -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            ERP_RETAINS.replace("years: 10", "years: 100000"),
            ":8: domains.billing.retention.years: must be a whole number from 0 to "
            "100 years",
        ),
        (
            ERP_RETAINS.replace("years: 10", "months: 1201"),
            "from 0 to 1200 months",
        ),
        (ERP_RETAINS.replace("years: 10", "days: -1"), "from 0 to 36600 days"),
        (
            ERP_RETAINS + "  - {system: warehouse, action: anonymise, fields: email}\n",
            ":14: rules[1].fields: must be a list of column names",
        ),
        (
            ERP_RETAINS.replace(
                "    categories:", "    fields: Customer\n    categories:"
            ),
            ":5: domains.billing.fields: must be a list of field names",
        ),
        (
            ERP_RETAINS.replace("version: 1\n", ""),
            ":1: version: missing: add version: 1",
        ),
        (
            "",
            "the policy file {file} is empty: start from "
            "lethe/estate/sample-policy.yaml",
        ),
        ("# nothing yet\n\n", "is empty: start from lethe/estate/sample-policy.yaml"),
    ],
)
def test_policy_messages_say_how_to_fix(tmp_path, text, fragment):
    message = _error(tmp_path, text)
    assert fragment.format(file=tmp_path / "policy.yaml") in message, message


def test_policy_file_not_utf8_says_so(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_bytes("version: 1\ndefault: l\xf6schen\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_policy(path, KINDS, DATASETS)
    assert str(caught.value) == (
        f"the policy file {path} is not UTF-8 text: save it as UTF-8"
    )


@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        (
            "  - {system: warehouse, action: delete}\n"
            "  - {system: analytics, action: delete}\n"
            "  - {system: warehouse, action: anonymise, fields: [email]}\n",
            ":14: this rule and the one at line 16 both match system 'warehouse' "
            "equally specifically and say delete and anonymise",
        ),
        (
            "  - {system: erp, category: user.financial, action: anonymise}\n",
            ":6: this rule and the one at line 14 both match system 'erp', category "
            "user.financial equally specifically and say retain and anonymise",
        ),
        (
            "  - {system: warehouse, action: anonymise, fields: [email]}\n"
            "  - {system: warehouse, action: anonymise, fields: [phone]}\n",
            "differ in basis, retention or fields",
        ),
    ],
)
def test_policy_equal_rules_that_disagree_name_both_lines(tmp_path, rules, fragment):
    message = _error(tmp_path, ERP_RETAINS + rules)
    assert message.startswith(str(tmp_path / "policy.yaml")), message
    assert fragment in message


def test_policy_equal_rules_that_agree_or_differ_in_weight_load(tmp_path):
    text = ERP_RETAINS + (
        "  - {system: warehouse, action: delete}\n"
        "  - {system: warehouse, action: delete}\n"
        "  - {system: warehouse, regulation: ccpa, action: deidentify,\n"
        "     fields: [email]}\n"
    )
    policy = _load(tmp_path, text)
    assert policy.decide("warehouse", "raw.sf_contact", "ccpa").action == "deidentify"
    assert policy.decide("warehouse", "raw.sf_contact", "gdpr").action == "delete"


# -- short references, full paths in errors -------------------------------------


@pytest.mark.parametrize(
    ("named", "where"),
    [
        ("policy.yaml", "policy.yaml:2"),
        ("rules/erasure.yaml", "rules/erasure.yaml:2"),
        ("{outside}/erasure.yaml", "erasure.yaml:2"),
    ],
)
def test_estate_policy_rules_are_named_by_short_name(tmp_path, named, where):
    folder = tmp_path / "estate"
    outside = tmp_path / "elsewhere"
    file = Path(named.format(outside=outside))
    file = file if file.is_absolute() else folder / file
    for made in (folder, file.parent):
        made.mkdir(parents=True, exist_ok=True)
    file.write_text("version: 1\ndefault: delete\n")
    estate_file = folder / "estate.yaml"
    estate_file.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "policy": named.format(outside=outside),
                "systems": {"salesforce": {"kind": "salesforce"}},
            }
        )
    )
    policy = load_estate(estate_file).policy
    assert policy.decide("salesforce", "Contact", "gdpr").where == where
    file.write_text("version: 1\ndefault: shred\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(file))}:2: default"):
        load_estate(estate_file)


# -- the command line -----------------------------------------------------------


def _cli_estate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rules: str) -> Path:
    sample = resources.files("lethe.estate").joinpath("sample-policy.yaml").read_text()
    (tmp_path / "policy.yaml").write_text(
        sample.replace("rules:\n", "rules:\n" + rules)
    )
    estate = {
        "name": "t",
        "source": "salesforce",
        "policy": str(tmp_path / "policy.yaml"),  # absolute, as the demo writes it
        "systems": {
            "salesforce": {"kind": "salesforce"},
            "warehouse": {
                "kind": "warehouse",
                "tables": {"crm.newsletter": {"table": "n", "key_column": "id"}},
            },
            "erp": {"kind": "sap_business_partner"},
        },
        "flows": [
            {"job": "sync", "from": "salesforce:Contact", "to": "erp:A_BusinessPartner"}
        ],
    }
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(estate))
    monkeypatch.setenv("LETHE_ESTATE", str(path))
    return path


@pytest.mark.parametrize(
    ("policy", "counted"),
    [
        (
            "version: 1\nrules:\n  - {system: '*', action: delete}\n",
            "(1 rule, 0 domains",
        ),
        (FIDES_POLICY, "(2 rules, 0 domains"),
    ],
)
def test_cli_policy_check_counts_rules(home, tmp_path, monkeypatch, policy, counted):
    monkeypatch.setenv("LETHE_ESTATE", str(_fides_estate(tmp_path, policy)))
    result = runner.invoke(app, ["policy", "check"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # the console wraps at 120 columns
    assert f"{tmp_path / 'policy.yaml'}: valid {counted}, approval" in said


def test_cli_policy_show_accepts_any_case_and_keeps_the_rule_readable(
    home, tmp_path, monkeypatch
):
    _cli_estate(
        tmp_path,
        monkeypatch,
        "  - {system: warehouse, regulation: ccpa, action: deidentify, fields: [e]}\n",
    )
    result = runner.invoke(app, ["policy", "show", "--regulation", "CCPA"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 120
    erp = next(line for line in lines if "A_BusinessPartner" in line)
    assert "policy.yaml:16" in erp and str(tmp_path) not in result.output
    warehouse = next(line for line in lines if "crm.newsletter" in line)
    assert "deidentify" in warehouse and "policy.yaml:32" in warehouse
    shown = json.loads(runner.invoke(app, ["policy", "show", "--json"]).output)
    assert {(r["system"], r["dataset"]) for r in shown} == {
        ("erp", "A_BusinessPartner"),
        ("salesforce", "Contact"),
        ("warehouse", "crm.newsletter"),
    }


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        (
            "  - {system: warehouse, dataset: crm.newsletter, action: anonymise,"
            " fields: [subscriber_id]}\n",
            "the key column of 'crm.newsletter'",
        ),
        (
            "  - {system: warehouse, dataset: crm.newsletter, action: retain,"
            " basis: 'records of jane.doe@example.com', retention: {years: 1}}\n",
            "name the law, not a person",
        ),
        (
            "  - {system: warehouse, dataset: crm.newsletter, action: retain,"
            " basis: 'AO §147', retention: {from: last_document, years: 1}}\n",
            "reports no document dates",
        ),
    ],
)
def test_policy_refuses_what_would_strand_rows_or_sign_falsehoods(
    tmp_path: Path, rule: str, fragment: str
) -> None:
    text = FIDES_POLICY.replace("rules:\n", "rules:\n" + rule)
    with pytest.raises(ConfigError) as caught:
        load_estate(_fides_estate(tmp_path, text))
    assert f"{tmp_path / 'policy.yaml'}:" in str(caught.value)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("version", ["true", "1.0", "'1'"])
def test_policy_version_must_be_the_number_one(tmp_path: Path, version: str) -> None:
    text = FIDES_POLICY.replace("version: 1", f"version: {version}")
    with pytest.raises(ConfigError, match="reads policy version 1"):
        load_estate(_fides_estate(tmp_path, text))


def test_retention_reads_in_words() -> None:
    assert Retention("receipt", "same_day", years=1, days=2).describe() == (
        "1 year, 2 days from the receipt"
    )
