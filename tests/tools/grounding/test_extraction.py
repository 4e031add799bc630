"""Reading a text back: amounts in every supported language and writing locale, dates (and
ambiguous ones), invoice references, links, and the language a text is written in."""

from __future__ import annotations

from datetime import date

import pytest

from tests.agent.factories import AS_OF
from tools.grounding.extraction import detect_language, extract_facts, invoice_shapes
from tools.kit.formatting import format_amount, format_day, locale_for

LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "nl_NL", "it_IT", "pt_PT"]


@pytest.mark.parametrize("locale", LOCALES)
def test_every_rendering_is_read_back_exactly(locale: str) -> None:
    lang = locale.split("_")[0]
    amount = format_amount(123_456_789, "USD", locale)
    euros = format_amount(100_000, "EUR", locale)
    yen = format_amount(5_000, "JPY", locale)
    day = format_day(date(2025, 10, 3), locale)
    text = f"Invoice INV-1042: {amount}, {euros} and {yen}, due {day}. https://x.example/p/1."
    facts = extract_facts(text, language=lang, as_of=AS_OF, known_invoice_numbers=["INV-1042"])
    values = {(a.value, tuple(a.currencies)) for a in facts.amounts}
    assert any(v == "1234567.89" and "USD" in c for v, c in values)
    assert any(v == "1000.00" and c == ("EUR",) for v, c in values)
    assert any(v == "5000" and "JPY" in c for v, c in values)
    assert facts.dates == [date(2025, 10, 3)]
    assert facts.invoice_numbers == ["INV-1042"]
    assert facts.links == ["https://x.example/p/1"]
    assert facts.ambiguous == []


def test_separators_follow_the_language() -> None:
    assert extract_facts("USD 1,234", language="en").amounts[0].value == "1234"
    assert extract_facts("1,234 USD", language="de").amounts[0].value == "1.234"
    assert extract_facts("1.234 USD", language="de").amounts[0].value == "1234"
    assert extract_facts("€1.234,56", language="en").amounts[0].value == "1234.56"


def test_three_decimals_follow_the_locale_not_only_the_language() -> None:
    # de_CH and es_MX write a decimal point, unlike de_DE and es_ES.
    assert extract_facts("KWD 123.456", language="de", locale="de_CH").amounts[0].value == (
        "123.456"
    )
    assert extract_facts("KWD 123.456", language="de").amounts[0].value == "123456"
    assert extract_facts("KWD123.456", language="es", locale="es_MX").amounts[0].value == (
        "123.456"
    )


def test_numeric_dates_are_ambiguous_and_iso_dates_are_read() -> None:
    facts = extract_facts("Paid 03/10/2025 and 3.10.25; due 2025-10-18.")
    assert facts.ambiguous == ["03/10/2025", "3.10.25"]
    assert facts.dates == [date(2025, 10, 18)]


def test_a_date_without_a_year_is_the_one_nearest_to_as_of() -> None:
    assert extract_facts("by 3 October", as_of=date(2025, 11, 1)).dates == [date(2025, 10, 3)]
    assert extract_facts("by 3 January", as_of=date(2025, 12, 20)).dates == [date(2026, 1, 3)]


def test_words_that_look_like_months_are_not_dates() -> None:
    text = "You may pay 5 times; set 3 reminders; 3 days ago."
    assert extract_facts(text, language="en").dates == []


def test_invoice_references_keywords_lists_hashes_and_shapes() -> None:
    text = (
        "Please pay invoices 1042, 1043 and 1044 (#77); also see Rechnung Nr. 991 "
        "and INV-2001 which nobody introduced."
    )
    facts = extract_facts(text, language="de", shapes=invoice_shapes(["INV-1042"]))
    assert facts.invoice_numbers == ["1042", "1043", "1044", "991", "77", "INV-2001"]
    # an amount next to an invoice number is still an amount, not a reference
    facts = extract_facts("invoice 1042 for USD 1042.00", known_invoice_numbers=["1042"])
    assert facts.invoice_numbers == ["1042"]
    assert [a.value for a in facts.amounts] == ["1042.00"]


@pytest.mark.parametrize(
    ("locale", "written", "value"),
    [
        ("de_CH", "$\u00a01000000'000.00", "1000000000.00"),  # Babel 2.19's de_CH, read whole
        ("fr_CH", "1000000'000,00\u00a0$US", "1000000000.00"),
        ("it_CH", "USD\u00a01000000'000.00", "1000000000.00"),
        ("de_CH", "CHF 1’234.50", "1234.50"),  # older CLDR data: typographic apostrophe
        ("en_US", "€1.234,56", "1234.56"),  # the other decimal mark, plainly
        ("en_US", "USD 1,5", "1.5"),
        ("de_DE", "1,234 USD", "1.234"),  # ambiguous: the locale decides
        ("en_US", "USD 1,234", "1234"),
        ("en_IN", "$1,00,00,00,000.00", "1000000000.00"),
        ("fr_FR", "1\u202f000\u202f000,00\u00a0€", "1000000.00"),
        ("pt_PT", "1.234,56\u00a0€", "1234.56"),
    ],
)
def test_amounts_are_parsed_by_babel_in_the_contact_locale(
    locale: str, written: str, value: str
) -> None:
    """Big Swiss amounts (``$ 1000000'000.00``) used to be read as ``$ 1000000``."""
    lang = locale.split("_")[0]
    facts = extract_facts(f"Bitte zahlen: {written}.", language=lang, locale=locale)
    assert [(a.text, a.value) for a in facts.amounts] == [(written, value)]


def test_language_detection() -> None:
    assert detect_language("Please pay the invoice; it is overdue and we thank you for it.") == "en"
    assert (
        detect_language("Bitte zahlen Sie die Rechnung, sie ist nicht bezahlt und wir danken.")
        == "de"
    )
    assert (
        detect_language("Merci de payer la facture, elle est en retard et nous vous remercions.")
        == "fr"
    )
    assert detect_language("ok") is None


def test_links_and_addresses_are_no_language() -> None:
    # A short SMS whose pay-link token spells Portuguese/Italian stopwords ("e", "a", "o"...).
    sms = (
        "Hi Dana,\nInvoice INV-1042 ($1,250.00, due on October 18, 2025) is still unpaid. "
        "Pay here: https://ar.acme.example/pay/acme-e0a5e1de/INV-1042?o=a&e=o\nAcme A/R"
    )
    assert detect_language(sms) in (None, "en")
    assert detect_language("de la de la de la des du le les et " + "x@de-la.example " * 5) == "fr"
    assert detect_language("ok see https://de.example/la/de/la/de/la/le/les/et/du/des") is None


def test_locale_for() -> None:
    assert locale_for("de", "AT") == "de_AT"
    assert locale_for("de", "XX") == "de_DE"
    assert locale_for("zz") == "en_US"
