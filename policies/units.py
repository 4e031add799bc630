"""Human units for settings people type: "50,000.00 USD", "10%", "15 minutes", "20:00-08:00".

Admins and Controllers write amounts, percentages, durations and time windows the way they read
them (in the policy YAML too, ``policies.policy_set``); the ledger and the compiled policy set keep
integer minor units, basis points, whole minutes and "HH:MM" strings. Each parser either returns
the exact stored value or raises :class:`UnitError` saying what to write instead, so a bad value
never reaches the ledger or the guardrails.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from memory.money import MoneyError, check_currency, exponent, to_decimal

__all__ = [
    "UnitError",
    "format_amount",
    "format_minutes",
    "format_percent",
    "parse_minutes",
    "parse_money",
    "parse_percent",
    "parse_time",
    "parse_window",
]

_MONEY = re.compile(r"^\s*(?:([A-Za-z]{3})\s+)?(-?[\d.,'\s]+?)\s*(?:([A-Za-z]{3}))?\s*$")
_PERCENT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*%\s*$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_DURATION = re.compile(r"^\s*(\d+)\s*(minutes?|mins?|hours?|h)\s*$", re.IGNORECASE)


class UnitError(ValueError):
    """A value a person typed that cannot be stored as written; the message says what to write."""


def parse_money(text: str, default_currency: str | None = None) -> tuple[int, str]:
    """``"50,000.00 USD"`` -> ``(5000000, "USD")``; negative amounts and extra decimals refused.

    Thousands separators (``,`` ``'`` or spaces) are accepted; the decimal point is ``.``. The
    currency comes first or last; without one, ``default_currency`` is used if given.
    """
    raw = str(text).strip()
    match = _MONEY.match(raw)
    if not match or (match.group(1) and match.group(3)):
        raise UnitError(f"{raw!r} is not an amount; write it like '50,000.00 USD'.")
    code = match.group(1) or match.group(3) or default_currency
    if code is None:
        raise UnitError(f"{raw!r} has no currency; write it like '50,000.00 USD'.")
    try:
        currency = check_currency(code)
    except MoneyError as exc:
        raise UnitError(str(exc)) from None
    number = re.sub(r"[,'\s]", "", match.group(2))
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise UnitError(f"{raw!r} is not an amount; write it like '50,000.00 USD'.") from None
    if value < 0:
        raise UnitError(f"{raw!r} is negative; a limit or threshold is zero or more.")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise UnitError(f"{raw!r} has more than {exponent(currency)} decimals for {currency}.")
    return int(scaled), currency


def format_amount(minor: int, currency: str) -> str:
    """The inverse of :func:`parse_money`: ``(5000000, "USD")`` -> ``"50,000.00 USD"``."""
    places = exponent(currency)
    return f"{to_decimal(minor, currency):,.{places}f} {currency}"


def parse_percent(text: str, *, maximum: int = 100) -> int:
    """``"10%"`` -> 1000 basis points; more than ``maximum`` percent or below zero is refused."""
    raw = str(text).strip()
    match = _PERCENT.match(raw)
    if not match:
        raise UnitError(f"{raw!r} is not a percentage; write it like '10%' or '12.5%'.")
    value = Decimal(match.group(1))
    if value < 0 or value > maximum:
        raise UnitError(f"{raw!r} is outside 0% to {maximum}%; write a value in that range.")
    bps = value * 100
    if bps != bps.to_integral_value():
        raise UnitError(f"{raw!r} is finer than 0.01%; round it to two decimals.")
    return int(bps)


def format_percent(bps: int) -> str:
    whole, rest = divmod(bps, 100)
    return f"{whole}%" if rest == 0 else f"{whole}.{rest:02d}".rstrip("0") + "%"


def parse_time(text: str) -> str:
    """``"8:00"`` -> ``"08:00"``; ``"25:00"`` or ``"12:60"`` refused."""
    raw = str(text).strip()
    match = _TIME.match(raw)
    if not match:
        raise UnitError(f"{raw!r} is not a time; write it as HH:MM on a 24-hour clock.")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        raise UnitError(f"{raw!r} is not a time of day; hours run 00-23 and minutes 00-59.")
    return f"{hour:02d}:{minute:02d}"


def parse_window(text: str) -> tuple[str, str]:
    """``"20:00-08:00"`` -> ``("20:00", "08:00")`` (a start after the end crosses midnight)."""
    raw = str(text).strip()
    parts = [p.strip() for p in re.split(r"\s*(?:-|–|to)\s*", raw)]
    if len(parts) != 2:
        raise UnitError(f"{raw!r} is not a window; write it like '20:00-08:00'.")
    start, end = parse_time(parts[0]), parse_time(parts[1])
    if start == end:
        raise UnitError(f"{raw!r} starts and ends at the same time; the window would be empty.")
    return start, end


def parse_minutes(text: str) -> int:
    """``"15 minutes"`` -> 15, ``"2 hours"`` -> 120; a bare number, zero or a fraction refused."""
    raw = str(text).strip()
    match = _DURATION.match(raw)
    if not match:
        raise UnitError(f"{raw!r} is not a duration; write it like '15 minutes' or '2 hours'.")
    count, unit = int(match.group(1)), match.group(2).lower()
    minutes = count * 60 if unit.startswith("h") else count
    if minutes <= 0:
        raise UnitError(f"{raw!r} is no time at all; write at least '1 minute'.")
    return minutes


def format_minutes(minutes: int) -> str:
    """The inverse of :func:`parse_minutes`: 15 -> ``"15 minutes"``, 120 -> ``"2 hours"``."""
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} hour" if hours == 1 else f"{hours} hours"
    return "1 minute" if minutes == 1 else f"{minutes} minutes"
