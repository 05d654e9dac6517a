"""Connector kinds by name, so the estate file adds a system without new code.

An estate file names each system's ``kind`` and its settings; ``build`` turns
that into a connector. Settings are passed to the connector's constructor as
keyword arguments, so a kind's constructor documents what it accepts.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from connectors.base import Connector
from lethe.errors import ConfigError

KINDS: dict[str, str] = {
    "salesforce": "connectors.salesforce:SalesforceConnector",
    "warehouse": "connectors.warehouse:WarehouseConnector",
    "segment": "connectors.segment:SegmentConnector",
    "sap_business_partner": "connectors.sap:SapBusinessPartnerConnector",
    "mixpanel": "connectors.mixpanel:MixpanelConnector",
    "amplitude": "connectors.amplitude:AmplitudeConnector",
}

# How each kind carries out a plan action: the connector method that does it,
# or None when keeping the records as they are is the action (lethe/policy.py
# checks rules against this). SAP's erase blocks and anonymises the partner,
# which is both its anonymisation and its restriction for retention.
# Salesforce could anonymise through a collection PATCH, but lethe does not yet.
PLAN_METHODS: dict[str, dict[str, str | None]] = {
    "salesforce": {"delete": "erase"},
    "warehouse": {
        "delete": "erase",
        "aggregate": "erase",
        "anonymise": "anonymise",
        "deidentify": "anonymise",
        "retain": None,
    },
    "segment": {"delete": "erase"},
    "sap_business_partner": {"anonymise": "erase", "retain": "erase"},
    "mixpanel": {"delete": "erase"},
    "amplitude": {"delete": "erase"},
}


# The deletion commitment each vendor documents, in days from the request
# (vendor-apis.md): what "awaiting vendor" is measured against.
VENDOR_SLA_DAYS: dict[str, int] = {"segment": 30, "mixpanel": 30, "amplitude": 30}


# Kinds whose outcome reports ``dates["last_document"]`` (the ERP's billing
# documents), which a retention rule ``from: last_document`` counts from.
REPORTS_LAST_DOCUMENT = frozenset({"sap_business_partner"})


def plan_actions(kind: str) -> frozenset[str]:
    """The plan actions a connector kind can perform (none for an unknown kind)."""
    return frozenset(PLAN_METHODS.get(kind, {}))


def plan_method(kind: str, action: str) -> str | None:
    """The connector method for a plan action; None means keep as is."""
    return PLAN_METHODS[kind][action]


def build(system: str, settings: Mapping[str, Any]) -> Connector:
    """Make the connector for one system from its estate-file settings."""
    kind = settings.get("kind")
    if kind not in KINDS:
        raise ConfigError(
            f"system {system!r} has kind {kind!r}; known kinds are "
            f"{', '.join(sorted(KINDS))}"
        )
    module_name, class_name = KINDS[kind].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    options = {k: v for k, v in settings.items() if k not in ("kind", "datasets")}
    try:
        return cls(system=system, **options)
    except TypeError as exc:
        raise ConfigError(
            f"system {system!r}: a setting is missing or unknown for kind {kind} "
            f"({exc}); check the estate file"
        ) from None
