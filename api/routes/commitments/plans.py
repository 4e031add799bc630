"""Payment plans over the API: prefill, offer, approve or reject through the guardrails,
installments, the payer's link.

Every route names its access-matrix permission and scopes every query to the caller's
organisation (another organisation's id is a 404, like an unknown one). Bad input is a 4xx
with a sentence that says what to do, and nothing is written.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from api.deps import AppSettings, DbSession
from api.routes.commitments.schemas import (
    ERRORS,
    CancelIn,
    Id,
    InstallmentIn,
    LinkOut,
    MarkPaidIn,
    PaymentOut,
    PaymentPoster,
    PlanApprover,
    PlanIn,
    PlanManager,
    PlanOut,
    PrefillOut,
    Viewer,
    payment_out,
    plan_out,
)
from memory.models import (
    PlanStatus,
)
from tools.commitments import plans
from tools.commitments.plans import InstallmentSpec
from tools.commitments.promises import org_today
from tools.portal import access as portal

router = APIRouter(tags=["commitments"])


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
    return [plan_out(p, today) for p in rows]


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
    return plan_out(out.plan, org_today(db, user.org_id), out)


@router.get("/api/plans/{plan_id}", response_model=PlanOut, responses=ERRORS)
def get_plan(plan_id: Id, db: DbSession, user: Viewer) -> PlanOut:
    return plan_out(plans.get_plan(db, user.org_id, plan_id), org_today(db, user.org_id))


@router.post("/api/plans/{plan_id}/approve", response_model=PlanOut, responses=ERRORS)
def approve_plan(plan_id: Id, db: DbSession, user: PlanApprover) -> PlanOut | JSONResponse:
    out = plans.approve_plan(db, user.org_id, plan_id, approver=user)
    db.commit()
    return plan_out(out.plan, org_today(db, user.org_id), out)


@router.post("/api/plans/{plan_id}/reject", response_model=PlanOut, responses=ERRORS)
def reject_plan(plan_id: Id, body: CancelIn, db: DbSession, user: PlanApprover) -> PlanOut:
    plan = plans.reject_plan(db, user.org_id, plan_id, approver=user, reason=body.reason)
    db.commit()
    return plan_out(plan, org_today(db, user.org_id))


@router.post("/api/plans/{plan_id}/cancel", response_model=PlanOut, responses=ERRORS)
def cancel_plan(plan_id: Id, body: CancelIn, db: DbSession, user: PlanManager) -> PlanOut:
    plan = plans.cancel_plan(db, user.org_id, plan_id, actor=user, reason=body.reason)
    db.commit()
    return plan_out(plan, org_today(db, user.org_id))


@router.post("/api/plans/{plan_id}/complete", response_model=PlanOut, responses=ERRORS)
def complete_plan(plan_id: Id, db: DbSession, user: PlanManager) -> PlanOut:
    plan = plans.complete_plan(db, user.org_id, plan_id, actor=user)
    db.commit()
    return plan_out(plan, org_today(db, user.org_id))


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
    return payment_out(payment)


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
