"""Consolidated outreach: one group per customer and contact, totals per currency, disputed
invoices left out for the reviewer only, each invoice's own step kept, a statement attached."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from sqlalchemy.orm import Session

from memory.models import Channel, Invoice
from prompts.registry import templates
from tests.agent.factories import AS_OF, Builder
from tools.grounding.comparison import ground_text
from tools.grounding.truth import ledger_truth
from tools.kit.formatting import format_amount, format_day
from tools.outreach.consolidation import (
    GROUP_FINAL_TEMPLATE,
    GROUP_TEMPLATE,
    as_item,
    group_due,
    is_final_notice,
    listing_lines,
    payer_lines,
    sections,
)
from tools.outreach.due import DueItem, select_due


def _book(session: Session) -> tuple[Builder, int, dict[str, int]]:
    b = Builder.new_org(session)
    segment = b.segment("Mid-market", cadence=b.cadence())
    customer = b.customer("Contoso Retail Ltd", segment=segment)
    b.contact(customer, "Ana Payables", email="ap@contoso.example")
    other = b.customer("Fabrikam Inc.", segment=segment)
    b.contact(other, "Fab AP", email="ap@fabrikam.example")
    # six due invoices (each on one of its cadence steps today), in EUR and USD
    made = {
        "EUR-60": b.invoice(customer, number="C-101", amount_minor=400_000, currency="EUR",
                            days_overdue=60),
        "EUR-30": b.invoice(customer, number="C-102", amount_minor=150_000, currency="EUR",
                            days_overdue=30),
        "EUR-3": b.invoice(customer, number="C-103", amount_minor=75_050, currency="EUR",
                           days_overdue=3),
        "USD-14": b.invoice(customer, number="C-201", amount_minor=990_000, currency="USD",
                            days_overdue=14),
        "USD-3": b.invoice(customer, number="C-202", amount_minor=12_345, currency="USD",
                           days_overdue=3),
        "USD-pre": b.invoice(customer, number="C-203", amount_minor=500_000, currency="USD",
                             days_overdue=-3),
        "disputed": b.invoice(customer, number="C-204", amount_minor=222_200, currency="USD",
                              days_overdue=14),
        "fabrikam": b.invoice(other, number="F-1", amount_minor=50_000, days_overdue=3),
    }  # fmt: skip
    b.dispute(made["disputed"], reason="pricing")
    session.commit()
    return b, customer.id, {k: v.id for k, v in made.items()}


def test_six_due_invoices_in_two_currencies_make_one_group(session: Session) -> None:
    b, customer_id, ids = _book(session)
    selection = select_due(session, b.org.id, AS_OF)
    assert len([i for i in selection.items if i.customer_id == customer_id]) == 6
    groups, single = group_due(session, b.org.id, selection.items, AS_OF)
    [group] = groups
    assert group.customer_id == customer_id
    assert [i.invoice_id for i in single] == [ids["fabrikam"]]  # one invoice: stays single
    assert group.totals == {"EUR": 400_000 + 150_000 + 75_050, "USD": 990_000 + 12_345 + 500_000}
    assert {b: [i.number for i in v] for b, v in group.overdue.items()} == {
        "31-60": ["C-101"],
        "1-30": ["C-102", "C-201", "C-103", "C-202"],
    }
    assert list(group.overdue) == ["31-60", "1-30"]  # oldest bucket first
    assert [i.number for i in group.coming_due] == ["C-203"]
    assert {i.number for i in group.invoices} == {"C-101", "C-102", "C-103", "C-201", "C-202",
                                                  "C-203"}  # fmt: skip
    # each invoice keeps its own cadence step and run key, for its history
    assert sorted(i.invoice_id for i in group.items) == sorted(
        v for k, v in ids.items() if k not in ("disputed", "fabrikam")
    )
    assert len({i.run_key for i in group.items}) == 6
    assert group.template == "final_notice" and group.attach_statement
    # the disputed invoice is said to the reviewer, never to the payer; so is the final notice
    assert group.final_notice == ["C-101"]
    assert group.reviewer_notes() == [
        "C-204 is left out: in dispute (pricing, open).",
        "Final-notice wording: C-101 has reached the final-notice step of the cadence; the other "
        "invoices are listed without it.",
    ]
    lines = payer_lines(group)
    text = "\n".join(lines)
    assert "C-204" not in text and "dispute" not in text.lower()
    assert f"Total EUR: {format_amount(625_050, 'EUR')}" in lines
    assert f"Total USD: {format_amount(1_502_345, 'USD')}" in lines
    due = {i.number: format_day(i.due_date, "en_US") for i in group.invoices}

    def line(number: str, minor: int, currency: str) -> str:
        return f"- Invoice {number}: {format_amount(minor, currency)}, due {due[number]}"

    # under their aging-bucket headings, oldest first; a subtotal per currency where a bucket
    # holds several invoices of a currency that other buckets hold too; totals per currency
    assert lines == [
        "Overdue 31-60 days:",
        line("C-101", 400_000, "EUR"),
        "Overdue 1-30 days:",
        line("C-102", 150_000, "EUR"),
        line("C-201", 990_000, "USD"),
        line("C-103", 75_050, "EUR"),
        line("C-202", 12_345, "USD"),
        f"Subtotal EUR: {format_amount(150_000 + 75_050, 'EUR')}",
        f"Subtotal USD: {format_amount(990_000 + 12_345, 'USD')}",
        "Coming due:",
        line("C-203", 500_000, "USD"),
        f"Total EUR: {format_amount(625_050, 'EUR')}",
        f"Total USD: {format_amount(1_502_345, 'USD')}",
    ]
    assert group.run_key == group_due(session, b.org.id, selection.items, AS_OF)[0][0].run_key


@dataclass(frozen=True)
class _Inv:
    number: str
    currency: str
    balance_minor: int
    due_date: date


def test_headings_run_from_the_oldest_bucket_to_coming_due_with_subtotals_where_they_help() -> None:
    def inv(number: str, days: int, minor: int, currency: str = "USD") -> _Inv:
        return _Inv(number, currency, minor, AS_OF - timedelta(days=days))

    listed = [
        inv("D-5", -5, 700), inv("D-1", 1, 100), inv("D-95", 95, 9_500), inv("D-120", 120, 12_000),
        inv("D-70", 70, 7_000, "EUR"), inv("D-20", 20, 2_000), inv("D-0", 0, 50),
    ]  # fmt: skip
    got = [(s.bucket.value, [i.number for i in s.invoices], s.subtotals)
           for s in sections(listed, AS_OF)]  # fmt: skip
    assert got == [
        ("90+", ["D-120", "D-95"], [(21_500, "USD")]),
        ("61-90", ["D-70"], []),  # one invoice: its balance says it
        ("1-30", ["D-20", "D-1"], [(2_100, "USD")]),
        ("Current", ["D-0", "D-5"], [(750, "USD")]),  # due today is not overdue yet
    ]
    # a bucket holding every invoice of a currency shows no subtotal (the total says it)
    alone = sections([inv("A", 10, 100), inv("B", 12, 200), inv("C", 40, 5, "EUR")], AS_OF)
    assert [s.subtotals for s in alone] == [[], []]
    lines = listing_lines(listed, AS_OF, templates("de", "v2").labels, "de_DE")
    assert lines[0] == "Überfällig seit 90+ Tagen:" and "Demnächst fällig:" in lines
    assert f"Zwischensumme USD: {format_amount(21_500, 'USD', 'de_DE')}" in lines
    assert lines[-2:] == [
        f"Summe USD: {format_amount(24_350, 'USD', 'de_DE')}",
        f"Summe EUR: {format_amount(7_000, 'EUR', 'de_DE')}",
    ]
    flat = listing_lines(listed, AS_OF, templates("en", "v2").labels, "en_US", headings=False)
    assert [x.split(":")[0] for x in flat[:2]] == ["- Invoice D-5", "- Invoice D-1"]


def test_the_listing_is_grounded_now_and_after_its_buckets_have_moved(session: Session) -> None:
    b, customer_id, ids = _book(session)
    [group], _ = group_due(session, b.org.id, select_due(session, b.org.id, AS_OF).items, AS_OF)
    text = "\n".join(payer_lines(group))
    for days in (0, 10, 40):  # approved and sent days later: C-102 is in 31-60 by then
        day = AS_OF + timedelta(days=days)
        truth = ledger_truth(session, b.org.id, customer_id, as_of=day)
        report = ground_text(text, truth, as_of=day)
        assert report.ok, (days, [m.message for m in report.mismatches])
    truth = ledger_truth(session, b.org.id, customer_id, as_of=AS_OF)
    sub = format_amount(150_000 + 75_050, "EUR")
    for wrong in (
        format_amount(150_000 + 75_050 + 1, "EUR"),  # off by a cent
        format_amount(400_000 + 75_050, "EUR"),  # C-101 and C-103 without C-102: no period
    ):
        report = ground_text(text.replace(sub, wrong), truth, as_of=AS_OF)
        assert [m.kind for m in report.mismatches] == ["amount"], wrong
    # a subtotal is a figure of the invoices the text names: without them it is not allowed
    alone = ground_text(f"Invoice C-101: {sub}", truth, as_of=AS_OF)
    assert [m.kind for m in alone.mismatches] == ["amount"]


def _later_gentle_step(session: Session) -> tuple[Builder, dict[str, int]]:
    """A cadence whose last e-mail step (75 days) is a friendly one after the final notice."""
    b = Builder.new_org(session)
    steps = [
        (14, Channel.EMAIL, "second_reminder", "professional"),
        (60, Channel.EMAIL, "final_demand", "firm"),  # the organisation's own name for it
        (75, Channel.EMAIL, "friendly_reminder", "friendly"),
    ]
    segment = b.segment("Enterprise", cadence=b.cadence(steps=steps))
    customer = b.customer("Tailspin Toys", segment=segment)
    b.contact(customer, "Lee AP", email="ap@tailspin.example")
    made = {
        "75": b.invoice(customer, number="T-75", amount_minor=75_000, days_overdue=75),
        "60": b.invoice(customer, number="T-60", amount_minor=60_000, days_overdue=60),
        "14": b.invoice(customer, number="T-14", amount_minor=14_000, days_overdue=14),
    }
    session.commit()
    return b, {k: v.id for k, v in made.items()}


def test_a_group_speaks_at_its_final_notice_even_when_a_later_step_is_gentler(
    session: Session,
) -> None:
    b, ids = _later_gentle_step(session)
    [group], single = group_due(
        session, b.org.id, select_due(session, b.org.id, AS_OF).items, AS_OF
    )
    assert single == [] and group.template == "final_demand" and group.final_notice == ["T-60"]
    item = as_item(group)
    assert item is not None
    assert item.template == GROUP_FINAL_TEMPLATE and item.tone == "firm"
    assert item.final_notice_ids == (ids["60"],)  # the final-notice wording is about T-60 only
    assert item.reviewer_notes == tuple(group.reviewer_notes())
    assert "T-60 has reached the final-notice step" in item.reviewer_notes[0]
    assert len(item.member_step_ids) == 3  # every member's step, for its Shadow Mode
    assert DueItem.from_dict(json.loads(json.dumps(item.to_dict()))) == item


def test_a_group_without_a_final_notice_keeps_the_statement_at_its_firmest_tone(
    session: Session,
) -> None:
    b, ids = _later_gentle_step(session)
    session.delete(session.get(Invoice, ids["60"]))
    session.commit()
    [group], _ = group_due(session, b.org.id, select_due(session, b.org.id, AS_OF).items, AS_OF)
    item = as_item(group)
    assert item is not None and group.final_notice == [] and group.reviewer_notes() == []
    assert item.template == GROUP_TEMPLATE and item.final_notice_ids == ()
    assert item.tone == "professional"  # T-14's second reminder is firmer than T-75's friendly one
    assert is_final_notice("final_notice") and is_final_notice("Final demand")
    assert not is_final_notice("firm_reminder") and not is_final_notice("statement")


def test_a_segment_can_keep_one_message_per_invoice(session: Session) -> None:
    b, customer_id, _ = _book(session)
    selection = select_due(session, b.org.id, AS_OF)
    groups, single = group_due(
        session, b.org.id, selection.items, AS_OF, keep_separate={"Mid-market"}
    )
    assert groups == [] and len(single) == len(selection.items)


def test_the_statement_attached_to_the_group_matches_it(session: Session) -> None:
    from tools.ledger.statement import build_statement, render_pdf, unavailable

    if unavailable():
        pytest.skip(str(unavailable()))
    import pdfplumber

    b, customer_id, _ = _book(session)
    [group], _ = group_due(session, b.org.id, select_due(session, b.org.id, AS_OF).items, AS_OF)
    st = build_statement(session, b.org.id, customer_id, as_of=AS_OF)
    with pdfplumber.open(io.BytesIO(render_pdf(st))) as doc:
        text = "\n".join(p.extract_text() or "" for p in doc.pages).replace("\xa0", " ")
    plain = lambda m, c: format_amount(m, c).replace("\xa0", " ")  # noqa: E731
    assert plain(group.totals["EUR"], "EUR") in text
    # The statement is the whole account: its USD total includes the disputed invoice too.
    assert plain(group.totals["USD"] + 222_200, "USD") in text and "C-204" in text
    for line in group.invoices:
        assert line.number in text and plain(line.balance_minor, line.currency) in text
