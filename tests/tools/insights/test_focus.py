"""Today's Focus: ranking by expected cash at risk × urgency, the badges, persona scoping, one
currency at a time, and the model label the page shows.

``build_book`` (also used by the risk, renewal and page tests) builds a small, deterministic ledger
of its own: no demo generator involved.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy.orm import Session

from memory.models import (
    Cadence,
    Customer,
    Dispute,
    DisputeStatus,
    InstallmentStatus,
    Invoice,
    InvoiceStatus,
    Organisation,
    Payment,
    PaymentPlan,
    Persona,
    PlanInstallment,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
    Segment,
    User,
    aging_bucket,
)
from tools.insights import focus as focus_mod
from tools.insights import risk
from tools.insights.focus import todays_focus
from tools.ledger.users import hash_password

TODAY = date(2025, 10, 7)
NOON = time(15, 0)
NOW = datetime.combine(TODAY, NOON, tzinfo=UTC)


@dataclass
class Book:
    org: Organisation
    users: dict[str, User]
    segment: Segment
    customers: list[Customer]
    open_invoices: list[Invoice] = field(default_factory=list)
    marked: dict[str, Invoice] = field(default_factory=dict)


def build_book(
    session: Session,
    org: Organisation,
    *,
    seed: int = 11,
    today: date = TODAY,
    now: datetime | None = None,
    passwords: dict[str, str] | None = None,
) -> Book:
    """Twelve customers with 25 paid invoices each (their own lateness habit), two open invoices
    each, one EUR customer, and one of every signal Today's Focus reacts to, around ``today``.
    ``passwords`` (user key → password) lets the page tests log in."""
    rng = random.Random(seed)
    TODAY = today  # noqa: N806 - the whole book is relative to this day
    NOW = now or datetime.combine(today, NOON, tzinfo=UTC)  # noqa: N806
    users = {
        key: User(org_id=org.id, email=f"{key}.{org.slug}@example.test", name=name, role=role)
        for key, name, role in (
            ("manager", "Maya Manager", Persona.COLLECTIONS_MANAGER),
            ("collector1", "Cole Collector", Persona.COLLECTOR),
            ("collector2", "Cora Collector", Persona.COLLECTOR),
            ("idle", "Ivan Idle", Persona.COLLECTOR),
            ("sales", "Sam Sales", Persona.SALES),
            ("csm", "Cass CSM", Persona.CSM),
            ("legal", "Lee Legal", Persona.LEGAL),
            ("controller", "Cleo Controller", Persona.CONTROLLER),
            ("viewer", "Vic Viewer", Persona.VIEWER),
        )
    }
    for key, password in (passwords or {}).items():
        users[key].password_hash = hash_password(password)
    session.add_all(users.values())
    cadence = Cadence(org_id=org.id, name="Standard")
    session.add(cadence)
    session.flush()
    segment = Segment(org_id=org.id, name="Enterprise", cadence_id=cadence.id)
    other = Segment(org_id=org.id, name="SMB")
    session.add_all([segment, other])
    session.flush()
    customers = []
    for c in range(12):
        customers.append(
            Customer(
                org_id=org.id,
                external_ref=f"CUST-{c:02d}",
                name=f"Acme {c:02d}",
                segment_id=segment.id if c < 8 else other.id,
                collector_user_id=users["collector1"].id if c < 6 else users["collector2"].id,
                sales_user_id=users["sales"].id if c < 3 else None,
                csm_user_id=users["csm"].id if c < 4 else None,
                renewal_date=TODAY + timedelta(days=(20, 45, 80, 300)[c % 4]),
            )
        )
    session.add_all(customers)
    session.flush()
    book = Book(org, users, segment, customers)
    number = 0
    paid_invoices: list[Invoice] = []
    for c, cust in enumerate(customers):
        habit = (0.05, 0.2, 0.5, 0.8, 0.95)[c % 5]
        currency = "EUR" if c == 11 else "USD"
        for _ in range(25):
            issue = TODAY - timedelta(days=rng.randint(60, 600))
            due = issue + timedelta(days=30)
            disputed = rng.random() < 0.1
            late = rng.random() < (0.9 if disputed else habit)
            settled = (
                due + timedelta(days=rng.randint(3, 45))
                if late
                else due - timedelta(days=rng.randint(0, 12))
            )
            amount = rng.randint(10_000, 400_000)
            number += 1
            paid = Invoice(
                org_id=org.id,
                customer_id=cust.id,
                number=f"P-{number:05d}",
                currency=currency,
                amount_minor=amount,
                balance_minor=0,
                issue_date=issue,
                due_date=due,
                status=InvoiceStatus.PAID,
                disputed=disputed,
                paperless=rng.random() < 0.5,
                settled_date=min(max(settled, issue), TODAY - timedelta(days=1)),
            )
            session.add(paid)
            paid_invoices.append(paid)
        for days_past_due in (rng.randint(5, 80), -rng.randint(3, 20)):
            due = TODAY - timedelta(days=days_past_due)
            amount = rng.randint(50_000, 900_000)
            number += 1
            inv = Invoice(
                org_id=org.id,
                customer_id=cust.id,
                number=f"O-{number:05d}",
                currency=currency,
                amount_minor=amount,
                balance_minor=amount,
                issue_date=due - timedelta(days=30),
                due_date=due,
                paperless=rng.random() < 0.5,
            )
            session.add(inv)
            book.open_invoices.append(inv)
    session.flush()
    session.add_all(
        Payment(
            org_id=org.id,
            customer_id=p.customer_id,
            invoice_id=p.id,
            amount_minor=p.amount_minor,
            applied_minor=p.amount_minor,
            currency=p.currency,
            received_on=p.settled_date,
            external_ref=f"pay-{p.number}",
        )
        for p in paid_invoices
    )
    first = {c.id: [i for i in book.open_invoices if i.customer_id == c.id][0] for c in customers}
    # Promise due today (customer 0), a missed promise (customer 1).
    due_today = PromiseToPay(
        org_id=org.id,
        customer_id=customers[0].id,
        amount_minor=first[customers[0].id].balance_minor,
        currency="USD",
        promised_date=TODAY,
        status=PromiseStatus.OPEN,
        created_at=NOW - timedelta(days=7),
    )
    due_today.invoices = [first[customers[0].id]]
    missed = PromiseToPay(
        org_id=org.id,
        customer_id=customers[1].id,
        amount_minor=first[customers[1].id].balance_minor,
        currency="USD",
        promised_date=TODAY - timedelta(days=10),
        status=PromiseStatus.MISSED,
        created_at=NOW - timedelta(days=20),
        resolved_at=NOW - timedelta(days=6),
    )
    missed.invoices = [first[customers[1].id]]
    # A plan whose installment went unpaid last week (customer 2).
    plan = PaymentPlan(
        org_id=org.id,
        customer_id=customers[2].id,
        total_minor=first[customers[2].id].balance_minor,
        currency="USD",
        status=PlanStatus.ACTIVE,
        created_at=NOW - timedelta(days=40),
    )
    plan.invoices = [first[customers[2].id]]
    plan.installments = [
        PlanInstallment(
            seq=1,
            due_date=TODAY - timedelta(days=5),
            amount_minor=first[customers[2].id].balance_minor // 2,
            status=InstallmentStatus.DUE,
        ),
        PlanInstallment(
            seq=2,
            due_date=TODAY + timedelta(days=25),
            amount_minor=first[customers[2].id].balance_minor
            - first[customers[2].id].balance_minor // 2,
            status=InstallmentStatus.DUE,
        ),
    ]
    # A dispute two hours from its SLA (customer 3), one escalated to Legal (customer 4).
    sla = Dispute(
        org_id=org.id,
        customer_id=customers[3].id,
        invoice_id=first[customers[3].id].id,
        reason="pricing",
        status=DisputeStatus.INVESTIGATING,
        opened_at=NOW - timedelta(days=2),
        sla_due_at=NOW + timedelta(hours=2),
    )
    legal = Dispute(
        org_id=org.id,
        customer_id=customers[4].id,
        invoice_id=first[customers[4].id].id,
        reason="contract",
        status=DisputeStatus.ESCALATED_LEGAL,
        opened_at=NOW - timedelta(days=20),
        sla_due_at=NOW + timedelta(days=3),
    )
    first[customers[3].id].disputed = True
    first[customers[4].id].disputed = True
    session.add_all([due_today, missed, plan, sla, legal])
    session.commit()
    book.marked = {
        "promise_due_today": first[customers[0].id],
        "broken_promise": first[customers[1].id],
        "plan_near_default": first[customers[2].id],
        "sla": first[customers[3].id],
        "legal": first[customers[4].id],
    }
    return book


@pytest.fixture
def book(session: Session, org: Organisation) -> Book:
    return build_book(session, org)


def _python_priority(session: Session, book: Book, inv: Invoice, model: risk.RiskModel) -> float:
    """An independent recomputation: Python features and model, the documented urgency."""
    history = risk.ledger_history(session, book.org.id)
    target = next(r for r in history if r.key == str(inv.id))
    p = float(model.predict(risk.build_features(history, [target], TODAY, model.priors).x)[0])
    dpd = (TODAY - inv.due_date).days
    u = (
        2.5
        if dpd > 90
        else 2.0
        if dpd > 60
        else 1.5
        if dpd > 30
        else 1.0
        if dpd > 0
        else (0.6 if dpd >= -7 else 0.3)
    )
    u += {
        book.marked["promise_due_today"].id: 1.0,
        book.marked["broken_promise"].id: 1.0,
        book.marked["plan_near_default"].id: 1.0,
        book.marked["sla"].id: 1.5,
    }.get(inv.id, 0.0)
    return inv.balance_minor * p * u


def test_collector_sees_own_accounts_ranked_by_cash_at_risk_times_urgency(
    session: Session, book: Book
) -> None:
    risk.train(session, book.org.id, TODAY)
    session.commit()
    user = book.users["collector1"]
    result = todays_focus(session, user, as_of=TODAY, now=NOW, limit=50)
    mine = {c.id for c in book.customers if c.collector_user_id == user.id}
    expected_ids = {i.id for i in book.open_invoices if i.customer_id in mine}
    assert {i.invoice_id for i in result.items} == expected_ids
    assert result.model_kind == "logistic" and "Learned model v1" in result.model_label
    model = risk.current_model(session, book.org.id)
    by_id = {i.id: i for i in book.open_invoices}
    expected = sorted(
        ((round(_python_priority(session, book, by_id[i], model), 6), i) for i in expected_ids),
        key=lambda x: (-x[0], x[1]),
    )
    assert [i.invoice_id for i in result.items] == [i for _, i in expected]
    for item in result.items:
        assert item.priority == pytest.approx(
            _python_priority(session, book, by_id[item.invoice_id], model)
        )
        assert item.at_risk_minor == round(item.balance_minor * item.risk)
        assert 1 <= len(item.reasons) <= 3
        assert item.aging_bucket == aging_bucket(item.due_date, TODAY)
    assert [i.rank for i in result.items] == list(range(1, len(result.items) + 1))


def test_badges_name_the_reason_an_item_is_urgent(session: Session, book: Book) -> None:
    result = todays_focus(session, book.users["manager"], as_of=TODAY, now=NOW, limit=500)
    badges = {i.invoice_id: i.badges for i in result.items}
    assert focus_mod.PROMISE_DUE_TODAY in badges[book.marked["promise_due_today"].id]
    assert focus_mod.BROKEN_PROMISE in badges[book.marked["broken_promise"].id]
    assert focus_mod.PLAN_NEAR_DEFAULT in badges[book.marked["plan_near_default"].id]
    assert focus_mod.SLA_SOON in badges[book.marked["sla"].id]
    assert focus_mod.SLA_SOON not in badges[book.marked["legal"].id]  # three days away
    high = [i for i in result.items if focus_mod.HIGH_EXPOSURE in i.badges]
    assert high and len(high) <= max(
        1, round(len(result.items) * focus_mod.HIGH_EXPOSURE_SHARE) + 1
    )
    assert max(i.at_risk_minor for i in result.items) in {i.at_risk_minor for i in high}
    plain = {i.id for i in book.open_invoices} - {i.id for i in book.marked.values()}
    for invoice_id in plain & set(badges):
        assert set(badges[invoice_id]) <= {focus_mod.HIGH_EXPOSURE}


def test_persona_scopes(session: Session, book: Book) -> None:
    sales = todays_focus(session, book.users["sales"], as_of=TODAY, now=NOW)
    assert {i.customer_id for i in sales.items} == {c.id for c in book.customers[:3]}
    legal = todays_focus(session, book.users["legal"], as_of=TODAY, now=NOW)
    assert [i.invoice_id for i in legal.items] == [book.marked["legal"].id]
    idle = todays_focus(session, book.users["idle"], as_of=TODAY, now=NOW)
    assert idle.items == [] and idle.currency is None
    assert idle.notes == ["No open invoices on the accounts assigned to you."]
    manager = todays_focus(session, book.users["manager"], as_of=TODAY, now=NOW, limit=500)
    assert manager.scope == "the whole organisation"
    assert len(manager.items) == 22  # every open USD invoice; never mixed with EUR


def test_currencies_are_never_ranked_together(session: Session, book: Book) -> None:
    usd = todays_focus(session, book.users["manager"], as_of=TODAY, now=NOW, limit=500)
    assert usd.currency == "USD" and usd.other_currencies == ["EUR"]
    assert {i.currency for i in usd.items} == {"USD"}
    eur = todays_focus(session, book.users["manager"], as_of=TODAY, now=NOW, currency="eur")
    assert eur.currency == "EUR" and {i.customer_id for i in eur.items} == {book.customers[11].id}


def test_untrained_organisation_gets_the_named_fallback(session: Session, book: Book) -> None:
    result = todays_focus(session, book.users["collector2"], as_of=TODAY, now=NOW)
    assert result.model_kind == "fallback"
    assert "No risk model has been trained" in (result.fallback_reason or "")
    assert all(0.0 < i.risk < 1.0 for i in result.items)
    assert all(i.reasons and i.reasons[0].feature == "earlier_late_rate" for i in result.items)
    assert result.to_dict()["model"]["kind"] == "fallback"


def test_empty_organisation(session: Session, org: Organisation) -> None:
    user = User(org_id=org.id, email="m@x.test", name="M", role=Persona.COLLECTIONS_MANAGER)
    session.add(user)
    session.commit()
    result = todays_focus(session, user, as_of=TODAY, now=NOW)
    assert result.items == [] and result.notes == ["No open invoices in your scope."]
