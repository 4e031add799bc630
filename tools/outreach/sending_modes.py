"""Sending modes: Shadow Mode, Autopilot, the maintenance toggle and the cron pause.

Per organisation: Shadow Mode (humans approve everything), maintenance and cron pause (nothing
leaves: the outbox worker skips the organisation). Per segment: Shadow Mode and Autopilot. Who may
flip them is the access matrix's ``set_sending_mode``; *whether* they may be flipped is the
guardrails' (enabling Autopilot is gated by the Data-Ready score and a verified sending domain).
Every change is audited with the decision that allowed it; refusals change nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory import clock
from memory.errors import PlixoError
from memory.models import Organisation, Segment, User
from policies.access import allowed
from policies.engine import decide
from tools.delivery.sending_domain import recheck_before_autopilot as recheck_domain
from tools.drafts.shadow_agreement import segment_record
from tools.insights.readiness import data_ready
from tools.kit import audit
from tools.kit.authz import guarded
from tools.ledger.policy_overrides import policy_set_for

OrgSwitch = Literal["shadow_mode", "maintenance", "cron_pause"]
SegmentSwitch = Literal["shadow_mode", "autopilot"]

_ORG_COLUMNS: dict[str, str] = {
    "shadow_mode": "shadow_mode",
    "maintenance": "maintenance",
    "cron_pause": "cron_paused",
}


class ModeRefused(PlixoError):
    """The caller may not flip this switch now; the message gives the matrix's or a rule's why.

    ``agreement``: when enabling Autopilot, the segment's Shadow Mode figures the guardrails read
    (``tools.drafts.shadow_agreement.Figures`` as a dict), so a refusal shows the evidence.
    """

    http_status = 403

    def __init__(
        self,
        message: str,
        reasons: list[dict[str, Any]] | None = None,
        agreement: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.reasons = reasons or []
        self.agreement = agreement

    def body(self) -> dict[str, Any]:
        """The message and the reasons (always, even none), and the Shadow Mode figures the
        guardrails read when enabling Autopilot was refused."""
        out: dict[str, Any] = {"detail": str(self), "reasons": self.reasons}
        if self.agreement is not None:
            out["shadow_agreement"] = self.agreement
        return out


class SegmentNotFound(PlixoError, LookupError):
    """No such segment in the caller's organisation (404)."""

    http_status = 404


def _refused(role: str, permission: str) -> ModeRefused:
    return ModeRefused(f"{role} may not switch sending modes.")


def _foreign() -> SegmentNotFound:
    return SegmentNotFound("No such segment in your organisation.")


@dataclass
class SegmentState:
    id: int
    name: str
    shadow_mode: bool
    autopilot_enabled: bool


@dataclass
class SendingState:
    shadow_mode: bool
    maintenance: bool
    cron_paused: bool
    segments: list[SegmentState] = field(default_factory=list)

    @property
    def nothing_leaves(self) -> bool:
        return self.maintenance or self.cron_paused


def _org(session: Session, org_id: int) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None:
        raise LookupError(f"organisation {org_id} does not exist")
    return org


def sending_state(session: Session, org_id: int) -> SendingState:
    org = _org(session, org_id)
    segments = session.scalars(
        select(Segment).where(Segment.org_id == org_id).order_by(Segment.name)
    ).all()
    return SendingState(
        shadow_mode=org.shadow_mode,
        maintenance=org.maintenance,
        cron_paused=org.cron_paused,
        segments=[SegmentState(s.id, s.name, s.shadow_mode, s.autopilot_enabled) for s in segments],
    )


def may_send(session: Session, org_id: int) -> tuple[bool, str | None]:
    """Whether anything may leave the organisation now, and if not, why."""
    org = _org(session, org_id)
    if org.maintenance:
        return False, "The maintenance toggle is on: nothing leaves."
    if org.cron_paused:
        return False, "The cron pause is on: nothing leaves."
    return True, None


def _check_permission(user: User) -> None:
    if not allowed(user.role.value, "set_sending_mode"):
        raise ModeRefused(f"{user.role.value} may not switch sending modes.")


def _enforce(decision_dict: dict[str, Any], what: str) -> None:
    outcome = decision_dict.get("outcome")
    if outcome == "allow":
        return
    reasons = [r for r in decision_dict.get("reasons", []) if r.get("outcome") == outcome]
    text = "; ".join(str(r.get("message")) for r in reasons) or str(outcome)
    raise ModeRefused(f"Cannot {what}: {text}", reasons)


def _state(value: bool) -> str:
    return "on" if value else "off"


@guarded("set_sending_mode", actor="user", refuse=_refused, foreign=_foreign)
def set_org_switch(
    session: Session,
    org_id: int,
    *,
    user: User,
    switch: OrgSwitch,
    value: bool,
    comment: str | None = None,
) -> bool:
    """Flip an organisation switch; returns whether anything changed (no-ops are not audited)."""
    if switch not in _ORG_COLUMNS:
        raise ModeRefused(f"Unknown switch {switch!r}; use one of {', '.join(_ORG_COLUMNS)}.")
    _check_permission(user)
    org = _org(session, org_id)
    column = _ORG_COLUMNS[switch]
    before = bool(getattr(org, column))
    if before == value:
        return False
    decision = decide(
        "set_sending_mode",
        {"actor_role": user.role.value, "switch": switch, "value": value, "scope": "org"},
        policy_set_for(session, org_id),
    ).as_dict()
    _enforce(decision, f"turn {switch.replace('_', ' ')} {_state(value)}")
    setattr(org, column, value)
    audit.record(
        session,
        org_id,
        actor=user,
        action="sending_mode.changed",
        subject_type="organisation",
        subject_id=org_id,
        from_state=_state(before),
        to_state=_state(value),
        detail={"switch": switch, "scope": "org", "decision": decision, "comment": comment},
    )
    session.flush()
    return True


def _decide_enable_autopilot(
    session: Session, org: Organisation, segment: Segment, user: User, now: datetime | None
) -> dict[str, Any]:
    """Ask the guardrails whether Autopilot may be switched on for ``segment``: Data-Ready, the
    sending domain, and the segment's Shadow Mode record (the policy's minimum share of drafts
    approved unchanged); refused with the figures, nothing changed."""
    score = data_ready(session, org.id, now or clock.now()).score
    record = segment_record(session, org.id, segment.id)
    decision = decide(
        "enable_autopilot",
        {
            "actor_role": user.role.value,
            "segment": segment.name,
            "data_ready_score": score,
            "sending_domain_verified": org.sending_domain_verified,
            "shadow_decided": record.decided,
            "shadow_unchanged": record.unchanged,
        },
        policy_set_for(session, org.id),
    ).as_dict()
    decision["shadow_agreement"] = asdict(record)
    try:
        _enforce(decision, f"enable Autopilot for {segment.name}")
    except ModeRefused as exc:
        exc.agreement = asdict(record)
        raise
    return decision


@guarded("set_sending_mode", actor="user", refuse=_refused, foreign=_foreign)
def set_segment_switch(
    session: Session,
    org_id: int,
    segment_id: int,
    *,
    user: User,
    switch: SegmentSwitch,
    value: bool,
    comment: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Flip a segment's Shadow Mode or Autopilot; enabling Autopilot must pass its gating rules."""
    _check_permission(user)
    segment = session.scalars(
        select(Segment).where(Segment.id == segment_id, Segment.org_id == org_id)
    ).first()
    if segment is None:
        raise SegmentNotFound(f"No segment {segment_id} in your organisation.")
    org = _org(session, org_id)
    policy_set = policy_set_for(session, org_id)
    decision: dict[str, Any] | None = None
    if switch == "shadow_mode":
        before = segment.shadow_mode
        if before == value:
            return False
        decision = decide(
            "set_sending_mode",
            {
                "actor_role": user.role.value,
                "switch": "shadow_mode",
                "value": value,
                "scope": "segment",
                "segment": segment.name,
            },
            policy_set,
        ).as_dict()
        _enforce(decision, f"turn Shadow Mode {_state(value)} for {segment.name}")
        segment.shadow_mode = value
    elif switch == "autopilot":
        before = segment.autopilot_enabled
        if before == value:
            return False
        if value:
            recheck_domain(session, org_id, now or clock.now())  # the domain's DNS first
            decision = _decide_enable_autopilot(session, org, segment, user, now)
        # Turning Autopilot off only makes sending stricter: the matrix check above suffices.
        segment.autopilot_enabled = value
    else:
        raise ModeRefused(f"Unknown switch {switch!r}; use shadow_mode or autopilot.")
    audit.record(
        session,
        org_id,
        actor=user,
        action="sending_mode.changed",
        subject_type="segment",
        subject_id=segment.id,
        from_state=_state(before),
        to_state=_state(value),
        detail={
            "switch": switch,
            "scope": "segment",
            "segment": segment.name,
            "decision": decision,
            "comment": comment,
        },
    )
    session.flush()
    return True
