"""Every change of a draft's status, in one place: the table of allowed moves and the audit event.

Why one home: a draft's status decides what may leave the building. When review, revision, nudges,
the outbox and the send-time re-check each assigned ``Draft.status`` themselves, nothing stopped a
rejected draft from being queued or a sent one from going back to review, and an audit event could
be forgotten. Here a move that is not in ``ALLOWED`` raises ``IllegalTransition`` (409: the draft
changed under the caller) and every move writes one audit event with its from and to states.

The lifecycle: a new draft enters ``drafted`` (a nudge waiting for its decision) or directly the
state its policy decision gives (``blocked``, ``deferred``, ``pending_review``, ``approved``), or
``held`` when the co-pilot could not write it. People edit, revise, approve or reject; approved
drafts are ``queued`` in the outbox, then ``sent`` or ``failed``; a send-time re-check can send a
queued draft back to review; a newer draft for the same invoice ``supersedes`` a waiting one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from memory.errors import PlixoError
from memory.models import AuditEvent, Draft, DraftStatus, User
from tools.kit import audit

S = DraftStatus

#: The states a new draft may start in.
FIRST_STATES = frozenset({S.DRAFTED, S.BLOCKED, S.DEFERRED, S.PENDING_REVIEW, S.APPROVED, S.HELD})

_REWORKED = frozenset({S.EDITED, S.BLOCKED, S.PENDING_REVIEW, S.REJECTED})  # an edit or revision

#: state -> the states it may move to. Re-deciding a draft may leave it where it was.
ALLOWED: dict[DraftStatus, frozenset[DraftStatus]] = {
    S.DRAFTED: frozenset({S.BLOCKED, S.DEFERRED, S.PENDING_REVIEW, S.APPROVED, S.HELD, S.REJECTED}),
    S.PENDING_REVIEW: _REWORKED | {S.APPROVED, S.SUPERSEDED},
    S.EDITED: _REWORKED | {S.APPROVED, S.SUPERSEDED},
    S.BLOCKED: _REWORKED,
    S.DEFERRED: _REWORKED | {S.SUPERSEDED},
    S.HELD: _REWORKED | {S.SUPERSEDED},
    # released (queued), refused at release (blocked / back to review) or rejected before it left
    S.APPROVED: frozenset({S.QUEUED, S.BLOCKED, S.PENDING_REVIEW, S.REJECTED}),
    # delivered, given up, or withdrawn at send time because its wording is no longer true
    S.QUEUED: frozenset({S.SENT, S.FAILED, S.PENDING_REVIEW}),
    S.FAILED: frozenset({S.QUEUED}),  # a person resends it
    S.SENT: frozenset(),
    S.REJECTED: frozenset(),
    S.SUPERSEDED: frozenset(),
}


class IllegalTransition(PlixoError):
    """The draft is not in a state this action applies to (it changed under the caller)."""

    http_status = 409


def can_move(frm: DraftStatus, to: DraftStatus) -> bool:
    """Is ``frm`` -> ``to`` a move of the lifecycle?"""
    return to in ALLOWED[frm]


def begin(draft: Draft, status: DraftStatus) -> None:
    """Give a draft not yet stored its first state; ``record_created`` audits it once flushed."""
    if status not in FIRST_STATES:
        raise IllegalTransition(f"A new draft cannot start as {status.value}.")
    draft.status = status


def record_created(
    session: Session, draft: Draft, *, actor: User | str, detail: dict[str, Any] | None = None
) -> None:
    """The ``draft.created`` event of a flushed new draft (from ``drafted`` to its first state)."""
    session.add(AuditEvent(**created_row(draft, actor=actor, detail=detail)))


def created_row(
    draft: Draft, *, actor: User | str, detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The columns of ``record_created``'s event, for a batch written in one INSERT
    (``audit.record_many``: Autopilot stores drafts by the hundred, and an ORM object per event
    cost more than the INSERT)."""
    return audit.row(
        draft.org_id,
        actor=actor,
        action="draft.created",
        subject_type="draft",
        subject_id=draft.id,
        from_state=S.DRAFTED.value,
        to_state=draft.status.value,
        detail=detail,
    )


def move(
    session: Session,
    draft: Draft,
    to: DraftStatus,
    *,
    actor: User | str,
    action: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Move ``draft`` to ``to`` if the lifecycle allows it, and audit the move as ``action``."""
    frm = draft.status
    if not can_move(frm, to):
        raise IllegalTransition(
            f"Draft {draft.id} is {frm.value.replace('_', ' ')}; it cannot become "
            f"{to.value.replace('_', ' ')}. Reload it to see what changed."
        )
    draft.status = to
    audit.record(
        session,
        draft.org_id,
        actor=actor,
        action=action,
        subject_type="draft",
        subject_id=draft.id,
        from_state=frm.value,
        to_state=to.value,
        detail=detail,
    )
