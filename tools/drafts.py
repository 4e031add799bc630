"""The draft lifecycle: drafted → blocked | deferred | pending review → approved | edited |
rejected → queued → sent | failed. Every transition writes an audit event.

Creation (``store_new_draft``) maps the policy decision to the first state; review transitions
live beside it so the whole lifecycle has one home.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from memory.models import Draft, DraftStatus, User
from tools import audit

_FIRST_STATE = {
    "block": DraftStatus.BLOCKED,
    "defer": DraftStatus.DEFERRED,
    "needs_approval": DraftStatus.PENDING_REVIEW,
    "allow": DraftStatus.APPROVED,
}


def status_for_decision(outcome: str, *, grounding_blocked: bool = False) -> DraftStatus:
    """The state a fresh draft enters: the policy decision decides, a grounding failure blocks."""
    if grounding_blocked:
        return DraftStatus.BLOCKED
    try:
        return _FIRST_STATE[outcome]
    except KeyError:  # fail closed on anything the engine did not say
        return DraftStatus.BLOCKED


def store_new_draft(
    session: Session,
    draft: Draft,
    *,
    decision: dict[str, Any],
    actor: User | str,
    grounding_blocked: bool = False,
) -> Draft:
    """Persist a new draft with its decision and first state, and audit the transition."""
    draft.decision = decision
    draft.decision_outcome = str(decision.get("outcome"))
    draft.status = status_for_decision(draft.decision_outcome, grounding_blocked=grounding_blocked)
    session.add(draft)
    session.flush()
    audit.record(
        session,
        draft.org_id,
        actor=actor,
        action="draft.created",
        subject_type="draft",
        subject_id=draft.id,
        from_state=DraftStatus.DRAFTED.value,
        to_state=draft.status.value,
        detail={"outcome": draft.decision_outcome, "run_key": draft.run_key},
    )
    return draft
