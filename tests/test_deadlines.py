from datetime import UTC, date, datetime

import pytest

from erasure.deadlines import deadline_for
from lethe.errors import InputError


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        ("2026-01-15T10:00:00", date(2026, 2, 15)),
        ("2026-01-31T10:00:00", date(2026, 2, 28)),
        ("2028-01-31T10:00:00", date(2028, 2, 29)),  # leap year
        ("2026-12-20T23:00:00", date(2027, 1, 20)),
        ("2026-03-31T00:00:00", date(2026, 4, 30)),
    ],
)
def test_gdpr_deadline_is_one_calendar_month(received: str, expected: date) -> None:
    at = datetime.fromisoformat(received).replace(tzinfo=UTC)
    assert deadline_for("gdpr", at) == expected


def test_ccpa_deadline_is_45_days() -> None:
    at = datetime(2026, 12, 3, 9, tzinfo=UTC)
    assert deadline_for("ccpa", at) == date(2027, 1, 17)


def test_unknown_regulation_names_the_choices() -> None:
    with pytest.raises(InputError, match="gdpr, ccpa"):
        deadline_for("lgpd", datetime.now(UTC))
