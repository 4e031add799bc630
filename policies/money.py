"""Money in guardrail sentences ("Plan exceeds $50,000: Controller approval required").

Rendering comes from the ledger's one money module (Babel); only the sentence style is decided
here: whole amounts drop their cents. Every comparison in the engine is on integer minor units.
"""

from __future__ import annotations

from babel.numbers import format_currency

from memory.money import exponent, to_decimal
from memory.money import format_money as _format_exact


def format_money(amount_minor: int, currency: str) -> str:
    """``format_money(5000000, "USD") == "$50,000"``; cents are shown only when there are some."""
    if amount_minor % (10 ** exponent(currency)):
        return _format_exact(amount_minor, currency)
    return str(
        format_currency(
            to_decimal(amount_minor, currency),
            currency,
            locale="en_US",
            format="¤#,##0",
            currency_digits=False,
        )
    )


def format_bps(bps: int) -> str:
    """Basis points as a percentage: 1500 -> "15%", 1250 -> "12.5%"."""
    whole, rest = divmod(bps, 100)
    return f"{whole}%" if rest == 0 else f"{whole}.{rest:02d}".rstrip("0") + "%"
