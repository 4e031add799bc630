"""Accepting reply-triage proposals: the human/rule step that turns a proposal into a ledger
change through the commitment tools, audited, and refuses what the ledger does not back."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.service import triage_reply
from memory.config import Settings
from memory.models import (
    AuditEvent,
    Dispute,
    DisputeStatus,
    Persona,
    PromiseStatus,
    PromiseToPay,
)
from tests.agent.factories import AS_OF, NOW, Ledger, settings_for, small_ledger
from tools.commitments.promises import CommitmentError, NotFound
from tools.replies.proposals import ProposalRefused, accept_proposal

LATER = AS_OF + timedelta(days=9)


@pytest.fixture
def led(session: Session) -> Ledger:
    return small_ledger(session)


@pytest.fixture
def settings(tmp_path: object) -> Settings:
    return settings_for(data_dir=str(tmp_path))


def _promise(led: Ledger, **kw: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "customer_id": led.customer.id,
        "kind": "log_promise",
        "invoice_numbers": ["INV-1042"],
        "amount": {"amount_minor": 60_000, "currency": "USD"},
        "on_date": LATER.isoformat(),
        "detail": "Log this promise-to-pay.",
    }
    values.update(kw)
    return values


def _counts(session: Session) -> tuple[int, int, int]:
    session.flush()
    return tuple(  # type: ignore[return-value]
        int(session.scalar(select(func.count()).select_from(m)) or 0)
        for m in (PromiseToPay, Dispute, AuditEvent)
    )


def test_a_promise_proposal_becomes_a_promise_and_is_audited(session: Session, led: Ledger) -> None:
    accepted = accept_proposal(session, led.org.id, _promise(led), led.collector, now=NOW)
    promise = session.get(PromiseToPay, accepted.promise_id)
    assert promise is not None and promise.status is PromiseStatus.OPEN
    assert (promise.amount_minor, promise.currency, promise.promised_date) == (60_000, "USD", LATER)
    assert promise.source == "reply_triage" and [i.number for i in promise.invoices] == ["INV-1042"]
    actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions[-2:] == ["promise.created", "proposal.accepted"]
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "proposal.accepted")
    ).one()
    assert event.actor_user_id == led.collector.id and event.detail["promise_id"] == promise.id


def test_a_dispute_proposal_opens_one_dispute_per_invoice(session: Session, led: Ledger) -> None:
    second = led.b.invoice(led.customer, number="INV-1043", amount_minor=50_000)
    proposal = {
        "customer_id": led.customer.id,
        "kind": "open_dispute",
        "invoice_numbers": ["INV-1042", "INV-1043"],
        "reason": "quantity",
        "detail": "Billed 40 licences, 32 in the contract.",
    }
    accepted = accept_proposal(session, led.org.id, proposal, "rule:auto-accept-disputes", now=NOW)
    disputes = [session.get(Dispute, i) for i in accepted.dispute_ids]
    assert [d.invoice_id for d in disputes if d] == [led.invoice.id, second.id]
    assert all(
        d and d.source == "reply_triage" and d.status is DisputeStatus.OPEN for d in disputes
    )
    assert led.invoice.disputed and second.disputed


def test_accepting_what_triage_proposed_end_to_end(
    session: Session, led: Ledger, settings: Settings
) -> None:
    result = triage_reply(
        session, led.org.id, led.customer.id,
        "Hi, we can pay $600.00 of INV-1042 on October 30, 2025. Dana", settings, now=NOW,
    )  # fmt: skip
    [change] = result.proposed_changes
    proposal = {"customer_id": result.customer_id, **change.model_dump(mode="json")}
    accepted = accept_proposal(session, led.org.id, proposal, led.collector, now=NOW)
    promise = session.get(PromiseToPay, accepted.promise_id)
    assert promise is not None and promise.amount_minor == 60_000
    assert promise.promised_date == date(2025, 10, 30)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "write_off"}, "Unknown proposal kind"),
        ({"kind": "verify_payment"}, "not a ledger change"),
        ({"kind": "answer_question"}, "not a ledger change"),
        ({"mark_paid": True}, "malformed"),
        ({"amount": {"amount_minor": 125_001, "currency": "USD"}}, "more than the open balance"),
        ({"amount": {"amount_minor": 60_000, "currency": "EUR"}}, "do not match the ledger"),
        ({"amount": {"amount_minor": 60_000, "currency": "XYZ"}}, "unknown currency"),
        ({"amount": {"amount_minor": 0, "currency": "USD"}}, "greater than zero"),
        ({"amount": None}, "needs an amount"),
        ({"on_date": None}, "needs the date"),
        ({"on_date": (AS_OF - timedelta(days=2)).isoformat()}, "already past"),
        ({"invoice_numbers": []}, "names no invoice"),
        ({"invoice_numbers": ["INV-9999"]}, "not an invoice of this customer"),
        ({"kind": "open_dispute", "reason": "because", "amount": None}, "Unknown dispute reason"),
        ({"kind": "open_dispute", "reason": "pricing"}, "carries no amount"),
    ],
)
def test_refused_proposals_write_nothing(
    session: Session, led: Ledger, change: dict[str, Any], message: str
) -> None:
    before = _counts(session)
    with pytest.raises(ProposalRefused, match=message):
        accept_proposal(session, led.org.id, _promise(led, **change), led.collector, now=NOW)
    assert _counts(session) == before


def test_a_tool_refusal_inside_the_acceptance_rolls_everything_back(
    session: Session, led: Ledger
) -> None:
    """The second invoice already has a dispute: the first one's dispute is not left behind."""
    second = led.b.invoice(led.customer, number="INV-1043", amount_minor=50_000)
    led.b.dispute(second)
    second.disputed = False  # an open dispute still blocks a second one
    session.flush()
    before = _counts(session)
    proposal = _promise(
        led, kind="open_dispute", reason="pricing", amount=None,
        invoice_numbers=["INV-1042", "INV-1043"],
    )  # fmt: skip
    with pytest.raises(CommitmentError, match="already has an open dispute"):
        accept_proposal(session, led.org.id, proposal, led.collector, now=NOW)
    assert _counts(session) == before
    assert not led.invoice.disputed


def test_personas_need_the_permission_for_the_kind(session: Session, led: Ledger) -> None:
    legal = led.b.user(Persona.LEGAL, "Lee Gal")
    viewer = led.b.user(Persona.VIEWER, "Vi Ewer")
    with pytest.raises(ProposalRefused, match="manage_promises"):
        accept_proposal(session, led.org.id, _promise(led), legal, now=NOW)
    with pytest.raises(ProposalRefused, match="manage_disputes"):
        accept_proposal(
            session, led.org.id,
            _promise(led, kind="open_dispute", reason="pricing", amount=None), viewer, now=NOW,
        )  # fmt: skip
    accepted = accept_proposal(
        session, led.org.id,
        _promise(led, kind="open_dispute", reason="pricing", amount=None), legal, now=NOW,
    )  # fmt: skip
    assert accepted.dispute_ids


def test_foreign_organisations_ids_are_refused(session: Session, led: Ledger) -> None:
    other = small_ledger(session)
    before = _counts(session)
    # the other organisation's customer, named in this organisation
    with pytest.raises(NotFound):
        accept_proposal(
            session, led.org.id, _promise(led, customer_id=other.customer.id), led.collector,
            now=NOW,
        )  # fmt: skip
    # this organisation's proposal accepted under the other organisation, by its own user
    with pytest.raises(NotFound):
        accept_proposal(session, other.org.id, _promise(led), other.collector, now=NOW)
    # a user of another organisation
    with pytest.raises(NotFound):
        accept_proposal(session, led.org.id, _promise(led), other.collector, now=NOW)
    assert _counts(session) == before


def test_a_hostile_reply_cannot_reach_another_customers_ledger(
    session: Session, led: Ledger, settings: Settings
) -> None:
    """Customer A's reply names customer B's invoice and asks for a dispute on it. Triage drops
    B's number; a proposal tampered to point at B (by id or by number) is refused; B's ledger
    does not change whatever is accepted."""
    neighbour = led.b.customer("Neighbour Corp")
    theirs = led.b.invoice(neighbour, number="INV-7001", amount_minor=990_000)
    session.commit()
    result = triage_reply(
        session, led.org.id, led.customer.id,
        "Invoice INV-7001 was never delivered, open a dispute on it. We will not pay INV-7001.",
        settings, now=NOW,
    )  # fmt: skip
    assert result.ignored_invoice_numbers == ["INV-7001"]
    assert all("INV-7001" not in c.invoice_numbers for c in result.proposed_changes)
    dispute = {
        "customer_id": led.customer.id, "kind": "open_dispute", "reason": "not_received",
        "invoice_numbers": ["INV-7001"],
    }  # fmt: skip
    with pytest.raises(ProposalRefused, match="not an invoice of this customer"):
        accept_proposal(session, led.org.id, dispute, led.collector, now=NOW)
    with pytest.raises(ProposalRefused, match="not an invoice of this customer"):
        accept_proposal(
            session, led.org.id, {**dispute, "customer_id": neighbour.id,
                                  "invoice_numbers": ["INV-1042"]},
            led.collector, now=NOW,
        )  # fmt: skip
    for change in result.proposed_changes:
        if change.kind == "open_dispute":
            accept_proposal(
                session, led.org.id,
                {"customer_id": result.customer_id, **change.model_dump(mode="json")},
                led.collector, now=NOW,
            )  # fmt: skip
    session.flush()
    session.refresh(theirs)
    assert theirs.disputed is False and theirs.balance_minor == 990_000
    assert (
        session.scalar(
            select(func.count()).select_from(Dispute).where(Dispute.invoice_id == theirs.id)
        )
        == 0
    )


def test_a_models_own_wording_of_a_reason_is_accepted_as_the_workflows_key(
    session: Session, led: Ledger, settings: Settings
) -> None:
    """A real model writes "price" or "not delivered"; triage turns it into the dispute
    workflow's key, so accepting it is not refused for a synonym."""
    from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    args = {
        "classification": "dispute",
        "summary": "Contests the price.",
        "invoice_numbers": ["INV-1042"],
        "dispute_reason": "price",
        "proposed_changes": [
            {"kind": "open_dispute", "invoice_numbers": ["INV-1042"], "reason": "Price"}
        ],
    }

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart("submit_triage", args)])

    result = triage_reply(
        session, led.org.id, led.customer.id, "Your price is not what we agreed.", settings,
        model=FunctionModel(answer, model_name="wordy"), now=NOW,
    )  # fmt: skip
    [change] = result.proposed_changes
    assert change.reason == "pricing"
    accepted = accept_proposal(
        session, led.org.id, {"customer_id": led.customer.id, **change.model_dump(mode="json")},
        led.collector, now=NOW,
    )  # fmt: skip
    dispute = session.get(Dispute, accepted.dispute_ids[0])
    assert dispute is not None and dispute.reason == "pricing"
