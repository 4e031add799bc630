"""Applying many bank lines at once (the importer's auto-apply) keeps every guarantee of one line.

The batch reads once and flushes once, so these tests look for what a shortcut would lose: each
line's permission, checks against balances earlier lines of the same batch changed, its own audit
row naming its own payments, its undo record, promises and plans moved by the right payment, and
nothing at all of a refused line.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import (
    AuditEvent,
    CashApplication,
    CashLine,
    CashLineStatus,
    InstallmentStatus,
    InvoiceStatus,
    Organisation,
    Payment,
    PaymentPlan,
    Persona,
    PlanInstallment,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
)
from tests.tools.cashapp_files import Entry, camt053
from tests.tools.commit_factories import NOW, TODAY, Factory
from tools.cashapp import applying, intake, service
from tools.cashapp.applying import Applied, LineToApply
from tools.cashapp.schemas import Allocation, Suggestion
from tools.commitments.plans import PolicyRefused
from tools.commitments.promises import CommitmentError, Conflict
from tools.payments import posting as payments
from tools.payments.posting import PaymentRequest

BOOKED = TODAY - timedelta(days=1)


@pytest.fixture
def f(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


def _lines(session: Session, org: Organisation, n: int) -> list[CashLine]:
    """``n`` waiting lines of 1,000.00 USD each (auto-apply is off by default)."""
    entries = [Entry(BOOKED, "1000.00", "USD", f"payment {i}", bank_ref=f"R{i}") for i in range(n)]
    report = intake.import_cash_file(
        session, org.id, camt053(entries), filename="s.xml", actor="test", now=NOW
    )
    session.commit()
    return list(
        session.scalars(
            select(CashLine).where(CashLine.import_id == report.import_id).order_by(CashLine.id)
        )
    )


def _pays(customer_id: int, *parts: tuple[int, int]) -> Suggestion:
    return Suggestion(customer_id, "exact", 99, ["test"], [Allocation(i, a) for i, a in parts])


def _count(session: Session, model: type) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_batch_posts_each_line_with_its_own_audit_undo_record_promise_and_plan(
    session: Session, org: Organisation, f: Factory
) -> None:
    acme, hooli, globex = f.customer("Acme Inc"), f.customer("Hooli"), f.customer("Globex")
    a1, a2 = f.invoice(acme, 60_000), f.invoice(acme, 40_000)
    h = f.invoice(hooli, 100_000)
    g = f.invoice(globex, 100_000)
    promise = PromiseToPay(
        org_id=org.id,
        customer_id=acme.id,
        amount_minor=100_000,
        currency="USD",
        promised_date=TODAY,
        invoices=[a1, a2],
    )
    plan = PaymentPlan(
        org_id=org.id,
        customer_id=hooli.id,
        total_minor=100_000,
        currency="USD",
        status=PlanStatus.ACTIVE,
        invoices=[h],
    )
    plan.installments = [PlanInstallment(seq=1, due_date=TODAY, amount_minor=100_000)]
    session.add_all([promise, plan])
    session.commit()
    lines = _lines(session, org, 3)
    items = [
        LineToApply(lines[0].id, _pays(acme.id, (a1.id, 60_000), (a2.id, 40_000))),
        LineToApply(lines[1].id, _pays(hooli.id, (h.id, 100_000))),
        LineToApply(lines[2].id, _pays(globex.id, (g.id, 100_000))),
    ]
    results = applying.apply_lines(session, org.id, items, actor="cli", now=NOW)
    session.commit()
    assert all(isinstance(r, Applied) for r in results)
    for inv in (a1, a2, h, g, promise, plan):
        session.refresh(inv)
    assert {a1.status, a2.status, h.status, g.status} == {InvoiceStatus.PAID}
    assert promise.status == PromiseStatus.KEPT
    assert plan.installments[0].status == InstallmentStatus.PAID
    assert _count(session, Payment) == 4
    for line, result in zip(lines, results, strict=True):
        assert isinstance(result, Applied)
        session.refresh(line)
        assert line.status == CashLineStatus.APPLIED
        audit = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "cash.applied", AuditEvent.subject_id == line.id
            )
        ).one()
        mine = session.scalars(
            select(Payment.id).where(Payment.external_ref.like(f"cash:{line.id}:%"))
        ).all()
        assert sorted(audit.detail["payments"]) == sorted(mine) and mine
        apps = session.scalars(select(CashApplication).where(CashApplication.line_id == line.id))
        assert sorted(a.payment_id for a in apps) == sorted(mine)
    kept = session.scalars(select(AuditEvent).where(AuditEvent.action == "promise.kept")).one()
    acme_payments = session.scalars(
        select(Payment.id).where(Payment.customer_id == acme.id).order_by(Payment.id)
    ).all()
    # kept by the payment that completed it (the second of the line), as one at a time would say
    assert kept.detail["reason"] == f"paid in full by payment {acme_payments[-1]}"
    # each line's undo record is its own: undoing the middle one touches only Hooli
    applying.undo_line(session, org.id, lines[1].id, actor="cli", now=NOW)
    session.commit()
    for inv in (a1, h, g, plan):
        session.refresh(inv)
    assert h.balance_minor == 100_000 and h.status == InvoiceStatus.OPEN
    assert plan.installments[0].paid_minor == 0
    assert a1.status == g.status == InvoiceStatus.PAID and _count(session, Payment) == 3


def test_a_refused_line_leaves_nothing_of_itself_and_the_others_apply(
    session: Session, org: Organisation, f: Factory
) -> None:
    acme = f.customer("Acme Inc")
    inv, other = f.invoice(acme, 100_000), f.invoice(acme, 100_000)
    lines = _lines(session, org, 3)
    audits_before = _count(session, AuditEvent)
    items = [
        LineToApply(lines[0].id, _pays(acme.id, (inv.id, 100_000))),
        # the same invoice again: paid by the line before it in this very batch
        LineToApply(lines[1].id, _pays(acme.id, (inv.id, 100_000))),
        LineToApply(lines[2].id, _pays(acme.id, (other.id, 100_000))),
    ]
    results = applying.apply_lines(session, org.id, items, actor="cli", now=NOW)
    session.commit()
    assert isinstance(results[0], Applied) and isinstance(results[2], Applied)
    assert isinstance(results[1], Conflict) and "nothing left to pay" in str(results[1])
    for line in lines:
        session.refresh(line)
    assert [ln.status for ln in lines] == [
        CashLineStatus.APPLIED,
        CashLineStatus.EXCEPTION,
        CashLineStatus.APPLIED,
    ]
    refs = set(session.scalars(select(Payment.external_ref)))
    assert refs == {f"cash:{lines[0].id}:0:0", f"cash:{lines[2].id}:0:0"}
    assert not session.scalars(
        select(CashApplication).where(CashApplication.line_id == lines[1].id)
    ).all()
    # two lines: cash.applied and payment.posted each, nothing for the refused one
    assert _count(session, AuditEvent) == audits_before + 4
    session.refresh(other)
    assert other.balance_minor == 0


def test_a_person_without_apply_cash_gets_nothing_written(
    session: Session, org: Organisation, f: Factory
) -> None:
    acme = f.customer("Acme Inc")
    inv = f.invoice(acme, 100_000)
    lines = _lines(session, org, 1)
    audits_before = _count(session, AuditEvent)
    with pytest.raises(PolicyRefused, match="apply_cash"):
        applying.apply_lines(
            session,
            org.id,
            [LineToApply(lines[0].id, _pays(acme.id, (inv.id, 100_000)))],
            actor=f.user(Persona.VIEWER),
            now=NOW,
        )
    session.commit()
    assert _count(session, Payment) == 0 and _count(session, AuditEvent) == audits_before


def test_auto_apply_of_a_file_goes_in_chunks_and_counts_refusals(
    session: Session, org: Organisation, f: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More lines than a chunk: every one is applied, each invoice once."""
    from tools.ledger import policy_overrides as policy_admin

    admin = f.user(Persona.CONTROLLER)
    policy_admin.update_policy(
        session,
        org.id,
        admin,
        {"cash_app": {"auto_apply": True, "max_auto_apply_minor": {"USD": 10_000_000}}},
    )
    session.commit()
    monkeypatch.setattr(service, "CHUNK", 2)
    customers = [f.customer(f"Payer {i} Ltd") for i in range(5)]
    invs = [f.invoice(c, 10_000 * (i + 1)) for i, c in enumerate(customers)]
    entries = [
        Entry(BOOKED, f"{100 * (i + 1)}.00", "USD", inv.number, bank_ref=f"X{i}")
        for i, inv in enumerate(invs)
    ]
    report = intake.import_cash_file(
        session, org.id, camt053(entries), filename="s.xml", actor="test", now=NOW
    )
    session.commit()
    assert report.auto_applied == 5 and report.exceptions == 0
    for inv in invs:
        session.refresh(inv)
        assert inv.status == InvoiceStatus.PAID
    assert _count(session, Payment) == 5


def test_a_payment_batch_refuses_a_collector_and_posts_like_one_at_a_time(
    session: Session, org: Organisation, f: Factory
) -> None:
    acme = f.customer("Acme Inc")
    inv = f.invoice(acme, 100_000)
    reqs = [
        PaymentRequest(60_000, "USD", BOOKED, invoice_id=inv.id, external_ref="b1"),
        PaymentRequest(60_000, "USD", BOOKED, invoice_id=inv.id, external_ref="b2"),
        PaymentRequest(5_000, "USD", BOOKED, invoice_id=inv.id, external_ref="b1"),
    ]
    with pytest.raises(PermissionError):
        payments.payment_batch(
            session, org.id, actor=f.user(Persona.COLLECTOR), requests=reqs, now=NOW
        )
    posting = payments.payment_batch(session, org.id, actor="import", requests=reqs, now=NOW)
    first, second, again = (posting.post(r) for r in reqs)
    posting.finish()
    session.commit()
    assert (first.payment.applied_minor, first.payment.unapplied_minor) == (60_000, 0)
    assert (second.payment.applied_minor, second.payment.unapplied_minor) == (40_000, 20_000)
    assert again.duplicate and again.payment.id == first.payment.id
    session.refresh(inv)
    assert inv.balance_minor == 0 and inv.status == InvoiceStatus.PAID
    posted = session.scalars(
        select(AuditEvent.subject_id).where(AuditEvent.action == "payment.posted")
    ).all()
    assert sorted(posted) == sorted([first.payment.id, second.payment.id])
    with pytest.raises(CommitmentError, match="future"):
        posting.post(PaymentRequest(1, "USD", TODAY + timedelta(days=5), customer_id=acme.id))


def test_an_imported_file_keeps_file_order_and_each_row_its_own_ids(
    session: Session, org: Organisation, f: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines, payments and applications are written many rows to an INSERT and their ids
    matched back by key: every application names its own line's payment, lines keep the file's
    order, and a line nothing matched has no decision (SQL NULL, not the JSON null)."""
    from tools.ledger import policy_overrides as policy_admin

    policy_admin.update_policy(
        session,
        org.id,
        f.user(Persona.CONTROLLER),
        {"cash_app": {"auto_apply": True, "max_auto_apply_minor": {"USD": 10_000_000}}},
    )
    session.commit()
    monkeypatch.setattr(service, "CHUNK", 3)
    customers = [f.customer(f"Payer {i} Ltd") for i in range(4)]
    invs = [f.invoice(c, 10_000 * (i + 1)) for i, c in enumerate(customers)]
    both = f.invoice(customers[0], 5_000)
    entries = [
        Entry(BOOKED, f"{100 * (i + 1)}.00", "USD", inv.number, bank_ref=f"K{i}")
        for i, inv in enumerate(invs)
    ]
    entries.insert(2, Entry(BOOKED, "12.34", "USD", "no idea", bank_ref="K-none"))
    entries.append(Entry(BOOKED, "50.00", "USD", both.number, bank_ref="K-last"))
    report = intake.import_cash_file(
        session, org.id, camt053(entries), filename="s.xml", actor="test", now=NOW
    )
    session.commit()
    assert report.auto_applied == 5
    lines = session.scalars(
        select(CashLine).where(CashLine.import_id == report.import_id).order_by(CashLine.id)
    ).all()
    assert [line.bank_ref for line in lines] == [f"{e.bank_ref}/E2E-{e.bank_ref}" for e in entries]
    unmatched = lines[2]
    assert unmatched.status == CashLineStatus.EXCEPTION and unmatched.decision is None
    assert session.scalar(
        select(func.count()).where(CashLine.id == unmatched.id, CashLine.decision.is_(None))
    )
    for line in lines:
        if line.status != CashLineStatus.APPLIED:
            continue
        (app,) = session.scalars(select(CashApplication).where(CashApplication.line_id == line.id))
        pay = session.get(Payment, app.payment_id)
        assert pay is not None and pay.external_ref == f"cash:{line.id}:0:0"
        assert pay.amount_minor == app.amount_minor == line.amount_minor
        assert app.invoice_id == pay.invoice_id
