"""Jurisdictions for the legal clocks: local time zone and working-day calendar.

A jurisdiction is an ISO 3166 code (``DE``, ``US-CA``). Its time zone decides
the local date of receipt; its public holidays (the ``holidays`` library, pinned
by version in each clock's record) and weekends decide which days are working
days (erasure/clocks.py cites the rules that count them).
"""

from __future__ import annotations

import functools
import importlib.metadata
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from lethe.errors import InputError

# Jurisdiction -> IANA time zone. A subdivision uses its own entry, else its
# country's, except where a country's subdivisions span several zones: those
# need an explicit ``timezone=`` unless listed here.
TIME_ZONES: Mapping[str, str] = MappingProxyType(
    {
        "AT": "Europe/Vienna",
        "BE": "Europe/Brussels",
        "DE": "Europe/Berlin",
        "DK": "Europe/Copenhagen",
        "ES": "Europe/Madrid",
        "ES-CN": "Atlantic/Canary",
        "FI": "Europe/Helsinki",
        "FR": "Europe/Paris",
        "FR-57": "Europe/Paris",
        "FR-6AE": "Europe/Paris",
        "GB": "Europe/London",
        "IE": "Europe/Dublin",
        "IT": "Europe/Rome",
        "NL": "Europe/Amsterdam",
        "PL": "Europe/Warsaw",
        "PT": "Europe/Lisbon",
        "PT-20": "Atlantic/Azores",
        "PT-30": "Atlantic/Madeira",
        "SE": "Europe/Stockholm",
        "US": "America/New_York",
        "US-CA": "America/Los_Angeles",
        "US-NY": "America/New_York",
    }
)
_ZONES_VARY_BY_SUBDIVISION = frozenset({"FR", "US"})
HOLIDAYS_VERSION = importlib.metadata.version("holidays")
_WEEKEND = frozenset({5, 6})  # Reg. 1182/71 Art. 3(4) names Saturday and Sunday


@dataclass(frozen=True)
class Jurisdiction:
    """Where the clock counts: an ISO 3166 code, its time zone and holidays.

    ``code`` is a country ("DE") or a country and subdivision ("DE-BY",
    "US-CA"); holidays are the public ones ``holidays`` knows for it.
    """

    code: str
    country: str
    subdivision: str | None
    timezone: str

    @classmethod
    def parse(cls, code: str, *, timezone: str | None = None) -> Jurisdiction:
        """Validate a code; ``timezone`` (an IANA name) overrides the table."""
        country, subdivision = _split_code(code)
        normalised = country if subdivision is None else f"{country}-{subdivision}"
        zone = timezone or _default_zone(country, normalised)
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(
                f"unknown time zone {zone!r}: give an IANA name such as 'Europe/Berlin'"
            ) from None
        return cls(normalised, country, subdivision, zone)

    def local_date(self, instant: datetime) -> date:
        """The calendar date of ``instant`` here (naive means UTC)."""
        return as_utc(instant).astimezone(ZoneInfo(self.timezone)).date()

    def holiday(self, day: date) -> str | None:
        """The public holiday's name on ``day``, or None."""
        holiday_calendar = _calendar(self.country, self.subdivision)
        with _CALENDAR_LOCK:  # the calendar fills in years lazily
            return holiday_calendar.get(day)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() not in _WEEKEND and self.holiday(day) is None

    def next_working_day(self, day: date) -> date:
        """``day`` itself if it is a working day, else the next one."""
        while not self.is_working_day(day):
            day += timedelta(days=1)
        return day

    def add_business_days(self, day: date, count: int) -> date:
        """The ``count``-th working day after ``day`` (``day`` not counted)."""
        for _ in range(count):
            day = self.next_working_day(day + timedelta(days=1))
        return day


_CALENDAR_LOCK = threading.Lock()


@functools.cache
def _calendar(country: str, subdivision: str | None) -> holidays.HolidayBase:
    return holidays.country_holidays(country, subdiv=subdivision)


def _split_code(code: str) -> tuple[str, str | None]:
    country, _, subdivision = code.strip().partition("-")
    country = country.upper()
    supported = holidays.list_supported_countries()
    if len(country) != 2 or country not in supported:
        raise InputError(
            f"unknown jurisdiction {code!r}: give an ISO 3166 country code, "
            "optionally with a subdivision, such as 'DE', 'DE-BY' or 'US-CA'"
        )
    if not subdivision:
        return country, None

    known = {name.upper(): name for name in supported[country]}
    if subdivision.upper() not in known:
        choices = ", ".join(list(known.values())[:20]) or "none"
        raise InputError(
            f"unknown subdivision {subdivision!r} of {country}: use one of "
            f"{choices}{', ...' if len(known) > 20 else ''}"
        )
    return country, known[subdivision.upper()]


def _default_zone(country: str, code: str) -> str:
    if code in TIME_ZONES:
        return TIME_ZONES[code]
    if code == country or country not in _ZONES_VARY_BY_SUBDIVISION:
        if country in TIME_ZONES:
            return TIME_ZONES[country]
    raise InputError(
        f"no default time zone for jurisdiction {code!r}: pass timezone= with "
        "an IANA name, e.g. 'America/Chicago'"
    )


def as_utc(instant: datetime) -> datetime:
    """``instant`` in UTC; a naive one is taken to be UTC already."""
    if instant.tzinfo is None:
        return instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)
