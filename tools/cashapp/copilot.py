"""The co-pilot's split proposals on bank lines: stored, ignored, never applied here.

Why apart from ``matching``: a ``copilot_split`` suggestion comes from a model reading the
remittance text (``agent.remittance``), not from the matcher's evidence, so it is kept beside the
matcher's suggestions (one per line, replaced when asked again) and survives nothing but a
person's decision. Accepting it is ``applying.apply_line`` like any suggestion (a person only:
the policy set cannot let plixo apply it alone); ignoring it removes it, audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from memory.models import CashLine, CashLineStatus, User, utcnow
from tools.cashapp.applying import get_line, require
from tools.cashapp.schemas import COPILOT_SPLIT, Suggestion
from tools.commitments.promises import Conflict, NotFound
from tools.kit import audit

#: Who stores a proposal made on import (a person who asks on the page is named instead).
COPILOT_ACTOR = "Cash App Assist (co-pilot)"


def proposal_of(line: CashLine) -> dict[str, Any] | None:
    """The line's co-pilot proposal as stored, or None."""
    return next((s for s in line.suggestions or [] if s.get("kind") == COPILOT_SPLIT), None)


def _waiting(session: Session, org_id: int, line_id: int) -> CashLine:
    line = get_line(session, org_id, line_id)
    if line.status != CashLineStatus.EXCEPTION:
        raise Conflict(
            f"Only a line waiting in the exceptions queue takes a proposal ({line.status})."
        )
    return line


def store_proposal(
    session: Session,
    org_id: int,
    line_id: int,
    suggestion: Suggestion,
    *,
    actor: User | str = COPILOT_ACTOR,
    now: datetime | None = None,
) -> CashLine:
    """Put the co-pilot's split on the line (after the matcher's suggestions), audited."""
    if suggestion.kind != COPILOT_SPLIT:
        raise ValueError(f"not a co-pilot proposal: {suggestion.kind}")
    if isinstance(actor, User):
        require(actor, "apply_cash")
    line = _waiting(session, org_id, line_id)
    kept = [s for s in line.suggestions or [] if s.get("kind") != COPILOT_SPLIT]
    line.suggestions = [*kept, suggestion.as_dict()]  # a new list: the JSON column sees it
    audit.record(
        session,
        org_id,
        actor=actor,
        action="cash.copilot_proposed",
        subject_type="cash_line",
        subject_id=line.id,
        detail={
            "amount_minor": line.amount_minor,
            "currency": line.currency,
            "score": suggestion.score,
            "allocations": [a.__dict__ for a in suggestion.allocations],
            "proposed_by": suggestion.proposed_by,
            "at": (now or utcnow()).isoformat(),
        },
    )
    session.flush()
    return line


def ignore_proposal(
    session: Session,
    org_id: int,
    line_id: int,
    *,
    actor: User | str,
    now: datetime | None = None,
) -> CashLine:
    """A person sets the co-pilot's split aside: it is removed from the line, audited."""
    require(actor, "apply_cash")
    line = _waiting(session, org_id, line_id)
    proposal = proposal_of(line)
    if proposal is None:
        raise NotFound("This line has no co-pilot proposal to ignore.")
    line.suggestions = [s for s in line.suggestions if s.get("kind") != COPILOT_SPLIT]
    audit.record(
        session,
        org_id,
        actor=actor,
        action="cash.copilot_ignored",
        subject_type="cash_line",
        subject_id=line.id,
        detail={
            "allocations": proposal.get("allocations", []),
            "proposed_by": proposal.get("proposed_by"),
            "at": (now or utcnow()).isoformat(),
        },
    )
    session.flush()
    return line
