"""Public holidays from the maintained ``holidays`` package, by country and subdivision.

Why: plixo used to ship a hand-written list of US holidays for 2025-2027 and applied it to every
contact in the world; a customer in Zurich was chased on Berchtoldstag and spared on Thanksgiving.
The policy's ``quiet_hours.holiday_calendars`` names which calendars close a day:

* ``contact``: the contact's own country (and subdivision when known), a fact the caller passes
  (the contact's customer's country, else the organisation's);
* an ISO 3166 code such as ``US`` or ``CH-ZH``: that calendar for every contact (the
  organisation's own office, say).

``quiet_hours.holidays`` stays as the organisation's own extra closures (a company shutdown day).

The package's calendar objects expand lazily (a lookup for a new year writes into the object), so
they are never shared between threads: each (country, subdivision, year) is computed once into a
read-only mapping and only that is shared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from functools import lru_cache
from types import MappingProxyType

import holidays

CONTACT = "contact"

Place = tuple[str, str | None]


@lru_cache(maxsize=1)
def _supported() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType(
        {code: tuple(subs) for code, subs in holidays.list_supported_countries().items()}
    )


def parse_place(text: str) -> Place:
    """``"CH-ZH"`` -> ``("CH", "ZH")``; ``ValueError`` naming what to write for an unknown one."""
    raw = text.strip().upper()
    country, _, sub = raw.partition("-")
    supported = _supported()
    if country not in supported:
        raise ValueError(
            f"{text!r} is not a country with a holiday calendar; use an ISO 3166 code such as "
            "US, CH or CH-ZH (or 'contact' for the contact's own country)"
        )
    if sub and sub not in supported[country]:
        known = ", ".join(supported[country][:12])
        raise ValueError(
            f"{sub!r} is not a subdivision of {country} with a holiday calendar; known: {known}"
        )
    return country, sub or None


def place_or_none(country: str | None, subdivision: str | None = None) -> Place | None:
    """The calendar for a country as stored in the ledger ("US", "US-CA", "ch"), or None when it
    is empty or has no calendar (an unknown subdivision falls back to the whole country)."""
    if not country or not country.strip():
        return None
    code, _, embedded = country.strip().upper().partition("-")
    sub = (subdivision or embedded or "").strip().upper() or None
    supported = _supported()
    if code not in supported:
        return None
    return code, sub if sub in supported[code] else None


@lru_cache(maxsize=1024)
def year_of(place: Place, year: int) -> Mapping[date, str]:
    """The public holidays of ``place`` in ``year``, date -> name (read-only, cached)."""
    country, sub = place
    calendar = holidays.country_holidays(country, subdiv=sub, years=year)
    return MappingProxyType(dict(calendar.items()))


def holiday_name(day: date, places: Iterable[Place]) -> str | None:
    """The first of ``places`` that closes ``day``, as "Christmas Day (US)", or None."""
    for place in places:
        name = year_of(place, day.year).get(day)
        if name is not None:
            where = place[0] if place[1] is None else f"{place[0]}-{place[1]}"
            return f"{name} ({where})"
    return None


def places_for(calendars: Iterable[str], contact_place: Place | None) -> tuple[Place, ...]:
    """The calendars that apply to one contact, in the policy's order, without repeats."""
    out: list[Place] = []
    for entry in calendars:
        place = contact_place if entry == CONTACT else parse_place(entry)
        if place is not None and place not in out:
            out.append(place)
    return tuple(out)
