"""One rate limit per vendor shared by every flow run, through Prefect.

Connectors pace themselves per process (``connectors/_resilience.py``). Runs in
other processes — a second ``lethe dsr run``, a worker — would each get their
own bucket, and together exceed the vendor's limit. So flows give each paced
connector a Prefect global concurrency limit with slot decay (Prefect's rate
limit): every run against the same Prefect server draws from one budget.

Limits are created (or updated) idempotently when a connector is built, named
``lethe-rate-<system>``; ``strict=True`` makes a missing limit an error
instead of Prefect's silent skip.
"""

from __future__ import annotations

import math

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import rate_limit


def limit_name(system: str) -> str:
    return f"lethe-rate-{system}"


class PrefectRateLimit:
    """A ``Pacer`` that takes one slot of a Prefect rate limit per call."""

    def __init__(self, name: str) -> None:
        self.name = name

    def acquire(self) -> None:
        rate_limit(self.name, occupy=1, strict=True)


def shared_pacer(system: str, rate_per_second: float) -> PrefectRateLimit:
    """Ensure the system's Prefect rate limit exists and return its pacer."""
    name = limit_name(system)
    burst = max(1, math.floor(rate_per_second))
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(
            name, limit=burst, slot_decay_per_second=rate_per_second
        )
    return PrefectRateLimit(name)
