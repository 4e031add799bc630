"""Sales and CSM nudges through the send_nudge guardrails: templates, quiet hours, Autopilot
spacing, the A/R team told every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import (
    AuditEvent,
    DraftKind,
    DraftPersona,
    DraftStatus,
    Note,
    Organisation,
    OutboxMessage,
    Persona,
)
from tests.api.factories import NOW, Seeded, seed_review, settings_for
from tools.drafts import service as drafts
from tools.outreach import nudges
from tools.outreach.nudges import NudgeError, NudgeNotFound


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(str(tmp_path))


@pytest.fixture
def seeded(session: Session, org: Organisation, settings: Settings) -> Seeded:
    return seed_review(session, org, settings, drafts=2)


def test_sales_nudge_is_queued_and_the_ar_team_told(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    sales = seeded.users[Persona.SALES]
    customer, invoice = seeded.customers[0], seeded.invoices[0]
    result = nudges.request_nudge(
        session,
        seeded.org.id,
        user=sales,
        customer_id=customer.id,
        template_id="friendly_check_in",
        settings=settings,
        now=NOW,
    )
    session.commit()
    d = result.draft
    assert (d.kind, d.persona, d.status) == (
        DraftKind.NUDGE,
        DraftPersona.SALES_NUDGE,
        DraftStatus.QUEUED,
    )
    assert d.decision_outcome == "allow" and "ar_team" in d.decision["notify"]
    assert invoice.number in d.body and "$1,200.00" in d.body and "/pay/" in d.body
    assert sales.name in d.body
    msg = session.scalars(select(OutboxMessage).where(OutboxMessage.draft_id == d.id)).one()
    assert msg.recipient == customer.contacts[0].email
    note = session.scalars(select(Note).where(Note.customer_id == customer.id)).one()
    collector = seeded.users[Persona.COLLECTOR]
    assert note.mentions == [collector.id] and note.source == "system"
    assert "friendly check-in" in note.body.lower()
    assert result.notified == [f"ar_team: {collector.name}"]
    actions = [
        e.action for e in session.scalars(select(AuditEvent).where(AuditEvent.subject_id == d.id))
    ]
    assert actions[:2] == ["nudge.requested", "nudge.decided"] and "draft.queued" in actions


def test_a_nudge_next_to_an_autopilot_touch_is_deferred_not_sent(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    # the cadence's day +7 step of this invoice falls tomorrow at 09:00 in New York (19 h away)
    invoice = seeded.invoices[0]
    invoice.due_date = NOW.date() - timedelta(days=6)
    session.commit()
    result = nudges.request_nudge(
        session,
        seeded.org.id,
        user=seeded.users[Persona.SALES],
        customer_id=seeded.customers[0].id,
        template_id="pay_link_resend",
        settings=settings,
        now=NOW,
    )
    session.commit()
    d = result.draft
    assert d.decision_outcome == "defer"
    assert "nudge.autopilot_too_close" in [r["rule_id"] for r in d.decision["reasons"]]
    assert d.status is DraftStatus.APPROVED and d.hold_reason
    not_before = datetime.fromisoformat(d.decision["not_before"])
    assert not_before >= datetime(2025, 10, 9, 13, 0, tzinfo=UTC)  # 24 h after that touch
    assert session.scalar(select(OutboxMessage.id)) is None
    assert drafts.release_deferred(session, now=not_before, settings=settings) == [d.id]
    assert d.status is DraftStatus.QUEUED


def test_quiet_hours_defer_a_nudge(session: Session, seeded: Seeded, settings: Settings) -> None:
    night = datetime(2025, 10, 8, 2, 30, tzinfo=UTC)  # 22:30 in New York
    result = nudges.request_nudge(
        session,
        seeded.org.id,
        user=seeded.users[Persona.CSM],
        customer_id=seeded.customers[1].id,
        template_id="renewal_ahead",
        settings=settings,
        now=night,
    )
    d = result.draft
    assert d.persona is DraftPersona.CSM_NUDGE
    assert d.decision_outcome == "defer"
    assert any(r["rule_id"].startswith("quiet_hours") for r in d.decision["reasons"])


@pytest.mark.parametrize(
    ("role", "template", "error"),
    [
        (Persona.SALES, "renewal_ahead", "CSM only"),
        (Persona.VIEWER, "friendly_check_in", "may not send nudges"),
        (Persona.COLLECTOR, "friendly_check_in", "may not send nudges"),
        (Persona.SALES, "made_up", "Unknown nudge template"),
    ],
)
def test_refused_nudges_change_nothing(
    session: Session,
    seeded: Seeded,
    settings: Settings,
    role: Persona,
    template: str,
    error: str,
) -> None:
    with pytest.raises(NudgeError) as err:
        nudges.request_nudge(
            session,
            seeded.org.id,
            user=seeded.users[role],
            customer_id=seeded.customers[0].id,
            template_id=template,
            settings=settings,
            now=NOW,
        )
    assert error in str(err.value)
    session.rollback()
    assert session.scalar(select(OutboxMessage.id)) is None


def test_foreign_customer_and_disputed_only_accounts(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    sales = seeded.users[Persona.SALES]
    other = Organisation(name="Other", slug="other-nudge-org")
    session.add(other)
    session.commit()
    with pytest.raises(NudgeNotFound):
        nudges.request_nudge(
            session,
            other.id,
            user=sales,
            customer_id=seeded.customers[0].id,
            template_id="friendly_check_in",
            settings=settings,
            now=NOW,
        )
    seeded.invoices[0].disputed = True
    session.commit()
    with pytest.raises(NudgeError) as err:
        nudges.request_nudge(
            session,
            seeded.org.id,
            user=sales,
            customer_id=seeded.customers[0].id,
            template_id="friendly_check_in",
            settings=settings,
            now=NOW,
        )
    assert "no open, undisputed invoice" in str(err.value)
    # naming the disputed invoice explicitly: the guardrails block it (never dunned)
    result = nudges.request_nudge(
        session,
        seeded.org.id,
        user=sales,
        customer_id=seeded.customers[0].id,
        template_id="friendly_check_in",
        invoice_id=seeded.invoices[0].id,
        settings=settings,
        now=NOW,
    )
    assert result.draft.status is DraftStatus.BLOCKED
    assert "dispute.no_dunning" in [r["rule_id"] for r in result.draft.decision["reasons"]]


def test_suggestion_confirmed_or_dismissed_by_the_owner_only(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    first = nudges.suggest_nudge(
        session,
        seeded.org.id,
        user=manager,
        customer_id=seeded.customers[0].id,
        template_id="friendly_check_in",
        settings=settings,
        notify_slack=False,
        now=NOW,
    )
    second = nudges.suggest_nudge(
        session,
        seeded.org.id,
        user=manager,
        customer_id=seeded.customers[1].id,
        template_id="friendly_check_in",
        settings=settings,
        notify_slack=False,
        now=NOW,
    )
    session.commit()
    assert first.draft.status is DraftStatus.DRAFTED
    assert seeded.users[Persona.SALES].name in first.draft.body  # written in the owner's name
    with pytest.raises(NudgeError):  # the CSM is not this account's owner
        nudges.confirm_suggestion(
            session, seeded.org.id, first.draft.id, user=seeded.users[Persona.CSM], now=NOW
        )
    session.rollback()
    sales = seeded.users[Persona.SALES]
    confirmed = nudges.confirm_suggestion(
        session, seeded.org.id, first.draft.id, user=sales, now=NOW
    )
    dismissed = nudges.dismiss_suggestion(session, seeded.org.id, second.draft.id, user=sales)
    session.commit()
    assert confirmed.draft.status is DraftStatus.QUEUED
    assert dismissed.status is DraftStatus.REJECTED
    assert dismissed.rejection_reason == "Dismissed by the account owner"
    with pytest.raises(drafts.InvalidTransition):
        nudges.confirm_suggestion(session, seeded.org.id, second.draft.id, user=sales, now=NOW)
