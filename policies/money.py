"""Money in sentences: integer minor units rendered for people ("$50,000", "€1,250.50").

Only used for messages; every comparison in the engine is on integer minor units.
"""

from __future__ import annotations

# ISO 4217 currencies without a minor unit (amounts are already whole units).
_ZERO_DECIMAL = frozenset(
    {
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "ISK",
        "JPY",
        "KMF",
        "KRW",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    }
)
# Three-decimal currencies.
_THREE_DECIMAL = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "CAD": "CA$", "AUD": "A$"}


def exponent(currency: str) -> int:
    if currency in _ZERO_DECIMAL:
        return 0
    if currency in _THREE_DECIMAL:
        return 3
    return 2


def format_money(amount_minor: int, currency: str) -> str:
    """``format_money(5000000, "USD") == "$50,000"``; cents are shown only when there are some."""
    exp = exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    units, frac = divmod(abs(amount_minor), 10**exp) if exp else (abs(amount_minor), 0)
    number = f"{units:,}"
    if frac:
        number += "." + str(frac).rjust(exp, "0")
    symbol = _SYMBOLS.get(currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency}"


def format_bps(bps: int) -> str:
    """Basis points as a percentage: 1500 -> "15%", 1250 -> "12.5%"."""
    whole, rest = divmod(bps, 100)
    return f"{whole}%" if rest == 0 else f"{whole}.{rest:02d}".rstrip("0") + "%"
