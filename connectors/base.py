"""The connector contract: locate · erase · verify, plus submit · poll for
systems whose deletion is a vendor job.

Connectors take plain values and return plain values. They know nothing of the
ledger, lineage or Prefect; the flows own those. A connector never puts a key,
an identity, a URL query or a response body into an exception message: errors
name the system, the operation and the HTTP status only.

Keys are given per dataset: ``{"Contact": ["003…"], "Case": ["500…"]}`` for
Salesforce, ``{"raw.sf_contact": [...], "mart.customer_summary": [...]}`` for a
warehouse, ``{"userId": [...]}`` for Segment, ``{"A_BusinessPartner": [...]}``
for SAP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal, Protocol, runtime_checkable

Keys = Mapping[str, Sequence[str]]

Action = Literal["deleted", "anonymised", "retained", "already_absent", "none"]
Status = Literal["done", "pending", "failed"]


@dataclass(frozen=True)
class Capabilities:
    hard_delete: bool = False
    anonymise: bool = False
    asynchronous: bool = False
    verify_by_read: bool = True
    batch_cap: int = 1000
    rate_limit_per_second: float | None = None


@dataclass(frozen=True)
class Located:
    """How many records each dataset holds for the keys (never the records)."""

    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Outcome:
    """What an erase, submit or poll achieved, as far as the system says."""

    status: Status
    action: Action
    records_affected: int = 0
    job_id: str | None = None
    vendor_status: str | None = None
    retained_until: date | None = None
    basis: str | None = None
    detail: str = ""
    finished_at: datetime | None = None
    dates: Mapping[str, str] = field(default_factory=dict)
    """Dates an auditor needs, ISO 8601: deleted_at, time_travel_until,
    fail_safe_until, backups_expire_by, physically_purged_by, scrub_done..."""


@dataclass(frozen=True)
class Evidence:
    """What a re-read observed after the action."""

    verified: bool
    observed: Mapping[str, object] = field(default_factory=dict)
    checked_at: datetime | None = None
    detail: str = ""


@runtime_checkable
class Connector(Protocol):
    """One system. Async kinds implement submit/poll; the others, erase."""

    system: str
    capabilities: Capabilities

    def locate(self, keys: Keys) -> Located: ...

    def verify(self, keys: Keys) -> Evidence: ...

    def close(self) -> None: ...


@runtime_checkable
class SyncConnector(Connector, Protocol):
    def erase(self, keys: Keys, *, idempotency_key: str) -> Outcome: ...


@runtime_checkable
class AsyncConnector(Connector, Protocol):
    def submit(self, keys: Keys, *, idempotency_key: str) -> Outcome:
        """File the vendor job; returns a pending Outcome carrying ``job_id``."""
        ...

    def find_job(self, keys: Keys, *, idempotency_key: str) -> str | None:
        """The job filed earlier for these keys, if the vendor has one.

        Called when the ledger shows a submit that started but never recorded
        its job id (the process died mid-call), so no second job is filed.
        """
        ...

    def poll(self, job_id: str, keys: Keys) -> Outcome: ...
