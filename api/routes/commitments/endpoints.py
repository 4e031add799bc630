"""Commitments API: promises-to-pay, payment plans, disputes, payments, portal links, the Commitment
Radar and the dispute SLA Snapshot — plus the Radar page of the review panel.

Every route names its access-matrix permission and scopes every query to the caller's
organisation (another organisation's id is a 404, like an unknown one). Bad input is a 4xx with a
sentence that says what to do, and nothing is written. Plan and credit decisions come from the
policy engine; when it refuses, the answer carries the guardrail's sentences and every reason.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import AppSettings, Clock, DbSession, require, template_context
from api.pages import templates
from memory.models import (
    Dispute,
    DisputeStatus,
    Payment,
    PaymentPlan,
    PlanStatus,
    PortalToken,
    PromiseStatus,
    PromiseToPay,
    User,
    utcnow,
)
from tools.commitments import disputes, plans, promises, radar
from tools.commitments.plans import InstallmentSpec
from tools.commitments.promises import org_today
from tools.payments import posting as payments
from tools.portal import access as portal

router = APIRouter(tags=["commitments"])

Viewer = Annotated[User, Depends(require("view_account"))]
PromiseManager = Annotated[User, Depends(require("manage_promises"))]
PlanManager = Annotated[User, Depends(require("manage_plans"))]
PlanApprover = Annotated[User, Depends(require("approve_plan"))]
DisputeManager = Annotated[User, Depends(require("manage_disputes"))]
CreditGranter = Annotated[User, Depends(require("grant_credit"))]
LinkManager = Annotated[User, Depends(require("manage_portal_tokens"))]
# Posting money by hand (bank transfer, cheque) is recording a commitment kept.
PaymentPoster = Annotated[User, Depends(require("post_payment"))]

Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
BodyId = Annotated[int, Field(ge=1, le=2**31 - 1)]
Minor = Annotated[int, Field(ge=1, le=10**13, description="Integer minor units (cents).")]
Currency = Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input: the message says what to fix; nothing was changed"},
    403: {"description": "Not allowed by the access matrix or the guardrails (reasons included)"},
    404: {"description": "Unknown id in your organisation"},
    409: {"description": "The subject's state does not allow this"},
}


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- schemas ------------------------------------------------------------------------------------


class ReasonOut(BaseModel):
    rule_id: str | None = None
    outcome: str | None = None
    message: str | None = None
    approver_role: str | None = None


class DecisionOut(BaseModel):
    outcome: str | None
    message: str
    approver_roles: list[str]
    reasons: list[ReasonOut]


def _decision(decision: dict[str, Any] | None) -> DecisionOut | None:
    if not decision:
        return None
    return DecisionOut(
        outcome=decision.get("outcome"),
        message=plans.decision_message(decision),
        approver_roles=list(decision.get("approver_roles") or []),
        reasons=[
            ReasonOut(**{k: r.get(k) for k in ("rule_id", "outcome", "message", "approver_role")})
            for r in decision.get("reasons") or []
            if isinstance(r, dict)
        ],
    )


class PromiseIn(_In):
    customer_id: BodyId
    amount_minor: Minor
    promised_date: date
    invoice_ids: list[BodyId] = Field(default_factory=list, max_length=200)
    contact_id: BodyId | None = None
    currency: Currency | None = None
    grace_days: int | None = Field(
        default=None,
        ge=0,
        le=promises.MAX_GRACE_DAYS,
        description="Days after the promised date before it counts as missed; default: policy.",
    )
    source: str = Field(default="manual", pattern=r"^(manual|reply_triage|call)$")


class ResolveIn(_In):
    reason: str | None = Field(default=None, max_length=500)


class PromiseOut(BaseModel):
    id: int
    customer_id: int
    contact_id: int | None
    amount_minor: int
    currency: str
    promised_date: date
    grace_days: int
    deadline: date
    status: str
    source: str
    invoice_ids: list[int]
    invoice_numbers: list[str]
    created_at: datetime
    resolved_at: datetime | None


def _promise(p: PromiseToPay) -> PromiseOut:
    return PromiseOut(
        id=p.id,
        customer_id=p.customer_id,
        contact_id=p.contact_id,
        amount_minor=p.amount_minor,
        currency=p.currency,
        promised_date=p.promised_date,
        grace_days=p.grace_days,
        deadline=promises.promise_deadline(p),
        status=p.status.value,
        source=p.source,
        invoice_ids=[i.id for i in p.invoices],
        invoice_numbers=[i.number for i in p.invoices],
        created_at=p.created_at,
        resolved_at=p.resolved_at,
    )


class AdherenceOut(BaseModel):
    kept: int
    missed: int
    open: int
    rate: float | None = Field(description="kept / (kept + missed); null: not enough data")


class SweepOut(BaseModel):
    promises_kept: list[int]
    promises_missed: list[int]
    installments_missed: list[int]
    plans_defaulted: list[int]


class InstallmentIn(_In):
    due_date: date
    amount_minor: Minor


class PlanIn(_In):
    customer_id: BodyId
    invoice_ids: list[BodyId] = Field(min_length=1, max_length=200)
    installments: list[InstallmentIn] = Field(min_length=1, max_length=plans.MAX_SCHEDULE_LENGTH)
    discount_minor: int = Field(default=0, ge=0, le=10**13)
    non_standard_terms: bool = False
    terms_note: str | None = Field(default=None, max_length=5000)
    from_promise_id: BodyId | None = None


class InstallmentOut(BaseModel):
    id: int
    seq: int
    due_date: date
    amount_minor: int
    paid_minor: int
    status: str


class PlanOut(BaseModel):
    id: int
    customer_id: int
    status: str
    total_minor: int
    discount_minor: int
    currency: str
    non_standard_terms: bool
    terms_note: str | None
    source: str
    from_promise_id: int | None
    invoice_ids: list[int]
    installments: list[InstallmentOut]
    paid_minor: int
    remaining_minor: int
    adherence_pct: int | None
    next_due_date: date | None
    next_due_minor: int | None
    approaching_default: bool
    visible_to_customer: bool
    decision: DecisionOut | None
    awaiting_roles: list[str] = Field(default_factory=list)
    guardrail_message: str | None = None


def _plan(plan: PaymentPlan, today: date, outcome: plans.PlanOutcome | None = None) -> PlanOut:
    s = plans.summarize(plan, today)
    return PlanOut(
        id=plan.id,
        customer_id=plan.customer_id,
        status=plan.status.value,
        total_minor=plan.total_minor,
        discount_minor=plan.discount_minor,
        currency=plan.currency,
        non_standard_terms=plan.non_standard_terms,
        terms_note=plan.terms_note,
        source=plan.source,
        from_promise_id=plan.from_promise_id,
        invoice_ids=[i.id for i in plan.invoices],
        installments=[
            InstallmentOut(
                id=i.id,
                seq=i.seq,
                due_date=i.due_date,
                amount_minor=i.amount_minor,
                paid_minor=i.paid_minor,
                status=i.status.value,
            )
            for i in plan.installments
        ],
        paid_minor=s.paid_minor,
        remaining_minor=s.remaining_minor,
        adherence_pct=s.adherence_pct,
        next_due_date=s.next_due_date,
        next_due_minor=s.next_due_minor,
        approaching_default=s.approaching_default,
        visible_to_customer=plans.visible_to_customer(plan),
        decision=_decision(plan.decision),
        awaiting_roles=outcome.awaiting_roles if outcome else [],
        guardrail_message=outcome.message if outcome else None,
    )


class PrefillOut(BaseModel):
    customer_id: int
    invoice_ids: list[int]
    currency: str
    balance_minor: int
    from_promise_id: int | None
    installments: list[InstallmentIn]


class CancelIn(_In):
    reason: str = Field(min_length=1, max_length=500)


class MarkPaidIn(_In):
    received_on: date | None = None
    reference: str | None = Field(default=None, max_length=120)


class LinkOut(BaseModel):
    token_id: int
    url: str
    expires_at: datetime
    outbox_id: int | None
    skipped: str | None = None


class DisputeIn(_In):
    invoice_id: BodyId
    reason: str = Field(description=", ".join(disputes.REASONS))
    description: str | None = Field(default=None, max_length=5000)
    source: str = Field(default="collector", pattern=r"^(collector|reply_triage)$")


class StatusIn(_In):
    status: DisputeStatus
    note: str | None = Field(default=None, max_length=2000)


class CreditIn(_In):
    amount_minor: Minor
    note: str | None = Field(default=None, max_length=2000)


class EvidenceOut(BaseModel):
    id: int
    slot: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    uploaded_by: str
    uploaded_at: datetime


class SlaOut(BaseModel):
    status: str
    hours_allowed: int | None
    due_at: datetime | None
    remaining_hours: float | None
    breached: bool
    near_breach: bool
    age_hours: float


class DisputeOut(BaseModel):
    id: int
    customer_id: int
    invoice_id: int
    reason: str
    description: str | None
    status: str
    source: str
    opened_at: datetime
    status_changed_at: datetime
    resolved_at: datetime | None
    credit_minor: int
    credit_pending: bool
    sla: SlaOut
    evidence: list[EvidenceOut]
    next_statuses: list[str]
    guardrail_message: str | None = None


def _dispute(d: Dispute, now: datetime, message: str | None = None) -> DisputeOut:
    clock = disputes.sla_clock(d, now)
    return DisputeOut(
        id=d.id,
        customer_id=d.customer_id,
        invoice_id=d.invoice_id,
        reason=d.reason,
        description=d.description,
        status=d.status.value,
        source=d.source,
        opened_at=d.opened_at,
        status_changed_at=d.status_changed_at,
        resolved_at=d.resolved_at,
        credit_minor=d.credit_minor,
        credit_pending=d.status in disputes.ACTIVE and d.credit_minor > 0,
        sla=SlaOut(**clock.__dict__),
        evidence=[
            EvidenceOut(
                id=e.id,
                slot=e.slot,
                filename=e.filename,
                content_type=e.content_type,
                size_bytes=e.size_bytes,
                sha256=e.sha256,
                uploaded_by=e.uploaded_by,
                uploaded_at=e.uploaded_at,
            )
            for e in d.evidence
        ],
        next_statuses=sorted(s.value for s in disputes.TRANSITIONS[d.status]),
        guardrail_message=message,
    )


class SlaSnapshotOut(BaseModel):
    open: int
    breaching: int
    near_breach: int
    median_age_hours: float | None
    by_status: dict[str, int]
    breaching_ids: list[int]
    near_breach_ids: list[int]
    sla_hours: dict[str, int]


class PaymentIn(_In):
    amount_minor: Minor
    currency: Currency
    received_on: date
    customer_id: BodyId | None = None
    invoice_id: BodyId | None = None
    installment_id: BodyId | None = None
    reference: str | None = Field(default=None, max_length=120)
    method: str = Field(default="bank_transfer", pattern=r"^[a-z_]{2,32}$")


class AllocationOut(BaseModel):
    invoice_id: int
    invoice_number: str
    amount_minor: int
    balance_after_minor: int


class PaymentOut(BaseModel):
    id: int
    customer_id: int
    invoice_id: int | None
    installment_id: int | None
    amount_minor: int
    applied_minor: int
    unapplied_minor: int
    currency: str
    received_on: date
    method: str
    external_ref: str | None
    duplicate: bool = False
    allocations: list[AllocationOut] = Field(default_factory=list)
    promises_kept: list[int] = Field(default_factory=list)
    installments_paid: list[int] = Field(default_factory=list)
    plans_completed: list[int] = Field(default_factory=list)
    receipt_outbox_id: int | None = None


def _payment(p: Payment, result: payments.PaymentResult | None = None) -> PaymentOut:
    out = PaymentOut(
        id=p.id,
        customer_id=p.customer_id,
        invoice_id=p.invoice_id,
        installment_id=p.installment_id,
        amount_minor=p.amount_minor,
        applied_minor=p.applied_minor,
        unapplied_minor=p.unapplied_minor,
        currency=p.currency,
        received_on=p.received_on,
        method=p.method,
        external_ref=p.external_ref,
    )
    if result is not None:
        out.duplicate = result.duplicate
        out.allocations = [AllocationOut(**a.__dict__) for a in result.allocations]
        out.promises_kept = result.promises_kept
        out.installments_paid = result.installments_paid
        out.plans_completed = result.plans_completed
        out.receipt_outbox_id = result.receipt.id if result.receipt else None
    return out


class ApplyCreditIn(_In):
    invoice_id: BodyId
    amount_minor: Minor | None = None


class TokenIn(_In):
    customer_id: BodyId
    ttl_days: int = Field(default=14, ge=1, le=90)


class TokenOut(BaseModel):
    id: int
    customer_id: int
    expires_at: datetime
    revoked_at: datetime | None
    created_at: datetime
    url: str | None = Field(default=None, description="Shown once, when the link is issued.")


class RadarItemOut(BaseModel):
    kind: str
    id: int
    customer_id: int
    customer_name: str
    amount_minor: int
    currency: str
    due_date: date
    status: str
    days_overdue: int
    badges: list[str]
    invoice_numbers: list[str]
    adherence_pct: int | None


class RadarOut(BaseModel):
    as_of: date
    due_today: list[RadarItemOut]
    overdue: list[RadarItemOut]
    plans_near_default: list[RadarItemOut]
    promise_exposure: dict[str, int]
    active_plan_exposure: dict[str, int]
    adherence: AdherenceOut
    high_exposure_minor: int
    counts: dict[str, int]


def _radar(r: radar.Radar) -> RadarOut:
    def items(xs: list[radar.RadarItem]) -> list[RadarItemOut]:
        return [RadarItemOut(**x.__dict__) for x in xs]

    return RadarOut(
        as_of=r.as_of,
        due_today=items(r.due_today),
        overdue=items(r.overdue),
        plans_near_default=items(r.plans_near_default),
        promise_exposure=r.promise_exposure,
        active_plan_exposure=r.active_plan_exposure,
        adherence=_adherence(r.adherence),
        high_exposure_minor=r.high_exposure_minor,
        counts=r.counts,
    )


def _adherence(a: promises.Adherence) -> AdherenceOut:
    return AdherenceOut(kept=a.kept, missed=a.missed, open=a.open, rate=a.rate)


# --- promises -------------------------------------------------------------------------------------


@router.get("/api/promises", response_model=list[PromiseOut])
def list_promises(
    db: DbSession,
    user: Viewer,
    customer_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    status: PromiseStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> list[PromiseOut]:
    q = select(PromiseToPay).where(PromiseToPay.org_id == user.org_id)
    if customer_id is not None:
        q = q.where(PromiseToPay.customer_id == customer_id)
    if status is not None:
        q = q.where(PromiseToPay.status == status)
    rows = db.scalars(
        q.order_by(PromiseToPay.promised_date.desc(), PromiseToPay.id.desc()).limit(limit)
    )
    return [_promise(p) for p in rows]


@router.post("/api/promises", response_model=PromiseOut, status_code=201, responses=ERRORS)
def add_promise(body: PromiseIn, db: DbSession, user: PromiseManager) -> PromiseOut:
    p = promises.add_promise(
        db,
        user.org_id,
        customer_id=body.customer_id,
        amount_minor=body.amount_minor,
        promised_date=body.promised_date,
        invoice_ids=body.invoice_ids,
        contact_id=body.contact_id,
        currency=body.currency,
        grace_days=body.grace_days,
        source=body.source,
        actor=user,
    )
    db.commit()
    return _promise(p)


@router.get("/api/promises/adherence", response_model=AdherenceOut)
def promise_adherence(
    db: DbSession,
    user: Viewer,
    customer_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> AdherenceOut:
    return _adherence(promises.adherence(db, user.org_id, customer_id=customer_id))


@router.get("/api/promises/{promise_id}", response_model=PromiseOut, responses=ERRORS)
def get_promise(promise_id: Id, db: DbSession, user: Viewer) -> PromiseOut:
    return _promise(promises.get_promise(db, user.org_id, promise_id))


_RESOLVERS = {
    "kept": promises.mark_kept,
    "missed": promises.mark_missed,
    "cancel": promises.cancel_promise,
}


@router.post("/api/promises/{promise_id}/{action}", response_model=PromiseOut, responses=ERRORS)
def resolve_promise(
    promise_id: Id,
    action: Annotated[str, Path(pattern=r"^(kept|missed|cancel)$")],
    db: DbSession,
    user: PromiseManager,
    body: ResolveIn | None = None,
) -> PromiseOut:
    """Mark a promise kept or missed by hand (missed puts its invoices back in the cadence)."""
    reason = (body.reason if body else None) or f"marked {action} by hand"
    p = _RESOLVERS[action](db, user.org_id, promise_id, actor=user, reason=reason)
    db.commit()
    return _promise(p)


@router.post("/api/commitments/sweep", response_model=SweepOut)
def sweep(db: DbSession, user: PromiseManager) -> SweepOut:
    """Decide promises (kept/missed by the deadline) and flag missed installments now."""
    p = promises.evaluate_promises(db, user.org_id, actor=user)
    pl = plans.evaluate_plans(db, user.org_id, actor=user)
    db.commit()
    return SweepOut(
        promises_kept=p.kept,
        promises_missed=p.missed,
        installments_missed=pl.missed_installments,
        plans_defaulted=pl.defaulted_plans,
    )


# --- plans ----------------------------------------------------------------------------------------


@router.get("/api/plans", response_model=list[PlanOut])
def list_plans(
    db: DbSession,
    user: Viewer,
    customer_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    status: PlanStatus | None = None,
) -> list[PlanOut]:
    today = org_today(db, user.org_id)
    rows = plans.list_plans(
        db, user.org_id, customer_id=customer_id, statuses=[status] if status else None
    )
    return [_plan(p, today) for p in rows]


@router.get("/api/plans/prefill", response_model=PrefillOut, responses=ERRORS)
def prefill(
    db: DbSession,
    user: PlanManager,
    promise_id: Annotated[int, Query(ge=1, le=2**31 - 1)],
    installments: Annotated[int, Query(ge=1, le=plans.MAX_SCHEDULE_LENGTH)] = 3,
    interval_months: Annotated[int, Query(ge=1, le=12)] = 1,
) -> PrefillOut:
    """A schedule prefilled from a promise, for the proposer to adjust (nothing is saved)."""
    d = plans.prefill_from_promise(
        db, user.org_id, promise_id, count=installments, interval_months=interval_months
    )
    return PrefillOut(
        customer_id=d.customer_id,
        invoice_ids=d.invoice_ids,
        currency=d.currency,
        balance_minor=d.balance_minor,
        from_promise_id=d.from_promise_id,
        installments=[
            InstallmentIn(due_date=i.due_date, amount_minor=i.amount_minor) for i in d.installments
        ],
    )


@router.post("/api/plans", response_model=PlanOut, status_code=201, responses=ERRORS)
def propose_plan(body: PlanIn, db: DbSession, user: PlanManager) -> PlanOut | JSONResponse:
    """Propose a plan; the guardrails answer at once (active, or waiting for the named role)."""
    out = plans.propose_plan(
        db,
        user.org_id,
        customer_id=body.customer_id,
        invoice_ids=body.invoice_ids,
        installments=[InstallmentSpec(i.due_date, i.amount_minor) for i in body.installments],
        proposer=user,
        discount_minor=body.discount_minor,
        non_standard_terms=body.non_standard_terms,
        terms_note=body.terms_note,
        from_promise_id=body.from_promise_id,
    )
    db.commit()
    return _plan(out.plan, org_today(db, user.org_id), out)


@router.get("/api/plans/{plan_id}", response_model=PlanOut, responses=ERRORS)
def get_plan(plan_id: Id, db: DbSession, user: Viewer) -> PlanOut:
    return _plan(plans.get_plan(db, user.org_id, plan_id), org_today(db, user.org_id))


@router.post("/api/plans/{plan_id}/approve", response_model=PlanOut, responses=ERRORS)
def approve_plan(plan_id: Id, db: DbSession, user: PlanApprover) -> PlanOut | JSONResponse:
    out = plans.approve_plan(db, user.org_id, plan_id, approver=user)
    db.commit()
    return _plan(out.plan, org_today(db, user.org_id), out)


@router.post("/api/plans/{plan_id}/reject", response_model=PlanOut, responses=ERRORS)
def reject_plan(plan_id: Id, body: CancelIn, db: DbSession, user: PlanApprover) -> PlanOut:
    plan = plans.reject_plan(db, user.org_id, plan_id, approver=user, reason=body.reason)
    db.commit()
    return _plan(plan, org_today(db, user.org_id))


@router.post("/api/plans/{plan_id}/cancel", response_model=PlanOut, responses=ERRORS)
def cancel_plan(plan_id: Id, body: CancelIn, db: DbSession, user: PlanManager) -> PlanOut:
    plan = plans.cancel_plan(db, user.org_id, plan_id, actor=user, reason=body.reason)
    db.commit()
    return _plan(plan, org_today(db, user.org_id))


@router.post("/api/plans/{plan_id}/complete", response_model=PlanOut, responses=ERRORS)
def complete_plan(plan_id: Id, db: DbSession, user: PlanManager) -> PlanOut:
    plan = plans.complete_plan(db, user.org_id, plan_id, actor=user)
    db.commit()
    return _plan(plan, org_today(db, user.org_id))


@router.post(
    "/api/plans/{plan_id}/installments/{seq}/paid", response_model=PaymentOut, responses=ERRORS
)
def mark_installment_paid(
    plan_id: Id,
    seq: Annotated[int, Path(ge=1, le=plans.MAX_SCHEDULE_LENGTH)],
    db: DbSession,
    user: PaymentPoster,  # it posts a payment: the same permission as POST /api/payments
    body: MarkPaidIn | None = None,
) -> PaymentOut:
    """Record an installment paid outside Stripe; a payment is posted and a receipt queued."""
    payment = plans.mark_installment_paid(
        db,
        user.org_id,
        plan_id,
        seq,
        actor=user,
        received_on=body.received_on if body else None,
        reference=body.reference if body else None,
    )
    db.commit()
    return _payment(payment)


@router.post("/api/plans/{plan_id}/resend-link", response_model=LinkOut, responses=ERRORS)
def resend_link(plan_id: Id, db: DbSession, user: PlanManager, settings: AppSettings) -> LinkOut:
    """A fresh mini-portal link for an approved plan, queued to the customer's contact."""
    sent = portal.resend_plan_link(
        db, user.org_id, plan_id, actor=user, base_url=settings.public_base_url
    )
    db.commit()
    return LinkOut(
        token_id=sent.issued.token.id,
        url=sent.issued.url,
        expires_at=sent.issued.token.expires_at,
        outbox_id=sent.message.id if sent.message else None,
        skipped=sent.skipped,
    )


# --- disputes -------------------------------------------------------------------------------------


@router.get("/api/disputes", response_model=list[DisputeOut])
def list_disputes(
    db: DbSession,
    user: Viewer,
    customer_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    status: DisputeStatus | None = None,
) -> list[DisputeOut]:
    now = utcnow()
    rows = disputes.list_disputes(
        db, user.org_id, customer_id=customer_id, statuses=[status] if status else None
    )
    return [_dispute(d, now) for d in rows]


@router.get("/api/disputes/sla", response_model=SlaSnapshotOut)
def sla_snapshot(db: DbSession, user: Viewer) -> SlaSnapshotOut:
    """SLA Snapshot: open disputes, how many breach their status clock, median age (hours)."""
    s = disputes.sla_snapshot(db, user.org_id)
    return SlaSnapshotOut(
        **s.__dict__, sla_hours={k.value: v for k, v in disputes.SLA_HOURS.items()}
    )


@router.post("/api/disputes", response_model=DisputeOut, status_code=201, responses=ERRORS)
def open_dispute(body: DisputeIn, db: DbSession, user: DisputeManager) -> DisputeOut:
    d = disputes.open_dispute(
        db,
        user.org_id,
        invoice_id=body.invoice_id,
        reason=body.reason,
        description=body.description,
        source=body.source,
        actor=user,
    )
    db.commit()
    return _dispute(d, utcnow())


@router.get("/api/disputes/{dispute_id}", response_model=DisputeOut, responses=ERRORS)
def get_dispute(dispute_id: Id, db: DbSession, user: Viewer) -> DisputeOut:
    return _dispute(disputes.get_dispute(db, user.org_id, dispute_id), utcnow())


@router.post("/api/disputes/{dispute_id}/status", response_model=DisputeOut, responses=ERRORS)
def change_status(
    dispute_id: Id, body: StatusIn, db: DbSession, user: DisputeManager
) -> DisputeOut | JSONResponse:
    d = disputes.change_status(db, user.org_id, dispute_id, body.status, actor=user, note=body.note)
    db.commit()
    return _dispute(d, utcnow())


@router.post("/api/disputes/{dispute_id}/credit", response_model=DisputeOut, responses=ERRORS)
def propose_credit(
    dispute_id: Id, body: CreditIn, db: DbSession, user: CreditGranter
) -> DisputeOut | JSONResponse:
    """Resolve with a credit: granted within your limit, else stored for an approver."""
    out = disputes.propose_credit(
        db, user.org_id, dispute_id, amount_minor=body.amount_minor, actor=user, note=body.note
    )
    db.commit()
    return _dispute(out.dispute, utcnow(), out.message)


@router.post(
    "/api/disputes/{dispute_id}/credit/approve", response_model=DisputeOut, responses=ERRORS
)
def approve_credit(dispute_id: Id, db: DbSession, user: CreditGranter) -> DisputeOut | JSONResponse:
    out = disputes.approve_credit(db, user.org_id, dispute_id, approver=user)
    db.commit()
    return _dispute(out.dispute, utcnow(), out.message)


def read_upload(upload: UploadFile) -> bytes:
    """At most one byte over the evidence limit is read: enough to refuse, never the whole file."""
    return upload.file.read(disputes.MAX_EVIDENCE_BYTES + 1)


@router.post(
    "/api/disputes/{dispute_id}/evidence",
    response_model=EvidenceOut,
    status_code=201,
    responses=ERRORS,
)
def add_evidence(
    dispute_id: Id,
    db: DbSession,
    user: DisputeManager,
    settings: AppSettings,
    file: Annotated[UploadFile, File(description="PDF, PNG, JPEG, text or CSV; at most 5 MB")],
    slot: Annotated[str, Form(max_length=64)] = "other",
) -> EvidenceOut:
    data = read_upload(file)
    item = disputes.add_evidence(
        db,
        user.org_id,
        dispute_id,
        filename=file.filename or "evidence",
        data=data,
        content_type=file.content_type,
        slot=slot,
        evidence_dir=settings.evidence_dir,
        uploaded_by=f"{user.name} ({user.role.value})",
        actor=user,
    )
    db.commit()
    return EvidenceOut(
        id=item.id,
        slot=item.slot,
        filename=item.filename,
        content_type=item.content_type,
        size_bytes=item.size_bytes,
        sha256=item.sha256,
        uploaded_by=item.uploaded_by,
        uploaded_at=item.uploaded_at,
    )


@router.get("/api/disputes/{dispute_id}/evidence/{evidence_id}", responses=ERRORS)
def download_evidence(
    dispute_id: Id, evidence_id: Id, db: DbSession, user: Viewer, settings: AppSettings
) -> FileResponse:
    d = disputes.get_dispute(db, user.org_id, dispute_id)
    item = next((e for e in d.evidence if e.id == evidence_id), None)
    if item is None:
        raise HTTPException(404, "Evidence not found on this dispute.")
    path = disputes.evidence_path(settings.evidence_dir, item)
    if not path.is_file():
        raise HTTPException(404, "The evidence file is missing from the evidence directory.")
    return FileResponse(
        path,
        media_type=item.content_type,
        filename=item.filename,
        headers={"X-Content-Type-Options": "nosniff"},
        content_disposition_type="attachment",
    )


# --- payments -------------------------------------------------------------------------------------


@router.post("/api/payments", response_model=PaymentOut, status_code=201, responses=ERRORS)
def post_payment(body: PaymentIn, db: DbSession, user: PaymentPoster) -> PaymentOut:
    """Post money received outside Stripe. The same reference twice is answered with the first
    payment (``duplicate: true``) and changes nothing."""
    result = payments.post_payment(
        db,
        user.org_id,
        amount_minor=body.amount_minor,
        currency=body.currency,
        received_on=body.received_on,
        customer_id=body.customer_id,
        invoice_id=body.invoice_id,
        installment_id=body.installment_id,
        method=body.method,
        external_ref=body.reference,
        actor=user,
    )
    try:
        db.commit()
    except IntegrityError:
        # The same reference was posted concurrently and won: answer with that payment.
        db.rollback()
        first = payments.find_by_ref(db, user.org_id, body.reference or "")
        if first is None:
            raise HTTPException(409, "The ledger changed meanwhile; retry.") from None
        return _payment(first, payments.PaymentResult(payment=first, duplicate=True))
    return _payment(result.payment, result)


@router.get("/api/payments", response_model=list[PaymentOut])
def list_payments(
    db: DbSession,
    user: Viewer,
    customer_id: Annotated[int, Query(ge=1, le=2**31 - 1)],
) -> list[PaymentOut]:
    return [_payment(p) for p in payments.payments_for_customer(db, user.org_id, customer_id)]


@router.post("/api/payments/{payment_id}/apply", response_model=PaymentOut, responses=ERRORS)
def apply_credit(
    payment_id: Id, body: ApplyCreditIn, db: DbSession, user: PaymentPoster
) -> PaymentOut:
    """Apply a payment's unapplied credit (an over-payment) to another open invoice."""
    result = payments.apply_credit(
        db,
        user.org_id,
        payment_id,
        invoice_id=body.invoice_id,
        amount_minor=body.amount_minor,
        actor=user,
    )
    db.commit()
    return _payment(result.payment, result)


# --- portal links ---------------------------------------------------------------------------------


def _token(t: PortalToken, url: str | None = None) -> TokenOut:
    return TokenOut(
        id=t.id,
        customer_id=t.customer_id,
        expires_at=t.expires_at,
        revoked_at=t.revoked_at,
        created_at=t.created_at,
        url=url,
    )


@router.post("/api/portal-tokens", response_model=TokenOut, status_code=201, responses=ERRORS)
def issue_token(body: TokenIn, db: DbSession, user: LinkManager, settings: AppSettings) -> TokenOut:
    """A mini-portal link for one customer. The URL is returned once; only its hash is kept."""
    issued = portal.issue_token(
        db,
        user.org_id,
        body.customer_id,
        actor=user,
        base_url=settings.public_base_url,
        ttl=timedelta(days=body.ttl_days),
    )
    db.commit()
    return _token(issued.token, issued.url)


@router.get("/api/portal-tokens", response_model=list[TokenOut])
def list_tokens(
    db: DbSession,
    user: LinkManager,
    customer_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> list[TokenOut]:
    return [_token(t) for t in portal.list_tokens(db, user.org_id, customer_id)]


@router.post("/api/portal-tokens/{token_id}/revoke", response_model=TokenOut, responses=ERRORS)
def revoke_token(token_id: Id, db: DbSession, user: LinkManager) -> TokenOut:
    token = portal.revoke_token(db, user.org_id, token_id, actor=user)
    db.commit()
    return _token(token)


# --- the radar ------------------------------------------------------------------------------------


@router.get("/api/radar", response_model=RadarOut)
def commitment_radar(
    db: DbSession,
    user: Viewer,
    high_exposure_minor: Annotated[int, Query(ge=1, le=10**13)] = radar.HIGH_EXPOSURE_MINOR,
) -> RadarOut:
    """Promises due today and overdue, plans approaching default — each with badges saying why —
    and promise exposure, adherence and active plan exposure."""
    return _radar(radar.commitment_radar(db, user.org_id, high_exposure_minor=high_exposure_minor))


def radar_context(session: Session, org_id: int, now: datetime | None = None) -> dict[str, Any]:
    """What ``radar_card.html`` needs; the review panel includes the card with this context."""
    return {
        "radar": radar.commitment_radar(session, org_id, now=now),
        "sla": disputes.sla_snapshot(session, org_id, now=now),
    }


@router.get("/radar", response_class=HTMLResponse, include_in_schema=False)
def radar_page(request: Request, db: DbSession, user: Viewer, clock: Clock) -> HTMLResponse:
    """The Radar on the app's clock (the same "today" as the rest of the panel)."""
    context = radar_context(db, user.org_id, clock())
    return templates.TemplateResponse(
        request, "radar.html", template_context(request, user, **context)
    )
