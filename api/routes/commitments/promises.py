"""Promises-to-pay over the API: list, add, keep/miss/cancel, adherence, and the sweep.

Every route names its access-matrix permission and scopes every query to the caller's
organisation (another organisation's id is a 404, like an unknown one). Bad input is a 4xx
with a sentence that says what to do, and nothing is written.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from api.deps import DbSession
from api.routes.commitments.schemas import (
    ERRORS,
    AdherenceOut,
    Id,
    PromiseIn,
    PromiseManager,
    PromiseOut,
    ResolveIn,
    SweepOut,
    Viewer,
    adherence_out,
    promise_out,
)
from memory.models import (
    PromiseStatus,
    PromiseToPay,
)
from tools.commitments import plans, promises

router = APIRouter(tags=["commitments"])


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
    return [promise_out(p) for p in rows]


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
    return promise_out(p)


@router.get("/api/promises/adherence", response_model=AdherenceOut)
def promise_adherence(
    db: DbSession,
    user: Viewer,
    customer_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> AdherenceOut:
    return adherence_out(promises.adherence(db, user.org_id, customer_id=customer_id))


@router.get("/api/promises/{promise_id}", response_model=PromiseOut, responses=ERRORS)
def get_promise(promise_id: Id, db: DbSession, user: Viewer) -> PromiseOut:
    return promise_out(promises.get_promise(db, user.org_id, promise_id))


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
    return promise_out(p)


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
