"""Autopilot starts with the commitments: missed promises and installments are marked before
selection, and a reminder is drafted once per open promise that is about to fall due (when the
guardrails can tell such a reminder from chasing under the promise)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent.autopilot import run_autopilot
from memory.config import Settings
from memory.models import (
    AuditEvent,
    Draft,
    InstallmentStatus,
    PlanStatus,
    PromiseStatus,
)
from policies.facts import SendDraftFacts
from tests.agent.factories import AS_OF, NOW, Ledger, small_ledger
from tools.commitments.promises import REMINDER_RUN_KEY


def _ledger(session: Session) -> tuple[Ledger, dict[str, object]]:
    led = small_ledger(session)
    b, seg = led.b, led.segment
    lapsed_c = b.customer("Lapsed Promise Co", segment=seg)
    b.contact(lapsed_c, "Lee Lapsed")
    lapsed_inv = b.invoice(lapsed_c, number="INV-5100", days_overdue=40)
    lapsed = b.promise(
        lapsed_c, [lapsed_inv], amount_minor=50_000, promised=AS_OF - timedelta(days=4)
    )  # still "open" in the ledger, deadline AS_OF-1: missed
    plan_c = b.customer("Plan Co", segment=seg)
    b.contact(plan_c, "Pat Plan")
    plan_inv = b.invoice(plan_c, number="INV-6100", days_overdue=30)
    plan = b.plan(
        plan_c, [plan_inv],
        [(AS_OF - timedelta(days=5), 60_000, 0), (AS_OF + timedelta(days=25), 65_000, 0)],
        status=PlanStatus.ACTIVE,
    )  # fmt: skip
    soon_c = b.customer("Soon Co", segment=seg)
    b.contact(soon_c, "Sue Soon")
    soon_inv = b.invoice(soon_c, number="INV-7100", amount_minor=80_000, days_overdue=12)
    soon = b.promise(soon_c, [soon_inv], amount_minor=80_000, promised=AS_OF + timedelta(days=1))
    session.commit()
    return led, {"lapsed": lapsed, "plan": plan, "soon": soon}


def test_missed_promises_and_installments_are_marked_before_selection(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    led, made = _ledger(session)
    summary = run_autopilot(
        sessions, led.org.id, as_of=AS_OF, shadow=True, settings=settings, now=NOW
    )
    session.expire_all()
    lapsed = made["lapsed"]
    plan = made["plan"]
    session.refresh(lapsed)
    session.refresh(plan)
    assert lapsed.status is PromiseStatus.MISSED  # type: ignore[attr-defined]
    assert plan.status is PlanStatus.DEFAULTED  # type: ignore[attr-defined]
    assert plan.installments[0].status is InstallmentStatus.MISSED  # type: ignore[attr-defined]
    assert (summary.promises_missed, summary.installments_missed, summary.plans_defaulted) == (
        1, 1, 1,
    )  # fmt: skip
    actions = set(
        session.scalars(select(AuditEvent.action).where(AuditEvent.actor == "Autopilot")).all()
    )
    assert {"promise.missed", "plan.installment_missed", "plan.defaulted"} <= actions
    templates = {
        d.stated_facts["template"]
        for d in session.scalars(select(Draft).where(Draft.org_id == led.org.id))
    }
    assert {"promise_broken", "installment_missed", "friendly_reminder"} <= templates
    again = run_autopilot(
        sessions, led.org.id, as_of=AS_OF, shadow=True, settings=settings, now=NOW
    )
    assert (again.promises_missed, again.installments_missed, again.drafted) == (0, 0, 0)


def test_a_promise_reminder_is_not_paused_by_its_own_promise(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    """The guardrails know a reminder about a promise (the ``about_promise`` fact) from chasing
    under it: the reminder is drafted, and only Shadow Mode holds it - not ``promise.open``."""
    assert "about_promise" in SendDraftFacts.model_fields
    led, made = _ledger(session)
    key = REMINDER_RUN_KEY.format(promise_id=made["soon"].id)  # type: ignore[attr-defined]
    summary = run_autopilot(
        sessions, led.org.id, as_of=AS_OF, shadow=True, settings=settings, now=NOW
    )
    stored = session.scalars(select(Draft).where(Draft.run_key == key)).all()
    assert summary.promise_reminders == 1
    assert len(stored) == 1 and not any("about_promise" in n for n in summary.notes)
    rule_ids = {r["rule_id"] for r in stored[0].decision["reasons"]}
    assert "promise.open" not in rule_ids and "promise.reminder_not_open" not in rule_ids
    assert stored[0].decision["outcome"] == "needs_approval"
    assert "shadow.review_required" in rule_ids


def test_a_promise_reminder_is_drafted_once_per_promise(
    session: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    """The drafting path itself: the reminder states the promise and its invoices, is grounded,
    stored under the promise's run key, and never drafted twice."""
    led, made = _ledger(session)
    soon = made["soon"]
    key = REMINDER_RUN_KEY.format(promise_id=soon.id)  # type: ignore[attr-defined]
    first = run_autopilot(
        sessions, led.org.id, as_of=AS_OF, shadow=True, settings=settings, now=NOW
    )
    assert first.promise_reminders == 1 and first.errors == 0 and first.held == 0
    draft = session.scalars(select(Draft).where(Draft.run_key == key)).one()
    assert draft.stated_facts["template"] == "promise_reminder"
    assert "$800.00" in draft.body and "October 22, 2025" in draft.body and "INV-7100" in draft.body
    assert draft.grounding["ok"] is True
    again = run_autopilot(
        sessions, led.org.id, as_of=AS_OF, shadow=True, settings=settings, now=NOW
    )
    assert again.promise_reminders == 0
    assert len(session.scalars(select(Draft).where(Draft.run_key == key)).all()) == 1
