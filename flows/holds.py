"""Legal holds that reach their end date: run what they deferred.

A hold is active through its end date; the day after, this flow (scheduled by
``lethe serve``, or run by ``lethe hold release --expired``) frees the parts it
deferred and erases them through the erasure flow, so each request affected
gets a certificate that supersedes its partial one. Only hold and request ids
cross into Prefect.
"""

from __future__ import annotations

import logging

from prefect import flow

from erasure import holds
from flows.erasure import erase_requests
from flows.estate import current_estate

log = logging.getLogger(__name__)


@flow(name="release-expired-holds", log_prints=False, persist_result=False)
def release_expired_holds() -> dict[str, str]:
    """Run the deferred parts of every hold past its end date; {request: state}."""
    estate = current_estate()
    ended = holds.expired(estate.name)
    freed = holds.free_parts(hold_ids=ended)
    if not freed:
        return {}
    log.info("%d ended hold(s) freed parts of %d request(s)", len(ended), len(freed))
    return erase_requests(freed)
