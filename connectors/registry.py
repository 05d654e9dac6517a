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
