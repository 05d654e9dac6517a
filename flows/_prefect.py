"""Prefect settings lethe needs, applied before Prefect is first imported.

Telemetry off, results not persisted by default (task results could otherwise
land on disk), a generous ephemeral-server start-up timeout for slow machines,
and Prefect's home inside ``LETHE_HOME`` unless the caller chose one.
"""

from __future__ import annotations

import os

from lethe.config import load_settings

DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
}


def configure() -> None:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    if "PREFECT_HOME" not in os.environ:
        os.environ["PREFECT_HOME"] = str(load_settings().home / "prefect")
