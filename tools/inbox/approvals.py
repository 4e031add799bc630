"""The approvals inbox: what waits for a Controller or Legal, and deciding it with a rationale.

Three kinds of subject wait for someone above the person who raised them: payment plans over the
proposer's limit (or with terms Legal must read), credits above the proposer's credit limit, and
drafts the guardrails sent up (legal language, an unbacked concession). Each item says what
changed, the guardrails' own sentences, who may decide it, and how long it has waited against the
one-business-day target (the organisation's calendar: weekends and the policy's holidays do not
count). Deciding goes through the tools that own each subject (``plans.approve_plan``,
``disputes.approve_credit``, ``drafts.approve_draft`` ...), so every check they make applies; this
module adds only the rule that a decision from the inbox carries a written rationale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory import business_day, clock
from memory.models import (
    Approval,
    AuditEvent,
    Customer,
    Dispute,
    DisputeStatus,
    Draft,
    DraftStatus,
    Invoice,
    PaymentPlan,
    PlanStatus,
    User,
    utcnow,
)
from memory.money import format_money
from policies.policy_set import PolicySet
from tools.commitments import disputes, plans
from tools.commitments.disputes import get_dispute
from tools.commitments.promises import CommitmentError, NotFound, get_promise
from tools.drafts import service as drafts
from tools.drafts.service import REVIEWABLE, required_roles, role_satisfies
from tools.kit import audit, labels
from tools.kit.authz import guarded
from tools.ledger.policy_overrides import policy_set_for

Kind = Literal["plan", "credit", "draft"]
KINDS: tuple[Kind, ...] = ("plan", "credit", "draft")
KIND_LABELS: dict[str, str] = {"plan": "Payment plan", "credit": "Credit", "draft": "Message"}
TARGET_BUSINESS_DAYS = 1
MAX_RATIONALE_CHARS = 2000
_ACTIVE_DISPUTES = (
    DisputeStatus.OPEN,
    DisputeStatus.INVESTIGATING,
    DisputeStatus.AWAITING_CUSTOMER,
    DisputeStatus.ESCALATED_LEGAL,
)


class RationaleRequired(CommitmentError):
    """A decision from the inbox without a written reason: nothing was changed."""


@dataclass(frozen=True)
class ApprovalItem:
    """One subject waiting for a decision, in words a person reads (no ids or status codes)."""

    kind: Kind
    subject_id: int
    customer_id: int
    customer_name: str
    title: str
    amount_minor: int | None
    currency: str | None
    amount_text: str | None
    changes: list[str]
    reasons: list[str]
    awaiting_roles: list[str]
    raised_by: str | None
    waiting_since: datetime
    due_at: datetime
    overdue: bool
    waiting_text: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def kind_label(self) -> str:
        return KIND_LABELS[self.kind]


# --- the one-business-day clock -----------------------------------------------------------------


def _is_business_day(day: date, weekend: set[int], holidays: set[date]) -> bool:
    return day.weekday() not in weekend and day not in holidays


def _next_business_day(day: date, weekend: set[int], holidays: set[date]) -> date:
    nxt = day + timedelta(days=1)
    while not _is_business_day(nxt, weekend, holidays):
        nxt += timedelta(days=1)
    return nxt


def approval_due(
    submitted: datetime, tz_name: str | None, weekend: set[int], holidays: set[date]
) -> datetime:
    """One business day after ``submitted`` on the organisation's calendar: the same local time
    on the next business day; raised on a weekend or holiday, the clock starts the next business
    morning (so Friday 17:00 is due Monday 17:00, Saturday noon is due Tuesday 00:00)."""
    tz = clock.zone(tz_name)
    local = submitted.astimezone(tz)
    day, at = local.date(), local.time().replace(tzinfo=None)
    if not _is_business_day(day, weekend, holidays):
        day, at = _next_business_day(day, weekend, holidays), time(0)
    due_day = _next_business_day(day, weekend, holidays)
    return datetime.combine(due_day, at, tzinfo=tz)  # on the organisation's clock


def waiting_words(since: datetime, now: datetime) -> str:
    """'5 minutes', '3 hours', '2 days': how long it has waited, in plain words."""
    secs = max(0, int((now - since).total_seconds()))
    if secs < 60:
        return "less than a minute"
    if secs < 3600:
        n, unit = max(1, secs // 60), "minute"
    elif secs < 2 * 86400:
        n, unit = secs // 3600, "hour"
    else:
        n, unit = secs // 86400, "day"
    return f"{n} {unit}{'' if n == 1 else 's'}"


# --- building the items --------------------------------------------------------------------------


def _deciding_sentences(decision: dict[str, Any] | None) -> list[str]:
    decision = decision or {}
    outcome = decision.get("outcome")
    return [
        str(r["message"])
        for r in decision.get("reasons") or []
        if isinstance(r, dict) and r.get("outcome") == outcome and r.get("message")
    ]


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _plan_item(
    session: Session, plan: PaymentPlan, customer: Customer, day: Callable[[date], str]
) -> dict[str, Any]:
    cur = plan.currency
    inst = plan.installments
    numbers = ", ".join(i.number for i in plans.invoices_of(plan))
    count = len(inst)
    changes = [
        f"New plan of {count} installment{'' if count == 1 else 's'} from "
        f"{day(inst[0].due_date)} to {day(inst[-1].due_date)}, settling {numbers}.",
    ]
    if plan.discount_minor:
        changes.append(f"Forgives {format_money(plan.discount_minor, cur)} on completion.")
    if plan.from_promise_id:
        try:
            promise = get_promise(session, plan.org_id, plan.from_promise_id)
            changes.append(
                f"Replaces the promise of {format_money(promise.amount_minor, promise.currency)} "
                f"for {day(promise.promised_date)}."
            )
        except NotFound:
            pass
    if plan.non_standard_terms:
        changes.append(f"Non-standard terms: {plan.terms_note}")
    proposer = session.get(User, plan.proposed_by_user_id) if plan.proposed_by_user_id else None
    ps = policy_set_for(session, plan.org_id)
    # A plan only proposed (a CSM's) within the guardrails still waits for the escalation role.
    awaiting = list((plan.decision or {}).get("approver_roles") or [ps.plans.escalation_role])
    if plans.legal_signed(session, plan):  # Legal has signed; only the others remain
        awaiting = [r for r in awaiting if r != ps.plans.legal_role]
    return {
        "kind": "plan",
        "subject_id": plan.id,
        "title": f"Payment plan for {customer.name}",
        "amount_minor": plan.total_minor,
        "currency": cur,
        "changes": changes,
        "reasons": _deciding_sentences(plan.decision),
        "awaiting_roles": awaiting,
        "raised_by": f"{proposer.name} ({proposer.role.value})" if proposer else "the payer",
        "waiting_since": plan.created_at,
        "detail": {"schedule": [(i.due_date, format_money(i.amount_minor, cur)) for i in inst]},
    }


def _credit_proposal(session: Session, dispute: Dispute) -> AuditEvent | None:
    return session.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.org_id == dispute.org_id,
            AuditEvent.action == "dispute.credit_proposed",
            AuditEvent.subject_type == "dispute",
            AuditEvent.subject_id == dispute.id,
        )
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).first()


def _credit_item(session: Session, dispute: Dispute, customer: Customer) -> dict[str, Any] | None:
    event = _credit_proposal(session, dispute)
    if event is None:
        return None
    invoice = session.get(Invoice, dispute.invoice_id)
    if invoice is None:
        return None
    cur = invoice.currency
    decision = (event.detail or {}).get("decision") or {}
    after = invoice.balance_minor - dispute.credit_minor
    changes = [
        f"Credit of {format_money(dispute.credit_minor, cur)} on {invoice.number}: the balance "
        f"goes from {format_money(invoice.balance_minor, cur)} to {format_money(after, cur)} and "
        "the dispute is resolved.",
    ]
    note = (event.detail or {}).get("note")
    if note:
        changes.append(f"Note: {note}")
    return {
        "kind": "credit",
        "subject_id": dispute.id,
        "title": f"Credit for {customer.name}",
        "amount_minor": dispute.credit_minor,
        "currency": cur,
        "changes": changes,
        "reasons": _deciding_sentences(decision),
        "awaiting_roles": list(decision.get("approver_roles") or []),
        "raised_by": event.actor,
        "waiting_since": event.created_at,
        "detail": {},
    }


def _draft_item(
    session: Session, draft: Draft, customer: Customer, reviewer_role: str
) -> dict[str, Any] | None:
    roles = required_roles(draft.decision or {})
    # Only drafts sent above the everyday reviewer (Shadow Mode review is the review queue's).
    above = [r for r in roles if not role_satisfies(reviewer_role, r)]
    if not above:
        return None
    changes = [f"Message to {draft.recipient or customer.name}: “{draft.subject}”."]
    if draft.status == DraftStatus.EDITED:
        changes.append("Edited by a person after it was drafted.")
    return {
        "kind": "draft",
        "subject_id": draft.id,
        "title": f"Message to {customer.name}",
        "amount_minor": None,
        "currency": None,
        "changes": changes,
        "reasons": _deciding_sentences(draft.decision),
        "awaiting_roles": above,
        "raised_by": None,
        "waiting_since": draft.updated_at or draft.created_at,
        "detail": {"body": draft.body, "version": draft.version},
    }


def _raw_pending(
    session: Session, org_id: int, ps: PolicySet, limit: int, day: Callable[[date], str]
) -> list[tuple[dict[str, Any] | None, Customer]]:
    """Plans waiting for approval, credits on active disputes and drafts needing approval, each
    with its customer (read once per customer); None where an item needs no one's approval."""
    raw: list[tuple[dict[str, Any] | None, Customer]] = []
    customers: dict[int, Customer] = {}

    def customer(cid: int) -> Customer:
        if cid not in customers:
            found = session.get(Customer, cid)
            assert found is not None
            customers[cid] = found
        return customers[cid]

    for plan in session.scalars(
        select(PaymentPlan)
        .where(
            PaymentPlan.org_id == org_id,
            PaymentPlan.status.in_([PlanStatus.PENDING_APPROVAL, PlanStatus.PROPOSED]),
        )
        .order_by(PaymentPlan.created_at)
        .limit(limit)
    ):
        c = customer(plan.customer_id)
        raw.append((_plan_item(session, plan, c, day), c))
    for dispute in session.scalars(
        select(Dispute)
        .where(
            Dispute.org_id == org_id,
            Dispute.status.in_(_ACTIVE_DISPUTES),
            Dispute.credit_minor > 0,
        )
        .order_by(Dispute.id)
        .limit(limit)
    ):
        c = customer(dispute.customer_id)
        raw.append((_credit_item(session, dispute, c), c))
    for draft in session.scalars(
        select(Draft)
        .where(
            Draft.org_id == org_id,
            Draft.status.in_(list(REVIEWABLE)),
            Draft.decision_outcome == "needs_approval",
        )
        .order_by(Draft.created_at)
        .limit(limit)
    ):
        c = customer(draft.customer_id)
        raw.append((_draft_item(session, draft, c, ps.shadow_mode.reviewer_min_role), c))
    return raw


def pending_items(
    session: Session,
    org_id: int,
    *,
    viewer: User | None = None,
    now: datetime | None = None,
    limit: int = 200,
    day: Callable[[date], str] = labels.day,
) -> list[ApprovalItem]:
    """Everything waiting above someone's limit, oldest first. With ``viewer``: only what their
    role may decide (the Controller's plans and credits, Legal's terms and legal language).
    ``day`` writes the dates in the sentences (the panel passes the reader's locale)."""
    now = now or utcnow()
    ps = policy_set_for(session, org_id)
    tz = business_day.org_zone(session, org_id)
    weekend = {d.number for d in ps.quiet_hours.weekend_days}
    holidays = set(ps.quiet_hours.holidays)
    raw = _raw_pending(session, org_id, ps, limit, day)
    items: list[ApprovalItem] = []
    for data, cust in raw:
        if data is None:
            continue
        if viewer is not None and not any(
            role_satisfies(viewer.role.value, r) for r in data["awaiting_roles"]
        ):
            continue
        since = _aware(data.pop("waiting_since"))
        due = approval_due(since, tz, weekend, holidays)
        cur = data["currency"]
        amount = data["amount_minor"]
        items.append(
            ApprovalItem(
                customer_id=cust.id,
                customer_name=cust.name,
                amount_text=format_money(amount, cur) if cur and amount is not None else None,
                waiting_since=since,
                due_at=due,
                overdue=now > due,
                waiting_text=waiting_words(since, now),
                **data,
            )
        )
    items.sort(key=lambda i: i.waiting_since)
    return items


def get_item(
    session: Session, org_id: int, kind: str, subject_id: int, *, now: datetime | None = None
) -> ApprovalItem:
    for item in pending_items(session, org_id, now=now):
        if item.kind == kind and item.subject_id == subject_id:
            return item
    raise NotFound("Nothing of that kind is waiting for approval in your organisation.")


# --- deciding ------------------------------------------------------------------------------------


def clean_rationale(rationale: str | None) -> str:
    text = (rationale or "").strip()
    if not text:
        raise RationaleRequired(
            "Write why you approve or reject it; the rationale is kept with the decision."
        )
    if len(text) > MAX_RATIONALE_CHARS:
        raise RationaleRequired(f"Keep the rationale under {MAX_RATIONALE_CHARS} characters.")
    return text


def _note_rationale(
    session: Session, org_id: int, kind: str, subject_id: int, user: User, text: str, verdict: str
) -> None:
    """Keep the rationale on the approval row the owning tool just wrote (and in the trail)."""
    row = session.scalars(
        select(Approval)
        .where(
            Approval.org_id == org_id,
            Approval.subject_type == kind,
            Approval.subject_id == subject_id,
            Approval.approver_user_id == user.id,
        )
        .order_by(Approval.id.desc())
        .limit(1)
    ).first()
    if row is not None and not row.reason:
        row.reason = text
    audit.record(
        session,
        org_id,
        actor=user,
        action=f"approval.{verdict}",
        subject_type=kind,
        subject_id=subject_id,
        detail={"rationale": text},
    )


def decide(
    session: Session,
    org_id: int,
    kind: str,
    subject_id: int,
    *,
    user: User,
    approve: bool,
    rationale: str | None,
    now: datetime | None = None,
) -> str:
    """Approve or reject one inbox item with a rationale; the owning tool checks the rest (the
    access matrix, the guardrails for this approver, the subject's state). Returns a sentence."""

    text = clean_rationale(rationale)
    if kind not in KINDS:
        raise NotFound("Nothing of that kind is waiting for approval.")
    now = now or utcnow()
    verdict = "approved" if approve else "rejected"
    if kind == "plan":
        if approve:
            out = plans.approve_plan(
                session, org_id, subject_id, approver=user, rationale=text, now=now
            )
            waiting = out.plan.status in plans.UNDECIDED
            message = (
                f"Approved; it still waits for {', '.join(out.awaiting_roles)}."
                if waiting
                else "Plan approved: it is active and the payer can see it."
            )
        else:
            plans.reject_plan(session, org_id, subject_id, approver=user, reason=text, now=now)
            message = "Plan rejected."
    elif kind == "credit":
        if approve:
            disputes.approve_credit(session, org_id, subject_id, approver=user, now=now)
            message = "Credit granted: the balance is lower and the dispute resolved."
        else:
            decline_credit(session, org_id, subject_id, actor=user, reason=text, now=now)
            message = "Credit declined: the dispute stays open."
    else:
        draft = drafts.get_draft(session, org_id, subject_id)
        if approve:
            drafts.approve_draft(
                session, org_id, subject_id, user=user, expected_version=draft.version, now=now
            )
            message = "Message approved for sending."
        else:
            drafts.reject_draft(
                session,
                org_id,
                subject_id,
                user=user,
                expected_version=draft.version,
                reason=text,
            )
            message = "Message rejected."
    _note_rationale(session, org_id, kind, subject_id, user, text, verdict)
    session.flush()
    return message


@guarded("grant_credit", **plans.COMMITMENT_GUARD)
def decline_credit(
    session: Session,
    org_id: int,
    dispute_id: int,
    *,
    actor: User,
    reason: str,
    now: datetime | None = None,
) -> Dispute:
    """Turn down a proposed credit: the dispute stays open with no credit waiting."""

    now = now or utcnow()
    text = clean_rationale(reason)
    dispute = get_dispute(session, org_id, dispute_id)
    if dispute.status not in _ACTIVE_DISPUTES or dispute.credit_minor <= 0:
        raise plans.Conflict("This dispute has no credit waiting for a decision.")
    declined = dispute.credit_minor
    dispute.credit_minor = 0
    session.add(
        Approval(
            org_id=org_id,
            subject_type="credit",
            subject_id=dispute.id,
            approver_user_id=actor.id,
            outcome="rejected",
            reason=text,
            created_at=now,
        )
    )
    audit.record(
        session,
        org_id,
        actor=actor,
        action="dispute.credit_declined",
        subject_type="dispute",
        subject_id=dispute.id,
        from_state=dispute.status.value,
        to_state=dispute.status.value,
        detail={"credit_minor": declined, "reason": text},
    )
    session.flush()
    return dispute


def counts_by_kind(items: Sequence[ApprovalItem]) -> dict[str, int]:
    out: dict[str, int] = dict.fromkeys(KINDS, 0)
    for item in items:
        out[item.kind] += 1
    return out
