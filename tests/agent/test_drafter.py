"""The drafter with the offline model: correct, plain drafts in the contact's language and the
persona's voice, grounded against the ledger, decided by the guardrails, stored with provenance."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.deps import AgentDeps
from agent.drafter import DraftingError, draft_outreach
from memory.config import Settings
from memory.models import (
    AuditEvent,
    Channel,
    Draft,
    DraftKind,
    DraftPersona,
    DraftStatus,
    Persona,
)
from tests.agent.factories import AS_OF, NOW, Builder, Ledger, small_ledger


def test_cadence_step_draft_is_grounded_decided_and_stored(
    session: Session, ledger: Ledger, deps: AgentDeps
) -> None:
    step = ledger.cadence.steps[1]  # +3 days: friendly_reminder
    result = draft_outreach(deps, invoice_id=ledger.invoice.id, step=step.id, run_key="k1")
    session.commit()

    assert result.status is DraftStatus.PENDING_REVIEW
    assert result.decision_outcome == "needs_approval"
    assert "shadow.review_required" in {r["rule_id"] for r in result.decision["reasons"]}
    assert result.grounding["ok"] and result.grounding["attempts"] == 1
    link = f"https://ar.acme.example/pay/{ledger.org.slug}/INV-1042"
    assert result.subject == "Friendly reminder: invoice INV-1042"
    assert result.body.startswith("Hi Dana,")
    for fact in ("INV-1042", "$1,250.00", "October 18, 2025", link, "Northwind Foods Inc."):
        assert fact in result.body
    assert result.invoice_numbers == ["INV-1042"] and result.pay_link == link
    assert [(m.amount_minor, m.currency) for m in result.amounts] == [(125_000, "USD")]
    assert result.recipient == "dana@northwind.example" and result.channel is Channel.EMAIL

    draft = session.get(Draft, result.draft_id)
    assert draft is not None
    assert draft.model_name == "plixo-offline-v1" and draft.prompt_version == "drafter/v2"
    assert draft.input_tokens > 0 and draft.output_tokens > 0 and draft.latency_ms >= 0
    assert draft.kind is DraftKind.CADENCE and draft.cadence_step_id == step.id
    assert draft.segment_id == ledger.segment.id and draft.run_key == "k1"
    assert draft.stated_facts["pay_link"] == link
    audit = session.scalars(
        select(AuditEvent).where(
            AuditEvent.subject_type == "draft", AuditEvent.subject_id == draft.id
        )
    ).all()
    assert [(a.action, a.to_state) for a in audit] == [("draft.created", "pending_review")]


@pytest.mark.parametrize(
    ("language", "greeting", "amount", "day"),
    [
        ("de", "Hallo Dana,", "1.250,00\u00a0$", "18. Oktober 2025"),
        ("fr", "Bonjour Dana,", "1\u202f250,00\u00a0$US", "18 octobre 2025"),
        ("es", "Hola, Dana:", "1.250,00\u00a0US$", "18 de octubre de 2025"),
    ],
)
def test_drafts_in_the_contacts_language(
    session: Session, settings: Settings, language: str, greeting: str, amount: str, day: str
) -> None:
    led = small_ledger(session, language=language)
    deps = AgentDeps(session=session, org_id=led.org.id, settings=settings, as_of=AS_OF, now=NOW)
    result = draft_outreach(deps, invoice_id=led.invoice.id, step=led.cadence.steps[1].id)
    assert result.language == language
    assert result.body.startswith(greeting)
    assert amount in result.body and day in result.body
    assert result.grounding["ok"], result.grounding["mismatches"]
    assert result.status is DraftStatus.PENDING_REVIEW


def test_a_language_without_templates_is_held_for_a_human(
    session: Session, ledger: Ledger, deps: AgentDeps
) -> None:
    ledger.contact.language = "it"
    session.commit()
    result = draft_outreach(deps, invoice_id=ledger.invoice.id)
    assert result.status is DraftStatus.HELD
    assert result.hold_reason and "'it'" in result.hold_reason
    assert result.grounding_attempts == 2
    draft = session.get(Draft, result.draft_id)
    assert draft is not None and draft.decision_outcome is None and draft.body == ""


def test_personas_change_the_voice(session: Session, ledger: Ledger, deps: AgentDeps) -> None:
    sales = ledger.b.user(Persona.SALES, "Jordan Blake")
    csm = ledger.b.user(Persona.CSM, "Taylor Kim")
    ledger.customer.sales_user_id = sales.id
    ledger.customer.csm_user_id = csm.id
    session.commit()
    collector = draft_outreach(deps, invoice_id=ledger.invoice.id, persona="collector")
    assert collector.body.endswith("Sam Okafor\nAcme Test Ltd Accounts Receivable")
    nudge = draft_outreach(deps, invoice_id=ledger.invoice.id, nudge="sales_nudge")
    assert nudge.persona is DraftPersona.SALES_NUDGE
    assert "your account team" in nudge.body and nudge.body.endswith("Jordan Blake\nAcme Test Ltd")
    csm_draft = draft_outreach(deps, invoice_id=ledger.invoice.id, nudge="csm_nudge")
    assert csm_draft.persona is DraftPersona.CSM_NUDGE
    assert "Customer Success, Acme Test Ltd" in csm_draft.body
    stored = session.get(Draft, nudge.draft_id)
    assert stored is not None and stored.kind is DraftKind.NUDGE
    assert all(r.grounding["ok"] for r in (collector, nudge, csm_draft))


def test_customer_statement_lists_open_undisputed_invoices(
    session: Session, ledger: Ledger, deps: AgentDeps
) -> None:
    b = ledger.b
    b.invoice(ledger.customer, number="INV-2001", amount_minor=30_000, days_overdue=40)
    disputed = b.invoice(ledger.customer, number="INV-2002", amount_minor=7_000, days_overdue=20)
    b.dispute(disputed)
    session.commit()
    result = draft_outreach(deps, customer_id=ledger.customer.id)
    assert result.template == "account_statement"
    assert "INV-2001" in result.body and "INV-1042" in result.body
    assert "INV-2002" not in result.body
    assert result.grounding["ok"] and result.status is DraftStatus.PENDING_REVIEW


def test_a_statement_by_sms_states_what_it_lists_and_no_totals(
    session: Session, settings: Settings
) -> None:
    """The SMS variant of a statement lists the invoices and the link (no headings, no totals);
    what the drafter declares is what the text says, so grounding passes."""
    b = Builder.new_org(session)
    cadence = b.cadence(steps=[(3, Channel.SMS, "account_statement", "friendly")])
    customer = b.customer("Northwind Foods Inc.", segment=b.segment("SMB", cadence=cadence))
    b.contact(customer, "Dana Smith", email="dana@northwind.example", phone="+1 555 0100")
    b.invoice(customer, number="S-1", amount_minor=40_000, days_overdue=3)
    b.invoice(customer, number="S-2", amount_minor=2_500, days_overdue=-2)
    session.commit()
    deps = AgentDeps(session=session, org_id=b.org.id, settings=settings, as_of=AS_OF, now=NOW)
    result = draft_outreach(deps, customer_id=customer.id, step=cadence.steps[0].id)
    assert result.channel is Channel.SMS and len(result.body) <= 320
    assert "S-1" in result.body and "S-2" in result.body
    assert "Total" not in result.body and "Coming due" not in result.body
    assert result.grounding["ok"], result.grounding["mismatches"]
    assert sorted(m.amount_minor for m in result.amounts) == [2_500, 40_000]


def test_partial_payment_is_acknowledged_with_exact_figures(
    session: Session, ledger: Ledger, deps: AgentDeps
) -> None:
    ledger.invoice.balance_minor = 45_000
    session.commit()
    result = draft_outreach(deps, invoice_id=ledger.invoice.id, step=ledger.cadence.steps[1].id)
    assert "Thank you for your payment of $800.00; $450.00 remains open" in result.body
    assert result.grounding["ok"]


def test_the_guardrails_see_the_ledger(session: Session, settings: Settings) -> None:
    """Autopilot on and Shadow Mode off: the rules alone allow; forcing Shadow Mode does not."""
    led = small_ledger(session, shadow=False)
    led.segment.autopilot_enabled = True
    session.commit()
    deps = AgentDeps(session=session, org_id=led.org.id, settings=settings, as_of=AS_OF, now=NOW)
    free = draft_outreach(deps, invoice_id=led.invoice.id, step=led.cadence.steps[1].id)
    assert free.decision_outcome == "allow" and free.status is DraftStatus.APPROVED
    forced = draft_outreach(deps, invoice_id=led.invoice.id, shadow=True)
    assert forced.decision_outcome == "needs_approval"
    led.contact.opted_out_email = True
    session.commit()
    blocked = draft_outreach(deps, invoice_id=led.invoice.id)
    assert blocked.status is DraftStatus.BLOCKED
    assert "contact.opted_out" in {r["rule_id"] for r in blocked.decision["reasons"]}


def test_a_disputed_invoice_is_never_dunned(
    session: Session, ledger: Ledger, deps: AgentDeps
) -> None:
    ledger.b.dispute(ledger.invoice)
    session.commit()
    result = draft_outreach(deps, invoice_id=ledger.invoice.id)
    assert result.status is DraftStatus.BLOCKED
    assert any("disput" in r["rule_id"] for r in result.decision["reasons"])


def test_a_recent_touch_defers_in_autopilot_mode(session: Session, settings: Settings) -> None:
    led = small_ledger(session, shadow=False)
    led.segment.autopilot_enabled = True
    led.b.touch(led.contact, NOW - timedelta(hours=5))
    session.commit()
    deps = AgentDeps(session=session, org_id=led.org.id, settings=settings, as_of=AS_OF, now=NOW)
    result = draft_outreach(deps, invoice_id=led.invoice.id)
    assert result.decision_outcome == "defer" and result.status is DraftStatus.DEFERRED


def test_run_key_is_idempotent(session: Session, ledger: Ledger, deps: AgentDeps) -> None:
    first = draft_outreach(deps, invoice_id=ledger.invoice.id, run_key="same")
    session.commit()
    again = draft_outreach(deps, invoice_id=ledger.invoice.id, run_key="same")
    assert again.draft_id == first.draft_id and again.body == first.body
    assert session.scalar(select(func.count()).select_from(Draft)) == 1


def test_nothing_to_draft_is_a_clear_error(
    session: Session, ledger: Ledger, deps: AgentDeps
) -> None:
    ledger.invoice.balance_minor = 0
    session.commit()
    with pytest.raises(DraftingError, match="no open, undisputed invoice"):
        draft_outreach(deps, customer_id=ledger.customer.id)
    with pytest.raises(DraftingError, match="invoice_id or a customer_id"):
        draft_outreach(deps)
    assert session.scalar(select(func.count()).select_from(Draft)) == 0
