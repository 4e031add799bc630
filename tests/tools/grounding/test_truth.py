"""The ledger's truth for one customer: invoices, promises, plans and payments, and never another
organisation's customer."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy.orm import Session

from tests.agent.factories import AS_OF, Builder, small_ledger
from tools.grounding.truth import ledger_truth


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
