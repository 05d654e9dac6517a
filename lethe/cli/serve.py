"""``lethe serve``: scheduled lineage capture and re-checks, until stopped."""

from __future__ import annotations

from lethe.cli._common import console, handled


@handled
def serve() -> None:
    """Serve capture and re-check flows as Prefect deployments on cron schedules."""
    from flows.estate import current_estate
    from flows.serve import require_server, schedules_of, serve_forever

    url = require_server()
    schedules = schedules_of(current_estate().schedules)
    console.print(
        f"serving on {url}: capture-lineage at '{schedules['capture']}', "
        f"recheck-requests at '{schedules['recheck']}', check-divergence at "
        f"'{schedules['divergence']}'; Ctrl-C stops"
    )
    serve_forever(schedules)
