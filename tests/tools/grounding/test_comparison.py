"""Comparing a text with the ledger's truth: whatever the drafter writes in any locale grounds, and
anything the ledger does not back (or the drafter declared but did not write) is a mismatch."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory.money import format_money, to_decimal
from tools.grounding.comparison import DeclaredFacts, ground_text, stated_minor
from tools.grounding.extraction import extract_facts
from tools.grounding.truth import LedgerTruth
from tools.kit.formatting import locale_for


def _truth(**kw: object) -> LedgerTruth:
    values: dict[str, object] = {
        "customer_id": 1,
        "currencies": ["USD"],
        "amounts": {"USD": [125_000, 50_000]},
        "dates": [date(2025, 10, 18), date(2025, 10, 3)],
        "invoice_numbers": ["INV-1042", "INV-1043"],
        "links": ["https://ar.example/pay/acme/INV-1042"],
    }
    values.update(kw)
    return LedgerTruth.model_validate(values)


#: Every locale the drafter can write for: whatever ``locale_for`` returns for the languages it
#: knows (and some it does not), with and without each country it knows.
_COUNTRIES = [None, "XX", "US", "GB", "CA", "AU", "IE", "NZ", "IN", "DE", "AT", "CH", "FR", "BE",
              "ES", "MX", "NL", "IT", "PT", "BR"]  # fmt: skip
WRITING_LOCALES = sorted(
    {locale_for(lang, cc) for lang in ("en", "de", "fr", "es", "nl", "it", "pt", "zz", None)
     for cc in _COUNTRIES}
)  # fmt: skip
CURRENCIES = ["USD", "EUR", "GBP", "CHF", "JPY", "KWD"]


def test_the_writing_locales_include_the_ones_that_broke_grounding() -> None:
    assert {"de_CH", "es_MX", "en_IE", "en_AU", "en_IN", "fr_CH"} <= set(WRITING_LOCALES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    locale=st.sampled_from(WRITING_LOCALES),
    currency=st.sampled_from(CURRENCIES),
    minor=st.one_of(
        st.integers(min_value=0, max_value=10**13),
        st.sampled_from([0, 1, 99, 100, 999, 1_000, 123_456, 678_000, 100_000_000]),
    ),
)
def test_whatever_the_drafter_writes_is_read_back_exactly(
    locale: str, currency: str, minor: int
) -> None:
    """format_money in the contact's locale, read back by grounding: the same amount, once."""
    written = format_money(minor, currency, locale)
    lang = locale.split("_")[0]
    text = f"Die Rechnung INV-1042 über {written} ist offen; pay {written}."
    facts = extract_facts(text, language=lang, known_invoice_numbers=["INV-1042"], locale=locale)
    assert [a.text for a in facts.amounts] == [written.strip(), written.strip()], written
    for amount in facts.amounts:
        assert Decimal(amount.value) == to_decimal(minor, currency), (written, amount)
        assert currency in amount.currencies, (written, amount)
    truth = _truth(currencies=[currency], amounts={currency: [minor]}, locale=locale)
    assert stated_minor(facts.amounts[0], truth) == (minor, currency)
    report = ground_text(f"Invoice INV-1042: {written}.", truth, language=lang)
    assert report.ok, report.error_text()


@pytest.mark.parametrize(
    ("locale", "written", "invented"),
    [
        ("es_MX", "USD23,400.00", "USD23,500.00"),
        ("en_IE", "CHF6,780.00", "CHF6,870.00"),
        ("en_AU", "USD23,400.00", "USD2,340.00"),
        ("de_CH", "CHF\u00a06’780.00", "CHF\u00a06’870.00"),
        ("de_CH", "CHF 6'780.00", "CHF 67'800.00"),
        ("en_IN", "$67,80,000.00", "$6,78,000.00"),
    ],
)
def test_glued_codes_and_apostrophe_groups_are_checked(
    locale: str, written: str, invented: str
) -> None:
    """The amounts that used to escape grounding: read whole, and an invented one is caught."""
    lang = locale.split("_")[0]
    value = Decimal(extract_facts(written, language=lang, locale=locale).amounts[0].value)
    minor = int(value * 100)
    truth = _truth(currencies=["USD", "CHF"], amounts={"USD": [minor], "CHF": [minor]},
                   locale=locale)  # fmt: skip
    good = ground_text(f"Invoice INV-1042: {written}.", truth, language=lang)
    assert good.ok, good.error_text()
    assert len(good.stated.amounts) == 1
    bad = ground_text(f"Invoice INV-1042: {invented}.", truth, language=lang)
    assert not bad.ok and {m.kind for m in bad.mismatches} == {"amount"}


def test_an_acronym_next_to_a_number_does_not_hide_the_amount() -> None:
    # "ABC" is no currency; the figure after it is still an amount that must be grounded.
    report = ground_text("Invoice INV-1042: ABC 1,250.99 open.", _truth())
    assert [a.value for a in report.stated.amounts] == ["1250.99"]
    assert not report.ok


def test_a_grounded_text_passes() -> None:
    report = ground_text(
        "Invoice INV-1042 for $1,250.00 was due on October 18, 2025. "
        "Pay: https://ar.example/pay/acme/INV-1042",
        _truth(),
        declared=DeclaredFacts(
            invoice_numbers=["INV-1042"],
            amounts=[(125_000, "USD")],
            dates=[date(2025, 10, 18)],
            pay_link="https://ar.example/pay/acme/INV-1042",
        ),
    )
    assert report.ok, report.error_text()
    assert report.has_invoice_reference and report.has_pay_link


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Invoice INV-1042 for $1,250.01.", "amount"),  # one cent off
        ("Invoice INV-1042 for €1,250.00.", "amount"),  # right number, wrong currency
        ("Invoice INV-1042 was due on October 19, 2025.", "date"),
        ("Invoice INV-9999 is overdue.", "invoice_number"),
        ("Invoice INV-1042: pay at https://evil.example/pay", "link"),
        ("Invoice INV-1042 was due 10/18/2025.", "ambiguous"),
        ("Invoice INV-1042 balance 1,250.99", "amount"),  # no currency, not in the ledger
    ],
)
def test_each_kind_of_mismatch_is_caught(text: str, kind: str) -> None:
    report = ground_text(text, _truth())
    assert not report.ok
    assert kind in {m.kind for m in report.mismatches}
    assert report.error_text()


def test_declared_facts_must_match_the_text() -> None:
    report = ground_text(
        "Invoice INV-1042 for $1,250.00.",
        _truth(),
        declared=DeclaredFacts(
            invoice_numbers=["INV-1042", "INV-1043"],
            amounts=[(50_000, "USD")],
            pay_link="https://ar.example/pay/acme/INV-1042",
        ),  # fmt: skip
    )
    messages = " ".join(m.message for m in report.mismatches if m.kind == "declared")
    assert "INV-1043" in messages and "$500.00" in messages and "pay link" in messages
