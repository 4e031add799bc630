"""One clock: "now" is aware UTC, "today" is the organisation's date, time-machine drives both."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy.orm import Session

from memory import business_day, clock
from memory.models import Organisation

NY = ZoneInfo("America/New_York")
SATURDAY_2330_NY = datetime(2026, 12, 5, 23, 30, tzinfo=NY)  # 04:30 UTC on Sunday


def test_now_is_aware_utc_and_follows_time_machine() -> None:
    with time_machine.travel(SATURDAY_2330_NY.astimezone(ZoneInfo("UTC")), tick=False):
        assert clock.now() == datetime(2026, 12, 6, 4, 30, tzinfo=UTC)
        assert clock.now().tzinfo is UTC


def test_business_date_is_the_organisations_not_utcs(session: Session, org: Organisation) -> None:
    org.timezone = "America/New_York"
    session.flush()
    with time_machine.travel(SATURDAY_2330_NY.astimezone(ZoneInfo("UTC")), tick=False):
        assert business_day.org_business_date(session, org.id) == date(2026, 12, 5)
        assert clock.business_date("UTC") == date(2026, 12, 6)
        assert clock.business_date("Asia/Tokyo") == date(2026, 12, 6)
    with pytest.raises(LookupError):
        business_day.org_business_date(session, org.id + 10_000)


def test_unknown_or_empty_zone_reads_as_utc() -> None:
    at = datetime(2026, 12, 6, 4, 30, tzinfo=UTC)
    assert clock.business_date("Mars/Olympus_Mons", at) == date(2026, 12, 6)
    assert clock.business_date(None, at) == date(2026, 12, 6)
    with pytest.raises(ValueError, match="aware"):
        clock.business_date("UTC", datetime(2026, 12, 6, 4, 30))


def test_business_day_bounds_follow_the_zone_across_dst() -> None:
    day = date(2026, 3, 8)  # New York springs forward: a 23-hour day
    start = clock.start_of_business_day(day, "America/New_York")
    end = clock.end_of_business_day(day, "America/New_York")
    assert start == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)
    assert end - start == timedelta(hours=23) - timedelta(microseconds=1)


def test_moment_on_is_now_today_and_never_after_now_for_an_earlier_day() -> None:
    real = SATURDAY_2330_NY.astimezone(UTC)
    tz = "America/New_York"
    assert clock.moment_on(date(2026, 12, 5), tz, real) == real
    earlier = clock.moment_on(date(2026, 12, 1), tz, real)
    assert earlier.astimezone(NY) == datetime(2026, 12, 1, 23, 30, tzinfo=NY)
    assert earlier < real
    # A run "for" the UTC date (Sunday) is a future day for New York: it stays on that day.
    later = clock.moment_on(date(2026, 12, 6), tz, real)
    assert later.astimezone(NY).date() == date(2026, 12, 6)
    with time_machine.travel(SATURDAY_2330_NY.astimezone(ZoneInfo("UTC")), tick=False):
        assert clock.moment_on(date(2026, 12, 5), tz) == real
