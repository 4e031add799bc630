"""How a draft writes amounts and dates, and in which locale: one rendering for drafts, grounding,
the review panel, the statement and the dispute replies.

Why in the kit: what a payer reads and what grounding checks must be the same string; every domain
that writes for a payer formats through here.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

from babel.dates import format_date as _babel_format_date

from memory.money import format_money

#: Languages the drafter writes and the extractor reads (dates with month names, number formats).
SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "nl", "it", "pt")

DEFAULT_LOCALE = {
    "en": "en_US",
    "de": "de_DE",
    "fr": "fr_FR",
    "es": "es_ES",
    "nl": "nl_NL",
    "it": "it_IT",
    "pt": "pt_PT",
}
KNOWN_LOCALES = frozenset(
    {
        "en_US", "en_GB", "en_CA", "en_AU", "en_IE", "en_NZ", "en_IN",
        "de_DE", "de_AT", "de_CH", "fr_FR", "fr_BE", "fr_CA", "fr_CH",
        "es_ES", "es_MX", "nl_NL", "nl_BE", "it_IT", "pt_PT", "pt_BR",
    }
)  # fmt: skip


def locale_for(language: str | None, country_code: str | None = None) -> str:
    """The Babel locale used to write for a contact: language plus country when plixo knows it."""
    lang = (language or "en").split("-")[0].split("_")[0].lower()
    if lang not in DEFAULT_LOCALE:
        lang = "en"
    if country_code:
        candidate = f"{lang}_{country_code.strip().upper()[:2]}"
        if candidate in KNOWN_LOCALES:
            return candidate
    return DEFAULT_LOCALE[lang]


@lru_cache(maxsize=65_536)
def format_amount(minor: int, currency: str, locale: str = "en_US") -> str:
    """An amount as a draft writes it (one rendering for drafts, grounding and the review panel)."""
    return format_money(minor, currency, locale)


@lru_cache(maxsize=16_384)
def format_day(day: date, locale: str = "en_US") -> str:
    """A date as a draft writes it: the long form with the month's name (never ``03/10``)."""
    return str(_babel_format_date(day, format="long", locale=locale))
