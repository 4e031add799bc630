"""Posting payments: partial, exact and over-payments, idempotency, credit, receipts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import (
    Activity,
    AuditEvent,
    InvoiceStatus,
    Organisation,
    OutboxMessage,
    Payment,
)
from tests.tools.commit_factories import NOW, TODAY, Factory
from tools.commitments.promises import CommitmentError, Conflict, NotFound
from tools.payments import posting as payments


@pytest.fixture
def cf(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


def _pay(session: Session, cf: Factory, **kw: object) -> payments.PaymentResult:
    args: dict[str, object] = {"currency": "USD", "received_on": TODAY, "actor": "t", "now": NOW}
    args.update(kw)
    return payments.post_payment(session, cf.org.id, **args)  # type: ignore[arg-type]


def _payments(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Payment)) or 0)


def test_partial_payment_lowers_the_balance_and_keeps_the_invoice_open(
    session: Session, cf: Factory
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 100_000)
    r = _pay(session, cf, amount_minor=40_000, invoice_id=inv.id)
    assert (r.applied_minor, r.unapplied_minor) == (40_000, 0)
    assert inv.balance_minor == 60_000 and inv.status == InvoiceStatus.OPEN
    assert r.allocations[0].balance_after_minor == 60_000
    assert session.scalars(select(Activity)).one().direction == "in"


def test_exact_payment_settles_the_invoice(session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 100_000, balance_minor=25_000)
    _pay(session, cf, amount_minor=25_000, invoice_id=inv.id)
    assert inv.balance_minor == 0 and inv.status == InvoiceStatus.PAID
    assert inv.settled_date == TODAY


def test_overpayment_keeps_the_rest_as_unapplied_credit_and_says_so(
    session: Session, cf: Factory
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 10_000)
    r = _pay(session, cf, amount_minor=12_550, invoice_id=inv.id, external_ref="pi_over")
    assert (r.applied_minor, r.unapplied_minor) == (10_000, 2_550)
    assert inv.status == InvoiceStatus.PAID
    assert payments.unapplied_credit(session, cf.org.id, c.id) == {"USD": 2_550}
    assert r.receipt is not None
    assert "$125.50" in r.receipt.subject
    assert "$25.50 is held as a credit" in r.receipt.body
    assert f"Invoice {inv.number}: $100" in r.receipt.body


def test_same_reference_twice_changes_nothing(session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 100_000)
    first = _pay(session, cf, amount_minor=10_000, invoice_id=inv.id, external_ref="pi_1")
    again = _pay(session, cf, amount_minor=10_000, invoice_id=inv.id, external_ref="pi_1")
    assert again.duplicate and again.payment.id == first.payment.id
    assert inv.balance_minor == 90_000
    assert _payments(session) == 1
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


def test_payment_on_a_paid_invoice_is_all_credit(session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 5_000, balance_minor=0, status=InvoiceStatus.PAID)
    r = _pay(session, cf, amount_minor=5_000, invoice_id=inv.id)
    assert (r.applied_minor, r.unapplied_minor) == (0, 5_000)


def test_on_account_payment_and_applying_the_credit_later(session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 8_000)
    r = _pay(session, cf, amount_minor=10_000, customer_id=c.id)
    assert (r.applied_minor, r.unapplied_minor) == (0, 10_000)
    moved = payments.apply_credit(
        session, cf.org.id, r.payment.id, invoice_id=inv.id, actor="t", now=NOW
    )
    assert moved.allocations[0].amount_minor == 8_000
    assert (r.payment.applied_minor, r.payment.unapplied_minor) == (8_000, 2_000)
    assert inv.status == InvoiceStatus.PAID
    with pytest.raises(Conflict, match="nothing left to pay"):
        payments.apply_credit(session, cf.org.id, r.payment.id, invoice_id=inv.id, actor="t")
    other = cf.invoice(cf.customer(email="x@y.example"))
    with pytest.raises(CommitmentError, match="another customer"):
        payments.apply_credit(session, cf.org.id, r.payment.id, invoice_id=other.id, actor="t")
    assert session.scalars(
        select(AuditEvent).where(AuditEvent.action == "payment.credit_applied")
    ).one().detail == {"invoice_id": inv.id, "amount_minor": 8_000}


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"amount_minor": 0}, CommitmentError, "greater than zero"),
        ({"amount_minor": 100, "currency": "EUR"}, CommitmentError, "cannot be applied"),
        ({"amount_minor": 100, "currency": "US"}, CommitmentError, "ISO currency"),
        (
            {"amount_minor": 100, "received_on": TODAY + timedelta(days=5)},
            CommitmentError,
            "in the future",
        ),
        ({"amount_minor": 100, "invoice_id": 987_654}, NotFound, "does not exist"),
    ],
)
def test_bad_payments_are_refused_and_nothing_written(
    session: Session, cf: Factory, kw: dict[str, object], exc: type[Exception], match: str
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 1_000)
    args: dict[str, object] = {"invoice_id": inv.id}
    args.update(kw)
    with pytest.raises(exc, match=match):
        _pay(session, cf, **args)
    assert _payments(session) == 0 and inv.balance_minor == 1_000


def test_payment_needs_a_target_and_the_right_customer(session: Session, cf: Factory) -> None:
    c, d = cf.customer(), cf.customer(email="d@payer.example")
    inv = cf.invoice(c)
    with pytest.raises(CommitmentError, match="whose money"):
        _pay(session, cf, amount_minor=100)
    with pytest.raises(CommitmentError, match="another customer"):
        _pay(session, cf, amount_minor=100, invoice_id=inv.id, customer_id=d.id)
    assert _payments(session) == 0


def test_receipt_skipped_without_a_usable_contact(session: Session, cf: Factory) -> None:
    c = cf.customer(opted_out=True)
    inv = cf.invoice(c)
    r = _pay(session, cf, amount_minor=100, invoice_id=inv.id)
    assert r.receipt is None and r.receipt_skipped
    assert (
        session.scalars(select(AuditEvent).where(AuditEvent.action == "payment.receipt_skipped"))
        .one()
        .subject_id
        == r.payment.id
    )


def test_zero_decimal_currency_in_the_receipt(session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 5_000, currency="JPY")
    r = _pay(session, cf, amount_minor=5_000, currency="JPY", invoice_id=inv.id)
    assert r.receipt is not None and "5,000" in r.receipt.subject and "." not in r.receipt.subject
