"""The facts the guardrails see: promise statuses, and which drafts are dispute correspondence.
(Holiday calendars: ``test_holiday_facts``.)"""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from memory.models import Draft, DraftKind, DraftPersona, Organisation, PromiseStatus
from tests.agent.factories import AS_OF, small_ledger
from tools.grounding.guardrail_facts import is_dispute_correspondence, promise_facts_by_customer


def test_promise_statuses_reach_the_policy_facts(session: Session) -> None:
    led = small_ledger(session)
    led.b.promise(
        led.customer, [led.invoice], amount_minor=1, promised=AS_OF, status=PromiseStatus.MISSED
    )
    session.commit()
    facts = promise_facts_by_customer(session, led.org.id, [led.customer.id])[led.customer.id]
    assert facts[0].status == "missed" and facts[0].invoice_numbers == ["INV-1042"]
    assert isinstance(led.org, Organisation)


@pytest.mark.parametrize(
    ("kind", "persona", "facts", "expected"),
    [
        ("manual", "collector", {"dispute_id": 7}, True),
        ("manual", "collector", {}, False),
        ("manual", "collector", {"dispute_id": "7"}, False),
        ("manual", "autopilot", {"dispute_id": 7}, False),  # a model-written on-demand draft
        ("cadence", "autopilot", {"dispute_id": 7}, False),  # Autopilot's cadence draft
        ("nudge", "sales_nudge", {"dispute_id": 7}, False),
    ],
)
def test_only_a_persons_message_marked_by_the_dispute_reply_path_is_dispute_correspondence(
    kind: str, persona: str, facts: dict[str, object], expected: bool
) -> None:
    draft = Draft(kind=DraftKind(kind), persona=DraftPersona(persona), stated_facts=facts)
    assert is_dispute_correspondence(draft) is expected
