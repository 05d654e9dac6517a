"""When deleted bytes are really gone: the dates an auditor needs.

A warehouse delete removes rows from the current state; copies survive in
time travel, fail-safe and backups for a while (vendor-apis.md §4). Those
windows are configuration, since lethe cannot read them from every engine:

- Snowflake: time travel = the table's DATA_RETENTION_TIME_IN_DAYS (default 1),
  then 7 days of fail-safe for permanent tables.
- BigQuery: time travel = ``max_time_travel_hours`` (default 7 days), then 7
  days of fail-safe.
- PostgreSQL / SQLite: no time travel; backups and PITR archives keep copies
  for ``backup_retention_days``, when configured.

``physically_purged_by`` is the last of those dates, and is given only when the
delete itself left no bytes behind (SQLite secure_delete) or when every
window is known; otherwise the certificate says what is known and no more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from lethe.errors import ConfigError

DEFAULT_TIME_TRAVEL_DAYS = {"snowflake": 1.0, "bigquery": 7.0}
DEFAULT_FAIL_SAFE_DAYS = {"snowflake": 7.0, "bigquery": 7.0}


@dataclass(frozen=True)
class Retention:
    platform: str | None = None
    time_travel_days: float | None = None
    fail_safe_days: float | None = None
    backup_retention_days: float | None = None

    @classmethod
    def configured(
        cls,
        system: str,
        *,
        platform: str | None,
        time_travel_days: float | None,
        fail_safe_days: float | None,
        backup_retention_days: float | None,
    ) -> Retention:
        if platform not in (None, "snowflake", "bigquery"):
            raise ConfigError(
                f"{system}: platform must be snowflake or bigquery (or unset for "
                "the database the url names)"
            )
        for name, value in (
            ("time_travel_days", time_travel_days),
            ("fail_safe_days", fail_safe_days),
            ("backup_retention_days", backup_retention_days),
        ):
            if value is not None and value < 0:
                raise ConfigError(f"{system}: {name} must be >= 0")
        return cls(
            platform=platform,
            time_travel_days=time_travel_days
            if time_travel_days is not None
            else DEFAULT_TIME_TRAVEL_DAYS.get(platform or ""),
            fail_safe_days=fail_safe_days
            if fail_safe_days is not None
            else DEFAULT_FAIL_SAFE_DAYS.get(platform or ""),
            backup_retention_days=backup_retention_days,
        )

    def dates(self, deleted_at: datetime, *, bytes_gone: bool) -> dict[str, str]:
        """The dates to certify for a delete committed at ``deleted_at``."""
        day = deleted_at.date()
        dates = {"deleted_at": deleted_at.isoformat(timespec="seconds")}
        ends = []
        if self.time_travel_days is not None:
            until = day + timedelta(days=self.time_travel_days)
            dates["time_travel_until"] = until.isoformat()
            ends.append(until)
            if self.fail_safe_days is not None:
                fail_safe = until + timedelta(days=self.fail_safe_days)
                dates["fail_safe_until"] = fail_safe.isoformat()
                ends.append(fail_safe)
        if self.backup_retention_days is not None:
            backups = day + timedelta(days=self.backup_retention_days)
            dates["backups_expire_by"] = backups.isoformat()
            ends.append(backups)
        if self.platform is not None or bytes_gone:
            dates["physically_purged_by"] = max([day, *ends]).isoformat()
        return dates
