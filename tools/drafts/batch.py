"""Batch approval for Collections Managers: pending drafts grouped so like is decided with like.

Groups are keyed by segment, cadence step and the policy reasons that asked for a human, because a
manager approving "all step-2 reminders in SMB that only need review for Shadow Mode" is making one
decision, while a draft that also needs Legal is a different one. Each item of a batch is decided in
its own savepoint: one refused item (over the manager's limit, edited meanwhile, blocked by a
guardrail now) is reported with its reason and does not undo the others. Every item is audited
through the draft lifecycle, and the batch itself gets one audit event with its counts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from memory import clock
from memory.errors import PlixoError
from memory.models import CadenceStep, Customer, Draft, Invoice, Segment, User
from tools.drafts.service import (
    QUEUE_STATES,
    DraftError,
    Rechecker,
    approval_problem,
    approve_draft,
    new_batch_id,
    reject_draft,
)
from tools.kit import audit
from tools.kit.authz import guarded

MAX_BATCH = 500


@dataclass
class BatchItem:
    draft_id: int
    version: int
    customer: str
    subject: str
    invoice_number: str | None
    amount_minor: int | None
    currency: str | None
    status: str
    recommendation: str | None
    approvable: bool
    problem: str | None


@dataclass
class BatchGroup:
    key: str
    segment: str
    step: str
    reasons: list[str]
    items: list[BatchItem] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def totals(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for item in self.items:
            if item.amount_minor is not None and item.currency:
                out[item.currency] += item.amount_minor
        return dict(out)


def _step_label(step: CadenceStep | None, draft: Draft) -> str:
    if step is None:
        return draft.kind.value.replace("_", " ").capitalize()
    sign = "+" if step.day_offset >= 0 else ""
    return f"Step {step.position} (day {sign}{step.day_offset}, {step.template})"


def _reason_labels(decision: dict[str, Any]) -> list[str]:
    """The rules that asked for a human (or block): what the approver decides on. Deferrals
    (quiet hours) only say *when* it may leave, so they do not split groups."""
    reasons = decision.get("reasons") or []
    wanted = [r for r in reasons if r.get("outcome") in ("needs_approval", "block")]
    labels = sorted({str(r.get("rule_id") or r.get("message")) for r in wanted})
    return labels or ["no reasons"]


def pending_groups(
    session: Session, org_id: int, *, user: User, limit: int = 2000
) -> list[BatchGroup]:
    """Drafts awaiting review, grouped by segment, cadence step and policy reasons."""
    seg = aliased(Segment)
    rows = session.execute(
        select(Draft, Customer.name, Invoice, seg.name, CadenceStep)
        .join(Customer, Customer.id == Draft.customer_id)
        .outerjoin(Invoice, Invoice.id == Draft.invoice_id)
        .outerjoin(seg, seg.id == Draft.segment_id)
        .outerjoin(CadenceStep, CadenceStep.id == Draft.cadence_step_id)
        .where(Draft.org_id == org_id, Draft.status.in_(QUEUE_STATES))
        .order_by(Draft.created_at, Draft.id)
        .limit(limit)
    ).all()
    groups: dict[str, BatchGroup] = {}
    for draft, customer_name, invoice, segment_name, step in rows:
        segment = segment_name or "No segment"
        step_label = _step_label(step, draft)
        reasons = _reason_labels(draft.decision or {})
        key = "|".join([segment, step_label, ",".join(reasons)])
        group = groups.get(key)
        if group is None:
            group = groups[key] = BatchGroup(
                key=key, segment=segment, step=step_label, reasons=reasons
            )
        problem = approval_problem(session, draft, user)
        rec = draft.recommendation or {}
        group.items.append(
            BatchItem(
                draft_id=draft.id,
                version=draft.version,
                customer=customer_name,
                subject=draft.subject,
                invoice_number=invoice.number if invoice is not None else None,
                amount_minor=invoice.balance_minor if invoice is not None else None,
                currency=invoice.currency if invoice is not None else None,
                status=draft.status.value,
                recommendation=str(rec.get("action")) if rec.get("action") else None,
                approvable=problem is None,
                problem=problem,
            )
        )
    return sorted(groups.values(), key=lambda g: (g.segment, g.step, g.reasons))


@dataclass
class ItemResult:
    draft_id: int
    outcome: Literal["approved", "rejected", "refused"]
    status: str | None
    message: str


@dataclass
class BatchResult:
    batch_id: str
    action: str
    results: list[ItemResult]

    @property
    def done(self) -> int:
        return sum(1 for r in self.results if r.outcome != "refused")

    @property
    def refused(self) -> int:
        return sum(1 for r in self.results if r.outcome == "refused")


class BatchError(PlixoError, ValueError):
    """The batch request itself is malformed (empty, too large, duplicate items, no reason): 422."""

    http_status = 422


def _check_selection(
    action: Literal["approve", "reject"], items: list[tuple[int, int]], reason: str | None
) -> None:
    """A batch names each draft once, at most ``MAX_BATCH`` of them; a rejection says why."""
    if not items:
        raise BatchError("Select at least one draft.")
    if len(items) > MAX_BATCH:
        raise BatchError(f"At most {MAX_BATCH} drafts per batch; split the selection.")
    ids = [draft_id for draft_id, _ in items]
    if len(set(ids)) != len(ids):
        raise BatchError("A draft appears twice in the batch; select each draft once.")
    if action == "reject" and not (reason or "").strip():
        raise BatchError("Say why you reject these drafts; the reason is kept for the evals.")


@guarded("batch_approve", actor="user")
def decide_batch(
    session: Session,
    org_id: int,
    *,
    user: User,
    action: Literal["approve", "reject"],
    items: list[tuple[int, int]],
    reason: str | None = None,
    recheck: Rechecker | None = None,
    now: datetime | None = None,
) -> BatchResult:
    """Approve or reject ``items`` (draft id, version), one savepoint each; the caller commits.

    Refusals (over the approver's limit, stale version, wrong state, guardrail block, unknown id)
    are returned per item with the reason; the accepted items stand.
    """
    _check_selection(action, items, reason)
    now = now or clock.now()
    batch_id = new_batch_id()
    results: list[ItemResult] = []
    for draft_id, version in items:
        try:
            with session.begin_nested():
                if action == "approve":
                    draft = approve_draft(
                        session,
                        org_id,
                        draft_id,
                        user=user,
                        expected_version=version,
                        batch_id=batch_id,
                        recheck=recheck,
                        now=now,
                    )
                    outcome: Literal["approved", "rejected", "refused"] = "approved"
                    message = (
                        "Approved and queued for delivery."
                        if draft.status.value == "queued"
                        else draft.hold_reason or "Approved."
                    )
                else:
                    draft = reject_draft(
                        session,
                        org_id,
                        draft_id,
                        user=user,
                        expected_version=version,
                        reason=reason or "",
                        batch_id=batch_id,
                    )
                    outcome, message = "rejected", "Rejected."
            results.append(ItemResult(draft_id, outcome, draft.status.value, message))
        except DraftError as exc:
            results.append(ItemResult(draft_id, "refused", None, str(exc)))
    audit.record(
        session,
        org_id,
        actor=user,
        action=f"batch.{action}",
        subject_type="batch",
        subject_id=None,
        detail={
            "batch_id": batch_id,
            "requested": len(items),
            "done": sum(1 for r in results if r.outcome != "refused"),
            "refused": [
                {"draft_id": r.draft_id, "reason": r.message}
                for r in results
                if r.outcome == "refused"
            ],
        },
    )
    session.flush()
    return BatchResult(batch_id=batch_id, action=action, results=results)
