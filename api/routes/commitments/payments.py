"""Payments posted by a person (bank transfer, cheque) and credit applied, over the API.

Every route names its access-matrix permission and scopes every query to the caller's
organisation (another organisation's id is a 404, like an unknown one). Bad input is a 4xx
with a sentence that says what to do, and nothing is written.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy.exc import IntegrityError

from api.deps import DbSession
from api.routes.commitments.schemas import (
    ERRORS,
    ApplyCreditIn,
    Id,
    PaymentIn,
    PaymentOut,
    PaymentPoster,
    Viewer,
    payment_out,
)
from tools.payments import posting as payments

router = APIRouter(tags=["commitments"])


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
        return payment_out(first, payments.PaymentResult(payment=first, duplicate=True))
    return payment_out(result.payment, result)


@router.get("/api/payments", response_model=list[PaymentOut])
def list_payments(
    db: DbSession,
    user: Viewer,
    customer_id: Annotated[int, Query(ge=1, le=2**31 - 1)],
) -> list[PaymentOut]:
    return [payment_out(p) for p in payments.payments_for_customer(db, user.org_id, customer_id)]


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
    return payment_out(result.payment, result)
