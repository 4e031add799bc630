"""Payment plans through the real policy engine: every cap at its boundary, the approval chain,
schedules, installments paid and missed, adherence and the customer-visibility rule."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import (
    Approval,
    AuditEvent,
    Customer,
    InstallmentStatus,
    Invoice,
    InvoiceStatus,
    Organisation,
    PaymentPlan,
    Persona,
    PlanStatus,
    User,
)
from tests.tools.commit_factories import NOW, TODAY, Factory
from tools.commitments import plans, promises
from tools.commitments.plans import InstallmentSpec, PolicyRefused
from tools.commitments.promises import CommitmentError, Conflict
from tools.payments import posting as payments


@pytest.fixture
def cf(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


def _plans(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(PaymentPlan)) or 0)


def _setup(cf: Factory, total: int, currency: str = "USD") -> tuple[Customer, Invoice]:
    c = cf.customer()
    return c, cf.invoice(c, total, currency=currency)


def _propose(
    session: Session,
    cf: Factory,
    inv: Invoice,
    proposer: User | None,
    *,
    count: int = 3,
    schedule: list[InstallmentSpec] | None = None,
    discount: int = 0,
    **kw: object,
) -> plans.PlanOutcome:
    sched = schedule or plans.split_evenly(
        inv.balance_minor - discount, count, TODAY + timedelta(days=7)
    )
    return plans.propose_plan(
        session,
        cf.org.id,
        customer_id=inv.customer_id,
        invoice_ids=[inv.id],
        installments=sched,
        proposer=proposer,
        discount_minor=discount,
        now=NOW,
        **kw,  # type: ignore[arg-type]
    )


# --- role limits, each at its boundary ----------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "limit_minor"),
    [
        (Persona.COLLECTOR, 1_000_000),  # $10,000
        (Persona.COLLECTIONS_MANAGER, 2_500_000),  # $25,000
        (Persona.ADMIN, 5_000_000),  # $50,000 (also the Controller threshold)
    ],
)
def test_role_limit_boundary(
    session: Session, cf: Factory, role: Persona, limit_minor: int
) -> None:
    user = cf.user(role)
    _, at_limit = _setup(cf, limit_minor)
    ok = _propose(session, cf, at_limit, user)
    assert ok.plan.status == PlanStatus.ACTIVE
    assert ok.plan.approved_by_user_id == user.id
    assert "within the" in ok.message

    _, above = _setup(cf, limit_minor + 1)
    waiting = _propose(session, cf, above, user)
    assert waiting.plan.status == PlanStatus.PENDING_APPROVAL
    assert waiting.awaiting_roles == ["Controller"]
    assert f"exceeds the {role.value} limit" in waiting.message
    assert waiting.plan.decision is not None
    assert waiting.plan.decision["outcome"] == "needs_approval"


def test_controller_threshold_at_50000(session: Session, cf: Factory) -> None:
    admin = cf.user(Persona.ADMIN)
    _, inv = _setup(cf, 5_000_001)
    out = _propose(session, cf, inv, admin)
    assert out.plan.status == PlanStatus.PENDING_APPROVAL
    assert "Plan exceeds $50,000: Controller approval required" in out.message
    controller = cf.user(Persona.CONTROLLER)
    _, big = _setup(cf, 5_000_001)
    assert _propose(session, cf, big, controller).plan.status == PlanStatus.ACTIVE
    approved = plans.approve_plan(session, cf.org.id, out.plan.id, approver=controller, now=NOW)
    assert approved.plan.status == PlanStatus.ACTIVE
    assert approved.plan.approved_by_user_id == controller.id


def test_a_users_own_limit_only_lowers_the_role_limit(session: Session, cf: Factory) -> None:
    junior = cf.user(Persona.COLLECTOR, limit=500_000)
    _, at = _setup(cf, 500_000)
    assert _propose(session, cf, at, junior).plan.status == PlanStatus.ACTIVE
    _, above = _setup(cf, 500_001)
    out = _propose(session, cf, above, junior)
    assert out.plan.status == PlanStatus.PENDING_APPROVAL
    assert "exceeds this user's limit of $5,000" in out.message
    generous = cf.user(Persona.COLLECTOR, limit=9_000_000)  # cannot raise the role's $10,000
    _, high = _setup(cf, 1_000_001)
    assert _propose(session, cf, high, generous).plan.status == PlanStatus.PENDING_APPROVAL


# --- caps that block outright ---------------------------------------------------------------------


def _weekly(total: int, n: int) -> list[InstallmentSpec]:
    base, rest = divmod(total, n)
    return [
        InstallmentSpec(TODAY + timedelta(days=7 * (i + 1)), base + (1 if i < rest else 0))
        for i in range(n)
    ]


def test_max_installments_boundary(session: Session, cf: Factory) -> None:
    manager = cf.user(Persona.COLLECTIONS_MANAGER)
    _, twelve = _setup(cf, 120_000)
    assert _propose(session, cf, twelve, manager, schedule=_weekly(120_000, 12)).plan.status == (
        PlanStatus.ACTIVE
    )
    _, thirteen = _setup(cf, 130_000)
    with pytest.raises(PolicyRefused, match="13 installments \\(at most 12\\): blocked") as err:
        _propose(session, cf, thirteen, manager, schedule=_weekly(130_000, 13))
    assert err.value.decision["outcome"] == "block"
    assert _plans(session) == 1


def test_max_months_boundary(session: Session, cf: Factory) -> None:
    manager = cf.user(Persona.COLLECTIONS_MANAGER)
    last_ok = plans.add_months(TODAY, 12)
    _, a = _setup(cf, 20_000)
    ok = _propose(
        session,
        cf,
        a,
        manager,
        schedule=[
            InstallmentSpec(TODAY + timedelta(days=30), 10_000),
            InstallmentSpec(last_ok, 10_000),
        ],
    )
    assert ok.plan.status == PlanStatus.ACTIVE
    _, b = _setup(cf, 20_000)
    with pytest.raises(PolicyRefused, match="13 months \\(at most 12\\): blocked"):
        _propose(
            session,
            cf,
            b,
            manager,
            schedule=[
                InstallmentSpec(TODAY + timedelta(days=30), 10_000),
                InstallmentSpec(last_ok + timedelta(days=1), 10_000),
            ],
        )
    assert _plans(session) == 1


def test_max_discount_boundary(session: Session, cf: Factory) -> None:
    controller = cf.user(Persona.CONTROLLER)
    _, a = _setup(cf, 1_000_000)
    ok = _propose(session, cf, a, controller, discount=100_000)  # exactly 10 %
    assert ok.plan.status == PlanStatus.ACTIVE and ok.plan.total_minor == 900_000
    _, b = _setup(cf, 1_000_000)
    with pytest.raises(PolicyRefused, match="exceeds 10%: blocked"):
        _propose(session, cf, b, controller, discount=100_001)
    assert _plans(session) == 1


def test_plan_in_a_currency_without_limits_is_blocked(session: Session, cf: Factory) -> None:
    _, inv = _setup(cf, 10_000, currency="JPY")
    with pytest.raises(PolicyRefused, match="no plan limits in JPY"):
        _propose(session, cf, inv, cf.user(Persona.CONTROLLER))
    assert _plans(session) == 0


# --- the approval chain ---------------------------------------------------------------------------


def test_non_standard_terms_need_legal_then_the_limit_holder(session: Session, cf: Factory) -> None:
    collector, legal = cf.user(Persona.COLLECTOR), cf.user(Persona.LEGAL)
    _, inv = _setup(cf, 300_000)
    with pytest.raises(CommitmentError, match="Describe the non-standard terms"):
        _propose(session, cf, inv, collector, non_standard_terms=True)
    out = _propose(
        session,
        cf,
        inv,
        collector,
        non_standard_terms=True,
        terms_note="Interest waived; governing law changed",
    )
    assert out.plan.status == PlanStatus.PENDING_APPROVAL
    assert out.awaiting_roles == ["Legal"]
    assert "non-standard legal terms: Legal approval required" in out.message
    # The Controller cannot skip Legal.
    with pytest.raises(PolicyRefused, match="Legal approval required"):
        plans.approve_plan(session, cf.org.id, out.plan.id, approver=cf.user(Persona.CONTROLLER))
    signed = plans.approve_plan(session, cf.org.id, out.plan.id, approver=legal, now=NOW)
    assert signed.plan.status == PlanStatus.PENDING_APPROVAL
    assert signed.awaiting_roles == ["Collector"]  # within the proposer's own limit now
    done = plans.approve_plan(session, cf.org.id, out.plan.id, approver=collector, now=NOW)
    assert done.plan.status == PlanStatus.ACTIVE
    assert (
        session.scalar(
            select(func.count()).select_from(Approval).where(Approval.subject_id == out.plan.id)
        )
        == 2
    )


def test_approver_above_their_limit_is_refused_and_nothing_changes(
    session: Session, cf: Factory
) -> None:
    manager = cf.user(Persona.COLLECTIONS_MANAGER)
    _, inv = _setup(cf, 3_000_000)
    out = _propose(session, cf, inv, manager)
    collector = cf.user(Persona.COLLECTOR)
    with pytest.raises(PolicyRefused, match="exceeds the Collector limit of \\$10,000"):
        plans.approve_plan(session, cf.org.id, out.plan.id, approver=collector, now=NOW)
    assert out.plan.status == PlanStatus.PENDING_APPROVAL
    sales = cf.user(Persona.SALES)
    with pytest.raises(PolicyRefused):
        plans.approve_plan(session, cf.org.id, out.plan.id, approver=sales, now=NOW)
    assert session.scalar(select(func.count()).select_from(Approval)) == 0


def test_portal_proposal_always_waits_and_is_invisible_until_approved(
    session: Session, cf: Factory
) -> None:
    _, inv = _setup(cf, 90_000)
    out = _propose(session, cf, inv, None, source="portal")
    assert out.plan.status == PlanStatus.PENDING_APPROVAL
    assert out.awaiting_roles == ["Collector"]
    assert not plans.visible_to_customer(out.plan)
    rejected_by = cf.user(Persona.COLLECTOR)
    approved = plans.approve_plan(session, cf.org.id, out.plan.id, approver=rejected_by, now=NOW)
    assert approved.plan.status == PlanStatus.ACTIVE and plans.visible_to_customer(approved.plan)
    with pytest.raises(Conflict, match="only a pending plan"):
        plans.approve_plan(session, cf.org.id, out.plan.id, approver=rejected_by)


def test_reject_keeps_the_reason(session: Session, cf: Factory) -> None:
    _, inv = _setup(cf, 90_000)
    out = _propose(session, cf, inv, None, source="portal")
    manager = cf.user(Persona.COLLECTIONS_MANAGER)
    with pytest.raises(CommitmentError, match="reason"):
        plans.reject_plan(session, cf.org.id, out.plan.id, approver=manager, reason=" ")
    plans.reject_plan(session, cf.org.id, out.plan.id, approver=manager, reason="Too long")
    assert out.plan.status == PlanStatus.REJECTED
    assert session.scalars(select(Approval)).one().reason == "Too long"


def test_balance_changed_since_proposal_must_be_proposed_again(
    session: Session, cf: Factory
) -> None:
    _, inv = _setup(cf, 90_000)
    out = _propose(session, cf, inv, None, source="portal")
    payments.post_payment(
        session,
        cf.org.id,
        amount_minor=1_000,
        currency="USD",
        received_on=TODAY,
        invoice_id=inv.id,
        actor="t",
        now=NOW,
    )
    with pytest.raises(Conflict, match="balance changed"):
        plans.approve_plan(session, cf.org.id, out.plan.id, approver=cf.user(Persona.CONTROLLER))


# --- schedules and bad input ----------------------------------------------------------------------


def test_installments_must_sum_to_the_balance(session: Session, cf: Factory) -> None:
    _, inv = _setup(cf, 100_000)
    bad = [
        InstallmentSpec(TODAY + timedelta(days=7), 50_000),
        InstallmentSpec(TODAY + timedelta(days=37), 49_999),
    ]
    with pytest.raises(CommitmentError, match="sum to 99999 .* open balance to settle is 100000"):
        _propose(session, cf, inv, cf.user(Persona.CONTROLLER), schedule=bad)
    assert _plans(session) == 0


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        ([InstallmentSpec(TODAY - timedelta(days=1), 100_000)], "in the past"),
        (
            [
                InstallmentSpec(TODAY + timedelta(days=9), 50_000),
                InstallmentSpec(TODAY + timedelta(days=9), 50_000),
            ],
            "strictly increasing",
        ),
        (
            [
                InstallmentSpec(TODAY + timedelta(days=9), 100_000),
                InstallmentSpec(TODAY + timedelta(days=19), 0),
            ],
            "greater than zero",
        ),
        ([], "at least one installment"),
    ],
)
def test_bad_schedules(
    session: Session, cf: Factory, schedule: list[InstallmentSpec], match: str
) -> None:
    _, inv = _setup(cf, 100_000)
    with pytest.raises(CommitmentError, match=match):
        plans.propose_plan(
            session,
            cf.org.id,
            customer_id=inv.customer_id,
            invoice_ids=[inv.id],
            installments=schedule,
            proposer=cf.user(Persona.CONTROLLER),
            now=NOW,
        )
    assert _plans(session) == 0


def test_disputed_or_already_planned_invoices_are_refused(session: Session, cf: Factory) -> None:
    c = cf.customer()
    disputed = cf.invoice(c, 10_000, disputed=True)
    with pytest.raises(CommitmentError, match="is disputed"):
        _propose(session, cf, disputed, cf.user(Persona.CONTROLLER))
    inv = cf.invoice(c, 10_000)
    _propose(session, cf, inv, None, source="portal")
    with pytest.raises(Conflict, match="already in plan"):
        _propose(session, cf, inv, cf.user(Persona.CONTROLLER))


def test_split_evenly_and_month_ends() -> None:
    sched = plans.split_evenly(100_001, 3, date(2026, 1, 31))
    assert [s.amount_minor for s in sched] == [33_334, 33_334, 33_333]
    assert [s.due_date for s in sched] == [date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31)]
    assert sum(s.amount_minor for s in sched) == 100_001
    assert plans.months_spanned(date(2026, 3, 10), date(2027, 3, 10)) == 12
    assert plans.months_spanned(date(2026, 3, 10), date(2027, 3, 11)) == 13


def test_prefill_from_promise(session: Session, cf: Factory) -> None:
    c = cf.customer()
    a, b = cf.invoice(c, 60_000), cf.invoice(c, 40_001)
    p = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=100_001,
        promised_date=TODAY + timedelta(days=4),
        invoice_ids=[a.id, b.id],
        actor="t",
        now=NOW,
    )
    draft = plans.prefill_from_promise(session, cf.org.id, p.id, count=4, now=NOW)
    assert draft.balance_minor == 100_001 and sorted(draft.invoice_ids) == sorted([a.id, b.id])
    assert draft.installments[0].due_date == TODAY + timedelta(days=4)
    assert sum(i.amount_minor for i in draft.installments) == 100_001
    out = plans.propose_plan(
        session,
        cf.org.id,
        customer_id=c.id,
        invoice_ids=draft.invoice_ids,
        installments=draft.installments,
        from_promise_id=p.id,
        proposer=cf.user(Persona.CONTROLLER),
        now=NOW,
    )
    assert out.plan.from_promise_id == p.id
    unlinked = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=1,
        promised_date=TODAY,
        actor="t",
        now=NOW,
    )
    with pytest.raises(CommitmentError, match="no open invoice linked"):
        plans.prefill_from_promise(session, cf.org.id, unlinked.id)


# --- running a plan -------------------------------------------------------------------------------


def _active_plan(
    session: Session, cf: Factory, total: int = 90_000, discount: int = 0, count: int = 3
) -> tuple[PaymentPlan, Invoice]:
    _, inv = _setup(cf, total)
    out = _propose(session, cf, inv, cf.user(Persona.CONTROLLER), count=count, discount=discount)
    assert out.plan.status == PlanStatus.ACTIVE
    return out.plan, inv


def test_installment_payments_advance_and_complete_the_plan(session: Session, cf: Factory) -> None:
    plan, inv = _active_plan(session, cf)
    first, second, third = plan.installments
    r = payments.post_payment(
        session,
        cf.org.id,
        amount_minor=45_000,
        currency="USD",
        received_on=TODAY,
        installment_id=second.id,
        actor="t",
        now=NOW,
    )
    # The named installment first, the rest to the earliest unpaid one.
    assert second.status == InstallmentStatus.PAID and second.paid_minor == 30_000
    assert first.paid_minor == 15_000 and first.status == InstallmentStatus.DUE
    assert r.installments_paid == [second.id] and inv.balance_minor == 45_000
    summary = plans.summarize(plan, TODAY)
    assert summary.next_due_date == first.due_date and summary.next_due_minor == 15_000
    payments.post_payment(
        session,
        cf.org.id,
        amount_minor=45_000,
        currency="USD",
        received_on=TODAY,
        invoice_id=inv.id,
        actor="t",
        now=NOW,
    )
    assert plan.status == PlanStatus.COMPLETED
    assert third.status == InstallmentStatus.PAID and inv.status == InvoiceStatus.PAID


def test_discount_is_forgiven_on_completion(session: Session, cf: Factory) -> None:
    plan, inv = _active_plan(session, cf, total=100_000, discount=10_000, count=2)
    for inst in list(plan.installments):
        plans.mark_installment_paid(session, cf.org.id, plan.id, inst.seq, actor="t", now=NOW)
    assert plan.status == PlanStatus.COMPLETED
    assert inv.balance_minor == 0 and inv.status == InvoiceStatus.PAID
    assert session.scalars(
        select(AuditEvent).where(AuditEvent.action == "plan.discount_applied")
    ).one().detail == {"discount_minor": 10_000}


def test_missed_installment_defaults_the_plan_and_a_late_payment_cures_it(
    session: Session, cf: Factory
) -> None:
    plan, inv = _active_plan(session, cf)
    first = plan.installments[0]
    grace_end = first.due_date + timedelta(days=plans.INSTALLMENT_GRACE_DAYS)
    on_last_day = plans.evaluate_plans(
        session, cf.org.id, now=NOW + timedelta(days=(grace_end - TODAY).days), actor="plan-sweep"
    )
    assert on_last_day.missed_installments == [] and plan.status == PlanStatus.ACTIVE
    later = NOW + timedelta(days=(grace_end - TODAY).days + 1)
    sweep = plans.evaluate_plans(session, cf.org.id, now=later, actor="plan-sweep")
    assert sweep.missed_installments == [first.id] and sweep.defaulted_plans == [plan.id]
    assert plan.status == PlanStatus.DEFAULTED
    ev = session.scalars(select(AuditEvent).where(AuditEvent.action == "plan.defaulted")).one()
    assert ev.detail["follow_up"] == "plan_installment_missed"
    summary = plans.summarize(plan, later.date())
    assert summary.adherence_pct == 0 and summary.installments_missed == 1
    payments.post_payment(
        session,
        cf.org.id,
        amount_minor=30_000,
        currency="USD",
        received_on=later.date(),
        installment_id=first.id,
        actor="t",
        now=later,
    )
    assert plan.status == PlanStatus.ACTIVE  # cured
    assert first.status == InstallmentStatus.MISSED and first.paid_minor == 30_000  # paid late
    assert plans.summarize(plan, later.date()).adherence_pct == 0


def test_adherence_counts_on_time_installments(session: Session, cf: Factory) -> None:
    plan, _ = _active_plan(session, cf, count=3)
    assert plans.summarize(plan, TODAY).adherence_pct is None  # nothing has fallen due
    plans.mark_installment_paid(session, cf.org.id, plan.id, 1, actor="t", now=NOW)
    assert plans.summarize(plan, TODAY).adherence_pct == 100
    far = plan.installments[1].due_date + timedelta(days=10)
    plans.evaluate_plans(
        session, cf.org.id, now=NOW + timedelta(days=(far - TODAY).days), actor="plan-sweep"
    )
    assert plans.summarize(plan, far).adherence_pct == 50


def test_cancel_complete_and_mark_paid_guards(session: Session, cf: Factory) -> None:
    plan, _ = _active_plan(session, cf, count=2)
    with pytest.raises(Conflict, match="not paid yet"):
        plans.complete_plan(session, cf.org.id, plan.id, actor="t")
    plans.mark_installment_paid(session, cf.org.id, plan.id, 1, actor="t", now=NOW)
    with pytest.raises(Conflict, match="already paid"):
        plans.mark_installment_paid(session, cf.org.id, plan.id, 1, actor="t", now=NOW)
    plans.cancel_plan(session, cf.org.id, plan.id, actor="t", reason="customer asked")
    assert plan.status == PlanStatus.CANCELLED
    with pytest.raises(Conflict):
        plans.cancel_plan(session, cf.org.id, plan.id, actor="t", reason="again")
    with pytest.raises(Conflict, match="takes no payments"):
        plans.mark_installment_paid(session, cf.org.id, plan.id, 2, actor="t", now=NOW)
