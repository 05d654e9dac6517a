"""Bulk API 2.0 ``hardDelete`` jobs, as the Salesforce connector files and reads
them (vendor-apis.md §1.3): create, upload the ``Id`` CSV, close, read state
and ``failedResults``, abort.

Creating a job is the one call that cannot simply be repeated: a timeout or
5xx may hide a job the org did create, so before posting again ``create``
adopts an Open hardDelete job on the same object created since the first
attempt (the job listing); only a 429, which the org refused unprocessed, or
finding none posts again. The org may still be creating a lost job when the
listing is read; the backoff before the look narrows that window, and an
empty Open job left behind holds no data.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors._salesforce_http import OrgSession, answer_was_busy
from lethe.errors import ConnectorError, LetheError, TransientConnectorError

logger = logging.getLogger(__name__)

RUNNING = frozenset({"UploadComplete", "InProgress"})
NOT_FINAL = RUNNING | {"Open"}
_CLOSED = RUNNING | {"JobComplete"}
_CLOCK_SKEW = timedelta(minutes=2)
_JOB_ID = re.compile(r"^750[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?$")


def vendor_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return None


def _created_since(info: dict[str, Any], since: datetime) -> bool:
    created = vendor_time(info.get("createdDate"))
    return created is not None and created >= since


class BulkJobs:
    """The org's Bulk API 2.0 ingest jobs, reached through one ``OrgSession``."""

    def __init__(self, org: OrgSession) -> None:
        self._org = org
        self.system = org.system

    def _url(self, job_id: str = "") -> str:
        return f"{self._org.data_path}/jobs/ingest" + (f"/{job_id}" if job_id else "")

    def file(self, sobject: str, ids: Sequence[str], attempt: str) -> str:
        """Create, fill and close a hardDelete job; abort it if a step fails."""
        spec = {
            "object": sobject,
            "operation": "hardDelete",
            "contentType": "CSV",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        info = self._create(sobject, spec)
        job_id = info.get("id") if isinstance(info, dict) else None
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
            raise ConnectorError(
                f"{self.system}: Salesforce Bulk job create answered without a job id"
            )
        upload = "Id\n" + "".join(f"{value}\n" for value in ids)
        try:
            self._org.send(
                "PUT",
                self._url(job_id) + "/batches",
                "Bulk job upload",
                content=upload.encode(),
                headers={"Content-Type": "text/csv"},
            )
            self._close(job_id)
        except LetheError:
            self.abort_quietly(job_id)
            raise
        logger.info(
            "%s: filed Bulk hardDelete job %s on %s for %d records (attempt %s)",
            self.system,
            job_id,
            sobject,
            len(ids),
            attempt,
        )
        return job_id

    def _close(self, job_id: str) -> None:
        """Mark the upload complete; a refusal from a job already closed is fine.

        A close whose answer was lost and then retried is refused (the job has
        moved on), so the job's own state decides.
        """
        close = {"state": "UploadComplete"}
        try:
            self._org.send("PATCH", self._url(job_id), "Bulk job close", json=close)
        except ConnectorError as exc:
            if exc.status != 400 or self.info(job_id)["state"] not in _CLOSED:
                raise

    def _create(self, sobject: str, spec: dict[str, str]) -> Any:
        """POST the job; after an unclear failure, look for it before posting again.

        A timeout or 5xx does not say whether the org created the job, so the
        next attempt first adopts an Open hardDelete job on the object created
        since this call began (allowing for clock skew). Only finding none, or
        a 429 (refused unprocessed), posts again.
        """
        since = datetime.now(UTC) - _CLOCK_SKEW
        unclear = False

        def attempt() -> Any:
            nonlocal unclear
            if unclear and (orphan := self._open_job(sobject, since)) is not None:
                logger.info(
                    "%s: adopting the Bulk job a lost create filed", self.system
                )
                return orphan
            try:
                url, operation = self._url(), "Bulk job create"
                return self._org.json("POST", url, operation, json=spec, retry=False)
            except TransientConnectorError as exc:
                unclear = unclear or exc.status is None or exc.status >= 500
                raise

        return self._org.retried(attempt, "Bulk job create", retry_if=answer_was_busy)

    def _open_job(self, sobject: str, since: datetime) -> dict[str, Any] | None:
        """The newest Open hardDelete job on ``sobject`` created after ``since``."""
        found = [
            info
            for info in self.listing()
            if info.get("operation") == "hardDelete"
            and info.get("object") == sobject
            and info.get("state") == "Open"
            and _created_since(info, since)
        ]
        if not found:
            return None
        return max(found, key=lambda info: str(info.get("createdDate", "")))

    def listing(self) -> Iterator[dict[str, Any]]:
        """Every ingest job the org lists, page by page."""
        url: str | None = self._url()
        params: dict[str, str] | None = {"jobType": "V2Ingest"}
        while url is not None:
            body = self._org.json("GET", url, "Bulk job list", params=params)
            yield from body.get("records") or []
            url, params = self._org.next_page(body, "Bulk job list"), None

    def abort_quietly(self, job_id: str) -> None:
        try:
            self._org.send(
                "PATCH", self._url(job_id), "Bulk job abort", json={"state": "Aborted"}
            )
        except LetheError:
            logger.warning("%s: could not abort Bulk job %s", self.system, job_id)

    def info(self, job_id: str) -> dict[str, Any]:
        """The job's info; a job the org no longer knows is an error saying so."""
        try:
            info = self._org.json("GET", self._url(job_id), "Bulk job status")
        except ConnectorError as exc:
            if exc.status != 404:
                raise
            raise ConnectorError(
                f"{self.system}: Salesforce no longer knows a Bulk job this request "
                "filed (jobs are deleted 7 days after they end); run verify",
                status=404,
            ) from None
        if not isinstance(info, dict) or not isinstance(info.get("state"), str):
            raise ConnectorError(
                f"{self.system}: Salesforce Bulk job status answered without a state"
            )
        return info

    def failed_rows(self, job_id: str) -> int:
        response = self._org.send(
            "GET", self._url(job_id) + "/failedResults/", "Bulk job results"
        )
        rows = list(csv.reader(io.StringIO(response.text)))
        return sum(1 for row in rows[1:] if row)
