"""One clock for plixo: what "now" is, and what "today" is for an organisation.

Why one home: the product used to have several "todays" (the demo took the UTC date, Autopilot
and the panel the organisation's, grounding re-checks the customer's), and drafts for one invoice
contradicted each other when those disagreed (late on a Saturday in New York it is already Sunday
in UTC). Every module asks here; tests drive it with ``time-machine``, which moves the system clock
that :func:`now` reads.

The rule:

* **"now"** is one instant, timezone-aware UTC (:func:`now`). Timestamps are stored and compared
  in UTC and only converted for display.
* **"today"** is the organisation's **business date**: the calendar date in the organisation's
  time zone (:func:`business_date`; for an organisation by id, ``memory.business_day``). Due
  dates, promise dates, installments, aging, cadence steps, Autopilot runs, the demo and every
  page use it, and a draft's wording ("is due on", "ahead of", "overdue since") is true or
  false against it.
* A **contact's** time zone is used only for *when* a message may go out (quiet hours, send
  windows, the contact's weekday): ``policies`` receives it as a fact, never as "today".

An unknown or empty zone name falls back to UTC rather than failing a page or a run; the importer
and the settings pages refuse unknown zones where they are entered.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "business_date",
    "end_of_business_day",
    "moment_on",
    "now",
    "start_of_business_day",
    "zone",
]


def now() -> datetime:
    """The current instant, timezone-aware UTC: the only "now" in plixo."""
    return datetime.now(UTC)


@lru_cache(maxsize=512)
def zone(name: str | None) -> ZoneInfo:
    """The IANA zone ``name``; UTC when it is empty or unknown (never an error on a read path)."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return ZoneInfo("UTC")


def business_date(tz_name: str | None, at: datetime | None = None) -> date:
    """The calendar date at ``at`` (default: now) in the zone ``tz_name``: the business date."""
    moment = at if at is not None else now()
    if moment.tzinfo is None:
        raise ValueError("business_date needs an aware datetime; pass one in UTC")
    return moment.astimezone(zone(tz_name)).date()


def start_of_business_day(day: date, tz_name: str | None) -> datetime:
    """The first instant (UTC) of ``day`` in the zone ``tz_name``."""
    return datetime.combine(day, time(0, 0), tzinfo=zone(tz_name)).astimezone(UTC)


def end_of_business_day(day: date, tz_name: str | None) -> datetime:
    """The last microsecond (UTC) of ``day`` in the zone ``tz_name``."""
    return start_of_business_day(day + timedelta(days=1), tz_name) - timedelta(microseconds=1)


def moment_on(day: date, tz_name: str | None, at: datetime | None = None) -> datetime:
    """The instant to act "as of" business date ``day``: ``at`` (default: now) itself when
    ``day`` is its business date, else the same local time of day moved to ``day`` (kept inside
    ``day``, across a daylight-saving change).

    Why: a run for another date (the demo with ``--today``, a catch-up run) decides and stamps
    what it writes as if it ran on that day, while a run for today uses the real moment, so a run
    for today or an earlier day never writes a timestamp later than the moment it ran.
    """
    real = (at if at is not None else now()).astimezone(UTC)
    tz = zone(tz_name)
    local = real.astimezone(tz)
    if local.date() == day:
        return real
    shifted = datetime.combine(day, local.time().replace(tzinfo=None), tzinfo=tz).astimezone(UTC)
    first, last = start_of_business_day(day, tz_name), end_of_business_day(day, tz_name)
    shifted = max(min(shifted, last), first)
    return min(shifted, real) if day < local.date() else shifted
