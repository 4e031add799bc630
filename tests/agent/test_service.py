"""What the API calls: revising a draft in the review chat, the inspector, reply triage."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.deps import AgentDeps
from agent.drafter import draft_outreach
from agent.service import recommend, revise_draft, triage_reply
from memory.config import Settings
from memory.models import DisputeStatus, Draft, DraftRevision, DraftStatus, PromiseStatus
from tests.agent.factories import AS_OF, NOW, Builder, Ledger
from tests.agent.models_for_tests import failing, scripted, tampering
from tools.drafts.service import DraftNotFound, InvalidDraftInput, InvalidTransition


@pytest.fixture
def draft(session: Session, ledger: Ledger, deps: AgentDeps) -> Draft:
    result = draft_outreach(deps, invoice_id=ledger.invoice.id, step=ledger.cadence.steps[1].id)
    session.commit()
    stored = session.get(Draft, result.draft_id)
    assert stored is not None
    return stored


def _g(turn: DraftRevision) -> dict[str, Any]:
    assert turn.grounding is not None
    return turn.grounding


def _turns(session: Session, draft: Draft) -> list[DraftRevision]:
    return list(
        session.scalars(
            select(DraftRevision)
            .where(DraftRevision.draft_id == draft.id)
            .order_by(DraftRevision.seq)
        )
    )


def test_revisions_shorter_formal_promise_and_language(
    session: Session, ledger: Ledger, draft: Draft, settings: Settings
) -> None:
    ledger.b.promise(
        ledger.customer, [ledger.invoice], amount_minor=125_000, promised=date(2025, 10, 3),
        status=PromiseStatus.MISSED,
    )  # fmt: skip
    session.commit()
    before_len, version = len(draft.body), draft.version
    org, user = ledger.org.id, ledger.collector

    shorter = revise_draft(session, org, draft.id, "shorter", user, settings, now=NOW)
    assert len(shorter.body) < before_len and "INV-1042" in shorter.body
    assert shorter.status is DraftStatus.PENDING_REVIEW and shorter.version > version
    formal = revise_draft(session, org, draft.id, "more formal please", user, settings, now=NOW)
    assert formal.body.startswith("Dear Dana Smith,") and len(formal.body) < before_len
    promise = revise_draft(
        session, org, draft.id, "mention the promise from 3 October", user, settings, now=NOW
    )
    assert "promised a payment of $1,250.00 by October 3, 2025" in promise.body
    german = revise_draft(session, org, draft.id, "in German", user, settings, now=NOW)
    assert german.language == "de" and german.body.startswith("Guten Tag Dana Smith,")
    assert "3. Oktober 2025" in german.body  # the promise mention survives, localised
    session.commit()

    first, *turns = _turns(session, draft)
    # the model's own text stays turn 1 (Shadow Mode agreement compares with it)
    assert (first.seq, first.author, first.instruction) == (1, "copilot", None)
    assert len(first.body or "") == before_len
    assert [t.author for t in turns] == ["operator", "copilot"] * 4
    assert turns[0].instruction == "shorter" and turns[0].user_id == user.id
    assert all(_g(t)["applied"] and _g(t)["ok"] for t in turns[1::2])
    assert all((t.decision or {}).get("outcome") == "needs_approval" for t in turns[1::2])
    assert draft.stated_facts["instructions"] == [
        "shorter", "more formal please", "mention the promise from 3 October", "in German",
    ]  # fmt: skip
    assert draft.prompt_version == "drafter/v2+reviser/v1"


def test_a_revision_the_ledger_cannot_support_is_explained(
    session: Session, ledger: Ledger, draft: Draft, settings: Settings
) -> None:
    body = draft.body
    revised = revise_draft(
        session, ledger.org.id, draft.id, "mention the promise from 9 March", ledger.collector,
        settings, now=NOW,
    )  # fmt: skip
    note = _g(_turns(session, draft)[-1])["copilot_note"]
    assert "no promise-to-pay on that date" in note
    assert "March" not in revised.body and revised.body == body
    nonsense = revise_draft(
        session, ledger.org.id, draft.id, "make it rhyme", ledger.collector, settings, now=NOW
    )
    assert "not understood" in _g(_turns(session, draft)[-1])["copilot_note"]
    assert nonsense.body == body


def test_a_rewrite_that_lies_is_not_applied(
    session: Session, ledger: Ledger, draft: Draft, settings: Settings
) -> None:
    body = draft.body

    def lie(args: dict[str, Any]) -> dict[str, Any]:
        args["body"] = args["body"].replace("$1,250.00", "$125.00")
        return args

    model, _ = tampering(lie, times=2, tool="submit_revision")
    revised = revise_draft(
        session, ledger.org.id, draft.id, "shorter", ledger.collector, settings, model=model,
        now=NOW,
    )  # fmt: skip
    assert revised.body == body and revised.status is DraftStatus.PENDING_REVIEW
    turn = _turns(session, draft)[-1]
    assert _g(turn)["applied"] is False and "$125.00" in (turn.body or "")
    assert "not applied" in _g(turn)["copilot_note"]


def test_a_failing_model_leaves_the_draft_alone(
    session: Session, ledger: Ledger, draft: Draft, settings: Settings
) -> None:
    body = draft.body
    revised = revise_draft(
        session, ledger.org.id, draft.id, "shorter", ledger.collector, settings,
        model=failing(RuntimeError("model down")), now=NOW,
    )  # fmt: skip
    assert revised.body == body
    assert "model down" in _g(_turns(session, draft)[-1])["copilot_note"]


def test_revision_input_errors(
    session: Session, ledger: Ledger, draft: Draft, settings: Settings
) -> None:
    other = Builder.new_org(session)
    session.commit()
    user = ledger.collector
    with pytest.raises(InvalidDraftInput):
        revise_draft(session, ledger.org.id, draft.id, "   ", user, settings)
    with pytest.raises(InvalidDraftInput):
        revise_draft(session, ledger.org.id, draft.id, "x" * 1001, user, settings)
    with pytest.raises(DraftNotFound):
        revise_draft(session, other.org.id, draft.id, "shorter", user, settings)
    draft.status = DraftStatus.SENT
    session.commit()
    with pytest.raises(InvalidTransition):
        revise_draft(session, ledger.org.id, draft.id, "shorter", user, settings)
    assert session.scalar(select(func.count()).select_from(DraftRevision)) == 0


# --- the inspector ------------------------------------------------------------------------------


def _rec(session: Session, ledger: Ledger, settings: Settings, **kw: Any) -> Any:
    kw.setdefault("invoice_id", ledger.invoice.id)
    return recommend(session, ledger.org.id, settings=settings, now=NOW, **kw)


def test_inspector_rules(session: Session, ledger: Ledger, settings: Settings) -> None:
    rec = _rec(session, ledger, settings)
    assert rec.action == "send_reminder" and rec.priority == "normal"
    assert "INV-1042" in rec.invoice_numbers and 0 < rec.confidence <= 1
    assert rec.model_name == "plixo-offline-v1" and rec.prompt_version == "inspector/v1"

    old = ledger.b.invoice(
        ledger.customer, number="INV-OLD", amount_minor=2_500_000, days_overdue=80
    )
    session.commit()
    assert _rec(session, ledger, settings, invoice_id=old.id).action == "propose_plan"
    mid = ledger.b.invoice(ledger.customer, number="INV-MID", amount_minor=50_000, days_overdue=50)
    session.commit()
    assert _rec(session, ledger, settings, invoice_id=mid.id).action == "call"

    ledger.b.promise(
        ledger.customer, [ledger.invoice], amount_minor=125_000, promised=AS_OF + timedelta(days=5)
    )
    session.commit()
    assert _rec(session, ledger, settings).action == "hold"

    dispute = ledger.b.dispute(old, sla_hours=-1)
    session.commit()
    esc = _rec(session, ledger, settings, invoice_id=old.id)
    assert esc.action == "escalate_dispute" and esc.priority == "urgent"
    assert "past its SLA" in esc.rationale
    dispute.sla_due_at = NOW + timedelta(days=3)
    dispute.status = DisputeStatus.INVESTIGATING
    session.commit()
    assert _rec(session, ledger, settings, invoice_id=old.id).action == "hold"


def test_inspector_on_a_broken_promise_and_a_blocked_draft(
    session: Session, ledger: Ledger, deps: AgentDeps, settings: Settings
) -> None:
    ledger.b.promise(
        ledger.customer, [ledger.invoice], amount_minor=125_000, promised=AS_OF - timedelta(days=9)
    )
    session.commit()
    rec = _rec(session, ledger, settings)
    assert rec.action == "call" and "not kept" in rec.rationale
    ledger.contact.opted_out_email = True
    session.commit()
    result = draft_outreach(deps, invoice_id=ledger.invoice.id)
    assert result.status is DraftStatus.BLOCKED
    on_draft = _rec(session, ledger, settings, draft_id=result.draft_id, invoice_id=None)
    assert on_draft.draft_id == result.draft_id
    assert on_draft.action in ("hold", "call")


def test_inspector_failure_and_scope(session: Session, ledger: Ledger, settings: Settings) -> None:
    rec = _rec(session, ledger, settings, model=failing(TimeoutError("slow")))
    assert rec.held and rec.action == "hold" and rec.confidence == 0.0
    other = Builder.new_org(session)
    stranger_invoice = other.invoice(other.customer("X"), number="INV-1")
    session.commit()
    from tools.insights.account360 import NotInOrganisation

    with pytest.raises(NotInOrganisation):
        _rec(session, ledger, settings, invoice_id=stranger_invoice.id)
    with pytest.raises(ValueError):
        recommend(session, ledger.org.id, settings=settings)


# --- triage --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "cls", "change"),
    [
        ("We will pay invoice INV-1042 on 30 October 2025.", "promise", "log_promise"),
        (
            "Wir werden die Rechnung INV-1042 am 30. Oktober 2025 bezahlen.",
            "promise",
            "log_promise",
        ),
        ("The quantity on INV-1042 is wrong: we received 10, not 12.", "dispute", "open_dispute"),
        ("We already paid this on 15 October, reference 88812.", "paid_claim", "verify_payment"),
        (
            "Automatic reply: I am out of the office until November 3, 2025.",
            "out_of_office",
            "pause_outreach",
        ),  # fmt: skip
        ("Could you send us a copy of the PO?", "question", "answer_question"),
        ("Thanks, noted.", "other", None),
    ],
)
def test_triage_classes(
    session: Session, ledger: Ledger, settings: Settings, reply: str, cls: str, change: str | None
) -> None:
    result = triage_reply(session, ledger.org.id, ledger.customer.id, reply, settings, now=NOW)
    assert result.classification == cls, result.summary
    assert [c.kind for c in result.proposed_changes] == ([change] if change else [])
    assert result.requires_acceptance is True and not result.injection_suspected


def test_triage_extracts_the_promise(session: Session, ledger: Ledger, settings: Settings) -> None:
    result = triage_reply(
        session, ledger.org.id, ledger.customer.id,
        "We can pay $600.00 of INV-1042 on October 30, 2025.", settings, now=NOW,
    )  # fmt: skip
    assert result.promise_date == date(2025, 10, 30)
    assert result.promise_amount is not None and result.promise_amount.amount_minor == 60_000
    change = result.proposed_changes[0]
    assert change.invoice_numbers == ["INV-1042"] and change.on_date == date(2025, 10, 30)


def test_triage_vets_what_a_model_proposes(
    session: Session, ledger: Ledger, settings: Settings
) -> None:
    """A model proposing other customers' invoices, a foreign currency or a past promise date is
    corrected by the rules around it."""
    args = {
        "classification": "promise",
        "summary": "Promise to pay.",
        "invoice_numbers": ["INV-1042", "INV-OTHER"],
        "promise_amount": {"amount_minor": 5_000, "currency": "JPY"},
        "promise_date": "2025-10-01",
        "proposed_changes": [
            {"kind": "log_promise", "invoice_numbers": ["INV-1042"], "on_date": "2025-10-01"},
            {"kind": "open_dispute", "invoice_numbers": ["INV-OTHER", "INV-1042"], "reason": "x"},
        ],
    }

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart("submit_triage", args)])

    result = triage_reply(
        session, ledger.org.id, ledger.customer.id, "We pay soon.", settings,
        model=scripted([answer]), now=NOW,
    )  # fmt: skip
    assert result.invoice_numbers == ["INV-1042"]
    assert result.ignored_invoice_numbers == ["INV-OTHER"]
    assert result.promise_amount is None and result.promise_date is None
    assert [(c.kind, c.invoice_numbers) for c in result.proposed_changes] == [
        ("open_dispute", ["INV-1042"])
    ]


def test_triage_failure_and_bad_input(session: Session, ledger: Ledger, settings: Settings) -> None:
    held = triage_reply(
        session, ledger.org.id, ledger.customer.id, "hello", settings,
        model=failing(ConnectionError("down")),
    )  # fmt: skip
    assert held.held and held.classification == "other" and "down" in (held.hold_reason or "")
    with pytest.raises(ValueError):
        triage_reply(session, ledger.org.id, ledger.customer.id, "  ", settings)
    other = Builder.new_org(session)
    stranger = other.customer("X")
    session.commit()
    from tools.insights.account360 import NotInOrganisation

    with pytest.raises(NotInOrganisation):
        triage_reply(session, ledger.org.id, stranger.id, "We will pay", settings)
