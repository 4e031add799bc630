"""Today's Focus: the ranked work for one user, most expected cash at risk first.

Why it is one SQL statement: the ranking must cover every open invoice in the user's scope (a
million in the benchmark) and answer in well under a second, so the database computes each
invoice's payment risk (the stored model's arithmetic, see ``tools/insights/risk.py``), its urgency
and its
priority, sorts, and returns only the top of the list. Python then adds the words: badges and the
reasons behind each risk score.

Definitions:

* **Expected cash at risk** = open balance × risk (the probability of late payment).
* **Urgency** = a step by days past due (not due and more than 7 days away 0.3; due within 7 days
  0.6; 1-30 days past due 1.0; 31-60 1.5; 61-90 2.0; 90+ 2.5) plus 1.0 for a promise due today,
  1.0 for a broken promise, 1.0 for a payment plan near default and 1.5 for a dispute within
  4 hours of (or past) its SLA.
* **Priority** (the ranking) = expected cash at risk × urgency.
* **Badges**: "High exposure" (expected cash at risk among the largest tenth of the list),
  "Promise due today", "Broken promise" (missed, or open past promised date + grace),
  "Plan near default" (an active plan with an installment unpaid past its due date, or missed),
  "SLA breach in 4 h" (an open dispute whose SLA ends within 4 hours; "SLA breached" once past).

Scope by persona: a Collector, Sales or CSM user sees the accounts they own (collector, sales or
CSM owner); Legal sees invoices with a dispute escalated to Legal; everyone else sees the whole
organisation. Money is never compared across currencies: the list is for one currency (the
organisation's by default) and names the other currencies with open invoices in scope.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Date as Date_
from sqlalchemy import Float, and_, case, cast, func, literal, null, or_, select, union_all
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from memory import business_day, clock
from memory.models import (
    OPEN_DISPUTE_STATUSES,
    AgingBucket,
    Customer,
    Dispute,
    DisputeStatus,
    InstallmentStatus,
    Invoice,
    InvoiceStatus,
    Organisation,
    PaymentPlan,
    Persona,
    PlanInstallment,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
    User,
    aging_bucket,
    plan_invoice,
    promise_invoice,
)
from tools.insights.risk import (
    AGGREGATES,
    Reason,
    RiskModel,
    SqlRisk,
    current_model,
    ensure_snapshot,
    features_from_aggregates,
    reasons_for,
    snapshot_currencies,
    sql_days,
    sql_risk,
)

HIGH_EXPOSURE = "High exposure"
PROMISE_DUE_TODAY = "Promise due today"
PLAN_NEAR_DEFAULT = "Plan near default"
SLA_SOON = "SLA breach in 4 h"
SLA_BREACHED = "SLA breached"
BROKEN_PROMISE = "Broken promise"
SLA_WINDOW = timedelta(hours=4)
HIGH_EXPOSURE_SHARE = 0.10
DEFAULT_LIMIT = 50
MAX_LIMIT = 500

#: Personas who see only the accounts they own, and which owner column says so.
OWNER_COLUMN = {
    Persona.COLLECTOR: Customer.collector_user_id,
    Persona.SALES: Customer.sales_user_id,
    Persona.CSM: Customer.csm_user_id,
}


@dataclass
class FocusItem:
    """One invoice on the list, with the numbers behind its place and the words for them."""

    rank: int
    invoice_id: int
    invoice_number: str
    customer_id: int
    customer_name: str
    currency: str
    balance_minor: int
    due_date: date
    days_past_due: int
    aging_bucket: AgingBucket
    risk: float
    at_risk_minor: int
    urgency: float
    priority: float
    badges: list[str]
    reasons: list[Reason]
    sla_due_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "invoice_id": self.invoice_id,
            "invoice_number": self.invoice_number,
            "customer_id": self.customer_id,
            "customer_name": self.customer_name,
            "currency": self.currency,
            "balance_minor": self.balance_minor,
            "due_date": self.due_date.isoformat(),
            "days_past_due": self.days_past_due,
            "aging_bucket": self.aging_bucket.value,
            "risk": round(self.risk, 4),
            "at_risk_minor": self.at_risk_minor,
            "urgency": self.urgency,
            "priority": round(self.priority, 2),
            "badges": self.badges,
            "reasons": [
                {"feature": r.feature, "text": r.text, "direction": r.direction, "weight": r.weight}
                for r in self.reasons
            ],
            "sla_due_at": self.sla_due_at.isoformat() if self.sla_due_at else None,
        }


@dataclass
class FocusList:
    """Today's Focus for one user: the ranked items and what the ranking rests on."""

    user_id: int
    persona: str
    scope: str
    as_of: date
    currency: str | None
    other_currencies: list[str]
    model_kind: str
    model_label: str
    fallback_reason: str | None
    items: list[FocusItem]
    generated_at: datetime
    elapsed_ms: float
    history_as_of: datetime | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "persona": self.persona,
            "scope": self.scope,
            "as_of": self.as_of.isoformat(),
            "currency": self.currency,
            "other_currencies": self.other_currencies,
            "model": {
                "kind": self.model_kind,
                "label": self.model_label,
                "fallback_reason": self.fallback_reason,
            },
            "generated_at": self.generated_at.isoformat(),
            "history_as_of": self.history_as_of.isoformat() if self.history_as_of else None,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "notes": self.notes,
            "items": [i.to_dict() for i in self.items],
        }


def scope_for(user: User) -> tuple[list[ColumnElement[bool]], str, bool]:
    """Conditions on ``Customer`` for the user's persona, a label, and whether Legal's filter
    (disputes escalated to Legal) applies on top."""
    column = OWNER_COLUMN.get(user.role)
    if column is not None:
        return [column == user.id], f"accounts where you are the {user.role.value}", False
    if user.role == Persona.LEGAL:
        return [], "invoices with a dispute escalated to Legal", True
    return [], "the whole organisation", False


def _urgency_base(dpd: ColumnElement[Any]) -> ColumnElement[Any]:
    return case(
        (dpd > 90, 2.5),
        (dpd > 60, 2.0),
        (dpd > 30, 1.5),
        (dpd > 0, 1.0),
        (dpd >= -7, 0.6),
        else_=0.3,
    )


def invoice_flags(org_id: int, as_of: date, dialect: str) -> Any:
    """Per invoice, in one small table: promise due today, broken promise, plan near default,
    the earliest SLA of an open dispute, and whether it is or was ever disputed."""
    d = literal(as_of, Date_)
    broken = or_(
        PromiseToPay.status == PromiseStatus.MISSED,
        and_(
            PromiseToPay.status == PromiseStatus.OPEN,
            sql_days(d, PromiseToPay.promised_date, dialect) > PromiseToPay.grace_days,
        ),
    )
    no_sla = cast(null(), Dispute.sla_due_at.type)
    promises = (
        select(
            promise_invoice.c.invoice_id.label("invoice_id"),
            case(
                (
                    and_(
                        PromiseToPay.status == PromiseStatus.OPEN, PromiseToPay.promised_date == d
                    ),
                    1,
                ),
                else_=0,
            ).label("due_today"),
            case((broken, 1), else_=0).label("broken"),
            literal(0).label("plan_near_default"),
            no_sla.label("sla"),
            literal(0).label("disputed"),
        )
        .join(PromiseToPay, PromiseToPay.id == promise_invoice.c.promise_id)
        .where(
            PromiseToPay.org_id == org_id,
            PromiseToPay.status.in_((PromiseStatus.OPEN, PromiseStatus.MISSED)),
        )
    )
    plans = (
        select(
            plan_invoice.c.invoice_id.label("invoice_id"),
            literal(0),
            literal(0),
            literal(1),
            no_sla,
            literal(0),
        )
        .join(PaymentPlan, PaymentPlan.id == plan_invoice.c.plan_id)
        .join(PlanInstallment, PlanInstallment.plan_id == PaymentPlan.id)
        .where(
            PaymentPlan.org_id == org_id,
            PaymentPlan.status == PlanStatus.ACTIVE,
            or_(
                PlanInstallment.status == InstallmentStatus.MISSED,
                and_(
                    PlanInstallment.status == InstallmentStatus.DUE,
                    PlanInstallment.due_date < d,
                    PlanInstallment.paid_minor < PlanInstallment.amount_minor,
                ),
            ),
        )
    )
    disputes = select(
        Dispute.invoice_id.label("invoice_id"),
        literal(0),
        literal(0),
        literal(0),
        case((Dispute.status.in_(OPEN_DISPUTE_STATUSES), Dispute.sla_due_at), else_=no_sla),
        literal(1),
    ).where(Dispute.org_id == org_id)
    every = union_all(promises, plans, disputes).subquery("flag_rows")
    return (
        select(
            every.c.invoice_id,
            func.max(every.c.due_today).label("due_today"),
            func.max(every.c.broken).label("broken"),
            func.max(every.c.plan_near_default).label("plan_near_default"),
            func.min(every.c.sla).label("sla"),
            func.max(every.c.disputed).label("disputed"),
        )
        .group_by(every.c.invoice_id)
        .subquery("flags")
    )


def urgency_expr(
    t: Any, flags: Any, as_of: date, now: datetime, dialect: str
) -> ColumnElement[Any]:
    """Urgency (see the module docstring) of invoice ``t`` joined to its ``flags``."""
    dpd = sql_days(literal(as_of, Date_), t.due_date, dialect)
    sla_soon = and_(
        flags.c.sla.is_not(None),
        flags.c.sla <= literal(now + SLA_WINDOW, Dispute.sla_due_at.type),
    )
    return (
        _urgency_base(dpd)
        + case((flags.c.due_today == 1, 1.0), else_=0.0)
        + case((flags.c.broken == 1, 1.0), else_=0.0)
        + case((flags.c.plan_near_default == 1, 1.0), else_=0.0)
        + case((sla_soon, 1.5), else_=0.0)
    )


def _ranked_top(
    org_id: int,
    t: Any,
    sr: SqlRisk,
    flags: Any,
    priority: ColumnElement[Any],
    chosen: str,
    limit: int,
    scoped_customers: Any,
    legal_only: bool,
) -> Any:
    """The top ``limit`` open invoices in ``chosen`` currency and the user's scope, by priority
    (Legal sees only invoices with a dispute escalated to Legal)."""
    # Rank: one pass computing only the priority, sorted, top ``limit`` kept.
    ranked = (
        select(t.id.label("invoice_id"), priority.label("priority"))
        .select_from(t)
        .outerjoin(sr.customers, sr.customers.c.customer_id == t.customer_id)
        .outerjoin(flags, flags.c.invoice_id == t.id)
        .where(
            t.org_id == org_id,
            t.status == InvoiceStatus.OPEN,
            t.balance_minor > 0,
            t.currency == chosen,
        )
        .order_by(priority.desc(), t.id)
        .limit(limit)
    )
    if scoped_customers is not None:
        ranked = ranked.where(t.customer_id.in_(scoped_customers))
    if legal_only:
        escalated = select(Dispute.invoice_id).where(
            Dispute.org_id == org_id, Dispute.status == DisputeStatus.ESCALATED_LEGAL
        )
        ranked = ranked.where(t.id.in_(escalated))
    return ranked.subquery("top")


def _explained(
    t: Any,
    top: Any,
    sr: SqlRisk,
    flags: Any,
    own_disputed: ColumnElement[Any],
    urgency: ColumnElement[Any],
) -> Any:
    """The kept rows with the columns the badges and the reasons need, best first."""
    # Explain: the same expressions again for the few rows kept, with what the words need.
    cr = sr.customers
    details = (
        select(
            t.id.label("invoice_id"),
            t.number.label("number"),
            t.customer_id.label("customer_id"),
            Customer.name.label("customer_name"),
            t.currency.label("currency"),
            t.amount_minor.label("amount_minor"),
            t.balance_minor.label("balance_minor"),
            t.issue_date.label("issue_date"),
            t.due_date.label("due_date"),
            t.paperless.label("paperless"),
            own_disputed.label("own_disputed"),
            sr.probability.label("risk"),
            urgency.label("urgency"),
            top.c.priority,
            func.coalesce(flags.c.due_today, 0).label("promise_due_today"),
            func.coalesce(flags.c.broken, 0).label("broken_promise"),
            func.coalesce(flags.c.plan_near_default, 0).label("plan_near_default"),
            flags.c.sla.label("sla_due_at"),
            *(cr.c[name] for name in AGGREGATES),
        )
        .select_from(top)
        .join(t, t.id == top.c.invoice_id)
        .join(Customer, Customer.id == t.customer_id)
        .outerjoin(cr, cr.c.customer_id == t.customer_id)
        .outerjoin(flags, flags.c.invoice_id == t.id)
        .order_by(top.c.priority.desc(), t.id)
    )
    return details


def _focus_items(
    rows: Sequence[Any], as_of: date, now: datetime, model: RiskModel
) -> list[FocusItem]:
    """The ranked rows as focus items: amount at risk, badges and reasons in words."""
    items: list[FocusItem] = []
    fm = features_from_aggregates(rows, as_of, model.priors)
    at_risk = [int(round(r.balance_minor * float(r.risk))) for r in rows]
    ordered = sorted(at_risk, reverse=True)
    threshold = ordered[max(0, math.ceil(len(ordered) * HIGH_EXPOSURE_SHARE) - 1)] if rows else 0
    for i, r in enumerate(rows):
        badges = []
        if at_risk[i] > 0 and at_risk[i] >= threshold:
            badges.append(HIGH_EXPOSURE)
        if r.promise_due_today:
            badges.append(PROMISE_DUE_TODAY)
        if r.broken_promise:
            badges.append(BROKEN_PROMISE)
        if r.plan_near_default:
            badges.append(PLAN_NEAR_DEFAULT)
        sla = _aware(r.sla_due_at)
        if sla is not None and sla <= now + SLA_WINDOW:
            badges.append(SLA_BREACHED if sla < now else SLA_SOON)
        items.append(
            FocusItem(
                rank=i + 1,
                invoice_id=r.invoice_id,
                invoice_number=r.number,
                customer_id=r.customer_id,
                customer_name=r.customer_name,
                currency=r.currency,
                balance_minor=int(r.balance_minor),
                due_date=r.due_date,
                days_past_due=max(0, (as_of - r.due_date).days),
                aging_bucket=aging_bucket(r.due_date, as_of),
                risk=float(r.risk),
                at_risk_minor=at_risk[i],
                urgency=round(float(r.urgency), 2),
                priority=float(r.priority),
                badges=badges,
                reasons=reasons_for(model, fm, i),
                sla_due_at=sla,
            )
        )
    return items


def todays_focus(
    session: Session,
    user: User,
    *,
    as_of: date | None = None,
    now: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    currency: str | None = None,
    model: RiskModel | None = None,
    customer_id: int | None = None,
) -> FocusList:
    """The ranked open invoices for ``user`` (scoped by persona), top ``limit`` first."""
    started = _time.perf_counter()
    now = now or clock.now()
    as_of = as_of or business_day.org_business_date(session, user.org_id, now)
    limit = max(1, min(limit, MAX_LIMIT))
    org_id = user.org_id
    org = session.get(Organisation, org_id)
    scope, scope_label, legal_only = scope_for(user)
    if customer_id is not None:
        scope = [*scope, Customer.id == customer_id]
    model = model or current_model(session, org_id)
    snapshot = ensure_snapshot(session, org_id, as_of, model)
    scoped_customers = (
        select(Customer.id).where(Customer.org_id == org_id, *scope).correlate(None)
        if scope
        else None
    )
    available = snapshot_currencies(session, org_id, scoped_customers)
    default_currency = org.default_currency if org is not None else None
    chosen = (currency or "").upper() or (
        default_currency if default_currency in available else (available[0] if available else None)
    )
    result = FocusList(
        user_id=user.id,
        persona=user.role.value,
        scope=scope_label,
        as_of=as_of,
        currency=chosen,
        other_currencies=[c for c in available if c != chosen],
        model_kind=model.kind,
        model_label=model.label,
        fallback_reason=model.fallback_reason,
        items=[],
        generated_at=now,
        elapsed_ms=0.0,
        history_as_of=snapshot.computed_at,
    )
    if chosen is None:
        result.notes.append(
            "No open invoices in your scope."
            if not scope
            else "No open invoices on the accounts assigned to you."
        )
        result.elapsed_ms = (_time.perf_counter() - started) * 1000
        return result

    dialect = session.get_bind().dialect.name
    t = aliased(Invoice, name="t")
    flags = invoice_flags(org_id, as_of, dialect)
    own_disputed = or_(t.disputed.is_(True), flags.c.disputed == 1)
    sr = sql_risk(org_id, as_of, model, t, dialect, own_disputed)
    urgency = urgency_expr(t, flags, as_of, now, dialect)
    priority = cast(t.balance_minor, Float) * sr.probability * urgency

    top = _ranked_top(org_id, t, sr, flags, priority, chosen, limit, scoped_customers, legal_only)
    details = _explained(t, top, sr, flags, own_disputed, urgency)
    rows = session.execute(details).all()
    if not rows:
        result.notes.append(f"No open {chosen} invoices in your scope.")
    result.items.extend(_focus_items(rows, as_of, now, model))
    result.elapsed_ms = (_time.perf_counter() - started) * 1000
    return result


def _aware(value: datetime | str | None) -> datetime | None:
    """Subquery results skip the ledger's UTC type on SQLite: normalise to an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
