"""Autopilot reads each cadence step's own mode: a step set to Shadow Mode is drafted for review
even in a segment on Autopilot; a step on Autopilot (or with no mode of its own) follows the
segment."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent.autopilot import run_autopilot
from memory.config import Settings
from memory.models import CadenceStepMode, Draft, DraftStatus
from tests.agent.factories import AS_OF, NOW, small_ledger


def _run(sessions: sessionmaker[Session], org_id: int, settings: Settings) -> Draft:
    summary = run_autopilot(sessions, org_id, as_of=AS_OF, settings=settings, now=NOW)
    assert summary.drafted == 1 and summary.errors == 0
    with sessions() as s:
        return s.scalars(select(Draft).where(Draft.org_id == org_id)).one()


def test_a_step_in_shadow_mode_needs_review_in_an_autopilot_segment(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    led = small_ledger(session, shadow=False)
    led.segment.autopilot_enabled = True
    step = next(s for s in led.cadence.steps if s.template == "friendly_reminder")
    session.add(CadenceStepMode(step_id=step.id, org_id=led.org.id, mode="shadow"))
    session.commit()

    draft = _run(sessions, led.org.id, settings)
    assert draft.decision_outcome == "needs_approval"
    assert draft.status is DraftStatus.PENDING_REVIEW
    reason = next(r for r in draft.decision["reasons"] if r["rule_id"] == "shadow.review_required")
    assert "Shadow Mode is on for this cadence step" in reason["message"]


def test_a_step_on_autopilot_follows_the_segment(
    session: Session, sessions: sessionmaker[Session], settings: Settings
) -> None:
    led = small_ledger(session, shadow=False)
    led.segment.autopilot_enabled = True
    step = next(s for s in led.cadence.steps if s.template == "friendly_reminder")
    session.add(CadenceStepMode(step_id=step.id, org_id=led.org.id, mode="autopilot"))
    session.commit()

    draft = _run(sessions, led.org.id, settings)
    assert draft.decision_outcome == "allow" and draft.status is DraftStatus.APPROVED
