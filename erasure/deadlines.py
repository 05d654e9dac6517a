"""Legal response deadlines, counted from the UTC date of receipt.

- GDPR Art. 12(3): one month from receipt — the same date in the next month, or
  that month's last day when it has no such date (Reg. 1182/71 Art. 3).
- CCPA §1798.130(a)(2)(A) and 11 CCR §7021(b): 45 calendar days from receipt.

Weekends, public holidays, local time zones, extensions and pauses are not
applied yet (README, Limits).
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta

from lethe.errors import InputError

REGULATIONS = ("gdpr", "ccpa")


def add_one_month(day: date) -> date:
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(day.day, last))


def deadline_for(regulation: str, received_at: datetime) -> date:
    received = received_at.date()
    if regulation == "gdpr":
        return add_one_month(received)
    if regulation == "ccpa":
        return received + timedelta(days=45)
    raise InputError(
        f"unknown regulation {regulation!r}: use one of {', '.join(REGULATIONS)}"
    )
