"""What the commitments API reads and answers (pydantic models), the permissions its routes
name, and the shared conversions from ledger rows. Why apart: six route modules share them.

Every route names its access-matrix permission and scopes every query to the caller's
organisation (another organisation's id is a 404, like an unknown one). Bad input is a 4xx
with a sentence that says what to do, and nothing is written.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from api.deps import require
from memory.models import (
    Dispute,
    DisputeStatus,
    Payment,
    PaymentPlan,
    PromiseToPay,
    User,
)
from tools.commitments import disputes, plans, promises, radar
from tools.payments import posting as payments

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


class StrictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


def decision_out(decision: dict[str, Any] | None) -> DecisionOut | None:
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


class PromiseIn(StrictIn):
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


class ResolveIn(StrictIn):
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


def promise_out(p: PromiseToPay) -> PromiseOut:
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


class InstallmentIn(StrictIn):
    due_date: date
    amount_minor: Minor


class PlanIn(StrictIn):
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


def plan_out(plan: PaymentPlan, today: date, outcome: plans.PlanOutcome | None = None) -> PlanOut:
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
        decision=decision_out(plan.decision),
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


class CancelIn(StrictIn):
    reason: str = Field(min_length=1, max_length=500)


class MarkPaidIn(StrictIn):
    received_on: date | None = None
    reference: str | None = Field(default=None, max_length=120)


class LinkOut(BaseModel):
    token_id: int
    url: str
    expires_at: datetime
    outbox_id: int | None
    skipped: str | None = None


class DisputeIn(StrictIn):
    invoice_id: BodyId
    reason: str = Field(description=", ".join(disputes.REASONS))
    description: str | None = Field(default=None, max_length=5000)
    source: str = Field(default="collector", pattern=r"^(collector|reply_triage)$")


class StatusIn(StrictIn):
    status: DisputeStatus
    note: str | None = Field(default=None, max_length=2000)


class CreditIn(StrictIn):
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


def dispute_out(d: Dispute, now: datetime, message: str | None = None) -> DisputeOut:
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


class PaymentIn(StrictIn):
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


def payment_out(p: Payment, result: payments.PaymentResult | None = None) -> PaymentOut:
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


class ApplyCreditIn(StrictIn):
    invoice_id: BodyId
    amount_minor: Minor | None = None


class TokenIn(StrictIn):
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


def radar_out(r: radar.Radar) -> RadarOut:
    def items(xs: list[radar.RadarItem]) -> list[RadarItemOut]:
        return [RadarItemOut(**x.__dict__) for x in xs]

    return RadarOut(
        as_of=r.as_of,
        due_today=items(r.due_today),
        overdue=items(r.overdue),
        plans_near_default=items(r.plans_near_default),
        promise_exposure=r.promise_exposure,
        active_plan_exposure=r.active_plan_exposure,
        adherence=adherence_out(r.adherence),
        high_exposure_minor=r.high_exposure_minor,
        counts=r.counts,
    )


def adherence_out(a: promises.Adherence) -> AdherenceOut:
    return AdherenceOut(kept=a.kept, missed=a.missed, open=a.open, rate=a.rate)
