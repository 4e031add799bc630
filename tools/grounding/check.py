"""Grounding: every amount, date, invoice number and link in a draft, checked against the ledger.

Why: a collection e-mail with a wrong figure damages trust more than no e-mail. The drafter writes,
this module reads what it wrote back out of the plain text (not out of the model's own claims) and
compares each fact with the ledger. The result (``GroundingReport``) is stored on the draft, sent
back to the model once as an error, and handed to the policies as facts.

Rendering lives here too (``format_amount``, ``format_day``, ``locale_for``) so the writer and the
reader agree: amounts are written with ``memory.money.format_money`` (Babel) and dates in Babel's
long form, and the extractor understands every spelling those produce in the supported languages.
Numeric dates such as ``03/10/2025`` are reported as ambiguous: a payer cannot tell the day from the
month, so a draft must write the month's name.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import get_month_names
from babel.numbers import (
    get_currency_symbol,
    get_decimal_symbol,
    get_group_symbol,
    list_currencies,
)
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory import clock
from memory.config import Settings, get_settings
from memory.models import (
    OPEN_DISPUTE_STATUSES,
    Activity,
    Contact,
    Customer,
    Dispute,
    Draft,
    DraftKind,
    DraftPersona,
    Invoice,
    InvoiceStatus,
    Organisation,
    OrganisationProfile,
    Payment,
    PaymentPlan,
    PlanInstallment,
    PromiseToPay,
    Segment,
    promise_invoice,
)
from memory.money import MoneyError, exponent
from policies.engine import engine_for as policy_engine_for
from policies.facts import ContactFacts, InvoiceFacts, LedgerFacts, PromiseFacts, SendDraftFacts
from policies.facts import Money as PolicyMoney
from policies.facts import StatedFacts as PolicyStatedFacts
from policies.types import ActionType
from tools.commitments.promises import covered_keys
from tools.insights.account360 import pay_link
from tools.insights.readiness import data_ready
from tools.kit.formatting import (
    DEFAULT_LOCALE,
    KNOWN_LOCALES,
    SUPPORTED_LANGUAGES,
    format_amount,
    format_day,
    locale_for,
)
from tools.ledger.policy_overrides import policy_set_for

# --- extraction --------------------------------------------------------------------------------

_SPACE = "[ \u00a0\u202f]"
#: Characters Babel (and people) put between digit groups besides "," and ".": spaces (fr, pt:
#: U+00A0 / U+202F), and apostrophes (de_CH, fr_CH: U+2019 "6’780.00"; the ASCII one by hand).
_GROUP_MARKS = "’' \u00a0\u202f"
_GROUP = "[,.’' \u00a0\u202f]"
_COMMON_CURRENCIES = (
    "USD", "EUR", "GBP", "JPY", "CAD", "AUD", "NZD", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK",
    "HUF", "INR", "BRL", "MXN", "ZAR", "SGD", "HKD", "CNY", "KRW", "ILS", "AED", "SAR", "TRY",
    "KWD", "BHD",
)  # fmt: skip
_SYMBOL_LOCALES = tuple(sorted(KNOWN_LOCALES | {"ja_JP", "zh_CN"}))
_ISO_CODES = frozenset(list_currencies())


@lru_cache(maxsize=1)
def _symbol_map() -> dict[str, frozenset[str]]:
    """Currency symbols Babel prints in the supported locales, each with the codes it may mean."""
    found: dict[str, set[str]] = {}
    for code in _COMMON_CURRENCIES:
        for loc in _SYMBOL_LOCALES:
            sym = str(get_currency_symbol(code, loc))
            if sym and sym != code:
                found.setdefault(sym, set()).add(code)
    return {sym: frozenset(codes) for sym, codes in found.items()}


#: A written number: digit groups (Western "1,234,567", Indian "12,34,567", Swiss "1’234’567",
#: French "1 234 567") with an optional decimal part, or a plain run of digits.
_NUMBER = (
    r"(?:\d{1,3}(?:" + _GROUP + r"\d{2,3})*" + _GROUP + r"\d{3}(?:[.,]\d{1,3})?"
    r"|\d+(?:['’]\d{3})+(?:[.,]\d{1,3})?"  # Babel 2.19's de_CH: "1000000'000.00"
    r"|\d+(?:[.,]\d{1,3})?)(?![\d\w])"
)


@lru_cache(maxsize=1)
def _amount_regex() -> re.Pattern[str]:
    symbols = sorted(_symbol_map(), key=len, reverse=True)
    # An ISO code may be glued to the number ("USD23,400.00" in es_MX and en_AU): no word
    # boundary between the code and the digits, only no letter on either side of the code.
    code = r"(?<![A-Za-z0-9])[A-Z]{3}(?![A-Za-z])"
    cur = "|".join([re.escape(s) for s in symbols] + [code])
    # Every amount starts with a digit, a capital (a code, "US$", "CHF") or a symbol: checking
    # that first lets the engine skip most positions without trying ~40 alternatives (3x faster).
    starts = "".join(sorted({re.escape(s[0]) for s in symbols if not s[0].isalnum()}))
    pattern = (
        rf"(?=[0-9A-Z{starts}])(?:"
        rf"(?P<c1>{cur}){_SPACE}?(?P<n1>{_NUMBER})"  # $1,234.56  USD 1,234.56  USD1,234.56
        rf"|(?<![\w.,’'])(?P<n2>{_NUMBER}){_SPACE}?(?P<c2>{cur}))"  # 1.234,56 €  1 234,56 $US
    )
    return re.compile(pattern)


# The (?=\d) / (?=#) look-aheads only let the engine skip positions that cannot match.
_BARE_DECIMAL = re.compile(
    r"(?=\d)(?<![\w.,/’'-])(\d{1,3}(?:[,.’'\u00a0\u202f]\d{3})+[.,]\d{2}|\d+(?:['’]\d{3})+[.,]\d{2}"
    r"|\d+[.,]\d{2})"
    r"(?![\d\w.,/-]|[.,]\d)"
)
_ISO_DATE = re.compile(r"(?=\d)(?<![\d-])(\d{4})-(\d{2})-(\d{2})(?![\d-])")
_NUMERIC_DATE = re.compile(
    r"(?=\d)(?<![\d./-])\d{1,2}[./-]\d{1,2}[./-](?:\d{4}|\d{2})(?![\d/-]|\.\d)"
)
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'()\[\]{}]+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_INVOICE_WORD = (
    r"(?:invoices?|inv\.?|rechnung(?:en|snummer|snr\.?)?|facturas?|factures?|fattur[ae]"
    r"|factu(?:u)?r(?:en)?|faturas?)"
)
_NUMBER_WORD = r"(?:no\.?|nr\.?|n°|n\.°|núm\.?|num\.?|number|nummer|numéro|número|numero|#)"
_TOKEN = r"#?[A-Za-z0-9][A-Za-z0-9\-/_]*\d[A-Za-z0-9\-/_]*"
_INVOICE_REF = re.compile(
    rf"\b{_INVOICE_WORD}(?![A-Za-z])(?:{_SPACE}*{_NUMBER_WORD})?[:{_SPACE}]*(?P<tok>{_TOKEN})",
    re.IGNORECASE,
)
_HASH_REF = re.compile(r"(?=#)(?<![\w&])#(?P<tok>[A-Za-z0-9][A-Za-z0-9\-/_]*\d[A-Za-z0-9\-/_]*)")
_LIST_NEXT = re.compile(
    rf"{_SPACE}*(?:,|&|/|\band\b|\bund\b|\bet\b|\by\b|\be\b|\ben\b){_SPACE}*(?P<tok>{_TOKEN})",
    re.IGNORECASE,
)


def _strip_accents(text: str) -> str:
    if text.isascii():
        return text.lower()
    return "".join(
        c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
    ).lower()


class _FoldTable(dict[int, str]):
    """``str.translate`` table folding one character to one (lower case, no accents), filled
    lazily: the folded text keeps the original's offsets, so spans found in it cut the original."""

    def __missing__(self, code: int) -> str:
        folded = _strip_accents(chr(code))[:1] or " "
        self[code] = folded
        return folded


_FOLD = _FoldTable()


def _fold_aligned(text: str) -> str:
    return text.lower() if text.isascii() else text.translate(_FOLD)


def _occurrences(text: str, token: str) -> Iterable[tuple[int, int]]:
    """Where ``token`` stands on its own in ``text`` (not inside a longer number or word): the
    regex ``(?<![\\w.,-])TOKEN(?![\\w-]|[.,]\\d)``, with ``str.find`` (no compile per token)."""
    n, size = len(token), len(text)
    start = text.find(token)
    while start >= 0:
        end = start + n
        before = text[start - 1] if start else ""
        after = text[end] if end < size else ""
        joined_before = bool(before) and (before.isalnum() or before in "_.,-")
        joined_after = bool(after) and (
            after.isalnum()
            or after in "_-"
            or (after in ".," and end + 1 < size and text[end + 1].isdigit())
        )
        if not joined_before and not joined_after:
            yield start, end
        start = text.find(token, start + 1)


@lru_cache(maxsize=16)
def _month_lookup(language: str) -> dict[str, int]:
    """Month names (wide and abbreviated, accents folded) of ``language``, plus English's.

    Only the text's own language: Italian's "set" (settembre) would read "set 3 reminders" as a
    date in an English text.
    """
    months: dict[str, int] = {}
    langs = [language] if language in SUPPORTED_LANGUAGES else []
    for lang in [*langs, "en"]:
        for width in ("wide", "abbreviated"):
            for num, name in get_month_names(width, locale=lang).items():
                key = _strip_accents(str(name)).rstrip(".")
                if len(key) >= 3:
                    months.setdefault(key, int(num))
    months.setdefault("sept", 9)
    return months


_DAY = r"(?P<d>\d{1,2})(?:st|nd|rd|th|er|º|°)?\.?"
_MONTH_WORD = r"(?P<m>[a-z]{3,10}+)(?![a-z])\.?"
_YEAR = r"(?P<y>\d{4})"
# Candidates only; the month word is checked against the language's month names afterwards
# (one dictionary lookup instead of a 40-way alternation tried at every position).
_DAY_FIRST = re.compile(  # 3 October 2025 | 3. Oktober 2025 | 3 de octubre de 2025 | 3 octobre
    rf"(?<![\d.,]){_DAY}{_SPACE}+(?:de{_SPACE}+)?{_MONTH_WORD}(?![a-z])"
    rf"(?:,?{_SPACE}+(?:de{_SPACE}+)?{_YEAR})?(?!\d)"
)
_MONTH_FIRST = re.compile(  # October 3, 2025 | Oct 3 2025 | October 3
    rf"(?<![a-z]){_MONTH_WORD}{_SPACE}+{_DAY}(?![\d.,]\d)(?:,?{_SPACE}+{_YEAR})?(?!\d)"
)


class StatedAmount(BaseModel):
    """An amount as written, with the currencies its symbol may stand for."""

    text: str
    value: str = Field(description="The number as a plain decimal string, e.g. '1234.56'.")
    currencies: list[str] = Field(description="Candidate ISO codes; empty when none was written.")


class StatedFacts(BaseModel):
    """What a text states, read back from the text itself."""

    amounts: list[StatedAmount] = Field(default_factory=list)
    dates: list[date] = Field(default_factory=list)
    invoice_numbers: list[str] = Field(default_factory=list)
    links: list[str] = Field(default_factory=list)
    ambiguous: list[str] = Field(
        default_factory=list, description="Numeric dates such as 03/10/2025 that a payer misreads."
    )


@lru_cache(maxsize=64)
def _reading_locale(language: str, locale: str | None) -> str:
    """The locale a text's numbers are read in: the one it was written for, else the language's."""
    loc = locale or DEFAULT_LOCALE.get(language)
    if loc is None:
        return "en_US" if language == "en" else "de_DE"
    try:
        get_decimal_symbol(loc)
    except (ValueError, LookupError):
        return "en_US" if language == "en" else "de_DE"
    return loc


#: A locale per decimal mark, for a number that plainly uses the other mark than the text's
#: locale ("€1.234,56" in an English text).
_LOCALE_FOR_MARK = {".": "en_US", ",": "de_DE"}


def _decimal_mark_of(s: str, locale_mark: str, grouped: bool) -> str | None:
    """Which of "." and "," is the decimal mark in ``s`` (None: it has none).

    Both marks, or grouping by spaces/apostrophes: the last mark is the decimal one. One mark
    repeated only groups. A single "," or "." followed by exactly three digits is ambiguous
    ("1,234": a thousand in English, one-point-two in German): the locale decides.
    """
    marks = [ch for ch in s if ch in ".,"]
    if not marks:
        return None
    last = marks[-1]
    if len(set(marks)) > 1 or grouped:
        return last
    if len(marks) > 1:
        return None
    head, _, tail = s.rpartition(last)
    if len(tail) == 3 and head.isdigit() and head != "0":
        return last if last == locale_mark else None
    return last


@lru_cache(maxsize=64)
def _symbols(locale: str) -> tuple[str, str]:
    """The locale's (decimal mark, group mark) as Babel writes them."""
    return str(get_decimal_symbol(locale)), str(get_group_symbol(locale))


def _parse_number(raw: str, locale: str) -> Decimal | None:
    """A written number to a Decimal as Babel's ``parse_decimal`` reads it in the text's ``locale``.

    Spaces and apostrophes only ever group digits (Babel 2.19 writes de_CH "1000000'000.00",
    older CLDR data "1’234.56", French U+202F). Once the decimal mark is known, every other mark
    is written as the reading locale's own group symbol and Babel reads the number; a number
    that plainly uses the other decimal mark than the locale ("€1.234,56" in an English text) is
    read in a locale that uses that mark.
    """
    grouped = any(ch in _GROUP_MARKS for ch in raw)
    decimal = _decimal_mark_of(raw, _symbols(locale)[0], grouped)
    reading = locale
    if decimal is not None and decimal != _symbols(locale)[0]:
        reading = _LOCALE_FOR_MARK[decimal]
    mark, group = _symbols(reading)
    s = "".join(ch if ch.isdigit() or ch == decimal else group for ch in raw)
    # What Babel's ``parse_decimal(s, locale=reading)`` does with a string of digits, the mark
    # and the group symbol only (its re-grouping of other spaces never applies: there are
    # none), without its locale lookups on every amount of every draft.
    try:
        return Decimal(s.replace(group, "").replace(mark, "."))
    except InvalidOperation:
        return None


def _currencies_for(token: str) -> list[str]:
    if token in _ISO_CODES:
        return [token]
    return sorted(_symbol_map().get(token, frozenset()))


def _normalize_link(url: str) -> str:
    url = url.rstrip(".,;:!?")
    if url.lower().startswith("www."):
        url = "https://" + url
    return url.rstrip("/")


def _closest_year(day: int, month: int, as_of: date | None) -> date | None:
    """A date written without a year is the one nearest to ``as_of``."""
    ref = as_of or clock.business_date("UTC")
    best: date | None = None
    for year in (ref.year - 1, ref.year, ref.year + 1):
        try:
            cand = date(year, month, day)
        except ValueError:
            continue
        if best is None or abs((cand - ref).days) < abs((best - ref).days):
            best = cand
    return best


def invoice_shapes(numbers: Iterable[str]) -> list[re.Pattern[str]]:
    """Patterns that look like this organisation's invoice numbers (``INV-1042`` → ``INV-\\d{4}``).

    Purely numeric numbering gives no pattern: it would match years and amounts.
    """
    shapes: set[str] = set()
    for number in numbers:
        if not re.search(r"[A-Za-z]", number) or not re.search(r"\d", number):
            continue
        shape = re.sub(r"\d+", lambda m: rf"\d{{{len(m.group())}}}", re.escape(number))
        shapes.add(shape)
    return [_shape_pattern(s) for s in sorted(shapes)]


@lru_cache(maxsize=1024)
def _shape_pattern(shape: str) -> re.Pattern[str]:
    """Customers of one organisation share a numbering: compile each shape once."""
    return re.compile(rf"(?<![\w.,-]){shape}(?![\w-]|[.,]\d)")


def _read_links(text: str, facts: StatedFacts) -> str:
    """Links first, and blank them out so their digits are not read as amounts or invoices.

    Returns the text with every link blanked (same length: later offsets stay aligned)."""
    work = text
    for m in _URL.finditer(text):
        link = _normalize_link(m.group())
        if link not in facts.links:
            facts.links.append(link)
    work = _URL.sub(lambda m: " " * len(m.group()), work)
    return work


def _read_numeric_dates(work: str, facts: StatedFacts) -> str:
    """ISO dates into ``facts.dates``; all-digit dates like 03/04 are ambiguous (which is the day?).

    Returns the text with both blanked, so their digits are not read as amounts."""
    for m in _ISO_DATE.finditer(work):
        try:
            d = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            facts.ambiguous.append(m.group())
            continue
        if d not in facts.dates:
            facts.dates.append(d)
    work = _ISO_DATE.sub(lambda m: " " * len(m.group()), work)
    for m in _NUMERIC_DATE.finditer(work):
        facts.ambiguous.append(m.group())
    work = _NUMERIC_DATE.sub(lambda m: " " * len(m.group()), work)
    return work


def _read_worded_dates(work: str, facts: StatedFacts, lang: str, as_of: date | None) -> str:
    """Dates with a month name in ``lang`` ("3 March", "March 3rd, 2026"); no year: the nearest.

    Returns the text with them blanked, so the day is not read as an amount."""
    folded = _fold_aligned(work)  # one character per character: offsets stay aligned
    months = _month_lookup(lang)
    spans: list[tuple[int, int]] = []
    for rx in (_DAY_FIRST, _MONTH_FIRST):
        for m in rx.finditer(folded):
            if any(s <= m.start() < e for s, e in spans):
                continue
            month = months.get(m.group("m").rstrip("."))
            if month is None:
                continue
            day_n = int(m.group("d"))
            year = m.group("y")
            d2: date | None
            if year:
                try:
                    d2 = date(int(year), month, day_n)
                except ValueError:
                    d2 = None
            else:
                d2 = _closest_year(day_n, month, as_of)
            if d2 is None:
                facts.ambiguous.append(work[m.start() : m.end()])
            elif d2 not in facts.dates:
                facts.dates.append(d2)
            spans.append((m.start(), m.end()))
    chars = list(work)
    for s, e in spans:
        chars[s:e] = " " * (e - s)
    work = "".join(chars)
    return work


def _read_invoice_numbers(
    work: str,
    facts: StatedFacts,
    known_invoice_numbers: Iterable[str],
    shapes: Sequence[re.Pattern[str]],
) -> str:
    """Invoice numbers before amounts: "invoice 1042" is not an amount.

    Reads numbers a keyword or "#" introduces (with the list that follows: "1042, 1043 and 1044"),
    the customer's known numbers and look-alikes of the organisation's shapes. Returns the text
    with them blanked."""
    numbers: list[str] = []

    def _add_number(tok: str) -> None:
        tok = tok.lstrip("#").rstrip("-/_")
        if tok and tok not in numbers:
            numbers.append(tok)

    inv_spans: list[tuple[int, int]] = []
    for m in _INVOICE_REF.finditer(work):
        first = m.group("tok")
        _add_number(first)
        end = m.end()
        first_shape = re.sub(r"\d", "9", first.lstrip("#"))
        while True:
            nxt = _LIST_NEXT.match(work, end)
            if not nxt or re.sub(r"\d", "9", nxt.group("tok").lstrip("#")) != first_shape:
                break
            _add_number(nxt.group("tok"))
            end = nxt.end()
        inv_spans.append((m.start("tok"), end))
    for m in _HASH_REF.finditer(work):
        _add_number(m.group("tok"))
        inv_spans.append((m.start(), m.end()))
    for known in known_invoice_numbers:
        if not known:
            continue
        for span in _occurrences(work, known):
            _add_number(known)
            inv_spans.append(span)
    for shape in shapes:
        for m in shape.finditer(work):
            _add_number(m.group())
            inv_spans.append((m.start(), m.end()))
    facts.invoice_numbers = numbers
    chars = list(work)
    for s, e in inv_spans:
        chars[s:e] = " " * (e - s)
    work = "".join(chars)
    return work


def _read_amounts(work: str, facts: StatedFacts, reading: str) -> None:
    """Amounts last, from what is left: with a currency or not, and bare decimals ("12.50").

    ``reading`` (a locale) settles which of "," and "." is the decimal mark."""
    amount_spans: list[tuple[int, int]] = []
    for m in _amount_regex().finditer(work):
        num = m.group("n1") or m.group("n2")
        cur = m.group("c1") or m.group("c2")
        if cur and re.fullmatch(r"[A-Z]{3}", cur) and cur not in _ISO_CODES:
            continue  # an acronym next to a number, not a currency
        value = _parse_number(num, reading)
        if value is None:
            continue
        facts.amounts.append(
            StatedAmount(text=m.group().strip(), value=str(value), currencies=_currencies_for(cur))
        )
        amount_spans.append(m.span())
    if amount_spans:
        chars = list(work)
        for s, e in amount_spans:
            chars[s:e] = " " * (e - s)
        work = "".join(chars)
    for m in _BARE_DECIMAL.finditer(work):
        value = _parse_number(m.group(1), reading)
        if value is not None:
            facts.amounts.append(StatedAmount(text=m.group(1), value=str(value), currencies=[]))


def extract_facts(
    text: str,
    *,
    language: str = "en",
    as_of: date | None = None,
    known_invoice_numbers: Iterable[str] = (),
    shapes: Sequence[re.Pattern[str]] = (),
    locale: str | None = None,
) -> StatedFacts:
    """Read every amount, date, invoice number and link out of ``text``.

    ``known_invoice_numbers`` (the customer's) are found wherever they appear; ``shapes`` catch
    look-alike numbers (another customer's invoice, an invented one) that no keyword introduces.
    ``locale`` (the one the text was written for, e.g. ``de_CH``) settles which of "," and "."
    is the decimal mark; without it the language's usual locale does.

    Each step blanks what it read, in this order, so a link's or a date's digits are never read
    again as an invoice number or an amount.
    """
    facts = StatedFacts()
    lang = language.split("-")[0].lower()
    reading = _reading_locale(lang, locale)
    work = _read_links(text, facts)
    work = _read_numeric_dates(work, facts)
    work = _read_worded_dates(work, facts, lang, as_of)
    work = _read_invoice_numbers(work, facts, known_invoice_numbers, shapes)
    _read_amounts(work, facts, reading)
    return facts


# --- the ledger's side -------------------------------------------------------------------------


class LedgerTruth(BaseModel):
    """Everything a draft to one customer may state: amounts per currency, dates, numbers, links."""

    customer_id: int
    currencies: list[str]
    amounts: dict[str, list[int]] = Field(description="currency -> amounts in minor units")
    dates: list[date]
    invoice_numbers: list[str]
    links: list[str]
    locale: str = "en_US"
    open_balances: dict[str, tuple[str, int]] = Field(
        default_factory=dict, description="open invoice number -> (currency, balance minor)"
    )
    open_due_dates: dict[str, date] = Field(
        default_factory=dict, description="open invoice number -> due date"
    )

    def amount_set(self, currency: str) -> frozenset[int]:
        return frozenset(self.amounts.get(currency, ()))

    def with_named_totals(self, invoice_numbers: Iterable[str]) -> LedgerTruth:
        """This truth plus, per currency, the open balance of the open invoices a text names, and
        the subtotals of those named invoices that fall due within one period.

        Why: a statement lists several invoices and totals them per currency; that total is a
        ledger figure for exactly the invoices the same text names (it changes when the text
        names others), so it is allowed for that text only. A consolidated message also heads
        its invoices by aging bucket with a subtotal per bucket (``tools.outreach.consolidation``);
        a
        bucket is a range of due dates, so its subtotal is the sum of the named invoices due in
        one such range. Every such range is allowed (not only today's buckets): the message is
        checked again when it is approved and sent, days later, when the buckets have moved.
        Unchanged when fewer than two are named.
        """
        named = {n.lower() for n in invoice_numbers}
        by_currency: dict[str, dict[date | None, int]] = {}
        count = 0
        for number, (currency, balance) in self.open_balances.items():
            if number.lower() in named:
                due = self.open_due_dates.get(number)
                per_day = by_currency.setdefault(currency, {})
                per_day[due] = per_day.get(due, 0) + balance
                count += 1
        if count < 2:
            return self
        amounts = {cur: list(v) for cur, v in self.amounts.items()}
        for cur, per_day in by_currency.items():
            have = amounts.setdefault(cur, [])
            extra = _range_sums(per_day) - set(have)
            if extra:
                amounts[cur] = sorted([*have, *extra])
        return self.model_copy(update={"amounts": amounts})

    def describe_amounts(self, limit: int = 6) -> str:
        parts: list[str] = []
        for cur, values in self.amounts.items():
            for v in sorted(set(values))[:limit]:
                parts.append(format_amount(v, cur, self.locale))
        return ", ".join(parts)


#: Above this many distinct due dates among the named invoices of one currency only their total
#: is allowed (the subtotals of every period would be too many figures to allow).
MAX_SUBTOTAL_DATES = 40


def _range_sums(per_day: dict[date | None, int]) -> set[int]:
    """The total of ``per_day`` (balance per due date), and the sum over every run of
    consecutive due dates when all dates are known and there are not too many."""
    total = sum(per_day.values())
    days = sorted(d for d in per_day if d is not None)
    if len(days) != len(per_day) or len(days) > MAX_SUBTOTAL_DATES:
        return {total}
    values = [per_day[d] for d in days]
    sums = {total}
    for start in range(len(values)):
        running = 0
        for value in values[start:]:
            running += value
            sums.add(running)
    return sums


def ledger_truth(
    session: Session,
    org_id: int,
    customer_id: int,
    *,
    as_of: date,
    links: Iterable[str] = (),
    locale: str = "en_US",
) -> LedgerTruth:
    """What the ledger says about one customer, for comparison with a draft.

    ``links`` are the pay links the caller allows (see ``tools.insights.account360.pay_link``).
    Scoped to
    ``org_id``: a customer of another organisation raises ``LookupError``.
    """
    customer = session.get(Customer, customer_id)
    if customer is None or customer.org_id != org_id:
        raise LookupError(f"customer {customer_id} is not in organisation {org_id}")
    return ledger_truths(
        session,
        org_id,
        [customer_id],
        as_of=as_of,
        links={customer_id: list(links)},
        locales={customer_id: locale},
    )[customer_id]


@dataclass
class _TruthParts:
    """What ``ledger_truths`` gathers per customer while it reads the ledger one table at a time:
    each table is one query for all customers (a batch), not one per customer."""

    amounts: dict[int, dict[str, set[int]]]
    dates: dict[int, set[date]]
    numbers: dict[int, list[str]]
    currencies: dict[int, set[str]]
    balances: dict[int, dict[str, tuple[str, int]]]
    due_dates: dict[int, dict[str, date]]

    @classmethod
    def empty(cls, ids: Sequence[int], as_of: date) -> _TruthParts:
        """Nothing read yet; ``as_of`` (today) is a date any draft may state."""
        return cls(
            amounts={c: {} for c in ids},
            dates={c: {as_of} for c in ids},
            numbers={c: [] for c in ids},
            currencies={c: set() for c in ids},
            balances={c: {} for c in ids},
            due_dates={c: {} for c in ids},
        )

    def add(self, cid: int, cur: str, value: int) -> None:
        """Allow an amount; zero and negative ones are never a figure a draft should state."""
        if value > 0:
            self.amounts[cid].setdefault(cur, set()).add(value)


def _invoice_truths(
    session: Session, org_id: int, ids: Sequence[int], as_of: date, parts: _TruthParts
) -> None:
    """Invoices: their numbers, dates, amounts, balances and part-payments, and per currency the
    open and the overdue total (a reminder states them)."""
    numbers, currencies, dates = parts.numbers, parts.currencies, parts.dates
    balances, due_dates, add = parts.balances, parts.due_dates, parts.add
    open_total: dict[tuple[int, str], int] = {}
    overdue_total: dict[tuple[int, str], int] = {}
    for inv in session.execute(
        select(
            Invoice.customer_id,
            Invoice.number,
            Invoice.currency,
            Invoice.amount_minor,
            Invoice.balance_minor,
            Invoice.issue_date,
            Invoice.due_date,
            Invoice.settled_date,
            Invoice.status,
        ).where(Invoice.org_id == org_id, Invoice.customer_id.in_(ids))
    ):
        cid = inv.customer_id
        numbers[cid].append(inv.number)
        currencies[cid].add(inv.currency)
        dates[cid].update((inv.issue_date, inv.due_date))
        if inv.settled_date:
            dates[cid].add(inv.settled_date)
        add(cid, inv.currency, inv.amount_minor)
        add(cid, inv.currency, inv.balance_minor)
        if inv.amount_minor > inv.balance_minor > 0:
            add(cid, inv.currency, inv.amount_minor - inv.balance_minor)
        if inv.status is InvoiceStatus.OPEN and inv.balance_minor > 0:
            balances[cid][inv.number] = (inv.currency, inv.balance_minor)
            due_dates[cid][inv.number] = inv.due_date
            key = (cid, inv.currency)
            open_total[key] = open_total.get(key, 0) + inv.balance_minor
            if inv.due_date < as_of:
                overdue_total[key] = overdue_total.get(key, 0) + inv.balance_minor
    for totals in (open_total, overdue_total):
        for (cid, cur), value in totals.items():
            add(cid, cur, value)


def _commitment_truths(
    session: Session, org_id: int, ids: Sequence[int], parts: _TruthParts
) -> None:
    """Promises-to-pay and payment plans: what was promised or agreed, by when (with grace), and
    each installment's amount, what is left of it, and its date."""
    dates, add = parts.dates, parts.add
    for pr in session.execute(
        select(
            PromiseToPay.customer_id,
            PromiseToPay.currency,
            PromiseToPay.amount_minor,
            PromiseToPay.promised_date,
            PromiseToPay.grace_days,
        ).where(PromiseToPay.org_id == org_id, PromiseToPay.customer_id.in_(ids))
    ):
        add(pr.customer_id, pr.currency, pr.amount_minor)
        dates[pr.customer_id].update(
            (pr.promised_date, pr.promised_date + timedelta(days=pr.grace_days))
        )
    for row in session.execute(
        select(
            PaymentPlan.customer_id,
            PaymentPlan.currency,
            PaymentPlan.total_minor,
            PlanInstallment.amount_minor,
            PlanInstallment.paid_minor,
            PlanInstallment.due_date,
        )
        .outerjoin(PlanInstallment, PlanInstallment.plan_id == PaymentPlan.id)
        .where(PaymentPlan.org_id == org_id, PaymentPlan.customer_id.in_(ids))
    ):
        add(row.customer_id, row.currency, row.total_minor)
        if row.due_date is not None:
            add(row.customer_id, row.currency, row.amount_minor)
            add(row.customer_id, row.currency, row.amount_minor - row.paid_minor)
            dates[row.customer_id].add(row.due_date)


def _other_truths(session: Session, org_id: int, ids: Sequence[int], parts: _TruthParts) -> None:
    """Payments received (amount and day), disputes' SLA dates and contract renewal dates."""
    dates, add = parts.dates, parts.add
    for pay in session.execute(
        select(
            Payment.customer_id, Payment.currency, Payment.amount_minor, Payment.received_on
        ).where(Payment.org_id == org_id, Payment.customer_id.in_(ids))
    ):
        add(pay.customer_id, pay.currency, pay.amount_minor)
        dates[pay.customer_id].add(pay.received_on)
    # A dispute's SLA date is the ledger's too (a dispute reply tells the payer when to expect
    # an answer), on the organisation's calendar as the dispute panel's replies write it.
    slas = session.execute(
        select(Dispute.customer_id, Dispute.sla_due_at).where(
            Dispute.org_id == org_id,
            Dispute.customer_id.in_(ids),
            Dispute.sla_due_at.is_not(None),
        )
    ).all()
    org_tz = clock.org_zone(session, org_id) if slas else "UTC"
    for cid, sla_due in slas:
        if sla_due is not None:
            dates[cid].add(clock.business_date(org_tz, _aware(sla_due)))
    for cid, renewal in session.execute(
        select(Customer.id, Customer.renewal_date).where(
            Customer.org_id == org_id, Customer.id.in_(ids)
        )
    ):
        if renewal:
            dates[cid].add(renewal)


def ledger_truths(
    session: Session,
    org_id: int,
    customer_ids: Sequence[int],
    *,
    as_of: date,
    links: dict[int, list[str]] | None = None,
    locales: dict[int, str] | None = None,
) -> dict[int, LedgerTruth]:
    """``ledger_truth`` for many customers in a handful of queries (Autopilot's batches)."""
    ids = sorted(set(customer_ids))
    links = links or {}
    locales = locales or {}
    parts = _TruthParts.empty(ids, as_of)
    amounts, dates, numbers = parts.amounts, parts.dates, parts.numbers
    currencies, balances, due_dates = parts.currencies, parts.balances, parts.due_dates

    if not ids:
        return {}
    _invoice_truths(session, org_id, ids, as_of, parts)
    _commitment_truths(session, org_id, ids, parts)
    _other_truths(session, org_id, ids, parts)
    return {
        cid: LedgerTruth(
            customer_id=cid,
            currencies=sorted(set(amounts[cid]) | currencies[cid]),
            amounts={cur: sorted(v) for cur, v in amounts[cid].items()},
            dates=sorted(dates[cid]),
            invoice_numbers=numbers[cid],
            links=sorted({_normalize_link(u) for u in links.get(cid, ())}),
            locale=locales.get(cid, "en_US"),
            open_balances=balances[cid],
            open_due_dates=due_dates[cid],
        )
        for cid in ids
    }


# --- comparison --------------------------------------------------------------------------------

MismatchKind = Literal["amount", "date", "invoice_number", "link", "ambiguous", "declared"]


class Mismatch(BaseModel):
    kind: MismatchKind
    stated: str
    message: str


class DeclaredFacts(BaseModel):
    """What the drafter says its text states (its typed output); compared with the text itself."""

    invoice_numbers: list[str] = Field(default_factory=list)
    amounts: list[tuple[int, str]] = Field(default_factory=list, description="(minor, currency)")
    dates: list[date] = Field(default_factory=list)
    pay_link: str | None = None


class GroundingReport(BaseModel):
    """The verdict on one text: what it states, and every statement the ledger does not back."""

    ok: bool
    stated: StatedFacts
    mismatches: list[Mismatch] = Field(default_factory=list)
    has_invoice_reference: bool = False
    has_pay_link: bool = False

    def error_text(self) -> str:
        """The mismatches as one message for the model to fix (and for the hold/block reason)."""
        return "; ".join(m.message for m in self.mismatches)

    def as_dict(self) -> dict[str, object]:
        return self.model_dump(mode="json")


def _minor_of(value: Decimal, currency: str) -> int | None:
    try:
        places = exponent(currency)
    except MoneyError:
        return None
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        return None
    return int(scaled)


def stated_minor(amount: StatedAmount, truth: LedgerTruth) -> tuple[int, str] | None:
    """The (minor, currency) the ledger backs for a stated amount, or None."""
    value = Decimal(amount.value)
    candidates = amount.currencies or truth.currencies
    for cur in candidates:
        allowed = truth.amounts.get(cur)
        if not allowed:  # e.g. "$": five currencies, usually one in the ledger
            continue
        minor = _minor_of(value, cur)
        if minor is not None and minor in allowed:
            return minor, cur
    return None


def check(
    stated: StatedFacts, truth: LedgerTruth, declared: DeclaredFacts | None = None
) -> GroundingReport:
    """Compare what a text states with the ledger (and with what the drafter declared)."""
    truth = truth.with_named_totals(stated.invoice_numbers)
    mism: list[Mismatch] = []
    loc = truth.locale
    for amt in stated.amounts:
        if stated_minor(amt, truth) is None:
            cur_note = "" if amt.currencies else " (and it has no currency)"
            mism.append(
                Mismatch(
                    kind="amount",
                    stated=amt.text,
                    message=(
                        f"the amount {amt.text!r}{cur_note} is not in the ledger for this "
                        f"customer; amounts you may state: {truth.describe_amounts()}"
                    ),
                )
            )
    allowed_dates = set(truth.dates)
    for d in stated.dates:
        if d not in allowed_dates:
            mism.append(
                Mismatch(
                    kind="date",
                    stated=d.isoformat(),
                    message=(
                        f"the date {format_day(d, loc)} is not a due, promise, installment or "
                        "payment date in the ledger"
                    ),
                )
            )
    for text in stated.ambiguous:
        mism.append(
            Mismatch(
                kind="ambiguous",
                stated=text,
                message=f"{text!r} is an ambiguous date: write the month's name",
            )
        )
    known = set(truth.invoice_numbers)
    known_lower = {n.lower(): n for n in known}
    for num in stated.invoice_numbers:
        if num not in known and num.lower() not in known_lower:
            mism.append(
                Mismatch(
                    kind="invoice_number",
                    stated=num,
                    message=f"invoice {num} is not an invoice of this customer",
                )
            )
    allowed_links = set(truth.links)
    for link in stated.links:
        if link not in allowed_links:
            mism.append(
                Mismatch(
                    kind="link",
                    stated=link,
                    message=f"the link {link} is not this customer's pay link",
                )
            )
    if declared is not None:
        mism.extend(_declared_mismatches(stated, truth, declared))
    return GroundingReport(
        ok=not mism,
        stated=stated,
        mismatches=mism,
        has_invoice_reference=any(
            n in known or n.lower() in known_lower for n in stated.invoice_numbers
        ),
        has_pay_link=any(link in allowed_links for link in stated.links),
    )


def _declared_mismatches(
    stated: StatedFacts, truth: LedgerTruth, declared: DeclaredFacts
) -> list[Mismatch]:
    out: list[Mismatch] = []
    in_text = {n.lower() for n in stated.invoice_numbers}
    for num in declared.invoice_numbers:
        if num.lower() not in in_text:
            out.append(
                Mismatch(
                    kind="declared",
                    stated=num,
                    message=f"you declared invoice {num} but the text does not state it",
                )
            )
    declared_nums = {n.lower() for n in declared.invoice_numbers}
    for num in stated.invoice_numbers:
        if num.lower() not in declared_nums:
            out.append(
                Mismatch(
                    kind="declared",
                    stated=num,
                    message=f"the text states invoice {num} but you did not declare it",
                )
            )
    text_amounts = {m for a in stated.amounts if (m := stated_minor(a, truth)) is not None}
    for minor, cur in declared.amounts:
        if (minor, cur) not in text_amounts:
            out.append(
                Mismatch(
                    kind="declared",
                    stated=f"{minor} {cur}",
                    message=(
                        f"you declared {format_amount(minor, cur, truth.locale)} but the text "
                        "does not state it"
                    ),
                )
            )
    text_dates = set(stated.dates)
    for d in declared.dates:
        if d not in text_dates:
            out.append(
                Mismatch(
                    kind="declared",
                    stated=d.isoformat(),
                    message=f"you declared the date {d.isoformat()} but the text does not state it",
                )
            )
    if declared.pay_link and _normalize_link(declared.pay_link) not in set(stated.links):
        out.append(
            Mismatch(
                kind="declared",
                stated=declared.pay_link,
                message="you declared a pay link but the text does not contain it",
            )
        )
    return out


def ground_text(
    text: str,
    truth: LedgerTruth,
    *,
    language: str = "en",
    as_of: date | None = None,
    declared: DeclaredFacts | None = None,
) -> GroundingReport:
    """Extract the facts of ``text`` and check them against ``truth`` in one call."""
    stated = extract_facts(
        text,
        language=language,
        as_of=as_of,
        known_invoice_numbers=truth.invoice_numbers,
        shapes=invoice_shapes(truth.invoice_numbers),
        locale=truth.locale if truth.locale.split("_")[0] == language else None,
    )
    return check(stated, truth, declared)


# --- language ----------------------------------------------------------------------------------

_STOPWORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "en": "the and you your of to is for this that please we our with has have be on are it",
        "de": "der die das und sie ihr ihre ist nicht mit wir unsere für zu ein eine bitte den dem",
        "fr": "le la les et vous votre vos est pas avec nous notre pour une des du merci de au",
        "es": "el la los las y usted su sus es no con nosotros nuestro para una por favor del que",
        "nl": "de het en u uw is niet met wij onze voor een van graag dat te op",
        "it": "il lo la gli le e lei suo sua è non con noi nostro per una della che",
        "pt": "o a os as e você seu sua é não com nós nosso para uma do da que por",
    }.items()
}


def _stopword_langs() -> dict[str, tuple[str, ...]]:
    """Stopword -> the languages it is a stopword of, in ``_STOPWORDS``'s order: a text's words
    are then looked up once each instead of once per language (this runs on every draft)."""
    out: dict[str, tuple[str, ...]] = {}
    for lang, words in _STOPWORDS.items():
        for word in words:
            out[word] = (*out.get(word, ()), lang)
    return out


_STOPWORD_LANGS = _stopword_langs()
_WORD = re.compile(r"[a-zà-ÿ]+")


def detect_language(text: str) -> str | None:
    """The language a text is written in, by stopwords; None when too short to tell.

    Good enough to catch a draft in the wrong language (the usual failure is a whole e-mail in
    English for a German contact), not a general-purpose detector. Links and e-mail addresses
    are left out: a pay link's random token ("…/pay/acme-e0a5e1de/…") is no language, and in a
    short SMS its letters outnumbered the real words.
    """
    text = _URL.sub(" ", text)
    if "@" in text:  # no "@", no address: skip a regex pass over every word
        text = _EMAIL.sub(" ", text)
    words = _WORD.findall(text.lower())
    if len(words) < 8:
        return None
    scores = dict.fromkeys(_STOPWORDS, 0)
    for w in words:
        for lang in _STOPWORD_LANGS.get(w, ()):
            scores[lang] += 1
    best = max(scores, key=lambda k: scores[k])
    ranked = sorted(scores.values(), reverse=True)
    if ranked[0] < 3 or ranked[0] < 1.5 * max(ranked[1], 1):
        return None
    return best


# --- what the guardrails see -------------------------------------------------------------------
#
# The engine never reads the ledger: the caller hands it typed facts. The same builder serves the
# drafter (a fresh draft), Autopilot (thousands, from preloaded rows) and the review flow (an edit
# or an approval re-checks the current text), so the three can never disagree on what a draft is.

#: How far back outbound touches are read for the cadence caps (longer than any sane window).
TOUCH_LOOKBACK_DAYS = 35
UNSEGMENTED = "Unsegmented"


@dataclass(frozen=True)
class OrgSwitches:
    """The organisation-wide sending switches and readiness, read once per run."""

    shadow_mode: bool
    maintenance: bool
    cron_paused: bool
    sending_domain_verified: bool
    data_ready_score: int | None
    timezone: str
    # The organisation's country ("US", "CH-BE"): the holiday calendar of a contact whose
    # customer has no country of its own. None for an organisation without a profile.
    country: str | None = None

    @classmethod
    def load(cls, session: Session, org_id: int, now: datetime) -> OrgSwitches:
        org = session.get(Organisation, org_id)
        if org is None:
            raise LookupError(f"organisation {org_id} does not exist")
        try:
            score: int | None = data_ready(session, org_id, now).score
        except LookupError:
            score = None
        return cls(
            shadow_mode=org.shadow_mode,
            maintenance=org.maintenance,
            cron_paused=org.cron_paused,
            sending_domain_verified=org.sending_domain_verified,
            data_ready_score=score,
            timezone=org.timezone or "UTC",
            country=_org_country(session, org_id),
        )


def _org_country(session: Session, org_id: int) -> str | None:
    profile = session.get(OrganisationProfile, org_id)
    if profile is None:
        return None
    return (
        f"{profile.country_code}-{profile.subdivision}"
        if profile.subdivision
        else (profile.country_code)
    )


@dataclass(frozen=True)
class OutreachContext:
    """What ``send_draft`` facts need besides the text: who, which invoices, which switches."""

    switches: OrgSwitches
    segment_name: str
    segment_shadow_mode: bool
    autopilot_enabled: bool
    channel: str
    contact: ContactFacts
    invoices: tuple[InvoiceFacts, ...]
    promises: tuple[PromiseFacts, ...]
    touches: tuple[datetime, ...]
    # The cadence step's own mode is Shadow Mode (``CadenceStepMode``): Autopilot only drafts it.
    step_shadow_mode: bool = False


def _valid_zone(*names: str | None) -> str:
    for name in names:
        if not name:
            continue
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return name
    return "UTC"


def contact_facts(
    contact: Contact | None,
    channel: str,
    *,
    fallback_timezone: str = "UTC",
    country: str | None = None,
) -> ContactFacts:
    """The contact as the guardrails see it on ``channel``.

    E-mail and portal use the e-mail flags; SMS the SMS flags; a call counts as consented when the
    contact has a phone number and has not opted out of SMS (the ledger keeps no separate flag);
    Slack messages go to colleagues, never to payers. No contact at all is not consented.
    ``country`` (the customer's, else the organisation's) picks the contact's holiday calendar.
    """
    if contact is None:
        return ContactFacts(
            timezone=_valid_zone(fallback_timezone),
            opted_out=False,
            bounced=False,
            consent=False,
            country=country or None,
        )
    tz = _valid_zone(contact.timezone, fallback_timezone)
    if channel in ("email", "portal"):
        return ContactFacts(
            timezone=tz,
            opted_out=contact.opted_out_email,
            bounced=contact.bounced,
            consent=contact.consent_email and bool(contact.email),
            country=country or None,
        )
    if channel == "sms":
        return ContactFacts(
            timezone=tz,
            opted_out=contact.opted_out_sms,
            bounced=False,
            consent=contact.consent_sms and bool(contact.phone),
            country=country or None,
        )
    if channel == "call":
        return ContactFacts(
            timezone=tz,
            opted_out=contact.opted_out_sms,
            bounced=False,
            consent=bool(contact.phone),
            country=country or None,
        )
    return ContactFacts(
        timezone=tz, opted_out=False, bounced=False, consent=True, country=country or None
    )


def promise_facts_by_customer(
    session: Session, org_id: int, customer_ids: Sequence[int]
) -> dict[int, list[PromiseFacts]]:
    """Every promise of these customers with its invoice numbers (the engine picks what pauses)."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(
            PromiseToPay.id,
            PromiseToPay.customer_id,
            PromiseToPay.promised_date,
            PromiseToPay.status,
            PromiseToPay.grace_days,
            PromiseToPay.amount_minor,
            Invoice.number,
            Invoice.due_date,
            Invoice.id,
            Invoice.balance_minor,
            Invoice.status,
        )
        .join(promise_invoice, promise_invoice.c.promise_id == PromiseToPay.id)
        .join(Invoice, Invoice.id == promise_invoice.c.invoice_id)
        .where(PromiseToPay.org_id == org_id, PromiseToPay.customer_id.in_(ids))
        .order_by(PromiseToPay.id, Invoice.number)
    ).all()
    grouped: dict[int, tuple[int, date, str, int, int, list[tuple[str, date, int, int]]]] = {}
    for pid, cid, pdate, status, grace, amount, number, due, inv_id, balance, inv_status in rows:
        label = str(getattr(status, "value", status))
        entry = grouped.setdefault(pid, (cid, pdate, label, grace, amount, []))
        open_balance = balance if inv_status == InvoiceStatus.OPEN else 0
        entry[5].append((number, due, inv_id, open_balance))
    out: dict[int, list[PromiseFacts]] = {}
    for cid, pdate, state, grace, amount, links in grouped.values():
        # An open promise pauses only what its amount covers; a decided one names every link.
        nums = sorted(covered_keys(amount, links)) if state == "open" else [n for n, *_ in links]
        out.setdefault(cid, []).append(
            PromiseFacts.model_validate(
                {
                    "promised_date": pdate,
                    "status": state,
                    "invoice_numbers": nums,
                    "grace_days": grace,
                }
            )
        )
    return out


def touches_by_contact(
    session: Session, org_id: int, contact_ids: Sequence[int], now: datetime
) -> dict[int, list[datetime]]:
    """Recent outbound touches per contact (any channel, any sender) for the cadence caps."""
    ids = sorted({c for c in contact_ids if c is not None})
    if not ids:
        return {}
    since = now - timedelta(days=TOUCH_LOOKBACK_DAYS)
    out: dict[int, list[datetime]] = {}
    for cid, at in session.execute(
        select(Activity.contact_id, Activity.occurred_at).where(
            Activity.org_id == org_id,
            Activity.contact_id.in_(ids),
            Activity.direction == "out",
            Activity.occurred_at >= since,
            Activity.occurred_at <= now,
        )
    ):
        if cid is not None:
            out.setdefault(cid, []).append(at)
    return out


def _aware(moment: datetime) -> datetime:
    """A stored UTC moment (naive on SQLite) as an aware one."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def disputed_invoice_ids(session: Session, org_id: int, invoice_ids: Sequence[int]) -> set[int]:
    """Invoices flagged disputed or with a dispute still open (either one stops dunning)."""
    ids = sorted(set(invoice_ids))
    if not ids:
        return set()
    flagged = set(
        session.scalars(
            select(Invoice.id).where(
                Invoice.org_id == org_id, Invoice.id.in_(ids), Invoice.disputed.is_(True)
            )
        )
    )
    flagged |= set(
        session.scalars(
            select(Dispute.invoice_id).where(
                Dispute.org_id == org_id,
                Dispute.invoice_id.in_(ids),
                Dispute.status.in_(OPEN_DISPUTE_STATUSES),
            )
        )
    )
    return flagged


def outreach_context(
    session: Session,
    org_id: int,
    *,
    customer_id: int,
    contact_id: int | None,
    invoice_ids: Sequence[int],
    channel: str,
    now: datetime,
    switches: OrgSwitches | None = None,
) -> OutreachContext:
    """The facts around one outreach, read from the ledger (one draft; Autopilot preloads)."""
    customer = session.get(Customer, customer_id)
    if customer is None or customer.org_id != org_id:
        raise LookupError(f"customer {customer_id} is not in organisation {org_id}")
    switches = switches or OrgSwitches.load(session, org_id, now)
    segment = session.get(Segment, customer.segment_id) if customer.segment_id else None
    contact = session.get(Contact, contact_id) if contact_id else None
    if contact is not None and contact.org_id != org_id:
        raise LookupError(f"contact {contact_id} is not in organisation {org_id}")
    invoices = (
        session.scalars(
            select(Invoice).where(Invoice.org_id == org_id, Invoice.id.in_(list(invoice_ids)))
        ).all()
        if invoice_ids
        else []
    )
    disputed = disputed_invoice_ids(session, org_id, [i.id for i in invoices])
    touches = (
        touches_by_contact(session, org_id, [contact.id], now).get(contact.id, [])
        if contact
        else []
    )
    return OutreachContext(
        switches=switches,
        segment_name=segment.name if segment else UNSEGMENTED,
        segment_shadow_mode=segment.shadow_mode if segment else switches.shadow_mode,
        autopilot_enabled=segment.autopilot_enabled if segment else False,
        channel=channel,
        contact=contact_facts(
            contact,
            channel,
            fallback_timezone=customer.timezone or switches.timezone,
            country=customer.country_code or switches.country,
        ),
        invoices=tuple(InvoiceFacts(number=i.number, disputed=i.id in disputed) for i in invoices),
        promises=tuple(
            promise_facts_by_customer(session, org_id, [customer_id]).get(customer_id, [])
        ),
        touches=tuple(touches),
    )


def _money_of(amount: StatedAmount, truth: LedgerTruth) -> PolicyMoney:
    backed = stated_minor(amount, truth)
    if backed is not None:
        return PolicyMoney(amount_minor=backed[0], currency=backed[1])
    # Not in the ledger: pass it on as written so the engine sees (and blocks) the mismatch.
    cur = (amount.currencies or truth.currencies or ["XXX"])[0]
    value = Decimal(amount.value)
    try:
        minor = int(value.scaleb(exponent(cur)).to_integral_value())
    except MoneyError:
        minor = int(value.scaleb(2).to_integral_value())
    return PolicyMoney(amount_minor=minor, currency=cur)


def send_draft_facts(
    ctx: OutreachContext,
    *,
    body: str,
    report: GroundingReport,
    truth: LedgerTruth,
    pay_link: str | None,
    now: datetime,
    shadow: bool | None = None,
    approved_by_roles: Sequence[str] = (),
    about_promise: PromiseFacts | None = None,
    dispute_correspondence: bool = False,
) -> SendDraftFacts:
    """The ``send_draft`` facts for a text: the ledger's side, and what the text states.

    ``shadow=True`` forces Shadow Mode (``plixo autopilot run --shadow``); None reads the ledger.
    ``about_promise``: the open promise a reminder is about; the guardrails then let that one
    promise's pause through (``promise.open``) and check the promise is really open.
    ``dispute_correspondence``: a reply written from the dispute panel (its own guardrails).
    """
    allowed_link = _normalize_link(pay_link) if pay_link else None
    stated_links = report.stated.links
    stated_link = (
        allowed_link
        if allowed_link and allowed_link in stated_links
        else (stated_links[0] if stated_links else None)
    )
    truth = truth.with_named_totals(report.stated.invoice_numbers)
    amounts = [m for a in report.stated.amounts for m in [_money_of(a, truth)]]
    ledger_amounts = [
        PolicyMoney(amount_minor=v, currency=cur) for cur, vs in truth.amounts.items() for v in vs
    ]
    return SendDraftFacts(
        now=now,
        business_date=clock.business_date(ctx.switches.timezone, now),
        channel=ctx.channel,  # type: ignore[arg-type]
        maintenance=ctx.switches.maintenance,
        cron_paused=ctx.switches.cron_paused,
        contact=ctx.contact,
        invoices=list(ctx.invoices),
        promises=list(ctx.promises),
        touches=list(ctx.touches),
        segment=ctx.segment_name[:200] or UNSEGMENTED,
        org_shadow_mode=True if shadow else ctx.switches.shadow_mode,
        segment_shadow_mode=True if shadow else ctx.segment_shadow_mode,
        step_shadow_mode=ctx.step_shadow_mode,
        autopilot_enabled=ctx.autopilot_enabled,
        data_ready_score=ctx.switches.data_ready_score,
        sending_domain_verified=ctx.switches.sending_domain_verified,
        approved_by_roles=list(approved_by_roles),
        content=PolicyStatedFacts(
            body=body,
            invoice_numbers=[n for n in report.stated.invoice_numbers if n.strip()],
            amounts=amounts,
            dates=list(report.stated.dates),
            pay_link=stated_link,
        ),
        ledger=LedgerFacts(
            invoice_numbers=[n for n in truth.invoice_numbers if n.strip()],
            amounts=ledger_amounts,
            dates=list(truth.dates),
            pay_link=allowed_link,
        ),
        about_promise=about_promise,
        dispute_correspondence=dispute_correspondence,
    )


def is_dispute_correspondence(draft: Draft) -> bool:
    """Whether the draft is a reply a person wrote from the dispute panel: a person's own message
    (never Autopilot's) that the dispute reply path marked with its dispute."""
    dispute_id = (draft.stated_facts or {}).get("dispute_id")
    return (
        draft.kind == DraftKind.MANUAL
        and draft.persona == DraftPersona.COLLECTOR
        and isinstance(dispute_id, int)
        and dispute_id > 0
    )


# --- re-checking a stored draft ------------------------------------------------------------------


@dataclass
class DraftCheck:
    """Grounding and the guardrails on a draft's current text (what an edit or approval needs).

    Same fields as ``tools.drafts.service.Recheck``: ``Recheck(**vars(check))``.
    """

    decision: dict[str, Any]
    grounding: dict[str, Any] = field(default_factory=dict)
    grounding_blocked: bool = False

    @property
    def outcome(self) -> str:
        return str(self.decision.get("outcome"))


def draft_pay_link(session: Session, draft: Draft, settings: Settings) -> str | None:
    """The pay link a stored draft may state: the one it was written with, else the stable one."""
    stated = (draft.stated_facts or {}).get("pay_link")
    if isinstance(stated, str) and stated:
        return stated
    if draft.invoice_id is None:
        return None
    inv = session.get(Invoice, draft.invoice_id)
    org = session.get(Organisation, draft.org_id)
    if inv is None or org is None:
        return None
    return pay_link(settings, org.slug, inv.number)


def recheck_draft(
    session: Session,
    draft: Draft,
    now: datetime,
    *,
    settings: Settings | None = None,
    shadow: bool | None = None,
    approved_by_roles: Sequence[str] = (),
    as_of: date | None = None,
) -> DraftCheck:
    """Ground the draft's current subject and body against the ledger and ask the guardrails.

    This is the re-check an edit, a revision or an approval needs (the ledger may have moved since
    the draft was written). "Today" (``as_of`` by default) is the organisation's business date at
    ``now`` (``memory.clock``), never the customer's or the contact's: their time zone only sets
    quiet hours and send windows, which the guardrails read from the contact facts.

    Grounding mismatches are returned with ``grounding_blocked=True``; the
    decision then also blocks, because the engine sees the same mismatches as facts.
    """
    facts, report = draft_send_facts(
        session,
        draft,
        now,
        settings=settings,
        shadow=shadow,
        approved_by_roles=approved_by_roles,
        as_of=as_of,
    )
    decision = policy_engine_for(policy_set_for(session, draft.org_id)).decide(
        ActionType.SEND_DRAFT, facts
    )
    return DraftCheck(
        decision=decision.as_dict(),
        grounding=report.as_dict(),
        grounding_blocked=not report.ok,
    )


def draft_send_facts(
    session: Session,
    draft: Draft,
    now: datetime,
    *,
    settings: Settings | None = None,
    shadow: bool | None = None,
    approved_by_roles: Sequence[str] = (),
    as_of: date | None = None,
) -> tuple[SendDraftFacts, GroundingReport]:
    """The ``send_draft`` facts of a draft's current text at ``now`` (and its grounding), so a
    caller can put them to any policy set (the policy dry run replays them under a proposal)."""
    settings = settings or get_settings()
    org_id = draft.org_id
    customer = session.get(Customer, draft.customer_id)
    if customer is None or customer.org_id != org_id:
        raise LookupError(f"draft {draft.id} points at a customer outside its organisation")
    day = as_of or clock.org_business_date(session, org_id, now)
    link = draft_pay_link(session, draft, settings)
    language = draft.language or customer.language or "en"
    truth = ledger_truth(
        session,
        org_id,
        customer.id,
        as_of=day,
        links=[link] if link else [],
        locale=locale_for(language, customer.country_code),
    )
    text = f"{draft.subject}\n\n{draft.body}"
    report = ground_text(text, truth, language=language, as_of=day)
    invoice_ids = [draft.invoice_id] if draft.invoice_id else []
    stated_ids = session.scalars(
        select(Invoice.id).where(
            Invoice.org_id == org_id,
            Invoice.customer_id == customer.id,
            Invoice.number.in_(report.stated.invoice_numbers),
        )
    ).all()
    invoice_ids = sorted(set(invoice_ids) | set(stated_ids))
    ctx = outreach_context(
        session,
        org_id,
        customer_id=customer.id,
        contact_id=draft.contact_id,
        invoice_ids=invoice_ids,
        channel=draft.channel.value,
        now=now,
    )
    facts = send_draft_facts(
        ctx,
        body=text,
        report=report,
        truth=truth,
        pay_link=link,
        now=now,
        shadow=shadow,
        approved_by_roles=approved_by_roles,
        dispute_correspondence=is_dispute_correspondence(draft),
    )
    return facts, report
