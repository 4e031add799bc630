"""Date-dependent wording, read in the supported languages and judged on a business date."""

from __future__ import annotations

from datetime import date

import pytest

from tools.grounding.date_wording import Tense, date_wording_problems
from tools.kit.formatting import format_day

DUE = date(2026, 12, 8)
BEFORE, ON, AFTER = date(2026, 12, 6), DUE, date(2026, 12, 14)


def _day(locale: str) -> str:
    return format_day(DUE, locale)


# (language, locale, text with {d} for the date, tense it claims)
CASES = [
    ("en", "en_US", "Invoice INV-1 for $5.00 is due on {d}.", Tense.NOT_PAST),
    ("en", "en_US", "This is a short reminder ahead of {d}.", Tense.NOT_PAST),
    ("en", "en_US", "Invoice INV-1 was due on {d} and is still open.", Tense.PAST),
    ("en", "en_US", "Invoice INV-1 has been overdue since {d}.", Tense.PAST),
    ("en", "en_US", "Your payment of $5.00 promised for {d} has not arrived.", Tense.PAST),
    ("en", "en_US", "Invoice INV-1 is due today, {d}.", Tense.TODAY),
    ("de", "de_DE", "Die Rechnung 1 über 5,00 € ist am {d} fällig.", Tense.NOT_PAST),
    ("de", "de_DE", "dass die Rechnung 1 am {d} fällig war und noch offen ist.", Tense.PAST),
    ("de", "de_DE", "Die für den {d} zugesagte Zahlung ist nicht eingegangen.", Tense.PAST),
    ("fr", "fr_FR", "La facture 1 arrive à échéance le {d}.", Tense.NOT_PAST),
    ("fr", "fr_FR", "La facture 1 était due le {d} et reste ouverte.", Tense.PAST),
    ("fr", "fr_FR", "Le paiement promis pour le {d} n'est pas arrivé.", Tense.PAST),
    ("es", "es_ES", "La factura 1 vence el {d}.", Tense.NOT_PAST),
    ("es", "es_ES", "La factura 1 venció el {d} y sigue pendiente.", Tense.PAST),
    ("es", "es_ES", "El pago prometido para el {d} no ha llegado.", Tense.PAST),
    ("nl", "nl_NL", "Factuur 1 vervalt op {d}.", Tense.NOT_PAST),
    ("it", "it_IT", "La fattura 1 scade il {d}.", Tense.NOT_PAST),
    ("pt", "pt_PT", "A fatura 1 vence em {d}.", Tense.NOT_PAST),
]

TRUE_ON = {
    Tense.NOT_PAST: {BEFORE, ON},
    Tense.TODAY: {ON},
    Tense.PAST: {AFTER},
}


@pytest.mark.parametrize(("language", "locale", "text", "tense"), CASES)
def test_each_phrase_is_judged_on_the_business_date(
    language: str, locale: str, text: str, tense: Tense
) -> None:
    written = text.format(d=_day(locale))
    for today in (BEFORE, ON, AFTER):
        found = date_wording_problems(written, language=language, today=today, locale=locale)
        if today in TRUE_ON[tense]:
            assert found == [], (today, written, found)
        else:
            assert found and found[0].stated == DUE and found[0].tense is tense, (today, written)
            assert format_day(today, locale) in found[0].message


def test_that_date_refers_to_the_date_written_before_it() -> None:
    text = (
        f"Thank you for letting us know that you will pay $1,200.00 on {_day('en_US')}. "
        "This is a short reminder ahead of that date."
    )
    assert date_wording_problems(text, language="en", today=BEFORE) == []
    late = date_wording_problems(text, language="en", today=AFTER)
    assert [p.phrase for p in late] == ["ahead of that date"]


def test_due_today_without_a_date_is_judged_on_the_invoice_due_date() -> None:
    text = "Invoice INV-1 is due today"
    assert date_wording_problems(text, language="en", today=ON, due_dates=(DUE,)) == []
    late = date_wording_problems(text, language="en", today=AFTER, due_dates=(DUE,))
    assert len(late) == 1 and late[0].tense is Tense.TODAY


def test_neutral_mentions_of_a_date_are_left_alone() -> None:
    text = f"Invoice INV-1 ($5.00, due on {_day('en_US')}) is still open."
    for today in (BEFORE, ON, AFTER):
        assert date_wording_problems(text, language="en", today=today) == []
