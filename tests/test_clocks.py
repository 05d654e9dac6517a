import json
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime

import pytest

from erasure import clocks
from erasure.clocks import (
    CCPA_2023_V1,
    GDPR_2016_679_V1,
    RULES,
    Clock,
    Jurisdiction,
)
from lethe.errors import InputError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def gdpr(received: str, jurisdiction: str = "DE") -> Clock:
    return Clock.for_request("gdpr", at(received), jurisdiction)


def ccpa(received: str, jurisdiction: str = "US-CA") -> Clock:
    return Clock.for_request("ccpa", at(received), jurisdiction)


# GDPR Art. 12(3) with Reg. 1182/71 Art. 3(2)(c) and 3(4), in Germany.
@pytest.mark.parametrize(
    ("received", "period_end", "deadline"),
    [
        ("2026-01-20T10:00Z", date(2026, 2, 20), date(2026, 2, 20)),  # a Friday
        ("2026-12-20T10:00Z", date(2027, 1, 20), date(2027, 1, 20)),  # new year
        ("2026-03-31T10:00Z", date(2026, 4, 30), date(2026, 4, 30)),  # no 31 Apr
        ("2028-01-31T10:00Z", date(2028, 2, 29), date(2028, 2, 29)),  # leap year
        ("2026-01-31T10:00Z", date(2026, 2, 28), date(2026, 3, 2)),  # 28 Feb Sat
        ("2027-01-31T10:00Z", date(2027, 2, 28), date(2027, 3, 1)),  # 28 Feb Sun
        ("2026-02-14T10:00Z", date(2026, 3, 14), date(2026, 3, 16)),  # Sat
        ("2026-01-15T10:00Z", date(2026, 2, 15), date(2026, 2, 16)),  # Sun
        ("2026-11-25T10:00Z", date(2026, 12, 25), date(2026, 12, 28)),  # Christmas
        ("2026-11-26T10:00Z", date(2026, 12, 26), date(2026, 12, 28)),  # 2nd day
        ("2026-03-06T10:00Z", date(2026, 4, 6), date(2026, 4, 7)),  # Easter Mon
        ("2026-03-03T10:00Z", date(2026, 4, 3), date(2026, 4, 7)),  # Good Friday
        ("2026-04-14T10:00Z", date(2026, 5, 14), date(2026, 5, 15)),  # Ascension
    ],
)
def test_gdpr_deadline_is_one_month_rolled_to_a_working_day(
    received: str, period_end: date, deadline: date
) -> None:
    clock = gdpr(received)

    assert clock.period_end == period_end
    assert clock.deadline == deadline
    assert clock.due_by == deadline
    assert clock.acknowledge_by is None


@pytest.mark.parametrize(
    ("received", "jurisdiction", "deadline"),
    [
        ("2026-12-06T10:00Z", "DE", date(2027, 1, 6)),
        ("2026-12-06T10:00Z", "DE-BY", date(2027, 1, 7)),  # Epiphany in Bavaria
        ("2026-02-17T10:00Z", "DE", date(2026, 3, 17)),
        ("2026-02-17T10:00Z", "IE", date(2026, 3, 18)),  # St Patrick's Day
    ],
)
def test_gdpr_roll_uses_the_jurisdictions_own_holidays(
    received: str, jurisdiction: str, deadline: date
) -> None:
    assert gdpr(received, jurisdiction).deadline == deadline


@pytest.mark.parametrize(
    ("received", "local_date", "deadline"),
    [
        # 23:59 CEST on 31 March: still March in Berlin.
        ("2026-03-31T21:59Z", date(2026, 3, 31), date(2026, 4, 30)),
        # 00:00 CEST on 1 April: 1 May is Labour Day, then a weekend.
        ("2026-03-31T22:00Z", date(2026, 4, 1), date(2026, 5, 4)),
        ("2026-03-31T23:30Z", date(2026, 4, 1), date(2026, 5, 4)),
        # 00:30 CET in winter.
        ("2026-01-14T23:30Z", date(2026, 1, 15), date(2026, 2, 16)),
        # An offset other than UTC is converted, and naive means UTC.
        ("2026-04-01T01:30+02:00", date(2026, 4, 1), date(2026, 5, 4)),
        ("2026-03-31T23:30", date(2026, 4, 1), date(2026, 5, 4)),
    ],
)
def test_gdpr_counts_from_the_local_receipt_date(
    received: str, local_date: date, deadline: date
) -> None:
    clock = gdpr(received)

    assert clock.local_receipt_date == local_date
    assert clock.deadline == deadline


# CCPA §1798.130(a)(2)(A), 11 CCR §7021(b): 45 calendar days, no roll.
@pytest.mark.parametrize(
    ("received", "local_date", "deadline", "max_extended"),
    [
        ("2026-01-15T18:00Z", date(2026, 1, 15), date(2026, 3, 1), date(2026, 4, 15)),
        ("2026-12-03T18:00Z", date(2026, 12, 3), date(2027, 1, 17), date(2027, 3, 3)),
        ("2027-01-20T18:00Z", date(2027, 1, 20), date(2027, 3, 6), date(2027, 4, 20)),
        ("2028-01-20T18:00Z", date(2028, 1, 20), date(2028, 3, 5), date(2028, 4, 19)),
        # 19:00 PST on 15 January, already the 16th in UTC.
        ("2026-01-16T03:00Z", date(2026, 1, 15), date(2026, 3, 1), date(2026, 4, 15)),
        # 23:59 PDT on 30 June, then midnight.
        ("2026-07-01T06:59Z", date(2026, 6, 30), date(2026, 8, 14), date(2026, 9, 28)),
        ("2026-07-01T07:00Z", date(2026, 7, 1), date(2026, 8, 15), date(2026, 9, 29)),
    ],
)
def test_ccpa_deadline_is_45_calendar_days_from_the_local_date(
    received: str, local_date: date, deadline: date, max_extended: date
) -> None:
    clock = ccpa(received)

    assert clock.local_receipt_date == local_date
    assert clock.deadline == deadline
    assert clock.period_end == deadline
    assert clock.max_extended_deadline == max_extended


def test_ccpa_deadline_on_a_weekend_does_not_move() -> None:
    clock = ccpa("2026-01-15T18:00Z")  # 45 days later is Sunday 1 March

    assert clock.deadline == date(2026, 3, 1)
    assert any("is a Sunday; not moved" in note for note in clock.notes)


# 11 CCR §7021(a): 10 business days, the day of receipt not counted.
@pytest.mark.parametrize(
    ("received", "jurisdiction", "acknowledge_by"),
    [
        ("2026-03-02T18:00Z", "US-CA", date(2026, 3, 16)),  # a Monday
        ("2026-03-07T18:00Z", "US-CA", date(2026, 3, 20)),  # a Saturday
        # Thanksgiving and, in California, the day after it.
        ("2026-11-20T18:00Z", "US-CA", date(2026, 12, 8)),
        ("2026-11-20T18:00Z", "US", date(2026, 12, 7)),
        # Cesar Chavez Day (31 March) is a California holiday.
        ("2026-03-23T18:00Z", "US-CA", date(2026, 4, 7)),
    ],
)
def test_ccpa_acknowledgement_skips_weekends_and_holidays(
    received: str, jurisdiction: str, acknowledge_by: date
) -> None:
    assert ccpa(received, jurisdiction).acknowledge_by == acknowledge_by


@pytest.mark.parametrize(
    ("notified_at", "extended"),
    [
        (date(2026, 1, 15), date(2026, 4, 15)),  # on the day of receipt
        (date(2026, 3, 1), date(2026, 4, 15)),  # day 45
        (at("2026-03-02T07:30Z"), date(2026, 4, 15)),  # 23:30 PST on day 45
    ],
)
def test_ccpa_extension_notified_within_45_days_gives_90(
    notified_at: date | datetime, extended: date
) -> None:
    clock = ccpa("2026-01-15T18:00Z").extend(notified_at, "backup restore needed")

    assert clock.extended_deadline == extended
    assert clock.due_by == extended
    assert clock.deadline == date(2026, 3, 1)


@pytest.mark.parametrize(
    "notified_at",
    [date(2026, 3, 2), at("2026-03-02T08:00Z")],  # day 46, 00:00 PST
)
def test_ccpa_extension_notified_on_day_46_is_refused(
    notified_at: date | datetime,
) -> None:
    with pytest.raises(InputError, match="too late.*by 2026-03-01"):
        ccpa("2026-01-15T18:00Z").extend(notified_at, "backup restore needed")


@pytest.mark.parametrize(
    ("received", "notified_on", "max_extended"),
    [
        ("2026-01-20T10:00Z", date(2026, 2, 10), date(2026, 4, 20)),
        # Rolled first month (15 Feb, a Sunday): notice on the Monday is in time;
        # the two months run on from the 15th.
        ("2026-01-15T10:00Z", date(2026, 2, 16), date(2026, 4, 15)),
        # From the month-end date 28 Feb, not three months from 31 January.
        ("2026-01-31T10:00Z", date(2026, 2, 20), date(2026, 4, 28)),
        # 14 May is Ascension Day: the extended end rolls too.
        ("2026-02-14T10:00Z", date(2026, 3, 1), date(2026, 5, 15)),
    ],
)
def test_gdpr_extension_notified_in_the_first_month_adds_two_months(
    received: str, notified_on: date, max_extended: date
) -> None:
    clock = gdpr(received)
    extended = clock.extend(notified_on, "many systems to search")

    assert clock.max_extended_deadline == max_extended
    assert clock.extended_deadline is None
    assert extended.extended_deadline == max_extended
    assert extended.due_by == max_extended
    assert extended.extension is not None
    assert extended.extension.notified_on == notified_on


@pytest.mark.parametrize(
    "notified_at",
    [
        date(2026, 2, 17),
        at("2026-02-16T23:00Z"),  # 00:00 CET on 17 February
    ],
)
def test_gdpr_extension_notified_after_the_first_month_is_refused(
    notified_at: date | datetime,
) -> None:
    clock = gdpr("2026-01-15T10:00Z")  # first month ends Monday 16 February

    with pytest.raises(InputError, match="too late.*by 2026-02-16"):
        clock.extend(notified_at, "many systems to search")


def test_gdpr_notice_just_before_local_midnight_is_in_time() -> None:
    clock = gdpr("2026-01-15T10:00Z").extend(at("2026-02-16T22:59Z"), "volume")

    assert clock.due_by == date(2026, 4, 15)


@pytest.mark.parametrize("make", [gdpr, ccpa])
def test_second_extension_is_refused(make: Callable[[str], Clock]) -> None:
    clock = make("2026-01-15T10:00Z").extend(date(2026, 1, 20), "volume")

    with pytest.raises(InputError, match="already extended on 2026-01-20"):
        clock.extend(date(2026, 1, 21), "more volume")


@pytest.mark.parametrize("reason", ["", "   "])
def test_extension_needs_a_reason(reason: str) -> None:
    with pytest.raises(InputError, match="needs its reason"):
        gdpr("2026-01-15T10:00Z").extend(date(2026, 1, 20), reason)


def test_extension_notice_before_receipt_is_refused() -> None:
    with pytest.raises(InputError, match="before receipt"):
        gdpr("2026-01-15T10:00Z").extend(date(2026, 1, 14), "volume")


def test_extension_reason_stays_out_of_repr_and_record() -> None:
    clock = gdpr("2026-01-15T10:00Z").extend(date(2026, 1, 20), "secret detail")

    assert "secret detail" not in repr(clock)
    assert "secret detail" not in json.dumps(clock.as_record())
    assert clock.extension is not None and clock.extension.reason == "secret detail"


# The GDPR clock stands still while lethe waits; the CCPA clock runs on.
@pytest.mark.parametrize(
    ("make", "deadline", "max_extended", "paused_days"),
    [
        (gdpr, date(2026, 2, 20), date(2026, 4, 20), 5),
        (ccpa, date(2026, 3, 1), date(2026, 4, 15), 0),
    ],
)
def test_pause_moves_the_gdpr_deadline_but_not_the_ccpa_one(
    make: Callable[[str], Clock], deadline: date, max_extended: date, paused_days: int
) -> None:
    clock = make("2026-01-15T18:00Z").pause(date(2026, 1, 20), date(2026, 1, 25))

    assert clock.deadline == deadline
    assert clock.max_extended_deadline == max_extended
    assert clock.extension_notice_by == deadline
    assert clock.paused_days == paused_days
    assert len(clock.pauses) == 1 and clock.pauses[0].days == 5


def test_ccpa_pause_is_recorded_and_says_the_deadline_stays() -> None:
    clock = ccpa("2026-01-15T18:00Z").pause(date(2026, 1, 20), date(2026, 1, 25))

    assert clock.pauses[0].moves_deadline is False
    assert any("deadline does not move" in note for note in clock.notes)


def test_gdpr_paused_end_is_rolled_after_the_pause() -> None:
    # 14 Feb + 1 month = Saturday 14 Mar; five paused days make it Thursday 19th.
    clock = gdpr("2026-02-14T10:00Z")
    paused = clock.pause(date(2026, 2, 16), date(2026, 2, 21))

    assert clock.deadline == date(2026, 3, 16)
    assert paused.period_end == date(2026, 3, 19)
    assert paused.deadline == date(2026, 3, 19)


def test_gdpr_pause_widens_the_extension_notice_window() -> None:
    clock = gdpr("2026-01-15T10:00Z")
    with pytest.raises(InputError, match="too late"):
        clock.extend(date(2026, 2, 19), "volume")

    paused = clock.pause(date(2026, 1, 20), date(2026, 1, 25))
    extended = paused.extend(date(2026, 2, 19), "volume")

    assert extended.due_by == date(2026, 4, 20)


def test_gdpr_pauses_add_up_and_the_original_clock_is_unchanged() -> None:
    clock = gdpr("2026-01-15T10:00Z")
    paused = clock.pause(date(2026, 1, 16), date(2026, 1, 18)).pause(
        at("2026-01-20T09:00Z"), at("2026-01-23T15:00Z")
    )

    assert paused.paused_days == 5
    assert paused.deadline == date(2026, 2, 20)
    assert clock.pauses == () and clock.deadline == date(2026, 2, 16)


def test_gdpr_pause_after_an_extension_moves_the_extended_deadline() -> None:
    clock = gdpr("2026-01-15T10:00Z").extend(date(2026, 2, 1), "volume")
    paused = clock.pause(date(2026, 3, 2), date(2026, 3, 7))

    assert paused.due_by == date(2026, 4, 20)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (date(2026, 1, 25), date(2026, 1, 20), "cannot end"),
        (date(2026, 1, 10), date(2026, 1, 20), "before receipt"),
        (date(2026, 2, 17), date(2026, 2, 20), "ran out on 2026-02-16"),
    ],
)
def test_gdpr_pause_is_refused_when_impossible(
    start: date, end: date, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        gdpr("2026-01-15T10:00Z").pause(start, end)


def test_overlapping_pauses_are_refused() -> None:
    clock = gdpr("2026-01-15T10:00Z").pause(date(2026, 1, 16), date(2026, 1, 20))

    with pytest.raises(InputError, match="follow one another"):
        clock.pause(date(2026, 1, 19), date(2026, 1, 22))


def test_ccpa_wait_after_the_deadline_is_still_recorded() -> None:
    clock = ccpa("2026-01-15T18:00Z").pause(date(2026, 3, 5), date(2026, 3, 9))

    assert clock.deadline == date(2026, 3, 1)
    assert len(clock.pauses) == 1


@pytest.mark.parametrize(
    ("today", "within_days", "state"),
    [
        (date(2026, 2, 8), 7, "on_time"),
        (date(2026, 2, 9), 7, "due_soon"),
        (date(2026, 2, 16), 7, "due_soon"),
        (date(2026, 2, 16), 0, "due_soon"),
        (date(2026, 2, 15), 0, "on_time"),
        (date(2026, 2, 17), 7, "overdue"),
        (at("2026-02-16T22:59Z"), 7, "due_soon"),  # 23:59 CET on the 16th
        (at("2026-02-16T23:00Z"), 7, "overdue"),  # 00:00 CET on the 17th
    ],
)
def test_due_state_against_the_deadline(
    today: date | datetime, within_days: int, state: str
) -> None:
    clock = gdpr("2026-01-15T10:00Z")  # due Monday 16 February

    assert clock.due_state(today, within_days) == state


def test_due_state_follows_the_extension() -> None:
    clock = gdpr("2026-01-15T10:00Z").extend(date(2026, 2, 1), "volume")

    assert clock.due_state(date(2026, 2, 17)) == "on_time"
    assert clock.due_state(date(2026, 4, 16)) == "overdue"


def test_due_state_while_still_waiting_pauses_up_to_today() -> None:
    clock = gdpr("2026-01-15T10:00Z")
    today = date(2026, 2, 17)

    assert clock.due_state(today) == "overdue"
    assert clock.pause(date(2026, 2, 10), today).due_state(today) == "due_soon"


def test_due_state_rejects_negative_window() -> None:
    with pytest.raises(InputError, match="within_days"):
        gdpr("2026-01-15T10:00Z").due_state(date(2026, 2, 1), -1)


# Rule versions: a request keeps the rules it was counted under.
def test_clock_carries_its_rule_version() -> None:
    assert gdpr("2026-01-15T10:00Z").rule_version == GDPR_2016_679_V1
    assert ccpa("2026-01-15T18:00Z").rule_version == CCPA_2023_V1
    assert RULES[GDPR_2016_679_V1].regulation == "gdpr"


def test_newer_rule_version_applies_from_its_date_and_old_requests_keep_theirs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stricter = replace(
        RULES[CCPA_2023_V1],
        version="ccpa-2030-test",
        in_force_from=date(2030, 1, 1),
        respond_days=30,
    )
    monkeypatch.setattr(clocks, "RULES", {**RULES, stricter.version: stricter})

    old = Clock.for_request("ccpa", at("2029-12-31T18:00Z"), "US-CA")
    new = Clock.for_request("ccpa", at("2030-01-02T18:00Z"), "US-CA")
    pinned = Clock.for_request(
        "ccpa", at("2030-01-02T18:00Z"), "US-CA", rule_version=CCPA_2023_V1
    )

    assert (old.rule_version, old.deadline) == (CCPA_2023_V1, date(2030, 2, 14))
    assert (new.rule_version, new.deadline) == ("ccpa-2030-test", date(2030, 2, 1))
    assert (pinned.rule_version, pinned.deadline) == (CCPA_2023_V1, date(2030, 2, 16))


def test_receipt_before_any_rule_version_needs_an_explicit_one() -> None:
    with pytest.raises(InputError, match="pass rule_version="):
        Clock.for_request("ccpa", at("2023-01-10T18:00Z"), "US-CA")

    clock = Clock.for_request(
        "ccpa", at("2023-01-10T18:00Z"), "US-CA", rule_version=CCPA_2023_V1
    )
    assert clock.deadline == date(2023, 2, 24)


@pytest.mark.parametrize(
    ("regulation", "rule_version", "message"),
    [
        ("gdpr", "gdpr-1995-v0", "unknown clock rule version.*gdpr-2016-679-v1"),
        ("gdpr", CCPA_2023_V1, "is for ccpa, not gdpr"),
        ("lgpd", None, "unknown regulation.*gdpr, ccpa"),
    ],
)
def test_bad_regulation_or_rule_version_is_refused(
    regulation: str, rule_version: str | None, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        Clock.for_request(
            regulation, at("2026-01-15T10:00Z"), "DE", rule_version=rule_version
        )


def test_regulation_is_normalised() -> None:
    assert Clock.for_request(" GDPR ", at("2026-01-15T10:00Z"), "DE").regulation == (
        "gdpr"
    )


def test_receipt_must_be_an_instant() -> None:
    with pytest.raises(InputError, match="must be a datetime"):
        Clock.for_request("gdpr", date(2026, 1, 15), "DE")  # type: ignore[arg-type]


def test_record_is_json_and_names_what_produced_the_dates() -> None:
    clock = (
        gdpr("2026-03-31T23:30Z")
        .pause(date(2026, 4, 2), date(2026, 4, 4))
        .extend(date(2026, 4, 10), "volume")
    )

    record = json.loads(json.dumps(clock.as_record()))

    assert record == {
        "regulation": "gdpr",
        "rule_version": "gdpr-2016-679-v1",
        "jurisdiction": "DE",
        "timezone": "Europe/Berlin",
        "holiday_calendar": record["holiday_calendar"],
        "received_at": "2026-03-31T23:30:00Z",
        "local_receipt_date": "2026-04-01",
        "deadline": "2026-05-04",
        "acknowledge_by": None,
        "extension_notice_by": "2026-05-04",
        "max_extended_deadline": "2026-07-03",
        "extended_deadline": "2026-07-03",
        "extension_notified_on": "2026-04-10",
        "due_by": "2026-07-03",
        "paused_days": 2,
    }
    assert record["holiday_calendar"].startswith("holidays ")


def test_notes_cite_the_rules_behind_each_date() -> None:
    notes = "\n".join(gdpr("2026-03-31T23:30Z").notes)

    assert "GDPR Art. 12(3)" in notes
    assert "Reg. 1182/71 Art. 3(4): 2026-05-01 is a public holiday in DE" in notes
    assert "if notified by 2026-05-04" in notes


# Jurisdictions: ISO 3166 codes, a time zone table and holiday calendars.
@pytest.mark.parametrize(
    ("code", "timezone", "normalised"),
    [
        ("DE", "Europe/Berlin", "DE"),
        ("de-by", "Europe/Berlin", "DE-BY"),
        ("US-CA", "America/Los_Angeles", "US-CA"),
        ("US", "America/New_York", "US"),
        ("ES-CN", "Atlantic/Canary", "ES-CN"),
        ("PT-20", "Atlantic/Azores", "PT-20"),
        ("GB-SCT", "Europe/London", "GB-SCT"),
        (" ie ", "Europe/Dublin", "IE"),
    ],
)
def test_jurisdiction_maps_to_a_time_zone(
    code: str, timezone: str, normalised: str
) -> None:
    jurisdiction = Jurisdiction.parse(code)

    assert (jurisdiction.code, jurisdiction.timezone) == (normalised, timezone)


def test_jurisdiction_accepts_an_explicit_zone() -> None:
    texas = Jurisdiction.parse("US-TX", timezone="America/Chicago")
    clock = Clock.for_request("ccpa", at("2026-01-16T05:30Z"), texas)

    assert clock.local_receipt_date == date(2026, 1, 15)  # 23:30 CST


@pytest.mark.parametrize(
    ("code", "timezone", "message"),
    [
        ("XX", None, "unknown jurisdiction 'XX'.*'DE-BY'"),
        ("", None, "unknown jurisdiction"),
        ("DE-ZZ", None, "unknown subdivision 'ZZ' of DE: use one of BB, BE"),
        ("US-TX", None, "no default time zone.*pass timezone="),
        ("BR", None, "no default time zone for jurisdiction 'BR'"),
        ("DE", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_jurisdiction_says_how_to_fix_it(
    code: str, timezone: str | None, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        Jurisdiction.parse(code, timezone=timezone)
