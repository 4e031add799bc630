"""The audit trail: one row per transition, switch or decision, in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from memory.models import AuditEvent, User


def record(
    session: Session,
    org_id: int,
    *,
    actor: User | str,
    action: str,
    subject_type: str,
    subject_id: int | None,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write who did what to which subject, from which state to which (committed by the caller)."""
    event = AuditEvent(
        org_id=org_id,
        actor_user_id=actor.id if isinstance(actor, User) else None,
        actor=f"{actor.name} ({actor.role.value})" if isinstance(actor, User) else actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        from_state=from_state,
        to_state=to_state,
        detail=detail or {},
    )
    session.add(event)
    return event
