"""Money as integer minor units plus an ISO 4217 code; never a float.

Babel knows each currency's number of decimals (JPY 0, USD 2, KWD 3) and how to print amounts,
so drafts, imports and grounding all agree on one rendering.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel import Locale
from babel.numbers import format_currency, get_currency_precision, list_currencies

_KNOWN = frozenset(list_currencies())


class MoneyError(ValueError):
    """An amount or currency that cannot be stored exactly."""


def check_currency(code: str) -> str:
    code = code.strip().upper()
    if code not in _KNOWN:
        raise MoneyError(f"unknown currency code {code!r}; use an ISO 4217 code such as USD or EUR")
    return code


def exponent(currency: str) -> int:
    return int(get_currency_precision(check_currency(currency)))


def parse_amount(text: str, currency: str) -> int:
    """A plain decimal string (e.g. ``"1234.56"``) to minor units, exactly, or a clear error."""
    raw = text.strip()
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise MoneyError(f"{raw!r} is not a number; write a plain amount like 1234.56") from None
    if not value.is_finite():
        raise MoneyError(f"{raw!r} is not a finite amount")
    places = exponent(currency)
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{raw!r} has more than {places} decimals for {currency}")
    return int(scaled)


def to_decimal(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


def format_money(minor: int, currency: str, locale: str = "en_US") -> str:
    """How plixo writes an amount for people, e.g. ``$1,234.56`` or ``€1.234,56`` (de_DE)."""
    fast = _renderer(currency, locale) if minor >= 0 else None
    if fast is not None:
        return fast(minor)
    return _babel(minor, currency, locale)


def _babel(minor: int, currency: str, locale: str) -> str:
    return str(format_currency(to_decimal(minor, currency), currency, locale=_locale(locale)))


@lru_cache(maxsize=256)
def _renderer(currency: str, locale: str) -> Callable[[int], str] | None:
    """Babel's rendering of amounts >= 0 in ``currency`` for ``locale``, done with str.format.

    Babel takes over 10 us an amount, and a bank file formats tens of thousands (its reasons).
    The symbol, separators and their places are read off one amount Babel formatted, and the
    result is compared with Babel's on a few others; any difference (another grouping, a sign
    or symbol placed otherwise): None, and Babel formats every amount.
    """
    places = exponent(currency)
    probe = _babel(int("1234567" + "8" * places), currency, locale)
    start, end = probe.find("1"), probe.rfind("8" if places else "7") + 1
    digits = probe[start:end]
    if start < 0 or len(digits) < 9:
        return None
    group, decimal = digits[1], (digits[-places - 1] if places else "")
    prefix, suffix, unit = probe[:start], probe[end:], 10**places

    def render(minor: int) -> str:
        whole, frac = divmod(minor, unit)
        text = f"{whole:,}".replace(",", group)
        if places:
            text += decimal + str(frac).rjust(places, "0")
        return prefix + text + suffix

    samples = (
        0,
        1,
        7,
        99,
        100,
        1_000,
        12_345,
        100_000,
        999_999,
        10**places * 1_000,
        987_654_321_012,
    )
    if any(render(m) != _babel(m, currency, locale) for m in samples):
        return None
    return render


@lru_cache(maxsize=64)
def _locale(name: str) -> Locale:
    """Babel parses a locale name on every call; a bank file formats thousands of amounts."""
    return Locale.parse(name)
