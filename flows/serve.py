"""``lethe serve``: the capture flow, the post-erasure re-checks, the divergence
check and the release of ended legal holds as Prefect deployments on cron
schedules, served until stopped.

Schedules come from the estate file (``schedules: {capture: CRON, recheck:
CRON, divergence: CRON, holds: CRON}``; defaults below). Prefect's temporary
in-process server cannot run schedules, so serving needs a Prefect server
(``PREFECT_API_URL``). Each run appears in Prefect's UI under its deployment,
with no parameters at all: the flows read the estate and the ledger from
``LETHE_HOME``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lethe.errors import ConfigError

DEFAULT_SCHEDULES = {
    "capture": "0 2 * * *",
    "recheck": "30 3 * * *",
    "divergence": "0 5 * * *",
    "holds": "0 4 * * *",
}


def schedules_of(raw: Mapping[str, Any] | None) -> dict[str, str]:
    schedules = dict(DEFAULT_SCHEDULES)
    for name, cron in (raw or {}).items():
        if name not in DEFAULT_SCHEDULES:
            raise ConfigError(
                f"schedules: unknown flow {name!r}; use {', '.join(DEFAULT_SCHEDULES)}"
            )
        if not isinstance(cron, str) or len(cron.split()) != 5:
            raise ConfigError(
                f"schedules.{name} must be a cron line of five fields, e.g. '0 2 * * *'"
            )
        schedules[name] = cron
    return schedules


def require_server() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise ConfigError(
            "lethe serve needs a Prefect server, because schedules do not run on "
            "the temporary one: run `prefect server start` and export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return url


def deployments(schedules: Mapping[str, str]) -> list[Any]:
    from flows.capture import capture_lineage
    from flows.divergence import check_divergence
    from flows.holds import release_expired_holds
    from flows.recheck import recheck_requests

    try:
        return [
            capture_lineage.to_deployment(
                name="capture-lineage", cron=schedules["capture"], tags=["lethe"]
            ),
            recheck_requests.to_deployment(
                name="recheck-requests", cron=schedules["recheck"], tags=["lethe"]
            ),
            check_divergence.to_deployment(
                name="check-divergence", cron=schedules["divergence"], tags=["lethe"]
            ),
            release_expired_holds.to_deployment(
                name="release-expired-holds", cron=schedules["holds"], tags=["lethe"]
            ),
        ]
    except ValueError as exc:
        raise ConfigError(f"a schedule is not a valid cron line ({exc})") from None


def serve_forever(schedules: Mapping[str, str]) -> None:
    from prefect import serve

    serve(*deployments(schedules), print_starting_message=False)
