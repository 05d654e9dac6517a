"""Amplitude: erasure as deletion jobs on the User Privacy API (v1).

Amplitude deletes a user by adding them to a project's *deletion job*, which
runs on a scheduled day: ``staging`` (ids can still be taken out of it),
``submitted`` (locked), then the data is scrubbed on ``active_scrub_done_date``
and the job turns ``done`` five days later, when backups are cleared. A job
belongs to one project and is read with that project's own API key, so this
connector holds the keys of every project the estate sends data to.

Scope is the trap (failure case B07): a subject tracked in two projects needs a
job in each, and a job that reaches ``done`` may no longer hold the subject,
because someone removed them while it was staging. So ``submit`` files in every
project (unknown ids are ignored, so a project without the subject gets no
job), and ``poll`` re-reads each job's membership and searches each project for
the subject before it accepts ``done``: a subject still found in a project and
not in its job fails the step.

Keys are ``{"user_id": [...]}``. The job id is the list of ``project:day``
pairs filed, e.g. ``"web:2026-12-06,app:2026-12-06"``. Each request is tagged
in the ``requester`` field (Amplitude's audit field) with a keyed digest of its
user ids, so ``find_job`` and ``verify`` recognise its jobs after the users
themselves are gone; the digest is keyed with a project secret and reveals no
id.

Amplitude allows 1 request a second on the deletions endpoint, per project;
the connector keeps to ``rate_limit_per_second`` itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from connectors._http import raise_if_transient, request
from connectors._resilience import retry_after_seconds
from connectors.base import Capabilities, Evidence, Keys, Located, Outcome
from lethe.errors import ConfigError, ConnectorError

logger = logging.getLogger(__name__)

__all__ = ["AmplitudeConnector"]

VENDOR = "Amplitude"
KEY_KIND = "user_id"
MAX_IDS = 100
DELETIONS = "/api/2/deletions/users"
USER_SEARCH = "/api/2/usersearch"
# A window of 180 days, inside the six months the job list allows.
LOOKBACK_DAYS = 150
LOOKAHEAD_DAYS = 30
PROGRESS = {"staging": 0, "submitted": 1, "done": 2}


@dataclass(frozen=True)
class _Project:
    name: str
    auth: httpx.BasicAuth


def _chunks(ids: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def _least_advanced(jobs: Iterable[Mapping[str, Any]]) -> str:
    statuses = [str(j.get("status")) for j in jobs]
    return min(statuses, key=lambda s: PROGRESS.get(s, -1), default="missing")


def _scrub_dates(jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted(
        str(j["active_scrub_done_date"])
        for j in jobs
        if j.get("active_scrub_done_date")
    )


def _member_ids(jobs: Iterable[Mapping[str, Any]]) -> set[int]:
    return {
        int(e["amplitude_id"])
        for j in jobs
        for e in j.get("amplitude_ids") or []
        if isinstance(e, dict) and isinstance(e.get("amplitude_id"), int)
    }


class AmplitudeConnector:
    """The Amplitude projects of one organisation behind the User Privacy API."""

    def __init__(
        self,
        *,
        system: str,
        base_url: str,
        projects: Mapping[str, Mapping[str, str]],
        requester: str = "lethe",
        delete_from_org: bool = False,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        rate_limit_per_second: float | None = 1.0,
    ) -> None:
        self.system = system
        self.requester = requester
        self.delete_from_org = delete_from_org
        self._projects = self._read_projects(projects)
        self._ref_key = str(next(iter(projects.values()))["secret_key"]).encode()
        self.capabilities = Capabilities(
            hard_delete=True,
            asynchronous=True,
            verify_by_read=True,
            batch_cap=MAX_IDS,
            rate_limit_per_second=rate_limit_per_second,
        )
        self._interval = 1.0 / rate_limit_per_second if rate_limit_per_second else 0
        self._last_call: dict[str, float] = {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def _read_projects(
        self, projects: Mapping[str, Mapping[str, str]]
    ) -> list[_Project]:
        if not projects:
            raise ConfigError(f"{self.system}: set at least one project and its keys")
        result = []
        for name, keys in projects.items():
            api_key, secret = keys.get("api_key"), keys.get("secret_key")
            if not api_key or not secret:
                raise ConfigError(
                    f"{self.system}: project {name!r} needs api_key and secret_key"
                )
            if "," in name:
                raise ConfigError(f"{self.system}: a project name may not hold ','")
            result.append(_Project(name, httpx.BasicAuth(api_key, secret)))
        return result

    def close(self) -> None:
        self._client.close()

    # -- the contract ------------------------------------------------------

    def locate(self, keys: Keys) -> Located:
        """Amplitude users found per project (every project is searched)."""
        user_ids = self._user_ids(keys)
        return Located(
            counts={p.name: len(self._present(p, user_ids)) for p in self._projects}
        )

    def submit(self, keys: Keys, *, idempotency_key: str) -> Outcome:
        """File the users in every project's deletion job, ≤100 ids a request.

        Re-filing the same users joins the job they are already in while it
        is staging, so a retry does not double the work; ``idempotency_key``
        has no counterpart in Amplitude's API and is unused.
        """
        user_ids = self._user_ids(keys)
        if not user_ids:
            return Outcome(
                status="done", action="none", detail="no keys given; nothing filed"
            )
        ref = self._ref(user_ids)
        unseen = 0
        if self.delete_from_org:
            filed, unseen = self._file_org(user_ids, ref)
        else:
            filed = self._file_each_project(user_ids, ref)
        if not filed:
            logger.info("%s: no project holds the subject(s)", self.system)
            return Outcome(
                status="done",
                action="already_absent",
                detail="no Amplitude project holds these user ids; nothing filed",
            )
        jobs = sum(len(days) for days in filed.values())
        detail = f"{jobs} deletion job(s) in {len(filed)} project(s)"
        if unseen:
            detail += f"; {unseen} more in projects without keys here, not polled"
        logger.info(
            "%s: deletion filed in %d job(s) over %d project(s)",
            self.system,
            jobs,
            len(filed),
        )
        return Outcome(
            status="pending",
            action="none",
            job_id=self._job_id(filed),
            vendor_status="staging",
            detail=detail,
        )

    def find_job(self, keys: Keys, *, idempotency_key: str) -> str | None:
        """The jobs an earlier submit of these keys filed, if they cover everyone.

        Returns None when a project still holds a user outside those jobs, so
        the caller submits again (which joins the open job, not a second one).
        """
        user_ids = self._user_ids(keys)
        if not user_ids:
            return None
        ref = self._ref(user_ids)
        start, end = self._window()
        found: dict[str, set[str]] = {}
        for project in self._projects:
            ours = self._tagged(self._jobs(project, start, end), ref)
            if self._present(project, user_ids) - _member_ids(ours):
                return None
            if ours:
                found[project.name] = {str(j["day"]) for j in ours}
        return self._job_id(found) if found else None

    def poll(self, job_id: str, keys: Keys) -> Outcome:
        """Done only when every job is ``done`` and no project still holds a user."""
        wanted = self._parse_job_id(job_id)
        user_ids = self._user_ids(keys)
        seen: list[Mapping[str, Any]] = []
        problems: list[str] = []
        for project in self._projects:
            jobs, problem = self._check_project(
                project, wanted.get(project.name, set()), user_ids
            )
            seen.extend(jobs)
            problems.extend(problem)
        status = _least_advanced(seen)
        if problems:
            return self._failed(job_id, status, problems)
        if status != "done":
            return self._pending(job_id, status, seen)
        return self._done(job_id, user_ids, seen)

    def verify(self, keys: Keys) -> Evidence:
        """Re-read: no project finds the users, and their jobs are ``done``."""
        checked_at = datetime.now(UTC)
        user_ids = self._user_ids(keys)
        if not user_ids:
            return Evidence(
                verified=False, checked_at=checked_at, detail="no keys given"
            )
        ref = self._ref(user_ids)
        start, end = self._window()
        found, jobs, projects = 0, [], 0
        for project in self._projects:
            found += len(self._present(project, user_ids))
            ours = self._tagged(self._jobs(project, start, end), ref)
            projects += bool(ours)
            jobs.extend(ours)
        status = _least_advanced(jobs) if jobs else "absent"
        scrubs = _scrub_dates(jobs)
        observed = {
            "status": status,
            "active_scrub_done_date": scrubs[-1] if scrubs else None,
            "projects": projects,
            "found": found,
        }
        return Evidence(
            verified=found == 0 and status in ("done", "absent"),
            observed=observed,
            checked_at=checked_at,
            detail=(
                f"{len(jobs)} deletion job(s) {status} in {projects} project(s); "
                f"{found} user(s) still found"
            ),
        )

    # -- filing ------------------------------------------------------------

    def _file_each_project(self, user_ids: list[str], ref: str) -> dict[str, set[str]]:
        filed: dict[str, set[str]] = {}
        for project in self._projects:
            for chunk in _chunks(user_ids, MAX_IDS):
                for job in self._post(project, chunk, ref, org=False):
                    if job.get("amplitude_ids"):
                        filed.setdefault(project.name, set()).add(str(job["day"]))
        return filed

    def _file_org(
        self, user_ids: list[str], ref: str
    ) -> tuple[dict[str, set[str]], int]:
        """One org-wide request per batch, then find each project's job by key.

        Also returns how many of the org's jobs are in projects this connector
        has no keys for (they cannot be read, so they cannot be polled).
        """
        answers = [
            job
            for chunk in _chunks(user_ids, MAX_IDS)
            for job in self._post(self._projects[0], chunk, ref, org=True)
            if job.get("amplitude_ids")
        ]
        if not answers:
            return {}, 0
        days = sorted(str(j["day"]) for j in answers)
        filed_ids = _member_ids(answers)
        start, end = date.fromisoformat(days[0]), date.fromisoformat(days[-1])
        filed: dict[str, set[str]] = {}
        for project in self._projects:
            for job in self._jobs(project, start, end):
                if self._tagged([job], ref) or _member_ids([job]) & filed_ids:
                    filed.setdefault(project.name, set()).add(str(job["day"]))
        org_jobs = {(a.get("app"), str(a["day"])) for a in answers}
        unseen = len(org_jobs) - sum(len(d) for d in filed.values())
        if unseen > 0:
            logger.warning(
                "%s: %d org-wide job(s) are in projects without keys here; "
                "they cannot be polled",
                self.system,
                unseen,
            )
        return filed, max(0, unseen)

    def _post(
        self, project: _Project, chunk: list[str], ref: str, *, org: bool
    ) -> list[dict[str, Any]]:
        body = {
            "user_ids": chunk,
            "amplitude_ids": [],
            "requester": f"{self.requester} ref:{ref}",
            "ignore_invalid_ids": True,
            "delete_from_org": org,
            "include_mapped_user_ids": False,
        }
        answer = self._call(
            project, "POST", DELETIONS, "request deletion", json=body, paced=True
        )
        jobs = answer if isinstance(answer, list) else [answer]
        if not all(isinstance(j, dict) and j.get("day") for j in jobs):
            raise ConnectorError(
                f"{self.system}: request deletion answered without a job day"
            )
        return jobs

    # -- reading jobs and users --------------------------------------------

    def _check_project(
        self, project: _Project, days: set[str], user_ids: list[str]
    ) -> tuple[list[Mapping[str, Any]], list[str]]:
        """This project's jobs named by the job id, and what is wrong with them."""
        present = self._present(project, user_ids)
        if not days:
            if present:
                return [], [
                    f"project {project.name} holds {len(present)} user(s) "
                    "but has no deletion job"
                ]
            return [], []
        listed = {
            str(j.get("day")): j
            for j in self._jobs(
                project, date.fromisoformat(min(days)), date.fromisoformat(max(days))
            )
        }
        problems = [
            f"project {project.name}: the job of {day} is not listed"
            for day in sorted(days - listed.keys())
        ]
        jobs: list[Mapping[str, Any]] = [
            listed[day] for day in sorted(days) if day in listed
        ]
        outside = present - _member_ids(jobs)
        if outside:
            problems.append(
                f"project {project.name}: {len(outside)} user(s) not in its deletion "
                "job (removed while staging, or tracked again)"
            )
        return jobs, problems

    def _jobs(self, project: _Project, start: date, end: date) -> list[dict[str, Any]]:
        params = {"start_day": start.isoformat(), "end_day": end.isoformat()}
        answer = self._call(
            project, "GET", DELETIONS, "list deletion jobs", params=params, paced=True
        )
        if not isinstance(answer, list):
            raise ConnectorError(
                f"{self.system}: list deletion jobs answered without a list"
            )
        return [j for j in answer if isinstance(j, dict)]

    def _present(self, project: _Project, user_ids: Iterable[str]) -> set[int]:
        """Amplitude IDs of the users User Search still finds in the project."""
        found: set[int] = set()
        for user_id in user_ids:
            answer = self._call(
                project, "GET", USER_SEARCH, "search user", params={"user": user_id}
            )
            matches = answer.get("matches") if isinstance(answer, dict) else None
            if not isinstance(matches, list):
                raise ConnectorError(
                    f"{self.system}: search user answered without matches"
                )
            found.update(
                int(m["amplitude_id"])
                for m in matches
                if isinstance(m, dict) and m.get("user_id") == user_id
            )
        return found

    def _tagged(self, jobs: Iterable[dict[str, Any]], ref: str) -> list[dict[str, Any]]:
        """The jobs holding at least one entry this request filed."""
        return [j for j in jobs if self._entries_filed([j], ref)]

    @staticmethod
    def _entries_filed(jobs: Iterable[Mapping[str, Any]], ref: str) -> int:
        """How many job entries this request filed (the users it put in jobs)."""
        mark = f"ref:{ref}"
        return sum(
            1
            for j in jobs
            for e in j.get("amplitude_ids") or []
            if isinstance(e, dict) and str(e.get("requester") or "").endswith(mark)
        )

    # -- outcomes ----------------------------------------------------------

    def _failed(self, job_id: str, status: str, problems: list[str]) -> Outcome:
        detail = "; ".join(problems)
        logger.warning("%s: deletion step failed: %s", self.system, detail)
        return Outcome(
            status="failed",
            action="none",
            job_id=job_id,
            vendor_status=status,
            detail=detail,
        )

    @staticmethod
    def _pending(job_id: str, status: str, jobs: list[Mapping[str, Any]]) -> Outcome:
        days = sorted(str(j.get("day")) for j in jobs)
        scrubs = _scrub_dates(jobs)
        detail = f"{len(jobs)} job(s), least advanced {status}; run day {days[0]}"
        if scrubs:
            detail += f"; scrubbed by {scrubs[-1]}, backups not yet cleared"
        return Outcome(
            status="pending",
            action="none",
            job_id=job_id,
            vendor_status=status,
            detail=detail,
        )

    def _done(
        self, job_id: str, user_ids: list[str], jobs: list[Mapping[str, Any]]
    ) -> Outcome:
        scrubs = _scrub_dates(jobs)
        scrubbed = scrubs[-1] if scrubs else None
        finished_at = (
            datetime.combine(date.fromisoformat(scrubbed), datetime.min.time(), UTC)
            if scrubbed
            else None
        )
        logger.info("%s: %d deletion job(s) done", self.system, len(jobs))
        return Outcome(
            status="done",
            action="deleted",
            records_affected=self._entries_filed(jobs, self._ref(user_ids)),
            job_id=job_id,
            vendor_status="done",
            finished_at=finished_at,
            dates={"active_scrub_done": scrubbed} if scrubbed else {},
            detail=(
                f"scrubbed by {scrubbed}; backups cleared (done) in "
                f"{len(jobs)} job(s); new events would create a new user"
            ),
        )

    # -- keys, ids and HTTP ------------------------------------------------

    def _user_ids(self, keys: Keys) -> list[str]:
        unknown = [kind for kind in keys if kind != KEY_KIND]
        if unknown:
            raise ConfigError(
                f"{self.system}: Amplitude deletes by {KEY_KIND!r} only; "
                "fix the dataset names in the estate file"
            )
        return list(dict.fromkeys(str(i) for i in keys.get(KEY_KIND, ()) if i))

    def _ref(self, user_ids: Iterable[str]) -> str:
        message = "\n".join(sorted(set(user_ids))).encode()
        return hmac.new(self._ref_key, message, hashlib.sha256).hexdigest()[:16]

    @staticmethod
    def _window() -> tuple[date, date]:
        today = datetime.now(UTC).date()
        return (
            today - timedelta(days=LOOKBACK_DAYS),
            today + timedelta(days=LOOKAHEAD_DAYS),
        )

    @staticmethod
    def _job_id(filed: Mapping[str, set[str]]) -> str:
        return ",".join(
            f"{name}:{day}" for name, days in filed.items() for day in sorted(days)
        )

    def _parse_job_id(self, job_id: str) -> dict[str, set[str]]:
        names = {p.name for p in self._projects}
        wanted: dict[str, set[str]] = {}
        for part in filter(None, job_id.split(",")):
            name, _, day = part.rpartition(":")
            try:
                date.fromisoformat(day)
            except ValueError:
                raise ConnectorError(
                    f"{self.system}: the job id is not a list of project:day pairs"
                ) from None
            if name not in names:
                raise ConfigError(
                    f"{self.system}: the job id names a project with no keys here; "
                    "check the projects setting"
                )
            wanted.setdefault(name, set()).add(day)
        if not wanted:
            raise ConnectorError(f"{self.system}: poll was given an empty job id")
        return wanted

    def _pace(self, project: _Project) -> None:
        """Keep to the deletions endpoint's documented rate, per project."""
        if not self._interval:
            return
        last = self._last_call.get(project.name)
        if last is not None:
            wait = last + self._interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._last_call[project.name] = time.monotonic()

    def _call(
        self,
        project: _Project,
        method: str,
        path: str,
        operation: str,
        *,
        paced: bool = False,
        **options: Any,
    ) -> Any:
        if paced:
            self._pace(project)
        response = request(
            self._client,
            method,
            path,
            system=self.system,
            operation=operation,
            vendor=VENDOR,
            auth=project.auth,
            **options,
        )
        self._raise_for(response, project, operation)
        try:
            return response.json()
        except ValueError:
            raise ConfigError(
                f"{self.system}: {operation} answered {response.status_code} "
                "without Amplitude's JSON; check base_url"
            ) from None

    def _raise_for(
        self, response: httpx.Response, project: _Project, operation: str
    ) -> None:
        status = response.status_code
        if status < 400:
            return
        what = f"{self.system}: {operation} answered {status}"
        raise_if_transient(
            response, what, vendor=VENDOR, retry_after=retry_after_seconds
        )
        if status in (401, 403):
            raise ConfigError(
                f"{what}; check api_key and secret_key of project {project.name!r}"
            )
        if status == 404:
            raise ConfigError(f"{what}; no such Amplitude endpoint, check base_url")
        raise ConnectorError(
            f"{what}; Amplitude refused the request (check the ids and batch size)",
            status=status,
        )
