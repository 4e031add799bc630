"""Grounding: facts are read back out of text in every supported language and checked against
the ledger; anything the ledger does not back is a mismatch the policies see."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from memory.models import Organisation, PromiseStatus
from memory.money import format_money, to_decimal
from tests.agent.factories import AS_OF, NOW, Builder, settings_for, small_ledger
from tools.grounding.comparison import DeclaredFacts, ground_text, stated_minor
from tools.grounding.extraction import detect_language, extract_facts, invoice_shapes
from tools.grounding.recheck import recheck_draft
from tools.grounding.truth import LedgerTruth, ledger_truth
from tools.kit.formatting import format_amount, format_day, locale_for

LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "nl_NL", "it_IT", "pt_PT"]


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


def test_three_decimals_follow_the_locale_not_only_the_language() -> None:
    # de_CH and es_MX write a decimal point, unlike de_DE and es_ES.
    assert extract_facts("KWD 123.456", language="de", locale="de_CH").amounts[0].value == (
        "123.456"
    )
    assert extract_facts("KWD 123.456", language="de").amounts[0].value == "123456"
    assert extract_facts("KWD123.456", language="es", locale="es_MX").amounts[0].value == (
        "123.456"
    )


def test_an_acronym_next_to_a_number_does_not_hide_the_amount() -> None:
    # "ABC" is no currency; the figure after it is still an amount that must be grounded.
    report = ground_text("Invoice INV-1042: ABC 1,250.99 open.", _truth())
    assert [a.value for a in report.stated.amounts] == ["1250.99"]
    assert not report.ok


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


def test_ledger_truth_reads_invoices_promises_plans_and_payments(session: Session) -> None:
    led = small_ledger(session)
    b = led.b
    partial = b.invoice(led.customer, number="INV-2000", amount_minor=90_000, balance_minor=40_000)
    b.promise(led.customer, [led.invoice], amount_minor=70_000, promised=date(2025, 10, 25))
    b.plan(
        led.customer,
        [partial],
        [(date(2025, 11, 1), 20_000, 0), (date(2025, 12, 1), 20_000, 5_000)],
    )
    b.payment(partial, 50_000, date(2025, 10, 1))
    other = Builder.new_org(session)
    stranger = other.customer("Elsewhere Ltd")
    other.invoice(stranger, number="INV-7777", amount_minor=333_300)
    session.commit()
    truth = ledger_truth(session, led.org.id, led.customer.id, as_of=AS_OF)
    usd = set(truth.amounts["USD"])
    assert {125_000, 90_000, 40_000, 50_000, 70_000, 20_000, 15_000, 165_000} <= usd
    assert 333_300 not in usd
    assert {"INV-1042", "INV-2000"} == set(truth.invoice_numbers)
    assert {date(2025, 10, 25), date(2025, 10, 28), date(2025, 11, 1), date(2025, 10, 1)} <= set(
        truth.dates
    )
    with pytest.raises(LookupError):
        ledger_truth(session, led.org.id, stranger.id, as_of=AS_OF)


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


def test_recheck_draft_blocks_an_edit_that_lies(session: Session, data_dir: object) -> None:
    from agent.deps import AgentDeps
    from agent.drafter import draft_outreach

    led = small_ledger(session)
    settings = settings_for()
    deps = AgentDeps(session=session, org_id=led.org.id, settings=settings, as_of=AS_OF, now=NOW)
    result = draft_outreach(deps, invoice_id=led.invoice.id, step=led.cadence.steps[1].id)
    session.commit()
    from memory.models import Draft

    draft = session.get(Draft, result.draft_id)
    assert draft is not None
    good = recheck_draft(session, draft, NOW, settings=settings, as_of=AS_OF)
    assert not good.grounding_blocked and good.outcome == "needs_approval"
    draft.body = draft.body.replace("$1,250.00", "$125.00")
    bad = recheck_draft(session, draft, NOW, settings=settings, as_of=AS_OF)
    assert bad.grounding_blocked and bad.outcome == "block"
    assert "content.amount_mismatch" in {r["rule_id"] for r in bad.decision["reasons"]}


def test_promise_statuses_reach_the_policy_facts(session: Session) -> None:
    from tools.grounding.guardrail_facts import promise_facts_by_customer

    led = small_ledger(session)
    led.b.promise(
        led.customer, [led.invoice], amount_minor=1, promised=AS_OF, status=PromiseStatus.MISSED
    )
    session.commit()
    facts = promise_facts_by_customer(session, led.org.id, [led.customer.id])[led.customer.id]
    assert facts[0].status == "missed" and facts[0].invoice_numbers == ["INV-1042"]
    assert isinstance(led.org, Organisation)


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


@pytest.mark.parametrize(
    ("kind", "persona", "facts", "expected"),
    [
        ("manual", "collector", {"dispute_id": 7}, True),
        ("manual", "collector", {}, False),
        ("manual", "collector", {"dispute_id": "7"}, False),
        ("manual", "autopilot", {"dispute_id": 7}, False),  # a model-written on-demand draft
        ("cadence", "autopilot", {"dispute_id": 7}, False),  # Autopilot's cadence draft
        ("nudge", "sales_nudge", {"dispute_id": 7}, False),
    ],
)
def test_only_a_persons_message_marked_by_the_dispute_reply_path_is_dispute_correspondence(
    kind: str, persona: str, facts: dict[str, object], expected: bool
) -> None:
    from memory.models import Draft, DraftKind, DraftPersona
    from tools.grounding.guardrail_facts import is_dispute_correspondence

    draft = Draft(kind=DraftKind(kind), persona=DraftPersona(persona), stated_facts=facts)
    assert is_dispute_correspondence(draft) is expected
