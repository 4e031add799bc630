"""Posting payments: partial, exact and over-payments, idempotency, credit, receipts."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import (
    Activity,
    AuditEvent,
    Customer,
    InstallmentStatus,
    Invoice,
    InvoiceStatus,
    Organisation,
    OutboxMessage,
    Payment,
    PaymentPlan,
    PlanInstallment,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
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


def _world(session: Session, org: Organisation) -> dict[str, Any]:
    """The same customers, invoices, promise and plan in ``org`` (named, to compare orgs)."""
    f = Factory(session, org)
    acme, hooli, globex = f.customer("Acme Inc"), f.customer("Hooli"), f.customer("Globex")
    w: dict[str, Any] = {
        "acme": acme,
        "hooli": hooli,
        "globex": globex,
        "a1": f.invoice(acme, 60_000, due=TODAY - timedelta(days=20)),
        "a2": f.invoice(acme, 40_000),
        "h1": f.invoice(hooli, 100_000),
        "g1": f.invoice(globex, 30_000),
        "g2": f.invoice(globex, 50_000, currency="EUR"),
    }
    w["promise"] = PromiseToPay(
        org_id=org.id,
        customer_id=acme.id,
        amount_minor=100_000,
        currency="USD",
        promised_date=TODAY,
        invoices=[w["a1"], w["a2"]],
    )
    w["plan"] = PaymentPlan(
        org_id=org.id,
        customer_id=hooli.id,
        total_minor=100_000,
        currency="USD",
        status=PlanStatus.ACTIVE,
        invoices=[w["h1"]],
    )
    w["plan"].installments = [
        PlanInstallment(seq=1, due_date=TODAY, amount_minor=40_000),
        PlanInstallment(seq=2, due_date=TODAY + timedelta(days=30), amount_minor=60_000),
    ]
    session.add_all([w["promise"], w["plan"]])
    session.commit()
    return w


# name of the target -> amount, external reference: partial, exact, over-payment, the same
# invoice twice, on account, a promise kept over two payments, plan installments, a repeat
_REQUESTS: list[tuple[str, str, int, str | None]] = [
    ("invoice", "a1", 50_000, "r1"),
    ("invoice", "g1", 10_000, "r2"),
    ("invoice", "g1", 25_000, "r3"),
    ("customer", "globex", 7_000, None),
    ("invoice", "a1", 10_000, "r4"),
    ("invoice", "a2", 40_000, "r5"),
    ("installment", "plan", 40_000, "r6"),
    ("invoice", "h1", 60_000, "r7"),
    ("invoice", "g1", 99_000, "r2"),
]


def _request(w: dict[str, Any], kind: str, name: str, amount: int, ref: str | None) -> Any:
    return payments.PaymentRequest(
        amount_minor=amount,
        currency="USD",
        received_on=TODAY,
        external_ref=ref,
        invoice_id=w[name].id if kind == "invoice" else None,
        customer_id=w[name].id if kind == "customer" else None,
        installment_id=w[name].installments[0].id if kind == "installment" else None,
    )


def _ledger(session: Session, org: Organisation, w: dict[str, Any]) -> dict[str, Any]:
    """Everything posting may touch, with ids replaced by names (two orgs compare equal)."""
    session.expire_all()
    names: dict[tuple[str, int | None], str] = {
        ("invoice", obj.id): n for n, obj in w.items() if isinstance(obj, Invoice)
    }
    names.update({("customer", obj.id): n for n, obj in w.items() if isinstance(obj, Customer)})
    pays = session.scalars(select(Payment).where(Payment.org_id == org.id).order_by(Payment.id))
    pay_names: dict[int | None, int] = {}
    rows = []
    for n, p in enumerate(pays):
        pay_names[p.id] = n
        rows.append(
            (
                names[("customer", p.customer_id)],
                names.get(("invoice", p.invoice_id)),
                p.installment_id is not None,
                p.amount_minor,
                p.applied_minor,
                p.unapplied_minor,
                p.external_ref,
                p.method,
                p.received_on,
            )
        )
    trail = session.scalars(
        select(AuditEvent).where(AuditEvent.org_id == org.id).order_by(AuditEvent.id)
    )
    audit = []
    for e in trail:
        detail = dict(e.detail)
        for key in ("allocations", "invoice_ids", "payment_id"):
            detail.pop(key, None)
        subject = pay_names.get(e.subject_id) if e.subject_type == "payment" else e.subject_type
        said = re.sub(r"payment (\d+)", lambda m: f"payment #{pay_names[int(m[1])]}", str(detail))
        audit.append((e.action, e.subject_type, subject, e.from_state, e.to_state, said))
    activity = session.scalars(
        select(Activity.summary, Activity.kind).where(Activity.org_id == org.id)
    ).all()
    return {
        "invoices": {
            n: (inv.balance_minor, inv.status, inv.settled_date)
            for n, inv in w.items()
            if isinstance(inv, Invoice)
        },
        "payments": rows,
        "promise": w["promise"].status,
        "installments": [(i.paid_minor, i.status) for i in w["plan"].installments],
        "plan": w["plan"].status,
        "activity": sorted(activity),
        "audit": sorted(audit, key=str),
    }


def test_a_batch_leaves_the_ledger_as_posting_one_at_a_time(
    session: Session, org: Organisation
) -> None:
    """The same payments posted one by one (``post_payment``) in one organisation and as one
    batch (``payment_batch``: bulk INSERTs and UPDATEs) in another: balances, payments,
    promises, installments, activity and audit rows are the same."""
    other = Organisation(name="Twin Ltd", slug="twin-ltd")
    session.add(other)
    session.commit()
    one, batch = _world(session, org), _world(session, other)
    for req in (_request(one, *r) for r in _REQUESTS):
        payments.post_payment(
            session, org.id, actor="t", now=NOW, send_receipt=False, **req.__dict__
        )
    requests = [_request(batch, *r) for r in _REQUESTS]
    posting = payments.payment_batch(session, other.id, actor="t", requests=requests, now=NOW)
    results = [posting.post(r) for r in requests]
    posting.finish()
    session.commit()
    assert [r.duplicate for r in results] == [False] * 8 + [True]
    single, batched = _ledger(session, org, one), _ledger(session, other, batch)
    assert single == batched
    assert single["promise"] == PromiseStatus.KEPT
    assert ("promise.kept", "promise", "promise", "open", "kept") in [
        a[:5] for a in single["audit"]
    ]
    assert single["installments"][0] == (40_000, InstallmentStatus.PAID)
    assert single["invoices"]["g1"] == (0, InvoiceStatus.PAID, TODAY)
    assert len(single["payments"]) == 8 and len(single["activity"]) == 8
