"""Wording that is true only on some days: "ahead of", "is due on", "overdue since", "promised for".

Why: grounding checks that every date in a draft is a ledger date, but "a short reminder ahead of
December 8" stays a ledger date on December 14 while the sentence has become false. A draft
approved on one day and delivered on another (quiet hours, Autopilot spacing, a retry) must be
read again against the day it leaves. This module reads the date-dependent phrases of the
supported languages and says which ones are false on a given business date
(``memory.clock``: the organisation's date, never the contact's).

Dates are found with grounding's own reader (the same spellings the drafter writes), so the two
agree on where a date is. Each phrase is written case- and accent-folded, with ``@`` where the
date stands; a phrase naming "that date" refers to the last date written before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import lru_cache

from tools.grounding.extraction import (
    _DAY_FIRST,
    _ISO_DATE,
    _MONTH_FIRST,
    _closest_year,
    _fold_aligned,
    _month_lookup,
)
from tools.kit.formatting import format_day


class Tense(StrEnum):
    """What a phrase claims about its date relative to the business date."""

    NOT_PAST = "not_past"  # "is due on D", "ahead of D": D is today or later
    TODAY = "today"  # "is due today, D": D is today
    PAST = "past"  # "was due on D", "overdue since D", "promised for D ... not arrived"


_GAP = r"[^@.!?;\n]{0,60}?"

#: Per language: (phrase, tense). Folded (lower case, no accents); ``@`` is the date.
PHRASES: dict[str, tuple[tuple[str, Tense], ...]] = {
    "en": (
        (r"\b(?:is|are) (?:still )?due (?:on )?@", Tense.NOT_PAST),
        (r"\b(?:falls|fall) due (?:on )?@", Tense.NOT_PAST),
        (r"\bahead of @", Tense.NOT_PAST),
        (r"\b(?:pay|paid|payment) before @", Tense.NOT_PAST),
        (r"\b(?:is|are) (?:expected|planned|scheduled) (?:on|for) @", Tense.NOT_PAST),
        (r"\bexpected on @", Tense.NOT_PAST),
        (r"\bwill pay" + _GAP + r"\b(?:on|by) @", Tense.NOT_PAST),
        (r"\bdue today\W{1,3}@", Tense.TODAY),
        (r"\bwas due (?:on )?@", Tense.PAST),
        (r"\bwere due (?:on )?@", Tense.PAST),
        (r"\boverdue since @", Tense.PAST),
        (r"\bpromised (?:for|by) @", Tense.PAST),
        (r"\bpromised" + _GAP + r"\b(?:for|by) @", Tense.PAST),
    ),
    "de": (
        (r"\bist (?:am )?@ fallig", Tense.NOT_PAST),
        (r"\bsind (?:am )?@ fallig", Tense.NOT_PAST),
        (r"\bvor dem @", Tense.NOT_PAST),
        (r"\bfur den @ geplant", Tense.NOT_PAST),
        (r"\berwarten wir" + _GAP + r"\bam @", Tense.NOT_PAST),
        (r"\bzusage," + _GAP + r"\bam @ zu zahlen", Tense.NOT_PAST),
        (r"\bheute\W{1,3}(?:am )?@", Tense.TODAY),
        (r"\b(?:am )?@ fallig war", Tense.PAST),
        (r"\bwar am @ fallig", Tense.PAST),
        (r"\bseit (?:dem )?@ (?:uberfallig|offen)", Tense.PAST),
        (r"\bfur den @ zugesagt", Tense.PAST),
        (r"\bbis zum @ zugesagt", Tense.PAST),
    ),
    "fr": (
        (r"\barrive(?:nt)? a echeance le @", Tense.NOT_PAST),
        (r"\best due le @", Tense.NOT_PAST),
        (r"\best (?:attendu|prevu)e? le @", Tense.NOT_PAST),
        (r"\bavant le @", Tense.NOT_PAST),
        (r"\breglerez" + _GAP + r"\ble @", Tense.NOT_PAST),
        (r"\bdue aujourd'hui\W{1,3}(?:le )?@", Tense.TODAY),
        (r"\betait due le @", Tense.PAST),
        (r"\ben retard depuis le @", Tense.PAST),
        (r"\bpromis pour le @", Tense.PAST),
        (r"\bpromis" + _GAP + r"\bau plus tard le @", Tense.PAST),
    ),
    "es": (
        (r"\bvence el @", Tense.NOT_PAST),
        (r"\bantes del @", Tense.NOT_PAST),
        (r"\b(?:esta )?previsto para el @", Tense.NOT_PAST),
        (r"\besperamos" + _GAP + r"\bel @", Tense.NOT_PAST),
        (r"\bpagara" + _GAP + r"\bel @", Tense.NOT_PAST),
        (r"\bvence hoy\W{1,3}@", Tense.TODAY),
        (r"\bvencio el @", Tense.PAST),
        (r"\bvencia el @", Tense.PAST),
        (r"\bvencida (?:el|desde el) @", Tense.PAST),
        (r"\bprometido para el @", Tense.PAST),
        (r"\bprometio" + _GAP + r"\ba mas tardar el @", Tense.PAST),
    ),
    "nl": (
        (r"\bvervalt op @", Tense.NOT_PAST),
        (r"\bvervalt vandaag\W{1,3}@", Tense.TODAY),
        (r"\bverviel op @", Tense.PAST),
        (r"\bachterstallig sinds @", Tense.PAST),
        (r"\btoegezegd voor @", Tense.PAST),
    ),
    "it": (
        (r"\bscade il @", Tense.NOT_PAST),
        (r"\bprima del @", Tense.NOT_PAST),
        (r"\bscade oggi\W{1,3}@", Tense.TODAY),
        (r"\be scaduta il @", Tense.PAST),
        (r"\bscaduta dal @", Tense.PAST),
        (r"\bpromesso per il @", Tense.PAST),
    ),
    "pt": (
        (r"\bvence (?:em|a) @", Tense.NOT_PAST),
        (r"\bantes de @", Tense.NOT_PAST),
        (r"\bvence hoje\W{1,3}@", Tense.TODAY),
        (r"\bvenceu (?:em|a) @", Tense.PAST),
        (r"\bvencida desde @", Tense.PAST),
        (r"\bprometido para @", Tense.PAST),
    ),
}

#: Phrases about "that date": the last date written before them.
THAT_DATE: dict[str, tuple[str, ...]] = {
    "en": (r"\bahead of (?:that|this|the) date", r"\bbefore (?:that|this) date"),
    "de": (r"\bvor diesem (?:termin|datum)",),
    "fr": (r"\bavant cette date",),
    "es": (r"\bantes de esa fecha",),
    "nl": (r"\bvoor die datum",),
    "it": (r"\bprima di quella data",),
    "pt": (r"\bantes dessa data",),
}

#: "due today" with no date beside it: true only on the invoice's due date.
DUE_TODAY: dict[str, str] = {
    "en": r"\bdue today\b",
    "de": r"\bheute\b[^.!?;\n]{0,40}\bfallig\b",
    "fr": r"\bdue aujourd'hui\b",
    "es": r"\bvence hoy\b",
    "nl": r"\bvervalt vandaag\b",
    "it": r"\bscade oggi\b",
    "pt": r"\bvence hoje\b",
}

_DATE_MARK = r"\x01*@(?P<k>\d+)@"


@dataclass(frozen=True)
class WordingProblem:
    """One phrase that is false on ``today``."""

    phrase: str
    stated: date | None
    tense: Tense
    message: str

    def as_dict(self) -> dict[str, str | None]:
        return {
            "phrase": self.phrase,
            "stated": self.stated.isoformat() if self.stated else None,
            "tense": self.tense.value,
            "message": self.message,
        }


@lru_cache(maxsize=16)
def _compiled(language: str) -> tuple[tuple[re.Pattern[str], Tense], ...]:
    rows = PHRASES.get(language, ()) + (PHRASES["en"] if language != "en" else ())
    return tuple((re.compile(p.replace("@", _DATE_MARK)), t) for p, t in rows)


def _date_spans(text: str, folded: str, language: str, near: date) -> list[tuple[int, int, date]]:
    """Where dates stand in ``text`` and which they are (grounding's reader: ISO, month names)."""
    spans: list[tuple[int, int, date]] = []
    for m in _ISO_DATE.finditer(text):
        try:
            spans.append((m.start(), m.end(), date(*(int(m.group(i)) for i in (1, 2, 3)))))
        except ValueError:
            continue
    months = _month_lookup(language)
    for rx in (_DAY_FIRST, _MONTH_FIRST):
        for m in rx.finditer(folded):
            if any(s <= m.start() < e for s, e, _ in spans):
                continue
            month = months.get(m.group("m").rstrip("."))
            if month is None:
                continue
            try:
                day = (
                    date(int(m.group("y")), month, int(m.group("d")))
                    if m.group("y")
                    else _closest_year(int(m.group("d")), month, near)
                )
            except ValueError:
                day = None
            if day is not None:
                spans.append((m.start(), m.end(), day))
    return sorted(spans)


def _marked(folded: str, spans: list[tuple[int, int, date]]) -> str:
    """The folded text with each date replaced by ``@k@`` (its index), padded in front with
    ``\x01`` to the date's length so offsets still point into the original text."""
    out, last = [], 0
    for k, (s, e, _) in enumerate(spans):
        out.append(folded[last:s])
        mark = f"@{k}@"
        out.append("\x01" * max(0, e - s - len(mark)) + mark)
        last = e
    out.append(folded[last:])
    return "".join(out)


def _original(text: str, marked: str, m: re.Match[str], day: str) -> str:
    """The phrase as written (offsets align when every date was at least as long as its mark)."""
    if len(marked) == len(text):
        return text[m.start() : m.end()]
    return re.sub(_DATE_MARK, day, m.group())


def _judge(tense: Tense, stated: date, today: date) -> bool:
    if tense is Tense.NOT_PAST:
        return stated >= today
    if tense is Tense.TODAY:
        return stated == today
    return stated < today


_CLAIM = {
    Tense.NOT_PAST: "speaks of {day} as still to come",
    Tense.TODAY: "says {day} is today",
    Tense.PAST: "speaks of {day} as already past",
}


def _problem(phrase: str, stated: date, tense: Tense, today: date, locale: str) -> WordingProblem:
    day = format_day(stated, locale)
    return WordingProblem(
        phrase=phrase,
        stated=stated,
        tense=tense,
        message=(
            f"the text {_CLAIM[tense].format(day=day)} ({phrase.strip()!r}), but the "
            f"organisation's date is now {format_day(today, locale)}"
        ),
    )


def date_wording_problems(
    text: str,
    *,
    language: str,
    today: date,
    locale: str = "en_US",
    due_dates: tuple[date, ...] = (),
) -> list[WordingProblem]:
    """Every date-dependent phrase of ``text`` that is false on the business date ``today``.

    ``due_dates``: the due dates of the invoices the text is about; a "due today" with no date
    beside it is judged against them. English phrases are read in every text (drafts mix them).
    """
    lang = (language or "en").split("-")[0].split("_")[0].lower()
    folded = _fold_aligned(text)
    spans = _date_spans(text, folded, lang, today)
    marked = _marked(folded, spans)
    problems: list[WordingProblem] = []
    seen: set[tuple[int, Tense]] = set()
    for rx, tense in _compiled(lang):
        for m in rx.finditer(marked):
            k = int(m.group("k"))
            stated = spans[k][2]
            if (k, tense) in seen or _judge(tense, stated, today):
                continue
            seen.add((k, tense))
            phrase = _original(text, marked, m, format_day(stated, locale))
            problems.append(_problem(phrase, stated, tense, today, locale))
    for pattern in THAT_DATE.get(lang, ()) + (THAT_DATE["en"] if lang != "en" else ()):
        for m in re.finditer(pattern, marked):
            before = [int(k) for k in re.findall(_DATE_MARK, marked[: m.start()])]
            if not before:
                continue
            stated = spans[before[-1]][2]
            if not _judge(Tense.NOT_PAST, stated, today):
                phrase = _original(text, marked, m, format_day(stated, locale))
                problems.append(_problem(phrase, stated, Tense.NOT_PAST, today, locale))
    due_today = DUE_TODAY.get(lang, DUE_TODAY["en"])
    already = any(p.tense is Tense.TODAY for p in problems)
    if due_dates and today not in due_dates and not already and re.search(due_today, marked):
        stated = min(due_dates, key=lambda d: abs((d - today).days))
        found = re.search(due_today, marked)
        assert found is not None
        phrase = _original(text, marked, found, format_day(stated, locale))
        problems.append(_problem(phrase, stated, Tense.TODAY, today, locale))
    return problems
