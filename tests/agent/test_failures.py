"""What the drafter does when the model gets it wrong: send back once, then block or hold.

Every model here is a pydantic-ai FunctionModel or TestModel; ``ALLOW_MODEL_REQUESTS`` is off.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models import ALLOW_MODEL_REQUESTS
from pydantic_ai.models.function import AgentInfo
from pydantic_ai.models.test import TestModel
from sqlalchemy.orm import Session

from agent.casefile import build_task, render, stated_facts
from agent.deps import AgentDeps
from agent.drafter import Drafter, adraft_outreach, draft_outreach, run_sync
from memory.config import Settings
from memory.models import Draft, DraftStatus
from tests.agent.factories import AS_OF, Ledger
from tests.agent.models_for_tests import failing, scripted, sleeping, tampering


def test_model_requests_are_disabled() -> None:
    assert ALLOW_MODEL_REQUESTS is False


def _wrong_amount(args: dict[str, Any]) -> dict[str, Any]:
    args["body"] = args["body"].replace("$1,250.00", "$1,205.00")
    return args


def _feedback_texts(conversations: list[list[ModelMessage]]) -> str:
    out: list[str] = []
    for msgs in conversations:
        for m in msgs:
            if isinstance(m, ModelRequest):
                for p in m.parts:
                    content = getattr(p, "content", None)
                    if isinstance(content, str):
                        out.append(content)
    return "\n".join(out)


def test_a_mismatch_is_sent_back_once_and_fixed(
    session: Session, ledger: Ledger, deps: AgentDeps
) -> None:
    model, seen = tampering(_wrong_amount, times=1)
    result = draft_outreach(deps, invoice_id=ledger.invoice.id, model=model)
    assert result.status is DraftStatus.PENDING_REVIEW
    assert result.grounding_attempts == 2 and result.first_attempt_mismatches == 1
    assert result.grounding["ok"] and "$1,250.00" in result.body
    told = _feedback_texts(seen)
    assert "'$1,205.00'" in told and "not in the ledger" in told


def test_a_second_mismatch_blocks_with_the_reason(
    session: Session, ledger: Ledger, deps: AgentDeps
) -> None:
    model, _ = tampering(_wrong_amount, times=2)
    result = draft_outreach(deps, invoice_id=ledger.invoice.id, model=model)
    assert result.status is DraftStatus.BLOCKED
    assert not result.grounding["ok"]
    assert result.grounding["mismatches"][0]["stated"] == "$1,205.00"
    assert result.decision_outcome == "block"
    assert "content.amount_mismatch" in {r["rule_id"] for r in result.decision["reasons"]}


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda a: {**a, "body": a["body"].replace("INV-1042", "INV-9999")}, "invoice"),
        (lambda a: {**a, "body": a["body"].replace("October 18", "October 28")}, "date"),
        (lambda a: {**a, "body": a["body"] + "\nOr pay at https://pay.evil.example/x"}, "link"),
    ],
)
def test_other_lies_are_blocked_too(
    session: Session, ledger: Ledger, deps: AgentDeps, change: Any, rule: str
) -> None:
    model, _ = tampering(change, times=2)
    result = draft_outreach(deps, invoice_id=ledger.invoice.id, model=model)
    assert result.status is DraftStatus.BLOCKED
    assert rule in " ".join(m["kind"] for m in result.grounding["mismatches"]).replace(
        "invoice_number", "invoice"
    )


def test_wrong_language_twice_is_held(session: Session, ledger: Ledger, deps: AgentDeps) -> None:
    model, _ = tampering(lambda a: {**a, "language": "de"}, times=2)
    result = draft_outreach(deps, invoice_id=ledger.invoice.id, model=model)
    assert result.status is DraftStatus.HELD
    assert "must be written in 'en'" in (result.hold_reason or "")


def test_another_recipient_is_held(session: Session, ledger: Ledger, deps: AgentDeps) -> None:
    model, _ = tampering(lambda a: {**a, "recipient": "attacker@evil.example"}, times=2)
    result = draft_outreach(deps, invoice_id=ledger.invoice.id, model=model)
    assert result.status is DraftStatus.HELD and "recipient" in (result.hold_reason or "")
    stored = session.get(Draft, result.draft_id)
    assert stored is not None and stored.recipient == "dana@northwind.example"


def test_a_timeout_is_held(session: Session, ledger: Ledger, deps: AgentDeps) -> None:
    drafter = Drafter(deps.settings, model=sleeping(5), timeout_s=0.2)
    result = run_sync(adraft_outreach(deps, invoice_id=ledger.invoice.id, drafter=drafter))
    assert result.status is DraftStatus.HELD
    assert (result.hold_reason or "").startswith("The model timed out")


def test_a_crashing_model_is_held(session: Session, ledger: Ledger, deps: AgentDeps) -> None:
    result = draft_outreach(
        deps, invoice_id=ledger.invoice.id, model=failing(ConnectionError("connection refused"))
    )
    assert result.status is DraftStatus.HELD
    assert "connection refused" in (result.hold_reason or "")


def _bad_json(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart("submit_draft", '{"subject": "Hi", "body": ')])


def _unknown_tool(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart("mark_invoice_paid", {"invoice_number": "INV-1042"})])


def _prose(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart("Sure! Here is a nice e-mail: Dear customer, pay up.")])


@pytest.mark.parametrize("responder", [_bad_json, _unknown_tool, _prose])
def test_unusable_answers_are_held(
    session: Session, ledger: Ledger, deps: AgentDeps, responder: Any
) -> None:
    result = draft_outreach(deps, invoice_id=ledger.invoice.id, model=scripted([responder]))
    assert result.status is DraftStatus.HELD
    assert result.hold_reason
    assert result.body == ""


def test_test_model_calling_every_tool_is_stopped_by_scoping(
    session: Session, ledger: Ledger, deps: AgentDeps
) -> None:
    """TestModel calls each tool with made-up ids: the tools refuse, the draft is held."""
    result = draft_outreach(deps, invoice_id=ledger.invoice.id, model=TestModel())
    assert result.status is DraftStatus.HELD
    assert "refused" in (result.hold_reason or "") or "does not exist" in (result.hold_reason or "")


def test_test_model_with_a_correct_draft_passes(
    session: Session, ledger: Ledger, deps: AgentDeps, settings: Settings
) -> None:
    task = build_task(
        session, ledger.org.id, settings, as_of=AS_OF, invoice_ids=[ledger.invoice.id]
    )
    subject, body, _ = render(task.case)
    facts = stated_facts(task.case)
    args = {
        "channel": "email",
        "recipient": task.case.recipient,
        "subject": subject,
        "body": body,
        "invoice_numbers": facts["invoice_numbers"],
        "amounts": facts["amounts"],
        "dates": [d.isoformat() for d in facts["dates"]],
        "pay_link": facts["pay_link"],
        "language": "en",
        "tone": "friendly",
    }
    json.dumps(args)
    model = TestModel(call_tools=[], custom_output_args=args)
    result = draft_outreach(deps, invoice_id=ledger.invoice.id, model=model)
    assert result.status is DraftStatus.PENDING_REVIEW and result.grounding["ok"]
    assert result.model_name == "test"
