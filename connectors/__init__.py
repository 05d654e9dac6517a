"""Connectors: one module per system kind, each speaking its vendor's API.

Public names are the contract types and the registry; see ``base.py``.
"""

from connectors.base import (
    AsyncConnector,
    Capabilities,
    Connector,
    Evidence,
    Keys,
    Located,
    Outcome,
    SyncConnector,
)

__all__ = [
    "AsyncConnector",
    "Capabilities",
    "Connector",
    "Evidence",
    "Keys",
    "Located",
    "Outcome",
    "SyncConnector",
]
