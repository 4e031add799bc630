"""The Commitment Radar: which promises and plans need a person today, and why.

Sections: promises due today, promises overdue (open past their date, or missed while their
invoices are still unpaid), and plans approaching default (the next installment due within
:data:`tools.commitments.plans.APPROACHING_DEFAULT_DAYS`, overdue, or already defaulted). Each item
carries
badges that say why it is there:

* ``Missed`` — the promise is past its date plus grace unpaid, or a plan installment was missed;
* ``In grace`` — past the promised date, still inside the grace days;
* ``Due today``;
* ``No invoice link`` — a promise not tied to any invoice (it cannot pause or resume a cadence);
* ``High exposure`` — the amount at stake is at or above the threshold (default $10,000).

Figures: promise exposure (open promises' amounts), active plan exposure (unpaid rest of running
plans), both per currency (never summed across currencies), and promise adherence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import (
    Customer,
    InvoiceStatus,
    PaymentPlan,
    PromiseStatus,
    PromiseToPay,
    utcnow,
)
from tools.commitments.plans import RUNNING, summarize
from tools.commitments.promises import Adherence, adherence, org_today, promise_deadline

HIGH_EXPOSURE_MINOR = 1_000_000  # $10,000.00 in minor units of the item's currency
MISSED_LOOKBACK_DAYS = 30

BADGE_MISSED = "Missed"
BADGE_IN_GRACE = "In grace"
BADGE_DUE_TODAY = "Due today"
BADGE_NO_INVOICE = "No invoice link"
BADGE_HIGH_EXPOSURE = "High exposure"


@dataclass(frozen=True)
class RadarItem:
    kind: str  # "promise" | "plan"
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
    adherence_pct: int | None = None


@dataclass(frozen=True)
class Radar:
    as_of: date
    due_today: list[RadarItem]
    overdue: list[RadarItem]
    plans_near_default: list[RadarItem]
    promise_exposure: dict[str, int]
    active_plan_exposure: dict[str, int]
    adherence: Adherence
    high_exposure_minor: int
    counts: dict[str, int] = field(default_factory=dict)


def _add(acc: dict[str, int], currency: str, amount: int) -> None:
    acc[currency] = acc.get(currency, 0) + amount


def _promise_items(
    session: Session,
    org_id: int,
    now: datetime,
    today: date,
    names: dict[int, str],
    high_exposure_minor: int,
    customer_ids: list[int] | None,
) -> tuple[list[RadarItem], list[RadarItem], dict[str, int]]:
    """Promises due today and overdue ones (open, or missed lately with something left to chase),
    and the exposure of open promises per currency."""
    pq = select(PromiseToPay).where(
        PromiseToPay.org_id == org_id,
        (PromiseToPay.status == PromiseStatus.OPEN)
        | (
            (PromiseToPay.status == PromiseStatus.MISSED)
            & (PromiseToPay.resolved_at >= now - timedelta(days=MISSED_LOOKBACK_DAYS))
        ),
    )
    if customer_ids is not None:
        pq = pq.where(PromiseToPay.customer_id.in_(customer_ids))
    due_today: list[RadarItem] = []
    overdue: list[RadarItem] = []
    promise_exposure: dict[str, int] = {}
    for p in session.scalars(pq.order_by(PromiseToPay.promised_date, PromiseToPay.id)):
        if p.status == PromiseStatus.OPEN:
            _add(promise_exposure, p.currency, p.amount_minor)
        open_invoices = [i for i in p.invoices if i.status == InvoiceStatus.OPEN]
        if p.status == PromiseStatus.MISSED and p.invoices and not open_invoices:
            continue  # missed, but everything was paid since: nothing left to chase
        badges: list[str] = []
        past_deadline = today > promise_deadline(p)
        if p.status == PromiseStatus.MISSED or past_deadline:
            badges.append(BADGE_MISSED)
        elif p.promised_date < today:
            badges.append(BADGE_IN_GRACE)
        elif p.promised_date == today:
            badges.append(BADGE_DUE_TODAY)
        if not p.invoices:
            badges.append(BADGE_NO_INVOICE)
        if p.amount_minor >= high_exposure_minor:
            badges.append(BADGE_HIGH_EXPOSURE)
        item = RadarItem(
            kind="promise",
            id=p.id,
            customer_id=p.customer_id,
            customer_name=names.get(p.customer_id, ""),
            amount_minor=p.amount_minor,
            currency=p.currency,
            due_date=p.promised_date,
            status=p.status.value,
            days_overdue=max(0, (today - p.promised_date).days),
            badges=badges,
            invoice_numbers=[i.number for i in p.invoices],
        )
        if p.status == PromiseStatus.OPEN and p.promised_date == today:
            due_today.append(item)
        elif p.promised_date < today:
            overdue.append(item)
    return due_today, overdue, promise_exposure


def _plan_items(
    session: Session,
    org_id: int,
    today: date,
    names: dict[int, str],
    high_exposure_minor: int,
    customer_ids: list[int] | None,
) -> tuple[list[RadarItem], dict[str, int]]:
    """Running plans near default or defaulted with money left, and the remaining exposure of
    every running plan per currency."""
    plq = select(PaymentPlan).where(
        PaymentPlan.org_id == org_id, PaymentPlan.status.in_(list(RUNNING))
    )
    if customer_ids is not None:
        plq = plq.where(PaymentPlan.customer_id.in_(customer_ids))
    near: list[RadarItem] = []
    plan_exposure: dict[str, int] = {}
    for plan in session.scalars(plq.order_by(PaymentPlan.id)):
        s = summarize(plan, today)
        _add(plan_exposure, plan.currency, s.remaining_minor)
        defaulted = s.installments_missed > 0 and s.remaining_minor > 0
        if not (s.approaching_default or defaulted) or s.next_due_date is None:
            continue
        badges = []
        if defaulted:
            badges.append(BADGE_MISSED)
        if s.next_due_date == today:
            badges.append(BADGE_DUE_TODAY)
        elif s.next_due_date < today and not defaulted:
            badges.append(BADGE_IN_GRACE)
        if s.remaining_minor >= high_exposure_minor:
            badges.append(BADGE_HIGH_EXPOSURE)
        near.append(
            RadarItem(
                kind="plan",
                id=plan.id,
                customer_id=plan.customer_id,
                customer_name=names.get(plan.customer_id, ""),
                amount_minor=s.next_due_minor or 0,
                currency=plan.currency,
                due_date=s.next_due_date,
                status=plan.status.value,
                days_overdue=max(0, (today - s.next_due_date).days),
                badges=badges,
                invoice_numbers=[i.number for i in plan.invoices],
                adherence_pct=s.adherence_pct,
            )
        )
    return near, plan_exposure


def commitment_radar(
    session: Session,
    org_id: int,
    *,
    now: datetime | None = None,
    high_exposure_minor: int = HIGH_EXPOSURE_MINOR,
    customer_ids: list[int] | None = None,
) -> Radar:
    """Build the radar for ``now`` (the organisation's date). ``customer_ids`` scopes it to a
    user's accounts (Today's Focus); None means the whole organisation."""
    now = now or utcnow()
    today = org_today(session, org_id, now)
    names = dict(
        session.execute(select(Customer.id, Customer.name).where(Customer.org_id == org_id)).all()
    )

    due_today, overdue, promise_exposure = _promise_items(
        session, org_id, now, today, names, high_exposure_minor, customer_ids
    )
    near, plan_exposure = _plan_items(
        session, org_id, today, names, high_exposure_minor, customer_ids
    )
    near.sort(key=lambda i: (i.due_date, i.id))
    overdue.sort(key=lambda i: (-i.days_overdue, i.id))
    return Radar(
        as_of=today,
        due_today=due_today,
        overdue=overdue,
        plans_near_default=near,
        promise_exposure=promise_exposure,
        active_plan_exposure=plan_exposure,
        adherence=adherence(session, org_id, as_of=today),
        high_exposure_minor=high_exposure_minor,
        counts={
            "due_today": len(due_today),
            "overdue": len(overdue),
            "plans_near_default": len(near),
        },
    )
