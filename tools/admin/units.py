"""Human units for settings people type: moved to :mod:`policies.units`.

The policy set itself now reads human units (``policies.policy_set``), and ``policies`` may not
import from ``tools``; the parsers live there, and this module keeps the admin screens' imports.
"""

from __future__ import annotations

from policies.units import (
    UnitError,
    format_amount,
    format_minutes,
    format_percent,
    parse_minutes,
    parse_money,
    parse_percent,
    parse_time,
    parse_window,
)

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
