"""Reading a text back: the amounts, dates, invoice numbers and links it states, and its language.

Why apart: this is the one reader of what a text claims. Grounding runs it on drafts, and the
reply readers (``agent.reply_reading``, ``tools.replies.mail_reading``), the offline drafter and
the evals run it on other texts; it reads the plain text only (never the model's own account of
what it wrote) and needs no database.

Amounts are written with ``memory.money.format_money`` (Babel) and dates in Babel's long form
(``tools.kit.formatting``); this reader understands every spelling those produce in the supported
languages. Numeric dates such as ``03/10/2025`` are reported as ambiguous: a payer cannot tell the
day from the month, so a draft must write the month's name.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel.dates import get_month_names
from babel.numbers import (
    get_currency_symbol,
    get_decimal_symbol,
    get_group_symbol,
    list_currencies,
)
from pydantic import BaseModel, Field

from memory import clock
from tools.kit.formatting import DEFAULT_LOCALE, KNOWN_LOCALES, SUPPORTED_LANGUAGES

# --- amounts, dates, invoice numbers, links ----------------------------------------------------

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


def normalize_link(url: str) -> str:
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
        link = normalize_link(m.group())
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
