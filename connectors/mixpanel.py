"""Mixpanel: erasure as GDPR/CCPA API v3 deletion tasks.

Mixpanel's GDPR API cannot be asked whether it holds someone: there is no
lookup by distinct_id and no way to read events back. What it offers is a
deletion task for up to 1,999 distinct_ids of one project, which deletes their
events and profile "within 30 days". So this connector is asynchronous:
``submit`` files the tasks, ``poll`` reads their status, and ``verify`` can
only confirm that Mixpanel reports every task SUCCESS; it is not a re-read of
the data (``verify_by_read`` is False).

Keys come as ``{"distinct_id": [...]}``; they should include the device and
anonymous ids merged into the user, which only lineage knows. A deletion does
not stop future tracking: that takes the SDK's opt-out.

The API allows one request per second per project and answers 429 past that.
Lethe has no shared pacing, so the connector spaces its own calls
``min_interval`` apart (1 s by default), measured from the end of the previous
call so the server sees the gap too. ``clock`` and ``sleep`` are injectable so
tests do not wait.

Mixpanel takes no idempotency key. A task filed by a process that died before
recording its id is found again by ``find_job``, which lists the project's
tasks and matches them by their exact distinct_id set and compliance type.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors._http import json_object, raise_if_transient, request
from connectors._jobs import all_filed, file_missing
from connectors._resilience import retry_after_seconds
from connectors.base import Capabilities, Evidence, Keys, Located, Outcome
from lethe.errors import ConfigError, ConnectorError

logger = logging.getLogger(__name__)

__all__ = ["MixpanelConnector"]

VENDOR = "Mixpanel"
DATASET = "distinct_id"
MAX_DISTINCT_IDS = 1999
DELETIONS = "/data-deletions/v3.0/"
COMPLIANCE_TYPES = frozenset({"GDPR", "CCPA"})
FAILED_ENDINGS = frozenset({"FAILURE", "REVOKED", "NOT_FOUND", "UNKNOWN"})
IN_PROGRESS = ("PENDING", "STAGING", "STARTED")

Batch = tuple[str, ...]


def _has_vendor_error(response: httpx.Response) -> bool:
    """True when the body is Mixpanel's ``{"status":"error","error":…}``."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("status") == "error"


def _created_id(body: dict[str, Any]) -> str | None:
    """The tracking id from either documented create shape.

    The OpenAPI document answers ``{"results": {"task_id": …}}``; the prose
    example answers ``{"results": [{"tracking_id": …, …}]}``.
    """
    results = body.get("results")
    if isinstance(results, dict):
        found = results.get("task_id") or results.get("tracking_id")
    elif isinstance(results, list) and results and isinstance(results[0], dict):
        found = results[0].get("tracking_id") or results[0].get("task_id")
    else:
        found = None
    return str(found) if isinstance(found, str | int) and found != "" else None


class MixpanelConnector:
    """One Mixpanel project behind the GDPR API v3."""

    def __init__(
        self,
        *,
        system: str,
        base_url: str,
        gdpr_token: str,
        project_token: str,
        compliance_type: str = "GDPR",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if compliance_type not in COMPLIANCE_TYPES:
            raise ConfigError(
                f"{system}: compliance_type must be GDPR or CCPA; check the estate file"
            )
        self.system = system
        self.compliance_type = compliance_type
        self.capabilities = Capabilities(
            hard_delete=True,
            asynchronous=True,
            verify_by_read=False,
            batch_cap=MAX_DISTINCT_IDS,
            rate_limit_per_second=1.0,
        )
        self._project_token = project_token
        self._min_interval = min_interval
        self._clock = clock
        self._sleep = sleep
        self._last_call: float | None = None
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {gdpr_token}"},
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    # -- the contract ------------------------------------------------------

    def locate(self, keys: Keys) -> Located:
        """The number of distinct keys given, as an upper bound.

        Mixpanel's GDPR API has no lookup, so this cannot count events; it
        only checks that the keys are distinct_ids.
        """
        return Located(counts={DATASET: sum(len(b) for b in self._batches(keys))})

    def submit(self, keys: Keys, *, idempotency_key: str) -> Outcome:
        """File deletion tasks of ≤1,999 distinct_ids each.

        Mixpanel takes no idempotency key, so ``idempotency_key`` is unused;
        when the keys need several tasks, tasks filed by an earlier,
        interrupted attempt (still running or succeeded) are not filed again.
        """
        batches = self._batches(keys)
        if not batches:
            return Outcome(
                status="done", action="none", detail="no keys given; nothing filed"
            )
        earlier = self._find(batches, live_only=True) if len(batches) > 1 else [None]
        job_ids = file_missing(batches, earlier, self._file, id_field="tracking_id")
        logger.info("%s: %d deletion task(s) filed or found", self.system, len(job_ids))
        return Outcome(
            status="pending",
            action="none",
            job_id=",".join(job_ids),
            vendor_status="PENDING",
            detail=f"{len(job_ids)} {self.compliance_type} deletion task(s) filed",
        )

    def find_job(self, keys: Keys, *, idempotency_key: str) -> str | None:
        """The newest task per batch with exactly its distinct_ids, or None.

        Returns None unless every batch has one, so a resubmit files the rest.
        """
        batches = self._batches(keys)
        if not batches:
            return None
        return all_filed(self._find(batches, live_only=False), id_field="tracking_id")

    def poll(self, job_id: str, keys: Keys) -> Outcome:
        """Done only when every task is SUCCESS; any bad ending fails it."""
        tracking_ids = [i for i in job_id.split(",") if i]
        if not tracking_ids:
            raise ConnectorError(f"{self.system}: poll was given no tracking id")
        statuses = [self._status(i) for i in tracking_ids]
        ended_badly = [s for s in statuses if s in FAILED_ENDINGS]
        if ended_badly:
            detail = f"deletion task ended {ended_badly[0]}"
            logger.warning("%s: %s", self.system, detail)
            return Outcome(
                status="failed",
                action="none",
                job_id=job_id,
                vendor_status=ended_badly[0],
                detail=detail,
            )
        if any(s != "SUCCESS" for s in statuses):
            return Outcome(
                status="pending",
                action="none",
                job_id=job_id,
                vendor_status=self._least_advanced(statuses),
                detail="Mixpanel commits to deleting within 30 days",
            )
        subjects = sum(len(b) for b in self._batches(keys))
        logger.info("%s: deletion succeeded for %d subject(s)", self.system, subjects)
        return Outcome(
            status="done",
            action="deleted",
            records_affected=subjects,
            job_id=job_id,
            vendor_status="SUCCESS",
            finished_at=datetime.now(UTC),  # when SUCCESS was observed
            detail=(
                "Mixpanel deleted events and profiles; future tracking is "
                "stopped only by the SDK opt-out"
            ),
        )

    def verify(self, keys: Keys) -> Evidence:
        """Every batch has a task Mixpanel reports SUCCESS (not a data re-read)."""
        checked_at = datetime.now(UTC)
        batches = self._batches(keys)
        if not batches:
            return Evidence(
                verified=False, checked_at=checked_at, detail="no keys given"
            )
        found = self._find(batches, live_only=False)
        statuses = [str(f["status"]) if f else "MISSING" for f in found]
        unsettled = [s for s in statuses if s != "SUCCESS"]
        label = unsettled[0] if unsettled else "SUCCESS"
        return Evidence(
            verified=not unsettled,
            observed={"status": label, "tasks": len(batches)},
            checked_at=checked_at,
            detail=(
                f"{len(batches) - len(unsettled)} of {len(batches)} deletion "
                "task(s) SUCCESS as reported by Mixpanel; events cannot be re-read"
            ),
        )

    # -- building and finding tasks ---------------------------------------

    def _batches(self, keys: Keys) -> list[Batch]:
        unknown = [kind for kind in keys if kind != DATASET]
        if unknown:
            raise ConfigError(
                f"{self.system}: Mixpanel erases by distinct_id only; use "
                "distinct_id as the dataset in the estate file"
            )
        ids = tuple(dict.fromkeys(keys.get(DATASET, ())))
        return [
            ids[start : start + MAX_DISTINCT_IDS]
            for start in range(0, len(ids), MAX_DISTINCT_IDS)
        ]

    def _file(self, batch: Batch) -> str:
        body = {"distinct_ids": list(batch), "compliance_type": self.compliance_type}
        data = self._call("POST", DELETIONS, "create deletion task", json=body)
        tracking_id = _created_id(data)
        if tracking_id is None:
            raise ConnectorError(
                f"{self.system}: create deletion task answered without a task id"
            )
        return tracking_id

    def _find(
        self, batches: Sequence[Batch], *, live_only: bool
    ) -> list[dict[str, Any] | None]:
        """For each batch, the newest listed task with exactly its ids.

        ``live_only`` skips tasks that ended badly, so they are filed again.
        """
        found: list[dict[str, Any] | None] = [None] * len(batches)
        wanted = {frozenset(b): i for i, b in enumerate(batches)}
        for task in self._list_tasks():
            if str(task.get("compliance_type", "")).upper() != self.compliance_type:
                continue
            if live_only and task.get("status") in FAILED_ENDINGS:
                continue
            index = wanted.pop(frozenset(task.get("distinct_ids") or ()), None)
            if index is not None:
                found[index] = task
            if not wanted:
                break
        return found

    def _list_tasks(self) -> list[dict[str, Any]]:
        data = self._call("GET", DELETIONS, "list deletion tasks")
        results = data.get("results")
        if not isinstance(results, list):
            raise ConnectorError(
                f"{self.system}: list deletion tasks answered without a task list"
            )
        return [t for t in results if isinstance(t, dict)]

    def _status(self, tracking_id: str) -> str:
        data = self._call("GET", f"{DELETIONS}{tracking_id}/", "get deletion task")
        results = data.get("results")
        status = results.get("status") if isinstance(results, dict) else None
        if not isinstance(status, str):
            raise ConnectorError(
                f"{self.system}: get deletion task answered without a status"
            )
        return status

    @staticmethod
    def _least_advanced(statuses: Sequence[str]) -> str:
        for status in IN_PROGRESS:
            if status in statuses:
                return status
        return next(s for s in statuses if s != "SUCCESS")

    # -- HTTP -------------------------------------------------------------

    def _pace(self) -> None:
        if self._last_call is None:
            return
        wait = self._min_interval - (self._clock() - self._last_call)
        if wait > 0:
            self._sleep(wait)

    def _call(
        self, method: str, path: str, operation: str, **options: Any
    ) -> dict[str, Any]:
        self._pace()
        params = {"token": self._project_token}
        try:
            response = request(
                self._client,
                method,
                path,
                system=self.system,
                operation=operation,
                vendor=VENDOR,
                params=params,
                **options,
            )
        finally:
            self._last_call = self._clock()
        self._raise_for(response, operation)
        return json_object(
            response,
            system=self.system,
            operation=operation,
            vendor=VENDOR,
            hint="check base_url (it ends in /api/app)",
        )

    def _raise_for(self, response: httpx.Response, operation: str) -> None:
        status = response.status_code
        if status < 400:
            return
        what = f"{self.system}: {operation} answered {status}"
        raise_if_transient(
            response,
            what,
            vendor=VENDOR,
            retry_after=retry_after_seconds,
            rate_limited="rate limited (1 request per second per project)",
        )
        if status in (401, 403):
            raise ConfigError(
                f"{what}; check gdpr_token (a GDPR OAuth token, valid for one "
                "year) and project_token (a project that token may manage)"
            )
        if not _has_vendor_error(response):
            raise ConfigError(
                f"{what} with no Mixpanel error body; check base_url "
                "(https://mixpanel.com/api/app or its eu./in. variant)"
            )
        if status == 404:
            raise ConnectorError(
                f"{what}; Mixpanel does not know the deletion task", status=status
            )
        raise ConnectorError(
            f"{what}; Mixpanel refused the request (check the batch size and "
            "compliance_type)",
            status=status,
        )
