"""Legal clocks: when a data subject request must be answered, by the rule text.

A clock is pure arithmetic over a receipt instant, a jurisdiction (time zone and
public-holiday calendar) and a versioned rule set. Nothing here reads or writes
the ledger; callers persist ``Clock.as_record()`` and replay pauses and the
extension from their own events.

GDPR, rule version ``gdpr-2016-679-v1`` (Regulation (EU) 2016/679)

- Art. 12(3), first sentence: answer within one month of receipt. Months are
  counted under Reg. (EEC, Euratom) No 1182/71: the day of receipt is not
  counted (Art. 3(1)), and the period ends on the same date of the next month,
  or on that month's last day when it has no such date (Art. 3(2)(c)).
- Reg. 1182/71 Art. 3(4): a period whose last day is a Saturday, Sunday or
  public holiday ends on the next working day. Public holidays are those of the
  state where the act is done (Art. 2(1)): the jurisdiction's calendar.
- Art. 12(3), second and third sentences: one extension "by two further
  months", to be notified with reasons within one month of receipt. Reading
  encoded here: the two months run on from the end of the first month as Art.
  3(2)(c) gives it, before any Art. 3(4) roll, and the extended end is rolled
  again under Art. 3(4). A roll of the first month is not carried into the
  extension. Counting "three months from receipt" gives the same date except
  after receipt on the 29th to 31st, when it can be up to two days later; lethe
  takes the earlier date, so meeting it meets both readings. The notice is due
  by the (rolled) end of the first month, the same date as the deadline.
- Pause: while lethe waits for the subject to prove identity (Art. 12(6)) or to
  clarify the request, the clock stands still; every end date moves by the
  paused calendar days and is rolled afterwards. The Regulation does not say
  this in terms; it follows supervisory-authority practice. Check with counsel.

CCPA, rule version ``ccpa-2023-v1`` (Cal. Civ. Code §1798.130 and 11 CCR §7021
as approved on 2023-03-29)

- 11 CCR §7021(a): confirm receipt within 10 business days. A business day is
  neither a Saturday, a Sunday nor a public holiday of the jurisdiction; the day
  of receipt is not counted.
- §1798.130(a)(2)(A) and 11 CCR §7021(b): respond within 45 calendar days of
  receipt (the day of receipt excluded, Cal. Civ. Code §10), whatever time
  verification takes: pauses are recorded but move nothing.
- The same sections: one extension of up to 45 more calendar days, 90 in all,
  notified with the reason within the first 45 days.
- Calendar days are not rolled to a working day. Cal. Civ. Code §§10-12 may
  allow a holiday roll; lethe does not take it, as the earlier date is safe.
- Re-check: the CPPA's amended regulations took effect on 2026-01-01. Requests
  received since then still get ``ccpa-2023-v1`` until §7021 is confirmed
  unchanged or a new version is added here.

Time: receipt is an instant (naive datetimes are read as UTC, the ledger's
convention) and the clock counts from its local date in the jurisdiction's time
zone. Other inputs that are ``date`` values are local dates already.

Versions: ``Clock.for_request`` picks the newest rule version in force on the
local receipt date unless one is given. Persist ``rule_version`` and the dates
with the request; an explicit ``rule_version`` recomputes it under the same
rules. Holiday data comes from the installed ``holidays`` package, whose
version ``as_record`` names, so keep the computed dates, not only the version.

Example::

    clock = Clock.for_request("gdpr", received_at, "DE")
    clock = clock.pause(asked_on, answered_on).extend(notified_at, "large estate")
    clock.due_by, clock.due_state(today)
"""

from __future__ import annotations

import calendar
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Literal

from erasure.jurisdiction import (
    HOLIDAYS_VERSION,
    TIME_ZONES,
    Jurisdiction,
    as_utc,
)
from lethe.errors import InputError

__all__ = [
    "CCPA_2023_V1",
    "DEFAULT_JURISDICTION",
    "GDPR_2016_679_V1",
    "REGULATIONS",
    "RULES",
    "TIME_ZONES",
    "Clock",
    "ClockRules",
    "DueState",
    "Extension",
    "Jurisdiction",
    "Pause",
    "rules_for",
]

DueState = Literal["overdue", "due_soon", "on_time"]

GDPR_2016_679_V1 = "gdpr-2016-679-v1"
CCPA_2023_V1 = "ccpa-2023-v1"

# Documented defaults for configuration; every clock is still given its
# jurisdiction explicitly.
DEFAULT_JURISDICTION: Mapping[str, str] = MappingProxyType(
    {"gdpr": "DE", "ccpa": "US-CA"}
)


@dataclass(frozen=True)
class ClockRules:
    """One version of one regulation's timing rules, with the text it encodes."""

    version: str
    regulation: str
    in_force_from: date
    respond_months: int
    respond_days: int
    extend_months: int
    extend_days: int
    acknowledge_business_days: int | None
    roll_to_working_day: bool
    pause_moves_deadline: bool
    respond_cite: str = dataclasses.field(repr=False)
    extend_cite: str = dataclasses.field(repr=False)
    roll_cite: str = dataclasses.field(repr=False)
    pause_cite: str = dataclasses.field(repr=False)
    acknowledge_cite: str = dataclasses.field(default="", repr=False)


RULES: Mapping[str, ClockRules] = MappingProxyType(
    {
        GDPR_2016_679_V1: ClockRules(
            version=GDPR_2016_679_V1,
            regulation="gdpr",
            in_force_from=date(2018, 5, 25),  # GDPR Art. 99(2)
            respond_months=1,
            respond_days=0,
            extend_months=2,
            extend_days=0,
            acknowledge_business_days=None,
            roll_to_working_day=True,
            pause_moves_deadline=True,
            respond_cite="GDPR Art. 12(3), Reg. 1182/71 Art. 3(2)(c)",
            extend_cite="GDPR Art. 12(3)",
            roll_cite="Reg. 1182/71 Art. 3(4)",
            pause_cite="GDPR Art. 12(6)",
        ),
        CCPA_2023_V1: ClockRules(
            version=CCPA_2023_V1,
            regulation="ccpa",
            in_force_from=date(2023, 3, 29),  # CPPA regulations approved
            respond_months=0,
            respond_days=45,
            extend_months=0,
            extend_days=45,
            acknowledge_business_days=10,
            roll_to_working_day=False,
            pause_moves_deadline=False,
            respond_cite="Cal. Civ. Code §1798.130(a)(2)(A), 11 CCR §7021(b)",
            extend_cite="Cal. Civ. Code §1798.130(a)(2)(A), 11 CCR §7021(b)",
            roll_cite="11 CCR §7021(b) counts calendar days",
            pause_cite="11 CCR §7021(b)",
            acknowledge_cite="11 CCR §7021(a)",
        ),
    }
)

REGULATIONS = ("gdpr", "ccpa")


def rules_for(
    regulation: str, received_on: date, rule_version: str | None = None
) -> ClockRules:
    """The rules a request received on ``received_on`` (local date) is held to.

    An explicit ``rule_version`` wins, so an old request is recomputed exactly
    as it was; otherwise the newest version in force on ``received_on``.
    """
    regulation = _regulation(regulation)
    if rule_version is not None:
        return _pinned(regulation, rule_version)

    in_force = [
        rules
        for rules in RULES.values()
        if rules.regulation == regulation and rules.in_force_from <= received_on
    ]
    if not in_force:
        raise InputError(
            f"no {regulation} clock rules were in force on {received_on}: pass "
            "rule_version= explicitly to count it under a later version"
        )
    return max(in_force, key=lambda rules: rules.in_force_from)


def _regulation(regulation: str) -> str:
    normalised = regulation.strip().lower()
    if normalised not in REGULATIONS:
        raise InputError(
            f"unknown regulation {regulation!r}: use one of {', '.join(REGULATIONS)}"
        )
    return normalised


def _pinned(regulation: str, rule_version: str) -> ClockRules:
    rules = RULES.get(rule_version)
    if rules is None:
        raise InputError(
            f"unknown clock rule version {rule_version!r}: use one of "
            f"{', '.join(RULES)}"
        )
    if rules.regulation != regulation:
        raise InputError(
            f"rule version {rule_version!r} is for {rules.regulation}, not "
            f"{regulation}: pass a {regulation} rule version"
        )
    return rules


@dataclass(frozen=True)
class Pause:
    """A wait for the subject, in local dates: ``start`` up to ``end``.

    ``moves_deadline`` says whether the rules let the wait stop the clock.
    """

    start: date
    end: date
    moves_deadline: bool

    @property
    def days(self) -> int:
        return (self.end - self.start).days


@dataclass(frozen=True)
class Extension:
    """The one extension, on the local date the subject was told.

    ``reason`` goes to the subject, so keep personal data out of it; it is
    left out of ``repr`` all the same.
    """

    notified_on: date
    reason: str = dataclasses.field(repr=False)


@dataclass(frozen=True)
class Clock:
    """The legal clock of one request. Immutable: changes return a new clock."""

    rules: ClockRules
    jurisdiction: Jurisdiction
    received_at: datetime
    pauses: tuple[Pause, ...] = ()
    extension: Extension | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "received_at", as_utc(self.received_at))

    @classmethod
    def for_request(
        cls,
        regulation: str,
        received_at_utc: datetime,
        jurisdiction: str | Jurisdiction,
        *,
        rule_version: str | None = None,
    ) -> Clock:
        """Start the clock of a request received at ``received_at_utc``."""
        if not isinstance(received_at_utc, datetime):
            raise InputError(
                "received_at must be a datetime (an instant), not a date: the "
                "local receipt date depends on the time of day"
            )
        if isinstance(jurisdiction, str):
            jurisdiction = Jurisdiction.parse(jurisdiction)
        received_on = jurisdiction.local_date(received_at_utc)
        rules = rules_for(regulation, received_on, rule_version)
        return cls(rules, jurisdiction, received_at_utc)

    @property
    def regulation(self) -> str:
        return self.rules.regulation

    @property
    def rule_version(self) -> str:
        return self.rules.version

    @property
    def local_receipt_date(self) -> date:
        return self.jurisdiction.local_date(self.received_at)

    @property
    def paused_days(self) -> int:
        """Calendar days the clock stood still (always 0 under CCPA)."""
        return sum(pause.days for pause in self.pauses if pause.moves_deadline)

    @property
    def period_end(self) -> date:
        """The last day of the response period before any working-day roll."""
        return self._base_end() + timedelta(days=self.paused_days)

    @property
    def deadline(self) -> date:
        """The response deadline without extension, after pauses and rolls."""
        return self._roll(self.period_end)

    @property
    def acknowledge_by(self) -> date | None:
        """When receipt must be confirmed (CCPA), or None where no rule says."""
        count = self.rules.acknowledge_business_days
        if count is None:
            return None
        return self.jurisdiction.add_business_days(self.local_receipt_date, count)

    @property
    def extension_notice_by(self) -> date:
        """The last local date on which an extension may be notified."""
        return self.deadline

    @property
    def max_extended_deadline(self) -> date:
        """The latest deadline one extension can give."""
        return self._roll(self._extended_end())

    @property
    def extended_deadline(self) -> date | None:
        return self.max_extended_deadline if self.extension else None

    @property
    def due_by(self) -> date:
        """The deadline that counts: the extended one if there is one."""
        return self.extended_deadline or self.deadline

    def extend(self, notified_at: date | datetime, reason: str) -> Clock:
        """Record the one extension the rules allow, notified on ``notified_at``.

        The extension runs to ``max_extended_deadline``, the outer limit in law.
        """
        notified_on = self._local(notified_at)
        if not reason.strip():
            raise InputError(
                f"an extension needs its reason ({self.rules.extend_cite}): say "
                "why the request needs more time"
            )
        if self.extension is not None:
            raise InputError(
                f"this request was already extended on "
                f"{self.extension.notified_on}; {self.rules.extend_cite} allows "
                "one extension"
            )
        if notified_on < self.local_receipt_date:
            raise InputError(
                f"extension notice dated {notified_on} is before receipt on "
                f"{self.local_receipt_date}: check the notice date"
            )
        if notified_on > self.extension_notice_by:
            raise InputError(
                f"extension notified too late: {self.rules.extend_cite} needs the "
                f"notice by {self.extension_notice_by}, it went on {notified_on}; "
                f"the request is due on {self.deadline}"
            )
        return dataclasses.replace(
            self, extension=Extension(notified_on, reason.strip())
        )

    def pause(self, start: date | datetime, end: date | datetime) -> Clock:
        """Record a wait for the subject from ``start`` until ``end``.

        Under GDPR the deadline moves by the paused calendar days; under CCPA
        the wait is recorded and moves nothing. While still waiting, pass
        today as ``end`` to see the deadline if the answer came today.
        """
        pause = Pause(
            self._local(start), self._local(end), self.rules.pause_moves_deadline
        )
        if pause.end < pause.start:
            raise InputError(
                f"a pause cannot end ({pause.end}) before it starts ({pause.start})"
            )
        if pause.start < self.local_receipt_date:
            raise InputError(
                f"a pause cannot start ({pause.start}) before receipt on "
                f"{self.local_receipt_date}"
            )
        if self.pauses and pause.start < self.pauses[-1].end:
            raise InputError(
                f"pauses must follow one another: this one starts {pause.start}, "
                f"before the last one ended on {self.pauses[-1].end}"
            )
        if pause.moves_deadline and pause.start > self.due_by:
            raise InputError(
                f"the clock ran out on {self.due_by}; a wait from {pause.start} "
                "cannot stop it"
            )
        return dataclasses.replace(self, pauses=(*self.pauses, pause))

    def due_state(self, today: date | datetime, within_days: int = 7) -> DueState:
        """Where the request stands on ``today`` against ``due_by``.

        "overdue" once ``due_by`` has passed, "due_soon" on it or up to
        ``within_days`` before it, "on_time" otherwise.
        """
        if within_days < 0:
            raise InputError(f"within_days must be 0 or more, not {within_days}")
        left = (self.due_by - self._local(today)).days
        if left < 0:
            return "overdue"
        if left <= within_days:
            return "due_soon"
        return "on_time"

    @property
    def notes(self) -> tuple[str, ...]:
        """How each date came about, citing the rule; no personal data."""
        rules = self.rules
        notes = [
            f"{rules.respond_cite}: received {self.local_receipt_date} "
            f"({self.jurisdiction.timezone}), period ends {self._base_end()}"
        ]
        notes += [self._pause_note(pause) for pause in self.pauses]
        notes += self._roll_notes()
        if self.acknowledge_by is not None:
            notes.append(
                f"{rules.acknowledge_cite}: confirm receipt by {self.acknowledge_by} "
                f"({rules.acknowledge_business_days} business days)"
            )
        if self.extension is None:
            notes.append(
                f"{rules.extend_cite}: one extension to "
                f"{self.max_extended_deadline}, if notified by "
                f"{self.extension_notice_by}"
            )
        else:
            notes.append(
                f"{rules.extend_cite}: extended to {self.extended_deadline}, "
                f"notified on {self.extension.notified_on}"
            )
        return tuple(notes)

    def as_record(self) -> dict[str, str | int | None]:
        """JSON-ready values to persist with the request."""
        return {
            "regulation": self.regulation,
            "rule_version": self.rule_version,
            "jurisdiction": self.jurisdiction.code,
            "timezone": self.jurisdiction.timezone,
            "holiday_calendar": f"holidays {HOLIDAYS_VERSION}",
            "received_at": self.received_at.isoformat().replace("+00:00", "Z"),
            "local_receipt_date": self.local_receipt_date.isoformat(),
            "deadline": self.deadline.isoformat(),
            "acknowledge_by": _iso(self.acknowledge_by),
            "extension_notice_by": self.extension_notice_by.isoformat(),
            "max_extended_deadline": self.max_extended_deadline.isoformat(),
            "extended_deadline": _iso(self.extended_deadline),
            "extension_notified_on": _iso(
                self.extension.notified_on if self.extension else None
            ),
            "due_by": self.due_by.isoformat(),
            "paused_days": self.paused_days,
        }

    def _base_end(self) -> date:
        """The period end from receipt alone: no pauses, no roll."""
        end = _add_months(self.local_receipt_date, self.rules.respond_months)
        return end + timedelta(days=self.rules.respond_days)

    def _extended_end(self) -> date:
        """The extended period end, after pauses and before any roll.

        The further months run on from the unrolled first-month end (see the
        module docstring for this reading of GDPR Art. 12(3)).
        """
        end = _add_months(self._base_end(), self.rules.extend_months)
        return end + timedelta(days=self.rules.extend_days + self.paused_days)

    def _roll(self, day: date) -> date:
        if not self.rules.roll_to_working_day:
            return day
        return self.jurisdiction.next_working_day(day)

    def _local(self, value: date | datetime) -> date:
        if isinstance(value, datetime):
            return self.jurisdiction.local_date(value)
        return value

    def _pause_note(self, pause: Pause) -> str:
        span = f"{pause.days} day(s), {pause.start} to {pause.end}"
        if pause.moves_deadline:
            return f"{self.rules.pause_cite}: clock stopped {span}"
        return (
            f"{self.rules.pause_cite}: waited {span} for verification; the "
            "clock runs on and the deadline does not move"
        )

    def _roll_notes(self) -> list[str]:
        notes = []
        ends = [(self.period_end, self.deadline)]
        if self.extension is not None:
            ends.append((self._extended_end(), self.max_extended_deadline))
        for end, rolled in ends:
            if self.jurisdiction.is_working_day(end):
                continue
            why = self._why_not_working(end)
            if rolled != end:
                notes.append(f"{self.rules.roll_cite}: {end} is {why}; ends {rolled}")
            else:
                notes.append(f"{self.rules.roll_cite}: {end} is {why}; not moved")
        return notes

    def _why_not_working(self, day: date) -> str:
        name = self.jurisdiction.holiday(day)
        if name is not None:
            return f"a public holiday in {self.jurisdiction.code} ({name})"
        return f"a {calendar.day_name[day.weekday()]}"


def _add_months(day: date, months: int) -> date:
    """Reg. 1182/71 Art. 3(2)(c): same date, or the month's last day."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()
