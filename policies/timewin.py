"""Calendar arithmetic for outreach: quiet hours in the contact's own time zone, the next moment
outreach is allowed, and Autopilot proximity for nudges.

The definitions (also in the README):

* A moment is *open* for a contact when, on the contact's local clock, the date is neither a weekend
  day nor a holiday (listed, or in one of the policy's public-holiday calendars) and the wall
  time is outside the quiet interval ``[start, end)`` (which crosses midnight when
  ``start > end``; ``start == end`` means no quiet hours).
* The *next allowed moment* from ``t`` is the earliest instant ``>= t`` that is open and (for
  nudges) at least the configured gap away from every scheduled Autopilot touch.

Daylight-saving time is handled on real instants: a quiet-hours end that falls in a spring-forward
gap opens at the transition, and a repeated autumn hour is quiet again on its second pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from policies.holidaycal import Place, holiday_name, places_for
from policies.policy_set import QuietHoursPolicy

_MAX_STEPS = 2000


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """A cached ZoneInfo; raises ValueError with a clear message for an unknown zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)"
        ) from exc


def _utc(d: date, wall: time, tz: ZoneInfo, fold: int) -> datetime:
    return datetime.combine(d, wall, tzinfo=tz).replace(fold=fold).astimezone(UTC)


@lru_cache(maxsize=8192)
def start_of_local_day(d: date, tz: ZoneInfo) -> datetime:
    """The first instant (UTC) whose local date in ``tz`` is ``d``.

    Midnight with ``fold=0`` is the first of two midnights in an autumn repeat, and for a midnight
    that does not exist (spring-forward at 00:00) it maps to the transition instant.
    """
    return _utc(d, time(0, 0), tz, 0)


@lru_cache(maxsize=8192)
def _wall_instants(d: date, wall: time, tz: ZoneInfo) -> tuple[tuple[datetime, ...], bool]:
    """The instants at which the clock in ``tz`` reaches ``wall`` on date ``d`` (cached: the same
    few days and walls recur across thousands of decisions), and whether ``wall`` is in a gap."""
    c0 = _utc(d, wall, tz, 0)
    c1 = _utc(d, wall, tz, 1)
    if c0.astimezone(tz).replace(tzinfo=None) == datetime.combine(d, wall):
        # The wall time exists, once or (autumn repeat) twice.
        return tuple(sorted({c0, c1})), False
    # Spring-forward gap: ``c1`` reads before the gap, ``c0`` after it; the clock first reads
    # ``>= wall`` at the transition, found by bisection on whole seconds.
    lo, hi = min(c0, c1), max(c0, c1)
    target = datetime.combine(d, wall)
    while (hi - lo) > timedelta(seconds=1):
        mid = (lo + (hi - lo) / 2).replace(microsecond=0)
        if mid.astimezone(tz).replace(tzinfo=None) >= target:
            hi = mid
        else:
            lo = mid
    return (hi,), True


def first_at_wall(d: date, wall: time, tz: ZoneInfo, after: datetime) -> datetime:
    """The earliest instant ``>= after`` whose clock in ``tz`` reads date ``d``, time ``>= wall``.

    Callers only ask while the local clock at ``after`` reads date ``d`` and a time before ``wall``.
    """
    candidates, gap = _wall_instants(d, wall, tz)
    if gap:
        return max(candidates[0], after)
    for c in candidates:  # the first occurrence not before ``after``
        if c >= after:
            return c
    return candidates[-1]


class QuietCalendar:
    """Quiet hours, weekend days and holidays of one policy set, ready for fast checks.

    The policy's calendar is the same for every contact except the public holidays; a contact's
    own calendar is :meth:`for_place` (the contact's country).
    """

    __slots__ = (
        "policy",
        "start",
        "end",
        "start_time",
        "end_time",
        "weekend",
        "holidays",
        "places",
        "has_window",
        "_for_places",
    )

    def __init__(self, policy: QuietHoursPolicy, contact_place: Place | None = None) -> None:
        self.policy = policy
        self.start = policy.start_minute
        self.end = policy.end_minute
        self.start_time = policy.start_time
        self.end_time = policy.end_time
        self.weekend = policy.weekend_indexes
        self.holidays = frozenset(policy.holidays)
        self.places = places_for(policy.holiday_calendars, contact_place)
        self.has_window = self.start != self.end
        self._for_places: dict[Place | None, QuietCalendar] = {}

    def for_place(self, contact_place: Place | None) -> QuietCalendar:
        """This calendar for a contact in ``contact_place`` (None: country unknown).

        Remembered per place: building one reads the policy's times and calendars again, which
        cost more than the rest of an outreach decision's calendar work. Places are countries
        and their subdivisions, a few thousand at most; a calendar never changes once built.
        """
        found = self._for_places.get(contact_place)
        if found is None:
            found = QuietCalendar(self.policy, contact_place)
            self._for_places[contact_place] = found
        return found

    def holiday(self, d: date) -> str | None:
        """Why ``d`` is a holiday ("listed holiday", "Christmas Day (US)"), or None."""
        if d in self.holidays:
            return "listed holiday"
        return holiday_name(d, self.places)

    def closed_day(self, d: date) -> bool:
        """A weekend day or a holiday: no outreach at any hour."""
        return d.weekday() in self.weekend or self.holiday(d) is not None

    def in_window(self, minute: int) -> bool:
        """Whether a local minute-of-day falls inside the quiet interval."""
        if not self.has_window:
            return False
        if self.start > self.end:
            return minute >= self.start or minute < self.end
        return self.start <= minute < self.end

    def is_open(self, t: datetime, tz: ZoneInfo) -> bool:
        loc = t.astimezone(tz)
        d = loc.date()
        if self.closed_day(d):
            return False
        return not self.in_window(loc.hour * 60 + loc.minute)

    def next_open(self, t: datetime, tz: ZoneInfo) -> datetime:
        """The earliest open instant ``>= t``."""
        for _ in range(_MAX_STEPS):
            loc = t.astimezone(tz)
            d = loc.date()
            if self.closed_day(d):
                t = start_of_local_day(d + timedelta(days=1), tz)
                continue
            minute = loc.hour * 60 + loc.minute
            if not self.in_window(minute):
                return t
            if self.start > self.end and minute >= self.start:
                t = start_of_local_day(d + timedelta(days=1), tz)
            else:
                t = first_at_wall(d, self.end_time, tz, t)
        raise RuntimeError("no open moment found; the quiet-hours calendar closes every day")


def clear_of(t: datetime, scheduled: Iterable[datetime], gap: timedelta) -> datetime:
    """The earliest instant ``>= t`` at least ``gap`` away from every ``scheduled`` touch."""
    if gap <= timedelta(0):
        return t
    for s in sorted(scheduled):
        if abs(t - s) < gap:
            t = s + gap
    return t


def next_allowed(
    lower: datetime,
    calendar: QuietCalendar,
    tz: ZoneInfo,
    scheduled: Iterable[datetime] = (),
    gap: timedelta = timedelta(0),
) -> datetime:
    """The earliest instant ``>= lower`` that is open and clear of scheduled Autopilot touches."""
    sched = sorted(scheduled)
    t = lower
    for _ in range(_MAX_STEPS):
        opened = calendar.next_open(t, tz)
        cleared = clear_of(opened, sched, gap)
        if cleared == opened:
            return opened
        t = cleared
    raise RuntimeError("no allowed moment found")


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@lru_cache(maxsize=4096)
def describe_local(t: datetime, tz: ZoneInfo) -> str:
    """'Mon 2025-03-10 08:00 EDT' on the contact's clock (locale-independent, unlike strftime).

    Remembered: the moments described are mostly the next open moments, which every contact of
    a time zone deferred on the same night shares.
    """
    loc = t.astimezone(tz)
    return (
        f"{_DAYS[loc.weekday()]} {loc.year:04d}-{loc.month:02d}-{loc.day:02d} "
        f"{loc.hour:02d}:{loc.minute:02d} {loc.tzname() or tz.key}"
    )
