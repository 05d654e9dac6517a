from datetime import UTC, datetime

import pytest

from connectors._retention import Retention
from lethe.errors import ConfigError

DELETED = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)


def _retention(**options: object) -> Retention:
    settings = {
        "platform": None,
        "time_travel_days": None,
        "fail_safe_days": None,
        "backup_retention_days": None,
    } | options
    return Retention.configured("wh", **settings)  # type: ignore[arg-type]


def test_snowflake_dates_default_to_one_day_travel_and_seven_fail_safe() -> None:
    dates = _retention(platform="snowflake").dates(DELETED, bytes_gone=False)
    assert dates["time_travel_until"] == "2026-12-04"
    assert dates["fail_safe_until"] == "2026-12-11"
    assert dates["physically_purged_by"] == "2026-12-11"


def test_bigquery_dates_from_configuration() -> None:
    dates = _retention(platform="bigquery", time_travel_days=2).dates(
        DELETED, bytes_gone=False
    )
    assert (dates["time_travel_until"], dates["fail_safe_until"]) == (
        "2026-12-05",
        "2026-12-12",
    )


def test_postgres_without_known_backups_claims_no_physical_purge() -> None:
    dates = _retention().dates(DELETED, bytes_gone=False)
    assert "physically_purged_by" not in dates and dates["deleted_at"]


def test_sqlite_secure_delete_with_backups_purged_when_backups_expire() -> None:
    dates = _retention(backup_retention_days=35).dates(DELETED, bytes_gone=True)
    assert dates["backups_expire_by"] == dates["physically_purged_by"] == "2027-01-07"


@pytest.mark.parametrize("bad", [{"platform": "oracle"}, {"time_travel_days": -1}])
def test_bad_retention_settings_are_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError):
        _retention(**bad)
