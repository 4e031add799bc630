"""The collector's workspace back end: plans and credits in every currency with their own limits,
CSMs proposing plans, partial promises pausing only what they cover, and the approvals inbox
(who sees what, the one-business-day clock, a rationale required to decide)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import Approval, Organisation, Persona, PlanStatus, User
from tests.tools.commit_factories import NOW, TODAY, Factory
from tools.commitments import disputes, plans, promises
from tools.commitments.plans import PolicyRefused
from tools.grounding import guardrail_facts as grounding
from tools.inbox import approvals
from tools.kit.authz import PermissionDenied


@pytest.fixture
def cf(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


def _plan(
    session: Session, cf: Factory, user: User, total: int, currency: str, **kw: object
) -> plans.PlanOutcome:
    c = cf.customer()
    inv = cf.invoice(c, total, currency=currency)
    return plans.propose_plan(
        session,
        cf.org.id,
        customer_id=c.id,
        invoice_ids=[inv.id],
        installments=plans.split_evenly(total, 3, TODAY + timedelta(days=7)),
        proposer=user,
        now=NOW,
        **kw,  # type: ignore[arg-type]
    )


# --- money in every currency ----------------------------------------------------------------------


def test_a_eur_plan_within_the_collectors_eur_limit_starts_at_once(
    session: Session, cf: Factory
) -> None:
    out = _plan(session, cf, cf.user(Persona.COLLECTOR), 1_000_000, "EUR")  # €10,000 exactly
    assert out.plan.status == PlanStatus.ACTIVE and out.plan.currency == "EUR"
    assert "€10,000" in out.message and "$" not in out.message


def test_a_eur_plan_over_the_limit_waits_for_the_controller_in_euros(
    session: Session, cf: Factory
) -> None:
    out = _plan(session, cf, cf.user(Persona.COLLECTOR), 1_850_000, "EUR")
    assert out.plan.status == PlanStatus.PENDING_APPROVAL
    assert out.awaiting_roles == ["Controller"]
    assert out.message == (
        "Plan of €18,500 exceeds the Collector limit of €10,000: Controller approval required"
    )


def test_gbp_has_its_own_limits_never_converted_from_dollars(session: Session, cf: Factory) -> None:
    collector = cf.user(Persona.COLLECTOR)
    # $10,000 would be within the USD limit; the GBP limit is £8,000 and applies as set.
    out = _plan(session, cf, collector, 900_000, "GBP")
    assert out.plan.status == PlanStatus.PENDING_APPROVAL
    assert "£9,000" in out.message and "£8,000" in out.message
    usd = _plan(session, cf, collector, 900_000, "USD")
    assert usd.plan.status == PlanStatus.ACTIVE


def test_a_currency_without_limits_is_blocked_and_nothing_is_saved(
    session: Session, cf: Factory
) -> None:
    with pytest.raises(PolicyRefused, match="no plan limits in CHF"):
        _plan(session, cf, cf.user(Persona.CONTROLLER), 100_000, "CHF")
    assert plans.list_plans(session, cf.org.id) == []


def test_credits_use_the_invoice_currencys_limits(session: Session, cf: Factory) -> None:
    collector = cf.user(Persona.COLLECTOR)
    c = cf.customer()
    small, big = cf.invoice(c, 500_000, currency="GBP"), cf.invoice(c, 500_000, currency="GBP")
    d1 = disputes.open_dispute(
        session, cf.org.id, invoice_id=small.id, reason="pricing", actor=collector, now=NOW
    )
    d2 = disputes.open_dispute(
        session, cf.org.id, invoice_id=big.id, reason="pricing", actor=collector, now=NOW
    )
    granted = disputes.propose_credit(
        session, cf.org.id, d1.id, amount_minor=80_000, actor=collector, now=NOW
    )
    assert granted.granted and small.balance_minor == 420_000
    waiting = disputes.propose_credit(
        session, cf.org.id, d2.id, amount_minor=80_001, actor=collector, now=NOW
    )
    assert not waiting.granted and "£800.01" in waiting.message and "£800" in waiting.message
    with pytest.raises(PolicyRefused, match="no credit limits in JPY"):
        inv = cf.invoice(c, 500_000, currency="JPY")
        d3 = disputes.open_dispute(
            session, cf.org.id, invoice_id=inv.id, reason="pricing", actor=collector, now=NOW
        )
        disputes.propose_credit(session, cf.org.id, d3.id, amount_minor=1, actor=collector, now=NOW)


# --- CSMs propose ---------------------------------------------------------------------------------


def test_a_csm_proposes_and_every_plan_waits_for_the_controller(
    session: Session, cf: Factory
) -> None:
    csm = cf.user(Persona.CSM)
    out = _plan(session, cf, csm, 10_000, "USD", for_approval=True)  # even $100
    assert out.plan.status == PlanStatus.PENDING_APPROVAL
    assert out.awaiting_roles == ["Controller"]
    assert "exceeds the CSM limit of $0" in out.message


def test_a_csm_cannot_start_a_plan_and_a_viewer_cannot_propose(
    session: Session, cf: Factory
) -> None:
    with pytest.raises(PolicyRefused, match="CSM may not propose and administer"):
        _plan(session, cf, cf.user(Persona.CSM), 10_000, "USD")
    with pytest.raises(PolicyRefused, match="Viewer may not propose a payment plan"):
        _plan(session, cf, cf.user(Persona.VIEWER), 10_000, "USD", for_approval=True)
    assert plans.list_plans(session, cf.org.id) == []


def test_a_collector_proposing_for_approval_does_not_start_the_plan(
    session: Session, cf: Factory
) -> None:
    out = _plan(session, cf, cf.user(Persona.COLLECTOR), 10_000, "USD", for_approval=True)
    assert out.plan.status == PlanStatus.PENDING_APPROVAL  # within the limit, but only proposed
    assert out.awaiting_roles == ["Controller"]


# --- partial promises -----------------------------------------------------------------------------


def test_covered_keys_spreads_the_amount_oldest_first() -> None:
    d = date(2026, 1, 1)
    links = [("B", d + timedelta(days=5), 2, 1000), ("A", d, 1, 1000), ("C", d, 3, 0)]
    assert promises.covered_keys(1000, links) == ["A"]
    assert promises.covered_keys(1001, links) == ["A", "B"]
    assert promises.covered_keys(1, links) == ["A"]
    assert promises.covered_keys(5000, [("C", d, 3, 0)]) == ["C"]  # nothing open: every link


def test_a_partial_promise_pauses_only_the_invoices_it_covers(
    session: Session, cf: Factory
) -> None:
    c = cf.customer()
    older = cf.invoice(c, 100_000, due=TODAY - timedelta(days=20))
    newer = cf.invoice(c, 100_000, due=TODAY - timedelta(days=5))
    p = promises.add_promise(
        session,
        cf.org.id,
        customer_id=c.id,
        amount_minor=100_000,
        promised_date=TODAY + timedelta(days=3),
        invoice_ids=[older.id, newer.id],
        actor="tester",
        now=NOW,
    )
    assert promises.covered_invoices(p) == [older]
    facts = grounding.promise_facts_by_customer(session, cf.org.id, [c.id])[c.id]
    assert [f.invoice_numbers for f in facts] == [[older.number]]
    # the newer invoice is still chased; the older one is paused by the open promise
    from policies.engine import decide as engine_decide

    decision = engine_decide("send_draft", _send_facts(newer.number, facts)).as_dict()
    assert "promise.open" not in {r["rule_id"] for r in decision["reasons"]}
    decision = engine_decide("send_draft", _send_facts(older.number, facts)).as_dict()
    assert "promise.open" in {r["rule_id"] for r in decision["reasons"]}
    # a promise of the full balance pauses both; a decided one names every link
    p.amount_minor = 200_000
    session.flush()
    facts = grounding.promise_facts_by_customer(session, cf.org.id, [c.id])[c.id]
    assert facts[0].invoice_numbers == sorted([older.number, newer.number])
    p.amount_minor = 1
    promises.mark_missed(session, cf.org.id, p.id, actor="tester", now=NOW)
    facts = grounding.promise_facts_by_customer(session, cf.org.id, [c.id])[c.id]
    assert facts[0].invoice_numbers == sorted([older.number, newer.number])


def _send_facts(number: str, promise_facts: list) -> dict:
    from policies.facts import EXAMPLES
    from policies.types import ActionType

    base = dict(EXAMPLES[ActionType.SEND_DRAFT])
    base["invoices"] = [{"number": number, "disputed": False}]
    base["promises"] = [f.model_dump(mode="json") for f in promise_facts]
    base["now"] = NOW.isoformat()
    base["business_date"] = TODAY.isoformat()
    return base


# --- the approvals inbox --------------------------------------------------------------------------


def test_the_inbox_shows_each_approver_what_they_may_decide(session: Session, cf: Factory) -> None:
    collector = cf.user(Persona.COLLECTOR)
    eur = _plan(session, cf, collector, 1_850_000, "EUR").plan
    terms = _plan(
        session,
        cf,
        collector,
        300_000,
        "USD",
        non_standard_terms=True,
        terms_note="Governing law changed",
    ).plan
    controller, legal = cf.user(Persona.CONTROLLER), cf.user(Persona.LEGAL)
    mine = approvals.pending_items(session, cf.org.id, viewer=controller, now=NOW)
    assert [(i.kind, i.subject_id) for i in mine] == [("plan", eur.id)]
    item = mine[0]
    assert item.amount_text == "€18,500.00"
    assert item.reasons == [
        "Plan of €18,500 exceeds the Collector limit of €10,000: Controller approval required"
    ]
    assert item.changes[0].startswith("New plan of 3 installments from")
    assert item.raised_by == f"{collector.name} (Collector)"
    assert item.waiting_text == "less than a minute" and not item.overdue
    assert [i.subject_id for i in approvals.pending_items(session, cf.org.id, viewer=legal)] == [
        terms.id
    ]
    assert approvals.pending_items(session, cf.org.id, viewer=collector, now=NOW) == []


def test_deciding_requires_a_rationale_and_keeps_it(session: Session, cf: Factory) -> None:
    plan = _plan(session, cf, cf.user(Persona.COLLECTOR), 1_850_000, "EUR").plan
    controller = cf.user(Persona.CONTROLLER)
    for blank in ("", "   ", None):
        with pytest.raises(approvals.RationaleRequired, match="Write why"):
            approvals.decide(
                session, cf.org.id, "plan", plan.id, user=controller, approve=True, rationale=blank
            )
    assert plan.status == PlanStatus.PENDING_APPROVAL
    message = approvals.decide(
        session,
        cf.org.id,
        "plan",
        plan.id,
        user=controller,
        approve=True,
        rationale="Customer of ten years; schedule fits their cash cycle.",
        now=NOW,
    )
    assert message.startswith("Plan approved") and plan.status == PlanStatus.ACTIVE
    row = session.scalars(select(Approval).where(Approval.subject_id == plan.id)).one()
    assert row.reason == "Customer of ten years; schedule fits their cash cycle."
    assert approvals.pending_items(session, cf.org.id, viewer=controller) == []


def test_rejecting_from_the_inbox_keeps_the_rationale(session: Session, cf: Factory) -> None:
    plan = _plan(session, cf, cf.user(Persona.COLLECTOR), 1_850_000, "EUR").plan
    controller = cf.user(Persona.CONTROLLER)
    approvals.decide(
        session,
        cf.org.id,
        "plan",
        plan.id,
        user=controller,
        approve=False,
        rationale="Too long for this payer.",
        now=NOW,
    )
    assert plan.status == PlanStatus.REJECTED
    row = session.scalars(select(Approval).where(Approval.subject_id == plan.id)).one()
    assert (row.outcome, row.reason) == ("rejected", "Too long for this payer.")


def test_a_collector_cannot_decide_above_their_limit_from_the_inbox(
    session: Session, cf: Factory
) -> None:
    plan = _plan(session, cf, cf.user(Persona.COLLECTOR), 1_850_000, "EUR").plan
    with pytest.raises(PolicyRefused, match="Your approval is not enough"):
        approvals.decide(
            session,
            cf.org.id,
            "plan",
            plan.id,
            user=cf.user(Persona.COLLECTOR),
            approve=True,
            rationale="fine",
        )
    with pytest.raises((PolicyRefused, PermissionDenied)):
        approvals.decide(
            session,
            cf.org.id,
            "plan",
            plan.id,
            user=cf.user(Persona.CSM),
            approve=True,
            rationale="fine",
        )
    assert plan.status == PlanStatus.PENDING_APPROVAL


def test_a_declined_credit_leaves_the_dispute_open(session: Session, cf: Factory) -> None:
    collector, controller = cf.user(Persona.COLLECTOR), cf.user(Persona.CONTROLLER)
    c = cf.customer()
    inv = cf.invoice(c, 500_000, currency="EUR")
    d = disputes.open_dispute(
        session, cf.org.id, invoice_id=inv.id, reason="pricing", actor=collector, now=NOW
    )
    disputes.propose_credit(session, cf.org.id, d.id, amount_minor=150_000, actor=collector)
    [item] = approvals.pending_items(session, cf.org.id, viewer=controller, now=NOW)
    assert item.kind == "credit" and item.amount_text == "€1,500.00"
    assert "from €5,000.00 to €3,500.00" in item.changes[0]
    approvals.decide(
        session, cf.org.id, "credit", d.id, user=controller, approve=False, rationale="No basis."
    )
    assert d.credit_minor == 0 and inv.balance_minor == 500_000
    assert approvals.pending_items(session, cf.org.id, viewer=controller) == []


def test_the_one_business_day_clock_skips_weekends_and_holidays() -> None:
    weekend, holidays = {5, 6}, {date(2026, 12, 25)}
    friday = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)
    assert approvals.approval_due(friday, "UTC", weekend, holidays) == datetime(
        2026, 12, 7, 17, 0, tzinfo=UTC
    )
    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert approvals.approval_due(saturday, "UTC", weekend, holidays) == datetime(
        2026, 12, 8, 0, 0, tzinfo=UTC
    )
    christmas_eve = datetime(2026, 12, 24, 9, 30, tzinfo=UTC)  # Thursday; Friday is a holiday
    assert approvals.approval_due(christmas_eve, "UTC", weekend, holidays) == datetime(
        2026, 12, 28, 9, 30, tzinfo=UTC
    )
    assert approvals.waiting_words(friday, friday + timedelta(hours=26)) == "26 hours"
    assert approvals.waiting_words(friday, friday + timedelta(days=3)) == "3 days"
    assert approvals.waiting_words(friday, friday + timedelta(seconds=61)) == "1 minute"


def test_a_plan_only_proposed_within_the_guardrails_still_reaches_the_controller(
    session: Session, cf: Factory
) -> None:
    plan = _plan(session, cf, cf.user(Persona.COLLECTOR), 10_000, "USD", for_approval=True).plan
    controller = cf.user(Persona.CONTROLLER)
    [item] = approvals.pending_items(session, cf.org.id, viewer=controller, now=NOW)
    assert (item.subject_id, item.awaiting_roles) == (plan.id, ["Controller"])
