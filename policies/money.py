"""Money in guardrail sentences ("Plan exceeds $50,000: Controller approval required").

Rendering comes from the ledger's one money module (Babel); only the sentence style is decided
here: whole amounts drop their cents. Every comparison in the engine is on integer minor units.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from babel.numbers import format_currency

from memory.money import exponent, to_decimal
from memory.money import format_money as _format_exact


def format_money(amount_minor: int, currency: str) -> str:
    """``format_money(5000000, "USD") == "$50,000"``; cents are shown only when there are some."""
    if amount_minor % (10 ** exponent(currency)):
        return _format_exact(amount_minor, currency)
    whole = _whole_renderer(currency) if amount_minor >= 0 else None
    if whole is not None:
        return whole(amount_minor)
    return _babel_whole(amount_minor, currency)


def _babel_whole(amount_minor: int, currency: str) -> str:
    return str(
        format_currency(
            to_decimal(amount_minor, currency),
            currency,
            locale="en_US",
            format="¤#,##0",
            currency_digits=False,
        )
    )


@lru_cache(maxsize=256)
def _whole_renderer(currency: str) -> Callable[[int], str] | None:
    """A whole amount >= 0 as the exact rendering without its zero cents, or None.

    Why: Babel takes tens of microseconds an amount, and a plan or credit decision writes two or
    three in its reasons; the exact rendering has a fast path (``memory.money``). The shortcut
    is kept only where it gives Babel's own result on a few amounts (a currency whose symbol
    follows the digits, say, falls back to Babel).
    """
    places = exponent(currency)
    cut = places + 1 if places else 0
    tail = "." + "0" * places if places else ""

    def render(amount_minor: int) -> str:
        text = _format_exact(amount_minor, currency)
        return (
            text[: len(text) - cut] if text.endswith(tail) else _babel_whole(amount_minor, currency)
        )

    samples = (0, 1, 7, 100, 1_000, 12_345, 1_000_000, 987_654_321)
    unit = 10**places
    if any(render(n * unit) != _babel_whole(n * unit, currency) for n in samples):
        return None
    return render


def format_bps(bps: int) -> str:
    """Basis points as a percentage: 1500 -> "15%", 1250 -> "12.5%"."""
    whole, rest = divmod(bps, 100)
    return f"{whole}%" if rest == 0 else f"{whole}.{rest:02d}".rstrip("0") + "%"
