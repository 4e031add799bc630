"""Promises-to-pay: intake checks, kept/missed by hand and from payments, reminders, adherence."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import AuditEvent, Draft, Organisation, PromiseStatus, PromiseToPay
from tests.tools.commit_factories import NOW, TODAY, Factory
from tools.commitments import promises
from tools.commitments.promises import CommitmentError, Conflict, NotFound
from tools.payments import posting as payments


@pytest.fixture
def cf(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


def _count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(PromiseToPay)) or 0)


def test_add_promise_links_invoices_and_audits(session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 100_000)
    contact = c.contacts[0]
    p = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=60_000,
        promised_date=TODAY + timedelta(days=5),
        invoice_ids=[inv.id],
        contact_id=contact.id,
        actor="tester",
        now=NOW,
    )
    assert p.status == PromiseStatus.OPEN
    assert p.currency == "USD"
    assert [i.id for i in p.invoices] == [inv.id]
    assert promises.promise_deadline(p) == TODAY + timedelta(days=8)
    ev = session.scalars(select(AuditEvent).where(AuditEvent.action == "promise.created")).one()
    assert ev.subject_id == p.id and ev.detail["invoice_ids"] == [inv.id]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"promised_date": TODAY - timedelta(days=1)}, "in the past"),
        ({"amount_minor": 0}, "greater than zero"),
        ({"amount_minor": 100_001}, "more than the linked invoices"),
        ({"grace_days": 31}, "Grace days"),
        ({"promised_date": TODAY + timedelta(days=400)}, "payment plan instead"),
        ({"currency": "EUR"}, "in EUR but the invoices are in USD"),
    ],
)
def test_bad_promise_is_refused_and_nothing_written(
    session: Session, cf: Factory, kwargs: dict[str, object], match: str
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 100_000)
    args: dict[str, object] = {
        "customer_id": c.id,
        "amount_minor": 50_000,
        "promised_date": TODAY,
        "invoice_ids": [inv.id],
        "actor": "tester",
        "now": NOW,
    }
    args.update(kwargs)
    with pytest.raises(CommitmentError, match=match):
        promises.add_promise(session, cf.org.id, **args)  # type: ignore[arg-type]
    assert _count(session) == 0


def test_promise_today_is_accepted(session: Session, cf: Factory) -> None:
    c = cf.customer()
    p = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=1,
        promised_date=TODAY,
        actor="t",
        now=NOW,
    )
    assert p.promised_date == TODAY and p.invoices == []


def test_foreign_invoice_contact_and_currency_mix_are_refused(
    session: Session, cf: Factory
) -> None:
    c1, c2 = cf.customer(), cf.customer(email="other@payer.example")
    inv2 = cf.invoice(c2)
    usd, eur = cf.invoice(c1), cf.invoice(c1, currency="EUR")
    paid = cf.invoice(c1, balance_minor=0, status=payments.InvoiceStatus.PAID)
    common = {
        "customer_id": c1.id,
        "amount_minor": 10,
        "promised_date": TODAY,
        "actor": "t",
        "now": NOW,
    }
    with pytest.raises(CommitmentError, match="another customer"):
        promises.add_promise(session, cf.org.id, invoice_ids=[inv2.id], **common)  # type: ignore[arg-type]
    with pytest.raises(CommitmentError, match="not a contact of"):
        promises.add_promise(session, cf.org.id, contact_id=c2.contacts[0].id, **common)  # type: ignore[arg-type]
    with pytest.raises(CommitmentError, match="different currencies"):
        promises.add_promise(session, cf.org.id, invoice_ids=[usd.id, eur.id], **common)  # type: ignore[arg-type]
    with pytest.raises(CommitmentError, match="only open invoices"):
        promises.add_promise(session, cf.org.id, invoice_ids=[paid.id], **common)  # type: ignore[arg-type]
    other_org = Organisation(name="Other", slug="other-org")
    session.add(other_org)
    session.flush()
    with pytest.raises(NotFound):
        promises.add_promise(session, other_org.id, **common)  # type: ignore[arg-type]
    assert _count(session) == 0


def test_partial_payments_keep_the_promise_once_paid_in_full(session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 100_000)
    p = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=50_000,
        promised_date=TODAY + timedelta(days=3),
        invoice_ids=[inv.id],
        actor="t",
        now=NOW,
    )
    r1 = payments.post_payment(
        session,
        cf.org.id,
        amount_minor=30_000,
        currency="USD",
        received_on=TODAY,
        invoice_id=inv.id,
        actor="t",
        now=NOW,
    )
    assert r1.promises_kept == [] and p.status == PromiseStatus.OPEN
    r2 = payments.post_payment(
        session,
        cf.org.id,
        amount_minor=20_000,
        currency="USD",
        received_on=TODAY + timedelta(days=2),
        invoice_id=inv.id,
        actor="t",
        now=NOW + timedelta(days=2),
    )
    assert r2.promises_kept == [p.id]
    assert p.status == PromiseStatus.KEPT and p.resolved_at is not None
    assert inv.balance_minor == 50_000


def test_payment_within_grace_keeps_after_grace_does_not(session: Session, cf: Factory) -> None:
    c = cf.customer()
    a, b = cf.invoice(c, 10_000), cf.invoice(c, 10_000)
    due = TODAY + timedelta(days=1)
    pa = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=10_000,
        promised_date=due,
        invoice_ids=[a.id],
        actor="t",
        now=NOW,
    )
    pb = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=10_000,
        promised_date=due,
        invoice_ids=[b.id],
        actor="t",
        now=NOW,
    )
    last_day = due + timedelta(days=3)  # promised date + 3 grace days
    payments.post_payment(
        session,
        cf.org.id,
        amount_minor=10_000,
        currency="USD",
        received_on=last_day,
        invoice_id=a.id,
        actor="t",
        now=NOW + timedelta(days=4),
    )
    assert pa.status == PromiseStatus.KEPT
    payments.post_payment(
        session,
        cf.org.id,
        amount_minor=10_000,
        currency="USD",
        received_on=last_day + timedelta(days=1),
        invoice_id=b.id,
        actor="t",
        now=NOW + timedelta(days=5),
    )
    assert pb.status == PromiseStatus.OPEN  # paid, but late: the sweep decides
    sweep = promises.evaluate_promises(
        session, cf.org.id, now=NOW + timedelta(days=5), actor="promise-sweep"
    )
    assert sweep.missed == [pb.id] and sweep.kept == []
    assert pb.status == PromiseStatus.MISSED


def test_sweep_boundaries_and_missed_follow_up(session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c)
    p = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=100_000,
        promised_date=TODAY,
        invoice_ids=[inv.id],
        actor="t",
        now=NOW,
    )
    # On the last grace day the promise is still open.
    assert (
        promises.evaluate_promises(
            session, cf.org.id, now=NOW + timedelta(days=3), actor="promise-sweep"
        ).missed
        == []
    )
    assert p.status == PromiseStatus.OPEN
    sweep = promises.evaluate_promises(
        session, cf.org.id, now=NOW + timedelta(days=4), actor="promise-sweep"
    )
    assert sweep.missed == [p.id]
    ev = session.scalars(select(AuditEvent).where(AuditEvent.action == "promise.missed")).one()
    assert ev.detail["follow_up"] == "promise_broken"
    assert ev.detail["invoice_ids"] == [inv.id]
    # Idempotent: a second sweep changes nothing.
    again = promises.evaluate_promises(
        session, cf.org.id, now=NOW + timedelta(days=5), actor="promise-sweep"
    )
    assert again.missed == [] and again.kept == []


def test_unlinked_promise_is_kept_by_any_payment_of_the_customer(
    session: Session, cf: Factory
) -> None:
    c = cf.customer()
    inv = cf.invoice(c)
    p = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=5_000,
        promised_date=TODAY,
        actor="t",
        now=NOW,
    )
    payments.post_payment(
        session,
        cf.org.id,
        amount_minor=5_000,
        currency="USD",
        received_on=TODAY,
        invoice_id=inv.id,
        actor="t",
        now=NOW,
    )
    assert p.status == PromiseStatus.KEPT


def test_by_hand_and_conflicts(session: Session, cf: Factory) -> None:
    c = cf.customer()
    p1 = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=1,
        promised_date=TODAY,
        actor="t",
        now=NOW,
    )
    p2 = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=1,
        promised_date=TODAY,
        actor="t",
        now=NOW,
    )
    promises.mark_kept(session, cf.org.id, p1.id, actor="t", now=NOW)
    promises.mark_missed(session, cf.org.id, p2.id, actor="t", now=NOW)
    with pytest.raises(Conflict, match="already kept"):
        promises.mark_missed(session, cf.org.id, p1.id, actor="t")
    with pytest.raises(NotFound):
        promises.mark_kept(session, cf.org.id, 999_999, actor="t")
    stats = promises.adherence(session, cf.org.id, customer_id=c.id)
    assert (stats.kept, stats.missed, stats.rate) == (1, 1, 0.5)


def test_adherence_overall_per_customer_and_no_data(session: Session, cf: Factory) -> None:
    assert promises.adherence(session, cf.org.id).rate is None
    good, bad = cf.customer(), cf.customer(email="b@payer.example")
    for cust, outcome in [(good, "kept"), (good, "kept"), (good, "missed"), (bad, "missed")]:
        p = promises.add_promise(
            session,
            cf.org.id,
            customer_id=cust.id,
            amount_minor=1,
            promised_date=TODAY,
            actor="t",
            now=NOW,
        )
        (promises.mark_kept if outcome == "kept" else promises.mark_missed)(
            session, cf.org.id, p.id, actor="t", now=NOW
        )
    promises.add_promise(
        session,
        cf.org.id,
        customer_id=good.id,
        amount_minor=1,
        promised_date=TODAY,
        actor="t",
        now=NOW,
    )  # open: not counted
    # Evaluated on the factories' day: the open promise (due TODAY) is still inside its grace;
    # weeks later it would count as missed, as it does on the console and the radar.
    overall = promises.adherence(session, cf.org.id, as_of=TODAY)
    assert (overall.kept, overall.missed, overall.open, overall.rate) == (2, 2, 1, 0.5)
    later = promises.adherence(session, cf.org.id, as_of=TODAY + timedelta(days=30))
    assert (later.kept, later.missed, later.open, later.rate) == (2, 3, 0, 0.4)
    per = promises.adherence_by_customer(session, cf.org.id, as_of=TODAY)
    assert per[good.id].rate == pytest.approx(2 / 3, abs=1e-4)
    assert per[bad.id].rate == 0.0


def test_reminders_before_the_date_once(session: Session, cf: Factory) -> None:
    c = cf.customer()
    near = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=1,
        promised_date=TODAY + timedelta(days=2),
        actor="t",
        now=NOW,
    )
    promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=1,
        promised_date=TODAY + timedelta(days=3),
        actor="t",
        now=NOW,
    )
    due = promises.due_reminders(session, cf.org.id, now=NOW)
    assert [r.promise_id for r in due] == [near.id]
    assert due[0].days_until == 2 and due[0].run_key == f"promise-reminder:{near.id}"
    session.add(Draft(org_id=cf.org.id, customer_id=c.id, run_key=due[0].run_key))
    session.flush()
    assert promises.due_reminders(session, cf.org.id, now=NOW) == []
