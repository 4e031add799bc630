"""Calendar arithmetic at the awkward edges: DST gaps, repeated hours, midnight transitions."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from policies.policy_set import load_default, merge
from policies.timewin import (
    QuietCalendar,
    clear_of,
    first_at_wall,
    next_allowed,
    start_of_local_day,
    zone,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_start_of_day_when_midnight_does_not_exist() -> None:
    # Havana springs forward at midnight: 8 March 2026 starts at 01:00 CDT (05:00 UTC).
    havana = zone("America/Havana")
    start = start_of_local_day(date(2026, 3, 8), havana)
    assert start == utc("2026-03-08T05:00")
    assert start.astimezone(havana).hour == 1
    assert (start - timedelta(seconds=1)).astimezone(havana).date() == date(2026, 3, 7)


def test_start_of_day_when_midnight_happens_twice() -> None:
    # Havana falls back at 01:00 CDT to 00:00 CST on 1 November 2026: the first midnight counts.
    havana = zone("America/Havana")
    assert start_of_local_day(date(2026, 11, 1), havana) == utc("2026-11-01T04:00")


def test_first_at_wall_in_a_gap_is_the_transition() -> None:
    ny = zone("America/New_York")
    got = first_at_wall(date(2025, 3, 9), time(2, 30), ny, utc("2025-03-09T06:00"))
    assert got == utc("2025-03-09T07:00")


def test_first_at_wall_in_a_repeat_picks_the_next_occurrence() -> None:
    ny = zone("America/New_York")
    d, wall = date(2025, 11, 2), time(1, 30)
    assert first_at_wall(d, wall, ny, utc("2025-11-02T05:10")) == utc("2025-11-02T05:30")
    assert first_at_wall(d, wall, ny, utc("2025-11-02T06:10")) == utc("2025-11-02T06:30")


def test_half_hour_dst_zone() -> None:
    # Lord Howe moves by 30 minutes; quiet hours still end at 08:00 on the local clock.
    cal = QuietCalendar(merge(load_default(), {"quiet_hours": {"weekend_days": []}}).quiet_hours)
    lh = zone("Australia/Lord_Howe")
    t = cal.next_open(utc("2025-04-05T16:00"), lh)  # 03:00 local on the fall-back night
    assert t.astimezone(lh).time() == time(8, 0)


def test_extreme_offsets_change_the_local_day() -> None:
    cal = QuietCalendar(load_default().quiet_hours)
    # Friday 19:00 UTC is Saturday 09:00 in Kiritimati (+14) and Friday 08:00 in Pago Pago (-11).
    t = utc("2025-10-10T19:00")
    assert not cal.is_open(t, zone("Pacific/Kiritimati"))
    assert cal.is_open(t, zone("Pacific/Pago_Pago"))


def test_clear_of_moves_past_each_scheduled_touch() -> None:
    t = utc("2025-10-07T10:00")
    gap = timedelta(hours=2)
    sched = [utc("2025-10-07T11:00"), utc("2025-10-07T13:30")]
    assert clear_of(t, sched, gap) == utc("2025-10-07T15:30")
    assert clear_of(t, sched, timedelta(0)) == t
    assert clear_of(utc("2025-10-07T09:00"), sched, gap) == utc("2025-10-07T09:00")


def test_next_allowed_combines_quiet_hours_and_autopilot_proximity() -> None:
    cal = QuietCalendar(load_default().quiet_hours)
    ny = zone("America/New_York")
    # 19:30 local, an Autopilot touch at 19:45: clear at 19:45+24h = Wed 19:45, which is open.
    got = next_allowed(
        utc("2025-10-07T23:30"), cal, ny, [utc("2025-10-07T23:45")], timedelta(hours=24)
    )
    assert got == utc("2025-10-08T23:45")


def test_unknown_zone_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Nowhere/City'"):
        zone("Nowhere/City")
