"""A person's own messages and logged touches: refusals say what to fix and write nothing; the
access matrix is checked in the tool; a message is a draft the guardrails decide."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import (
    Activity,
    ActivityKind,
    Contact,
    Draft,
    DraftKind,
    DraftStatus,
    Organisation,
    Persona,
)
from tests.api.factories import NOW, Seeded, draft_text, seed_review, settings_for
from tools.drafts.service import ApprovalRefused, InvalidDraftInput
from tools.kit.authz import PermissionDenied
from tools.replies import messages


@pytest.fixture
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return settings_for(str(tmp_path))


@pytest.fixture
def seeded(session: Session, org: Organisation, settings: Settings) -> Seeded:
    return seed_review(session, org, settings, drafts=2)


def _count(session: Session, model: type) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_log_touch_refuses_bad_input_and_writes_nothing(session: Session, seeded: Seeded) -> None:
    collector, customer = seeded.users[Persona.COLLECTOR], seeded.customers[0]
    later, long_ago = NOW + timedelta(hours=1), NOW - timedelta(days=91)
    cases = [
        ({"kind": ActivityKind.NUDGE, "summary": "x"}, "Only a call or an outside e-mail"),
        ({"kind": ActivityKind.CALL, "summary": " "}, "Say in a line"),
        ({"kind": ActivityKind.CALL, "summary": "x", "direction": "up"}, "in or out"),
        ({"kind": ActivityKind.CALL, "summary": "x", "occurred_at": later}, "future"),
        ({"kind": ActivityKind.CALL, "summary": "x", "occurred_at": long_ago}, "90 days"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(messages.MessageError, match=message):
            messages.log_touch(
                session, seeded.org.id, actor=collector, customer_id=customer.id, now=NOW,
                **kwargs,  # type: ignore[arg-type]
            )  # fmt: skip
    other_contact = seeded.customers[1].contacts[0]
    with pytest.raises(LookupError, match="is not a contact of"):
        messages.log_touch(
            session, seeded.org.id, actor=collector, customer_id=customer.id,
            kind=ActivityKind.CALL, summary="x", contact_id=other_contact.id, now=NOW,
        )  # fmt: skip
    with pytest.raises(PermissionDenied, match="Viewer may not"):
        messages.log_touch(
            session, seeded.org.id, actor=seeded.users[Persona.VIEWER], customer_id=customer.id,
            kind=ActivityKind.CALL, summary="x", now=NOW,
        )  # fmt: skip
    assert _count(session, Activity) == 0
    done = messages.log_touch(
        session, seeded.org.id, actor=collector, customer_id=customer.id,
        kind=ActivityKind.EMAIL, direction="in", summary="Remittance", now=NOW,
    )  # fmt: skip
    assert messages.timeline(session, seeded.org.id, customer.id) == [done]


def test_compose_is_a_draft_decided_by_the_guardrails(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    customer, invoice = seeded.customers[0], seeded.invoices[0]
    subject, body = draft_text(settings, seeded.org, customer, invoice)
    draft = messages.compose(
        session, seeded.org.id, user=seeded.users[Persona.COLLECTOR], customer_id=customer.id,
        invoice_id=invoice.id, subject=subject, body=body, settings=settings, now=NOW,
    )  # fmt: skip
    assert (draft.kind, draft.status) == (DraftKind.MANUAL, DraftStatus.PENDING_REVIEW)
    assert draft.recipient == customer.contacts[0].email
    reasons = [r["rule_id"] for r in draft.decision["reasons"]]
    assert "shadow.review_required" in reasons
    # a text without the pay link is blocked, and it does not retire the waiting one
    blocked = messages.compose(
        session, seeded.org.id, user=seeded.users[Persona.COLLECTOR], customer_id=customer.id,
        invoice_id=invoice.id, subject=subject, body=f"Invoice {invoice.number}, please pay.",
        settings=settings, now=NOW,
    )  # fmt: skip
    assert blocked.status == DraftStatus.BLOCKED
    assert "content.missing_pay_link" in [r["rule_id"] for r in blocked.decision["reasons"]]
    assert draft.status == DraftStatus.PENDING_REVIEW


def test_compose_refusals(session: Session, seeded: Seeded, settings: Settings) -> None:
    customer = seeded.customers[0]
    before = _count(session, Draft)
    with pytest.raises(InvalidDraftInput, match="Write a subject"):
        messages.compose(
            session, seeded.org.id, user=seeded.users[Persona.COLLECTOR],
            customer_id=customer.id, subject="", body="x", settings=settings, now=NOW,
        )  # fmt: skip
    with pytest.raises(ApprovalRefused, match="Sales may not edit"):
        messages.compose(
            session, seeded.org.id, user=seeded.users[Persona.SALES], customer_id=customer.id,
            subject="s", body="b", settings=settings, now=NOW,
        )  # fmt: skip
    for contact in session.scalars(select(Contact).where(Contact.customer_id == customer.id)):
        contact.email = None
    with pytest.raises(InvalidDraftInput, match="no contact with an e-mail address"):
        messages.compose(
            session, seeded.org.id, user=seeded.users[Persona.COLLECTOR],
            customer_id=customer.id, subject="s", body="b", settings=settings, now=NOW,
        )  # fmt: skip
    with pytest.raises(LookupError):
        messages.compose(
            session, seeded.org.id, user=seeded.users[Persona.COLLECTOR],
            customer_id=customer.id, invoice_id=seeded.invoices[1].id, subject="s", body="b",
            settings=settings, now=NOW,
        )  # fmt: skip
    assert _count(session, Draft) == before


def test_scheduled_lists_deferred_approvals_by_send_time_with_approvers(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    from tools.drafts import service as drafts

    night = NOW.replace(hour=3)
    for d in seeded.drafts:
        drafts.approve_draft(
            session, seeded.org.id, d.id, user=seeded.users[Persona.COLLECTOR],
            expected_version=d.version, settings=settings, now=night,
        )  # fmt: skip
    rows = messages.scheduled(session, seeded.org.id)
    assert [r.draft.id for r in rows] == [d.id for d in seeded.drafts]
    assert all(r.approvers == ["Collector User"] and r.reason == "Quiet hours" for r in rows)
    assert all(r.send_at is not None and r.send_at > night for r in rows)
    drafts.release_deferred(session, now=NOW + timedelta(days=1), settings=settings)
    assert messages.scheduled(session, seeded.org.id) == []
