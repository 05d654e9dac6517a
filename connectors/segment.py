"""Segment: erasure as SUPPRESS_WITH_DELETE regulations on the Public API.

Segment cannot be asked whether it holds someone: it has no lookup by user.
What it offers is a regulation, a vendor job for up to 5,000 subject ids that
suppresses them at once (new events are dropped at intake) and deletes what
Segment holds, forwarding the deletion to the destinations that support it.
So this connector is asynchronous: ``submit`` files the regulations, ``poll``
reads their status, ``verify`` re-reads the status and the suppression list.

Keys come per identity kind: ``{"userId": [...], "anonymousId": [...]}``.
UserIds go to the workspace (``POST /regulations``); anonymousIds can only be
regulated per source (``POST /regulations/sources/{sourceId}``), so they need
``source_id``. A regulation whose overall status is FINISHED can still carry a
FAILED destination; that is reported as failed, naming the destination, since
a copy is left there.

Segment has no idempotency key on regulations. A job filed by a process that
died before recording its id is found again by ``find_job``, which matches the
workspace's SUPPRESS_WITH_DELETE regulations by their exact subject set.

Every call is paced (by default 10 a second, 10 at once: creating regulations
is limited to 600 a minute; one limiter per system in the process) and its
429s, 5xx and timeouts are retried (``_resilience``). Creating a regulation is
the one call that cannot simply be repeated: a timeout or 5xx may hide a
regulation Segment did file, so before posting again the connector looks for
one with exactly these subjects created since the first attempt; only a 429,
which Segment refused unprocessed, or finding none posts again. Segment may
still be filing a lost request when the list is read; the backoff before the
look narrows that window, and a duplicate would only repeat the same deletion.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connectors._http import json_object, raise_if_transient, request
from connectors._jobs import all_filed, file_missing
from connectors._resilience import (
    Pacer,
    RetryPolicy,
    call_with_retries,
    pacer_for,
    parse_retry_after,
    retry_logger,
)
from connectors.base import Capabilities, Evidence, Keys, Located, Outcome
from lethe.errors import ConfigError, ConnectorError, TransientConnectorError

logger = logging.getLogger(__name__)

__all__ = ["SegmentConnector"]

VENDOR = "Segment"
REGULATION_TYPE = "SUPPRESS_WITH_DELETE"
MAX_SUBJECT_IDS = 5000
LIST_PAGE = 100
SUPPRESSION_PAGE = 1000
SUBJECT_TYPES = {"userId": "USER_ID", "anonymousId": "ANONYMOUS_ID"}
FAILED_ENDINGS = frozenset({"PARTIAL_SUCCESS", "FAILED", "INVALID", "NOT_SUPPORTED"})
IN_PROGRESS = ("INITIALIZED", "RUNNING")
RATE_LIMIT_PER_SECOND = 10.0  # 600 regulation creations a minute
RATE_BURST = 10  # Segment counts per minute, so a second's worth may go at once
_CLOCK_SKEW = timedelta(minutes=2)


@dataclass(frozen=True)
class _Batch:
    """One regulation's worth of subjects: where it is filed and for whom."""

    create_path: str
    list_path: str
    subject_type: str
    ids: tuple[str, ...]


def _has_vendor_errors(response: httpx.Response) -> bool:
    """True when the body is the Public API's ``{"errors": [...]}`` envelope."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("errors"), list)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class SegmentConnector:
    """Segment workspace (and optionally one source) behind the Public API."""

    def __init__(
        self,
        *,
        system: str,
        base_url: str,
        token: str,
        source_id: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        max_attempts: int = 4,
        backoff_cap: float = 30.0,
        rate_limit_per_second: float | None = RATE_LIMIT_PER_SECOND,
        pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.system = system
        self.source_id = source_id
        self.capabilities = Capabilities(
            hard_delete=True,
            asynchronous=True,
            verify_by_read=True,
            batch_cap=MAX_SUBJECT_IDS,
            rate_limit_per_second=rate_limit_per_second,
        )
        self._policy = RetryPolicy(max_attempts=max_attempts, max_delay=backoff_cap)
        self._pacer = pacer or pacer_for(
            f"segment:{system}", rate_limit_per_second, burst=RATE_BURST
        )
        self._sleep = sleep
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.segment.v1+json, application/json",
            },
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    # -- the contract ------------------------------------------------------

    def locate(self, keys: Keys) -> Located:
        """The number of distinct keys given per kind, as an upper bound.

        Segment has no API to look a user up, so this cannot count events; it
        only checks the keys are of a kind this connector can regulate.
        """
        self._batches(keys)
        return Located(
            counts={kind: len(dict.fromkeys(ids)) for kind, ids in keys.items()}
        )

    def submit(self, keys: Keys, *, idempotency_key: str) -> Outcome:
        """File SUPPRESS_WITH_DELETE regulations, ≤5,000 ids each.

        Segment takes no idempotency key, so ``idempotency_key`` is unused
        here; when the keys need several regulations, batches filed by an
        earlier, interrupted attempt are found and not filed again.
        """
        batches = self._batches(keys)
        if not batches:
            return Outcome(
                status="done", action="none", detail="no keys given; nothing filed"
            )
        earlier = self._find(batches) if len(batches) > 1 else [None]
        job_ids = file_missing(batches, earlier, self._file, id_field="id")
        logger.info("%s: %d regulation(s) filed or found", self.system, len(job_ids))
        return Outcome(
            status="pending",
            action="none",
            job_id=",".join(job_ids),
            vendor_status="INITIALIZED",
            detail=f"{len(job_ids)} {REGULATION_TYPE} regulation(s) filed",
        )

    def find_job(self, keys: Keys, *, idempotency_key: str) -> str | None:
        """The regulation(s) already filed for exactly these keys, newest first.

        Returns None unless every batch has one, so a resubmit files the rest.
        """
        batches = self._batches(keys)
        if not batches:
            return None
        return all_filed(self._find(batches), id_field="id")

    def poll(self, job_id: str, keys: Keys) -> Outcome:
        """Done only when every regulation and every destination is FINISHED."""
        regulations = [self._regulation(i) for i in job_id.split(",") if i]
        if not regulations:
            raise ConnectorError(f"{self.system}: poll was given no regulation id")
        statuses = [r.get("overallStatus") for r in regulations]
        failed_destinations = self._destinations_not_finished(regulations)
        ended_badly = [s for s in statuses if s in FAILED_ENDINGS]
        if ended_badly:
            return self._failed(job_id, str(ended_badly[0]), failed_destinations)
        if any(s != "FINISHED" for s in statuses):
            waiting = "INITIALIZED" if "INITIALIZED" in statuses else "RUNNING"
            return Outcome(
                status="pending", action="none", job_id=job_id, vendor_status=waiting
            )
        if failed_destinations:
            return self._failed(job_id, "FINISHED", failed_destinations)
        if self._destinations_in_progress(regulations):
            return Outcome(
                status="pending",
                action="none",
                job_id=job_id,
                vendor_status="FINISHED",
                detail="Segment finished; waiting for destinations",
            )
        return self._done(job_id, keys, regulations)

    def verify(self, keys: Keys) -> Evidence:
        """Re-read: the regulations FINISHED (destinations too) and keys suppressed."""
        checked_at = datetime.now(UTC)
        batches = self._batches(keys)
        if not batches:
            return Evidence(
                verified=False, checked_at=checked_at, detail="no keys given"
            )
        found = self._find(batches)
        label = self._verification_label(found)
        suppressed = self._count_suppressed(batches)
        total = sum(len(b.ids) for b in batches)
        verified = label == "FINISHED" and suppressed == total
        return Evidence(
            verified=verified,
            observed={"regulation": label, "suppressed": suppressed},
            checked_at=checked_at,
            detail=(
                f"{len(batches)} regulation(s) {label}; "
                f"{suppressed} of {total} key(s) suppressed"
            ),
        )

    # -- building and finding regulations ---------------------------------

    def _batches(self, keys: Keys) -> list[_Batch]:
        batches: list[_Batch] = []
        for kind, raw_ids in keys.items():
            subject_type = SUBJECT_TYPES.get(kind)
            if subject_type is None:
                raise ConfigError(
                    f"{self.system}: dataset {kind!r} is not one Segment regulates; "
                    "use userId or anonymousId in the estate file"
                )
            ids = tuple(dict.fromkeys(raw_ids))
            if not ids:
                continue
            paths = self._paths(subject_type)
            for start in range(0, len(ids), MAX_SUBJECT_IDS):
                chunk = ids[start : start + MAX_SUBJECT_IDS]
                batches.append(_Batch(*paths, subject_type, chunk))
        return batches

    def _paths(self, subject_type: str) -> tuple[str, str]:
        if subject_type == "USER_ID":
            return "/regulations", "/regulations"
        if self.source_id is None:
            raise ConfigError(
                f"{self.system}: anonymousIds can only be regulated per source; "
                "set source_id for this system in the estate file"
            )
        path = f"/regulations/sources/{self.source_id}"
        return path, path

    def _file(self, batch: _Batch) -> str:
        """POST the regulation; after an unclear failure, look before posting again.

        A timeout or 5xx does not say whether Segment filed it, so the next
        attempt first looks for a regulation with exactly these subjects filed
        since this call began (allowing for clock skew). Only a 429, refused
        unprocessed, or finding none posts again.
        """
        since = datetime.now(UTC) - _CLOCK_SKEW
        unclear = False

        def attempt() -> str:
            nonlocal unclear
            if unclear and (found := self._filed_since(batch, since)) is not None:
                logger.info("%s: found the regulation a lost create filed", self.system)
                return found
            try:
                return self._create(batch)
            except TransientConnectorError as exc:
                unclear = unclear or exc.status is None or exc.status >= 500
                raise

        return call_with_retries(
            attempt,
            policy=self._policy,
            sleep=self._sleep,
            on_retry=retry_logger(logger, self.system, "create regulation"),
        )

    def _create(self, batch: _Batch) -> str:
        body = {
            "regulationType": REGULATION_TYPE,
            "subjectType": batch.subject_type,
            "subjectIds": list(batch.ids),
        }
        data = self._call(
            "POST", batch.create_path, "create regulation", json=body, retry=False
        )
        regulate_id = data.get("data", {}).get("regulateId")
        if not isinstance(regulate_id, str) or not regulate_id:
            raise ConnectorError(
                f"{self.system}: create regulation answered without a regulateId"
            )
        return regulate_id

    def _filed_since(self, batch: _Batch, since: datetime) -> str | None:
        """The regulation for exactly these subjects created after ``since``."""
        wanted = (batch.subject_type, frozenset(batch.ids))
        for regulation in self._list_regulations(batch.list_path):
            subjects = frozenset(regulation.get("subjects") or [])
            if (str(regulation.get("subjectType")), subjects) != wanted:
                continue
            created = _parse_time(regulation.get("createdAt"))
            if created is not None and created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            if created is not None and created >= since:
                return str(regulation["id"])
        return None

    def _find(self, batches: Sequence[_Batch]) -> list[dict[str, Any] | None]:
        """For each batch, the newest regulation with exactly its subjects."""
        found: list[dict[str, Any] | None] = [None] * len(batches)
        for list_path in dict.fromkeys(b.list_path for b in batches):
            wanted = {
                (b.subject_type, frozenset(b.ids)): i
                for i, b in enumerate(batches)
                if b.list_path == list_path
            }
            for regulation in self._list_regulations(list_path):
                subjects = regulation.get("subjects") or []
                key = (str(regulation.get("subjectType")), frozenset(subjects))
                index = wanted.pop(key, None)
                if index is not None:
                    found[index] = regulation
                if not wanted:
                    break
        return found

    def _list_regulations(self, path: str) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {
            "regulationTypes": REGULATION_TYPE,
            "pagination[count]": LIST_PAGE,
        }
        for data in self._pages(path, "list regulations", params):
            yield from data.get("regulations") or []

    def _pages(
        self, path: str, operation: str, params: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Follow ``pagination.next`` until the last page."""
        cursor: str | None = None
        while True:
            page_params = dict(params)
            if cursor is not None:
                page_params["pagination[cursor]"] = cursor
            data = self._call("GET", path, operation, params=page_params).get(
                "data", {}
            )
            yield data
            following = (data.get("pagination") or {}).get("next")
            if not following or following == cursor:
                return
            cursor = following

    def _regulation(self, regulate_id: str) -> dict[str, Any]:
        data = self._call("GET", f"/regulations/{regulate_id}", "get regulation")
        regulation = data.get("data", {}).get("regulation")
        if not isinstance(regulation, dict):
            raise ConnectorError(
                f"{self.system}: get regulation answered without a regulation"
            )
        return regulation

    # -- reading statuses -------------------------------------------------

    @staticmethod
    def _destination_states(
        regulations: Sequence[dict[str, Any]],
    ) -> Iterator[tuple[str, str]]:
        for regulation in regulations:
            for stream in regulation.get("streamStatus") or []:
                for destination in stream.get("destinationStatus") or []:
                    name = str(destination.get("name") or destination.get("id"))
                    yield name, str(destination.get("status"))

    def _destinations_not_finished(
        self, regulations: Sequence[dict[str, Any]]
    ) -> list[str]:
        names = (
            name
            for name, status in self._destination_states(regulations)
            if status not in IN_PROGRESS and status != "FINISHED"
        )
        return sorted(set(names))

    def _destinations_in_progress(self, regulations: Sequence[dict[str, Any]]) -> bool:
        return any(
            status in IN_PROGRESS for _, status in self._destination_states(regulations)
        )

    def _failed(
        self, job_id: str, vendor_status: str, destinations: list[str]
    ) -> Outcome:
        detail = f"regulation ended {vendor_status}"
        if destinations:
            detail += f"; destination(s) failed: {', '.join(destinations)}"
        logger.warning("%s: %s", self.system, detail)
        return Outcome(
            status="failed",
            action="none",
            job_id=job_id,
            vendor_status=vendor_status,
            detail=detail,
        )

    def _done(
        self, job_id: str, keys: Keys, regulations: Sequence[dict[str, Any]]
    ) -> Outcome:
        finished = [_parse_time(r.get("finishedAt")) for r in regulations]
        times = [t for t in finished if t is not None]
        subjects = sum(len(b.ids) for b in self._batches(keys))
        logger.info(
            "%s: regulation(s) finished for %d subject(s)", self.system, subjects
        )
        return Outcome(
            status="done",
            action="deleted",
            records_affected=subjects,
            job_id=job_id,
            vendor_status="FINISHED",
            finished_at=max(times) if times else None,
            detail=(
                "Segment deleted and suppressed; deletion forwarded to "
                "destinations, device-mode destinations not covered"
            ),
        )

    def _verification_label(self, found: Sequence[dict[str, Any] | None]) -> str:
        """FINISHED only when every regulation and its destinations finished."""
        if any(f is None for f in found):
            return "MISSING"
        statuses = [str(f["status"]) for f in found if f]
        unfinished = [s for s in statuses if s != "FINISHED"]
        if unfinished:
            return unfinished[0]
        details = [self._regulation(f["id"]) for f in found if f]
        if self._destinations_not_finished(details):
            return "DESTINATION_FAILED"
        if self._destinations_in_progress(details):
            return "DESTINATIONS_RUNNING"
        return "FINISHED"

    def _count_suppressed(self, batches: Sequence[_Batch]) -> int:
        wanted = {(b.subject_type, i) for b in batches for i in b.ids}
        seen: set[tuple[str, str]] = set()
        params: dict[str, Any] = {"pagination[count]": SUPPRESSION_PAGE}
        for data in self._pages("/suppressions", "list suppressions", params):
            for entry in data.get("suppressed") or []:
                subject_type = entry.get("subjectType")
                for subject_id in entry.get("subjectIds") or []:
                    if (subject_type, subject_id) in wanted:
                        seen.add((subject_type, subject_id))
        return len(seen)

    # -- HTTP -------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        retry: bool = True,
        **options: Any,
    ) -> dict[str, Any]:
        """One call, paced; 429, 5xx and timeouts retried unless ``retry`` is off."""
        response = call_with_retries(
            lambda: self._attempt(method, path, operation, **options),
            policy=self._policy if retry else RetryPolicy(max_attempts=1),
            pacer=self._pacer,
            sleep=self._sleep,
            on_retry=retry_logger(logger, self.system, operation),
        )
        self._raise_for(response, path, operation)
        return json_object(
            response, system=self.system, operation=operation, vendor=VENDOR
        )

    def _attempt(
        self, method: str, path: str, operation: str, **options: Any
    ) -> httpx.Response:
        response = request(
            self._client,
            method,
            path,
            system=self.system,
            operation=operation,
            vendor=VENDOR,
            **options,
        )
        raise_if_transient(
            response,
            f"{self.system}: {operation} answered {response.status_code}",
            vendor=VENDOR,
            retry_after=parse_retry_after,
        )
        return response

    def _raise_for(self, response: httpx.Response, path: str, operation: str) -> None:
        """Errors for the answers that retrying cannot help (4xx)."""
        status = response.status_code
        if status < 400:
            return
        what = f"{self.system}: {operation} answered {status}"
        if status in (401, 403):
            raise ConfigError(
                f"{what}; check the token setting (a Public API token allowed "
                "to manage deletion and suppression)"
            )
        if status == 404 and not _has_vendor_errors(response):
            raise ConfigError(f"{what} with no Segment error body; check base_url")
        if status == 404 and path.startswith("/regulations/sources/"):
            raise ConfigError(f"{what}; check the source_id setting")
        if status == 404:
            raise ConnectorError(
                f"{what}; Segment does not know the regulation", status=status
            )
        raise ConnectorError(
            f"{what}; Segment refused the request (check the keys' kind and "
            "the batch size)",
            status=status,
        )
