"""Consolidated outreach: one group per customer and contact, totals per currency, disputed
invoices left out for the reviewer only, each invoice's own step kept, a statement attached."""

from __future__ import annotations

import io

import pytest
from sqlalchemy.orm import Session

from tests.agent.factories import AS_OF, Builder
from tools.autopilot_select import select_due
from tools.consolidation import group_due, payer_lines
from tools.grounding import format_amount, format_day


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
    # the disputed invoice is said to the reviewer, never to the payer
    assert group.reviewer_notes() == ["C-204 is left out: in dispute (pricing, open)."]
    lines = payer_lines(group)
    text = "\n".join(lines)
    assert "C-204" not in text and "dispute" not in text.lower()
    assert f"Total EUR: {format_amount(625_050, 'EUR')}" in lines
    assert f"Total USD: {format_amount(1_502_345, 'USD')}" in lines
    assert lines[0] == "Overdue 31-60 days:"
    c101 = next(i for i in group.invoices if i.number == "C-101")
    assert lines[1] == (
        f"- C-101: {format_amount(400_000, 'EUR')}, due {format_day(c101.due_date, 'en_US')}"
    )
    assert lines[6].startswith("- C-202: ") and lines[7:9] == ["Coming due:", lines[8]]
    assert lines[8].startswith("- C-203: ")
    assert group.run_key == group_due(session, b.org.id, selection.items, AS_OF)[0][0].run_key


def test_a_segment_can_keep_one_message_per_invoice(session: Session) -> None:
    b, customer_id, _ = _book(session)
    selection = select_due(session, b.org.id, AS_OF)
    groups, single = group_due(
        session, b.org.id, selection.items, AS_OF, keep_separate={"Mid-market"}
    )
    assert groups == [] and len(single) == len(selection.items)


def test_the_statement_attached_to_the_group_matches_it(session: Session) -> None:
    from tools.statement import build_statement, render_pdf, unavailable

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
