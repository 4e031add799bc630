"""The Commitment Radar: sections, badges that say why, exposure per currency, adherence."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from memory.models import Organisation, Persona
from tests.tools.commit_factories import NOW, TODAY, Factory
from tools.commitments import plans, promises, radar
from tools.payments import posting as payments


@pytest.fixture
def cf(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


def test_empty_radar(session: Session, cf: Factory) -> None:
    r = radar.commitment_radar(session, cf.org.id, now=NOW)
    assert (r.due_today, r.overdue, r.plans_near_default) == ([], [], [])
    assert r.promise_exposure == {} and r.active_plan_exposure == {}
    assert r.adherence.rate is None


def test_promises_due_today_and_overdue_with_badges(session: Session, cf: Factory) -> None:
    c = cf.customer("Globex")
    inv = cf.invoice(c, 2_000_000)
    earlier = NOW - timedelta(days=10)
    today = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=1_000_000,
        promised_date=TODAY,
        invoice_ids=[inv.id],
        actor="t",
        now=NOW,
    )
    in_grace = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=5_000,
        promised_date=TODAY - timedelta(days=2),
        actor="t",
        now=earlier,
    )
    missed = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=7_000,
        promised_date=TODAY - timedelta(days=6),
        invoice_ids=[inv.id],
        actor="t",
        now=earlier,
    )
    future = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=3_000,
        promised_date=TODAY + timedelta(days=9),
        invoice_ids=[inv.id],
        actor="t",
        now=NOW,
    )
    promises.evaluate_promises(session, cf.org.id, now=NOW, actor="promise-sweep")
    r = radar.commitment_radar(session, cf.org.id, now=NOW)
    assert [i.id for i in r.due_today] == [today.id]
    assert r.due_today[0].badges == ["Due today", "High exposure"]
    assert r.due_today[0].customer_name == "Globex"
    by_id = {i.id: i for i in r.overdue}
    assert set(by_id) == {in_grace.id, missed.id}
    assert by_id[in_grace.id].badges == ["In grace", "No invoice link"]
    assert by_id[missed.id].badges == ["Missed"] and by_id[missed.id].days_overdue == 6
    assert r.overdue[0].id == missed.id  # most overdue first
    # Exposure counts open promises only (the missed one is no longer promised money).
    assert r.promise_exposure == {"USD": 1_000_000 + 5_000 + 3_000}
    assert future.id not in {i.id for i in r.due_today + r.overdue}
    assert (r.adherence.kept, r.adherence.missed) == (0, 1)


def test_missed_promise_drops_off_once_its_invoices_are_paid(session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 10_000)
    p = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=10_000,
        promised_date=TODAY,
        invoice_ids=[inv.id],
        actor="t",
        now=NOW,
    )
    promises.mark_missed(session, cf.org.id, p.id, actor="t", now=NOW)
    later = NOW + timedelta(days=1)
    assert [i.id for i in radar.commitment_radar(session, cf.org.id, now=later).overdue] == [p.id]
    payments.post_payment(
        session,
        cf.org.id,
        amount_minor=10_000,
        currency="USD",
        received_on=later.date(),
        invoice_id=inv.id,
        actor="t",
        now=later,
    )
    assert radar.commitment_radar(session, cf.org.id, now=later).overdue == []


def test_plans_approaching_default_and_exposure(session: Session, cf: Factory) -> None:
    c = cf.customer()
    near_inv, far_inv = cf.invoice(c, 3_000_000), cf.invoice(c, 60_000, currency="USD")
    controller = cf.user(Persona.CONTROLLER)
    near = plans.propose_plan(
        session,
        cf.org.id,
        customer_id=c.id,
        invoice_ids=[near_inv.id],
        installments=plans.split_evenly(3_000_000, 2, TODAY + timedelta(days=2)),
        proposer=controller,
        now=NOW,
    ).plan
    far = plans.propose_plan(
        session,
        cf.org.id,
        customer_id=c.id,
        invoice_ids=[far_inv.id],
        installments=plans.split_evenly(60_000, 3, TODAY + timedelta(days=20)),
        proposer=controller,
        now=NOW,
    ).plan
    r = radar.commitment_radar(session, cf.org.id, now=NOW)
    assert [i.id for i in r.plans_near_default] == [near.id]
    item = r.plans_near_default[0]
    assert item.badges == ["High exposure"] and item.amount_minor == 1_500_000
    assert r.active_plan_exposure == {"USD": 3_060_000}
    # Past the grace of the first installment: missed, defaulted, still on the radar.
    later = NOW + timedelta(days=2 + plans.INSTALLMENT_GRACE_DAYS + 1)
    plans.evaluate_plans(session, cf.org.id, now=later, actor="plan-sweep")
    r2 = radar.commitment_radar(session, cf.org.id, now=later, high_exposure_minor=10**9)
    assert [i.id for i in r2.plans_near_default] == [near.id]
    assert r2.plans_near_default[0].badges == ["Missed"]
    assert r2.plans_near_default[0].status == "defaulted"
    assert far.id not in [i.id for i in r2.plans_near_default]


def test_exposure_is_never_summed_across_currencies(session: Session, cf: Factory) -> None:
    c = cf.customer()
    usd, eur = cf.invoice(c, 10_000), cf.invoice(c, 20_000, currency="EUR")
    for inv in (usd, eur):
        promises.add_promise(
            session,
            cf.org.id,
            customer_id=c.id,
            amount_minor=inv.amount_minor,
            promised_date=TODAY + timedelta(days=1),
            invoice_ids=[inv.id],
            actor="t",
            now=NOW,
        )
    r = radar.commitment_radar(session, cf.org.id, now=NOW)
    assert r.promise_exposure == {"USD": 10_000, "EUR": 20_000}


def test_scoped_to_some_customers(session: Session, cf: Factory) -> None:
    mine, other = cf.customer(), cf.customer(email="o@o.example")
    for cust in (mine, other):
        promises.add_promise(
            session,
            cf.org.id,
            customer_id=cust.id,
            amount_minor=1,
            promised_date=TODAY,
            actor="t",
            now=NOW,
        )
    r = radar.commitment_radar(session, cf.org.id, now=NOW, customer_ids=[mine.id])
    assert [i.customer_id for i in r.due_today] == [mine.id]
