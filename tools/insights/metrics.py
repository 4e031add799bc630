"""Receivables metrics with written definitions, computed from the ledger for any period.

Every figure is scoped to one organisation and, optionally, one segment, one owner and one currency
(:class:`Scope`). Money is never mixed across currencies: totals are per currency, and a ratio
(DSO, CEI, average days delinquent) over a scope holding several currencies says "not enough data"
until a currency is chosen. A ratio whose denominator is zero says "not enough data" too, with the
reason, instead of dividing by zero. The README repeats them (Metrics and scores).

Definitions (a period is a closed range of days ``start..end``; ``days`` is its length):

* **Outstanding on day D** (receivables): for each invoice issued on or before D and not void, the
  amount still unpaid at the end of D. An invoice settled on or before D owes nothing; an open one
  owes its balance plus what was paid or credited on it after D; a paid one settled after D owes its
  amount less what was paid or credited on it by D.
* **Aging buckets on day D**: outstanding split by days past due (D − due date): Current (not yet
  due, ≤ 0), 1-30, 31-60, 61-90, 90+.
* **Credit sales** in a period: the amounts of invoices issued in it.
* **Cash collected** in a period: payments received in it (per currency).
* **Sales window** of a period (what DSO simple, best possible DSO and ADD average sales over):
  the period itself when it is at least ``SALES_WINDOW_MIN_DAYS`` long; a shorter one (a month to
  date, a single day) uses the ``SALES_WINDOW_DAYS`` days ending on its last day, so a few days of
  sales never stand for a month's. Every such figure names its window.
* **DSO, simple method**: outstanding at the period's end ÷ credit sales in the sales window ×
  the window's days.
* **DSO, countback method**: take the outstanding at the period's end and walk back through calendar
  months (the first is the 1st of the end's month to the end date), subtracting each month's credit
  sales; every month fully absorbed adds its days, the month that absorbs the rest adds
  (rest ÷ that month's sales) × its days. Receivables older than ``COUNTBACK_MONTHS`` of sales:
  not enough data.
* **CEI** (collection effectiveness index): (receivables at the start + credit sales − receivables
  at the end) ÷ (receivables at the start + credit sales − current receivables at the end) × 100.
  "At the start" is the end of the day before the period.
* **Best possible DSO**: current (not yet due) receivables at the end ÷ credit sales in the sales
  window × the window's days.
* **Average days delinquent** (ADD): DSO (simple) − best possible DSO.
* **Promise adherence**: of the promises-to-pay falling due in the period (or, "to date", of
  every promise) and decided by the evaluation date, the share kept. Missed = marked missed, or
  still open after promised date + grace days. Cancelled promises and promises still inside their
  grace are left out.
* **Promise exposure on day D**: amounts of promises open on D (made by D, not resolved by D).
* **Plan exposure**: unpaid installment amounts of active payment plans (the current state; plan
  installments carry no payment dates).
* **Dispute exposure on day D**: outstanding on D of invoices with a dispute open on D.
"""

from __future__ import annotations

import calendar
import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import Date, Select, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from memory import business_day
from memory.models import (
    OPEN_DISPUTE_STATUSES,
    AgingBucket,
    Customer,
    Dispute,
    InstallmentStatus,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentPlan,
    PlanInstallment,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
)
from tools.insights.risk import sql_days

NOT_ENOUGH_DATA = "not enough data"
COUNTBACK_MONTHS = 24
SALES_WINDOW_MIN_DAYS = 28  # February: a whole month is its own sales window
SALES_WINDOW_DAYS = 30
BUCKETS: tuple[AgingBucket, ...] = tuple(AgingBucket)

OwnerRole = Literal["any", "collector", "sales", "csm"]


# --- scope, periods, figures ------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Whose receivables: an organisation, optionally narrowed to a segment, owner and currency."""

    org_id: int
    segment_id: int | None = None
    owner_user_id: int | None = None
    owner_role: OwnerRole = "any"
    currency: str | None = None
    customer_id: int | None = None

    def customer_filter(self) -> list[ColumnElement[bool]]:
        """Conditions on ``Customer`` (empty when the scope is the whole organisation)."""
        cond: list[ColumnElement[bool]] = []
        if self.customer_id is not None:
            cond.append(Customer.id == self.customer_id)
        if self.segment_id is not None:
            cond.append(Customer.segment_id == self.segment_id)
        if self.owner_user_id is not None:
            uid = self.owner_user_id
            by_role = {
                "collector": Customer.collector_user_id == uid,
                "sales": Customer.sales_user_id == uid,
                "csm": Customer.csm_user_id == uid,
            }
            cond.append(
                by_role[self.owner_role] if self.owner_role in by_role else or_(*by_role.values())
            )
        return cond

    @property
    def narrowed(self) -> bool:
        return (
            self.segment_id is not None
            or self.owner_user_id is not None
            or self.customer_id is not None
        )


@dataclass(frozen=True)
class Period:
    """A closed range of days."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"period ends ({self.end}) before it starts ({self.start})")

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @classmethod
    def month(cls, year: int, month: int) -> Period:
        return cls(date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1]))

    @classmethod
    def quarter(cls, year: int, q: int) -> Period:
        first = 3 * (q - 1) + 1
        return cls(date(year, first, 1), Period.month(year, first + 2).end)

    @classmethod
    def year(cls, year: int) -> Period:
        return cls(date(year, 1, 1), date(year, 12, 31))

    def label(self) -> str:
        whole_month = (
            self.start.day == 1 and self.end == Period.month(self.end.year, self.end.month).end
        )
        if whole_month and (self.start.year, self.start.month) == (self.end.year, self.end.month):
            return self.start.strftime("%b %Y")
        return f"{self.start.isoformat()} – {self.end.isoformat()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "days": self.days,
            "label": self.label(),
        }


def sales_window(period: Period) -> Period:
    """The days whose credit sales DSO (simple), best possible DSO and ADD average over."""
    if period.days >= SALES_WINDOW_MIN_DAYS:
        return period
    return Period(period.end - timedelta(days=SALES_WINDOW_DAYS - 1), period.end)


def last_complete_month(today: date) -> Period:
    """The calendar month before the one ``today`` is in: the figures' default period."""
    last = today.replace(day=1) - timedelta(days=1)
    return Period.month(last.year, last.month)


def month_to_date(today: date) -> Period:
    """The 1st of ``today``'s month to ``today``: shown beside the last complete month."""
    return Period(today.replace(day=1), today)


@dataclass(frozen=True)
class Figure:
    """One metric value, or the reason there is none (``not enough data: ...``)."""

    metric: str
    value: float | None
    unit: str
    currency: str | None = None
    reason: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    window: Period | None = None  # the days the figure averages over, when not the period's

    @property
    def ok(self) -> bool:
        return self.value is not None

    def text(self) -> str:
        if self.value is None:
            return NOT_ENOUGH_DATA
        if self.unit == "%":
            return f"{self.value:.1f}%"
        if self.unit == "days":
            return f"{self.value:.1f} days"
        return f"{self.value:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": None if self.value is None else round(self.value, 4),
            "unit": self.unit,
            "currency": self.currency,
            "reason": self.reason,
            "inputs": self.inputs,
            "window": None if self.window is None else self.window.to_dict(),
        }


def _missing(
    metric: str,
    unit: str,
    why: str,
    currency: str | None = None,
    *,
    window: Period | None = None,
    **inputs: Any,
) -> Figure:
    return Figure(metric, None, unit, currency, f"{NOT_ENOUGH_DATA}: {why}", dict(inputs), window)


# --- receivables on a day ---------------------------------------------------------------------


def _day_start_after(d: date) -> datetime:
    return datetime.combine(d + timedelta(days=1), time.min, tzinfo=UTC)


_Q = TypeVar("_Q", bound=Select)  # type: ignore[type-arg]


def _scoped(q: _Q, scope: Scope, customer_col: Any) -> _Q:
    cond = scope.customer_filter()
    if cond:
        q = q.join(Customer, Customer.id == customer_col).where(*cond)
    return q


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _resolved_credits(org_id: int, after: datetime) -> Any:
    """Per invoice, the credits of resolved disputes: granted before the end of the day
    (``after`` is the next day's start) and after it."""
    cred = (
        select(
            Dispute.invoice_id.label("invoice_id"),
            func.sum(case((Dispute.resolved_at < after, Dispute.credit_minor), else_=0)).label(
                "before"
            ),
            func.sum(case((Dispute.resolved_at >= after, Dispute.credit_minor), else_=0)).label(
                "after"
            ),
        )
        .where(
            Dispute.org_id == org_id,
            Dispute.credit_minor > 0,
            Dispute.resolved_at.is_not(None),
        )
        .group_by(Dispute.invoice_id)
        .subquery("cred")
    )
    return cred


def outstanding_subquery(session: Session, scope: Scope, as_of: date) -> Any:
    """Each invoice's outstanding amount at the end of ``as_of`` (see the module definitions).

    Payments are joined row by row and summed per invoice (an index lookup per invoice at
    worst), never as a pre-aggregated table the planner might rescan per invoice when the
    statistics are stale right after an import.
    """
    d = literal(as_of, Date)
    after = _day_start_after(as_of)
    cred = _resolved_credits(scope.org_id, after)
    per_invoice = (
        select(
            Invoice.id.label("invoice_id"),
            Invoice.customer_id.label("customer_id"),
            Invoice.currency.label("currency"),
            Invoice.due_date.label("due_date"),
            Invoice.amount_minor.label("amount"),
            Invoice.balance_minor.label("balance"),
            Invoice.settled_date.label("settled_date"),
            Invoice.status.label("status"),
            func.coalesce(
                func.sum(case((Payment.received_on <= d, Payment.applied_minor), else_=0)), 0
            ).label("paid_before"),
            func.coalesce(
                func.sum(case((Payment.received_on > d, Payment.applied_minor), else_=0)), 0
            ).label("paid_after"),
        )
        .select_from(Invoice)
        .outerjoin(Payment, Payment.invoice_id == Invoice.id)
        .where(
            Invoice.org_id == scope.org_id,
            Invoice.status != InvoiceStatus.VOID,
            Invoice.issue_date <= d,
        )
        .group_by(
            Invoice.id,
            Invoice.customer_id,
            Invoice.currency,
            Invoice.due_date,
            Invoice.amount_minor,
            Invoice.balance_minor,
            Invoice.settled_date,
            Invoice.status,
        )
    )
    if scope.currency:
        per_invoice = per_invoice.where(Invoice.currency == scope.currency)
    inv = _scoped(per_invoice, scope, Invoice.customer_id).subquery("per_invoice")
    rolled_back = inv.c.balance + inv.c.paid_after + func.coalesce(cred.c.after, 0)
    rolled_forward = inv.c.amount - inv.c.paid_before - func.coalesce(cred.c.before, 0)
    outstanding = case(
        (and_(inv.c.settled_date.is_not(None), inv.c.settled_date <= d), 0),
        (
            inv.c.status == InvoiceStatus.OPEN.value,
            case((rolled_back > inv.c.amount, inv.c.amount), else_=rolled_back),
        ),
        (
            and_(inv.c.settled_date.is_not(None), inv.c.settled_date > d),
            case((rolled_forward < 0, 0), else_=rolled_forward),
        ),
        else_=0,
    )
    return (
        select(
            inv.c.invoice_id,
            inv.c.customer_id,
            inv.c.currency,
            inv.c.due_date,
            outstanding.label("outstanding"),
            sql_days(d, inv.c.due_date, _dialect(session)).label("days_past_due"),
        )
        .select_from(inv)
        .outerjoin(cred, cred.c.invoice_id == inv.c.invoice_id)
        .subquery("outstanding")
    )


@dataclass
class AgingRow:
    """Outstanding in one currency on one day, by aging bucket (amounts and invoice counts)."""

    currency: str
    amounts: dict[AgingBucket, int]
    counts: dict[AgingBucket, int]

    @property
    def total(self) -> int:
        return sum(self.amounts.values())

    @property
    def current(self) -> int:
        return self.amounts[AgingBucket.CURRENT]

    @property
    def past_due(self) -> int:
        return self.total - self.current


def _bucket_case(days: Any) -> ColumnElement[str]:
    return case(
        (days <= 0, AgingBucket.CURRENT.value),
        (days <= 30, AgingBucket.D1_30.value),
        (days <= 60, AgingBucket.D31_60.value),
        (days <= 90, AgingBucket.D61_90.value),
        else_=AgingBucket.D90_PLUS.value,
    )


def aging(session: Session, scope: Scope, as_of: date) -> dict[str, AgingRow]:
    """Outstanding on ``as_of`` per currency and aging bucket (empty: nothing outstanding)."""
    sub = outstanding_subquery(session, scope, as_of)
    bucket = _bucket_case(sub.c.days_past_due)
    rows = session.execute(
        select(sub.c.currency, bucket.label("bucket"), func.sum(sub.c.outstanding), func.count())
        .where(sub.c.outstanding > 0)
        .group_by(sub.c.currency, bucket)
    ).all()
    out: dict[str, AgingRow] = {}
    for currency, b, amount, count in rows:
        row = out.setdefault(
            currency,
            AgingRow(currency, dict.fromkeys(BUCKETS, 0), dict.fromkeys(BUCKETS, 0)),
        )
        row.amounts[AgingBucket(b)] += int(amount or 0)
        row.counts[AgingBucket(b)] += int(count or 0)
    return dict(sorted(out.items()))


# --- flows in a period ------------------------------------------------------------------------


def credit_sales(session: Session, scope: Scope, period: Period) -> dict[str, int]:
    """Invoice amounts issued in the period, per currency."""
    q = select(Invoice.currency, func.sum(Invoice.amount_minor)).where(
        Invoice.org_id == scope.org_id,
        Invoice.status != InvoiceStatus.VOID,
        Invoice.issue_date >= period.start,
        Invoice.issue_date <= period.end,
    )
    if scope.currency:
        q = q.where(Invoice.currency == scope.currency)
    q = _scoped(q, scope, Invoice.customer_id).group_by(Invoice.currency)
    return {c: int(v or 0) for c, v in session.execute(q).all()}


def daily_credit_sales(
    session: Session, scope: Scope, start: date, end: date
) -> dict[str, dict[date, int]]:
    q = select(Invoice.currency, Invoice.issue_date, func.sum(Invoice.amount_minor)).where(
        Invoice.org_id == scope.org_id,
        Invoice.status != InvoiceStatus.VOID,
        Invoice.issue_date >= start,
        Invoice.issue_date <= end,
    )
    if scope.currency:
        q = q.where(Invoice.currency == scope.currency)
    q = _scoped(q, scope, Invoice.customer_id).group_by(Invoice.currency, Invoice.issue_date)
    out: dict[str, dict[date, int]] = defaultdict(dict)
    for cur, day, amount in session.execute(q).all():
        out[cur][day] = int(amount or 0)
    return out


def _has_invoices(session: Session, scope: Scope, by: date) -> set[str]:
    """Currencies of the scope's invoices issued by ``by`` (empty: no history at all)."""
    q = select(Invoice.currency).where(
        Invoice.org_id == scope.org_id,
        Invoice.status != InvoiceStatus.VOID,
        Invoice.issue_date <= by,
    )
    if scope.currency:
        q = q.where(Invoice.currency == scope.currency)
    q = _scoped(q, scope, Invoice.customer_id).distinct()
    return set(session.scalars(q))


def currencies(session: Session, scope: Scope) -> list[str]:
    """Every currency the scope has invoices in (the console's currency picker)."""
    q = select(Invoice.currency).where(
        Invoice.org_id == scope.org_id, Invoice.status != InvoiceStatus.VOID
    )
    return sorted(set(session.scalars(_scoped(q, scope, Invoice.customer_id).distinct())))


@dataclass(frozen=True)
class MoneyTotals:
    """Amounts per currency, or the reason there are none."""

    metric: str
    amounts: dict[str, int]
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def cash_collected(session: Session, scope: Scope, period: Period) -> MoneyTotals:
    """Payments received in the period, per currency (0 when invoices existed but nobody paid)."""
    q = select(Payment.currency, func.sum(Payment.amount_minor)).where(
        Payment.org_id == scope.org_id,
        Payment.received_on >= period.start,
        Payment.received_on <= period.end,
    )
    if scope.currency:
        q = q.where(Payment.currency == scope.currency)
    q = _scoped(q, scope, Payment.customer_id).group_by(Payment.currency)
    amounts = {c: int(v or 0) for c, v in session.execute(q).all()}
    if not amounts:
        currencies = _has_invoices(session, scope, period.end)
        if not currencies:
            return MoneyTotals(
                "cash_collected", {}, f"{NOT_ENOUGH_DATA}: no invoices by {period.end}"
            )
        amounts = dict.fromkeys(sorted(currencies), 0)
    return MoneyTotals("cash_collected", dict(sorted(amounts.items())))


# --- ratios -----------------------------------------------------------------------------------


def _one_currency(
    metric: str, unit: str, scope: Scope, *currency_sets: Iterable[str]
) -> str | Figure:
    """The single currency a ratio can be computed in, or the not-enough-data figure."""
    found = set().union(*(set(c) for c in currency_sets))
    if scope.currency:
        return scope.currency
    if not found:
        return _missing(metric, unit, "no invoices in scope for this period")
    if len(found) > 1:
        return _missing(
            metric,
            unit,
            f"currency mix ({', '.join(sorted(found))}); choose one currency",
            currencies=sorted(found),
        )
    return found.pop()


def _dso_simple_inputs(
    session: Session, scope: Scope, period: Period
) -> tuple[dict[str, AgingRow], dict[str, int]]:
    """Receivables at the period's end and credit sales in its sales window."""
    return aging(session, scope, period.end), credit_sales(session, scope, sales_window(period))


def dso_simple(session: Session, scope: Scope, period: Period) -> Figure:
    """Receivables at the end ÷ credit sales in the sales window × the window's days."""
    end_ar, window_sales = _dso_simple_inputs(session, scope, period)
    return _dso_simple_from(scope, period, end_ar, window_sales)


def _dso_simple_from(
    scope: Scope, period: Period, end_ar: dict[str, AgingRow], window_sales: dict[str, int]
) -> Figure:
    metric, unit = "dso_simple", "days"
    window = sales_window(period)
    cur = _one_currency(metric, unit, scope, end_ar, window_sales)
    if isinstance(cur, Figure):
        return dataclasses.replace(cur, window=window)
    receivables = end_ar[cur].total if cur in end_ar else 0
    s = window_sales.get(cur, 0)
    inputs = {"receivables_end": receivables, "credit_sales": s, "days": window.days}
    if s <= 0:
        return _missing(
            metric, unit, f"no credit sales in {window.label()}", cur, window=window, **inputs
        )
    return Figure(metric, receivables / s * window.days, unit, cur, None, inputs, window)


def _month_windows(end: date, months: int) -> list[tuple[date, date]]:
    """Calendar-month windows walking back from ``end``; the first ends on ``end`` itself."""
    windows = [(end.replace(day=1), end)]
    cursor = end.replace(day=1)
    for _ in range(months - 1):
        last = cursor - timedelta(days=1)
        cursor = last.replace(day=1)
        windows.append((cursor, last))
    return windows


def dso_countback(
    session: Session,
    scope: Scope,
    as_of: date,
    *,
    months: int = COUNTBACK_MONTHS,
    receivables_on: dict[str, AgingRow] | None = None,
) -> Figure:
    """Days of the most recent credit sales it takes to account for the receivables on ``as_of``
    (``receivables_on``: the aging on ``as_of`` when the caller already has it)."""
    metric, unit = "dso_countback", "days"
    ar = receivables_on if receivables_on is not None else aging(session, scope, as_of)
    windows = _month_windows(as_of, months)
    daily = daily_credit_sales(session, scope, windows[-1][0], as_of)
    cur = _one_currency(metric, unit, scope, ar, daily)
    if isinstance(cur, Figure):
        return cur
    receivables = ar[cur].total if cur in ar else 0
    sales_by_day = daily.get(cur, {})
    if not sales_by_day:
        return _missing(
            metric,
            unit,
            f"no credit sales in the {months} months to {as_of}",
            cur,
            receivables_end=receivables,
        )
    remaining = receivables
    dso = 0.0
    used: list[dict[str, Any]] = []
    for start, end in windows:
        days = (end - start).days + 1
        sales = sum(v for d, v in sales_by_day.items() if start <= d <= end)
        if remaining <= sales and sales > 0:
            dso += remaining / sales * days
            used.append({"month": start.strftime("%Y-%m"), "sales": sales, "days": days})
            return Figure(
                metric,
                dso,
                unit,
                cur,
                None,
                {"receivables_end": receivables, "months": used},
            )
        if remaining == 0:
            return Figure(metric, dso, unit, cur, None, {"receivables_end": 0, "months": used})
        remaining -= sales
        dso += days
        used.append({"month": start.strftime("%Y-%m"), "sales": sales, "days": days})
    return _missing(
        metric,
        unit,
        f"receivables exceed {months} months of credit sales",
        cur,
        receivables_end=receivables,
    )


def cei(session: Session, scope: Scope, period: Period) -> Figure:
    """Collection effectiveness index for the period, in percent."""
    end_ar = aging(session, scope, period.end)
    sales = credit_sales(session, scope, period)
    start_ar = aging(session, scope, period.start - timedelta(days=1))
    return _cei_from(scope, period, end_ar, sales, start_ar)


def _cei_from(
    scope: Scope,
    period: Period,
    end_ar: dict[str, AgingRow],
    sales: dict[str, int],
    start_ar: dict[str, AgingRow],
) -> Figure:
    metric, unit = "cei", "%"
    cur = _one_currency(metric, unit, scope, end_ar, sales, start_ar)
    if isinstance(cur, Figure):
        return cur
    begin = start_ar[cur].total if cur in start_ar else 0
    end_total = end_ar[cur].total if cur in end_ar else 0
    end_current = end_ar[cur].current if cur in end_ar else 0
    s = sales.get(cur, 0)
    inputs: dict[str, Any] = {
        "receivables_start": begin,
        "credit_sales": s,
        "receivables_end": end_total,
        "current_receivables_end": end_current,
    }
    denominator = begin + s - end_current
    if denominator <= 0:
        return _missing(metric, unit, f"nothing was collectible in {period.label()}", cur, **inputs)
    return Figure(metric, (begin + s - end_total) / denominator * 100.0, unit, cur, None, inputs)


def average_days_delinquent(session: Session, scope: Scope, period: Period) -> Figure:
    """DSO (simple) − best possible DSO: how many days, on average, payment runs past terms."""
    end_ar, window_sales = _dso_simple_inputs(session, scope, period)
    return _add_from(scope, period, end_ar, window_sales)


def _add_from(
    scope: Scope, period: Period, end_ar: dict[str, AgingRow], window_sales: dict[str, int]
) -> Figure:
    metric, unit = "average_days_delinquent", "days"
    dso = _dso_simple_from(scope, period, end_ar, window_sales)
    if dso.value is None or dso.currency is None:
        return Figure(metric, None, unit, dso.currency, dso.reason, dso.inputs, dso.window)
    current = end_ar[dso.currency].current if dso.currency in end_ar else 0
    best = current / dso.inputs["credit_sales"] * dso.inputs["days"]
    return Figure(
        metric,
        dso.value - best,
        unit,
        dso.currency,
        None,
        dso.inputs | {"current_receivables_end": current, "best_possible_dso": best},
        dso.window,
    )


# --- promises, plans, disputes ----------------------------------------------------------------


@dataclass
class PromiseCounts:
    """Promises falling due in a window, by outcome as of the evaluation date."""

    kept: int = 0
    missed: int = 0
    pending: int = 0  # open and still inside promised date + grace: not decided yet
    kept_amount: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    decided_amount: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def decided(self) -> int:
        return self.kept + self.missed

    def to_inputs(self) -> dict[str, Any]:
        return {
            "kept": self.kept,
            "missed": self.missed,
            "pending": self.pending,
            "kept_amount": dict(self.kept_amount),
            "decided_amount": dict(self.decided_amount),
        }


def promise_counts(
    session: Session,
    scope: Scope,
    period: Period | None,
    *,
    as_of: date,
    by_customer: bool = False,
) -> dict[int | None, PromiseCounts]:
    """Kept / missed / pending promises falling due in ``period`` (``None``: every promise, as
    decided on ``as_of``: "to date"), per customer when ``by_customer`` (else under ``None``).

    The one place promise outcomes are counted: the console, the Commitment Radar and the
    promise API all read them from here (Renewal Risk uses :func:`is_broken_promise`). Missed =
    marked missed, or still open after promised date + grace days on ``as_of``; cancelled
    promises never count.
    """
    q = select(
        PromiseToPay.customer_id,
        PromiseToPay.status,
        PromiseToPay.promised_date,
        PromiseToPay.grace_days,
        PromiseToPay.amount_minor,
        PromiseToPay.currency,
    ).where(
        PromiseToPay.org_id == scope.org_id,
        PromiseToPay.status != PromiseStatus.CANCELLED,
    )
    if period is not None:
        q = q.where(
            PromiseToPay.promised_date >= period.start, PromiseToPay.promised_date <= period.end
        )
    if scope.currency:
        q = q.where(PromiseToPay.currency == scope.currency)
    q = _scoped(q, scope, PromiseToPay.customer_id)
    out: dict[int | None, PromiseCounts] = {} if by_customer else {None: PromiseCounts()}
    for customer_id, status, promised, grace, amount, currency in session.execute(q).all():
        c = out.setdefault(int(customer_id), PromiseCounts()) if by_customer else out[None]
        if status == PromiseStatus.KEPT:
            c.kept += 1
            c.kept_amount[currency] += int(amount)
            c.decided_amount[currency] += int(amount)
        elif is_broken_promise(PromiseStatus(status), promised, int(grace), as_of):
            c.missed += 1
            c.decided_amount[currency] += int(amount)
        else:
            c.pending += 1
    return out


def promise_adherence(
    session: Session, scope: Scope, period: Period | None, *, as_of: date | None = None
) -> Figure:
    """Share of promises falling due in the period (``None``: to date) that were kept, of those
    decided by ``as_of``."""
    metric, unit = "promise_adherence", "%"
    as_of = as_of or business_day.org_business_date(session, scope.org_id)
    counts = promise_counts(session, scope, period, as_of=as_of)[None]
    window = period  # to date: the reason and label say "due by <as_of>"
    label = period.label() if period is not None else f"any promise as of {as_of.isoformat()}"
    if counts.decided == 0:
        return _missing(
            metric,
            unit,
            f"no promise fell due and was decided in {label}",
            None,
            window=window,
            **counts.to_inputs(),
        )
    value = counts.kept / counts.decided * 100.0
    return Figure(metric, value, unit, None, None, counts.to_inputs(), window)


def is_broken_promise(status: PromiseStatus, promised: date, grace_days: int, as_of: date) -> bool:
    """Missed, or still open after its promised date plus grace: the definition every view uses."""
    return status == PromiseStatus.MISSED or (
        status == PromiseStatus.OPEN and promised + timedelta(days=grace_days) < as_of
    )


@dataclass
class Exposure:
    """Money tied up in commitments on a day, per currency."""

    as_of: date
    promise: dict[str, int]
    plan: dict[str, int]
    dispute: dict[str, int]
    counts: dict[str, int]

    def rows(self) -> list[dict[str, Any]]:
        currencies = sorted(set(self.promise) | set(self.plan) | set(self.dispute))
        return [
            {
                "currency": c,
                "promise_exposure_minor": self.promise.get(c, 0),
                "plan_exposure_minor": self.plan.get(c, 0),
                "dispute_exposure_minor": self.dispute.get(c, 0),
            }
            for c in currencies
        ]


def exposure(session: Session, scope: Scope, as_of: date) -> Exposure:
    """Promise, plan and dispute exposure on ``as_of`` (see the module definitions)."""
    after = _day_start_after(as_of)
    pq = select(PromiseToPay.currency, func.sum(PromiseToPay.amount_minor), func.count()).where(
        PromiseToPay.org_id == scope.org_id,
        PromiseToPay.created_at < after,
        or_(
            PromiseToPay.resolved_at >= after,
            and_(PromiseToPay.resolved_at.is_(None), PromiseToPay.status == PromiseStatus.OPEN),
        ),
    )
    if scope.currency:
        pq = pq.where(PromiseToPay.currency == scope.currency)
    pq = _scoped(pq, scope, PromiseToPay.customer_id).group_by(PromiseToPay.currency)
    promise: dict[str, int] = {}
    counts = {"promises": 0, "plans": 0, "disputes": 0}
    for cur, amount, n in session.execute(pq).all():
        promise[cur] = int(amount or 0)
        counts["promises"] += int(n)

    unpaid = PlanInstallment.amount_minor - PlanInstallment.paid_minor
    lq = (
        select(PaymentPlan.currency, func.sum(unpaid), func.count(func.distinct(PaymentPlan.id)))
        .join(PlanInstallment, PlanInstallment.plan_id == PaymentPlan.id)
        .where(
            PaymentPlan.org_id == scope.org_id,
            PaymentPlan.status == PlanStatus.ACTIVE,
            PlanInstallment.status != InstallmentStatus.PAID,
        )
    )
    if scope.currency:
        lq = lq.where(PaymentPlan.currency == scope.currency)
    lq = _scoped(lq, scope, PaymentPlan.customer_id).group_by(PaymentPlan.currency)
    plan: dict[str, int] = {}
    for cur, amount, n in session.execute(lq).all():
        plan[cur] = int(amount or 0)
        counts["plans"] += int(n)

    open_disputes = (
        select(Dispute.invoice_id)
        .where(
            Dispute.org_id == scope.org_id,
            Dispute.opened_at < after,
            or_(
                Dispute.resolved_at >= after,
                and_(Dispute.resolved_at.is_(None), Dispute.status.in_(OPEN_DISPUTE_STATUSES)),
            ),
        )
        .distinct()
    )
    sub = outstanding_subquery(session, scope, as_of)
    dq = (
        select(sub.c.currency, func.sum(sub.c.outstanding), func.count())
        .where(sub.c.invoice_id.in_(open_disputes), sub.c.outstanding > 0)
        .group_by(sub.c.currency)
    )
    dispute: dict[str, int] = {}
    for cur, amount, n in session.execute(dq).all():
        dispute[cur] = int(amount or 0)
        counts["disputes"] += int(n)
    return Exposure(as_of, promise, plan, dispute, counts)


# --- series for the console -------------------------------------------------------------------


@dataclass
class MonthPoint:
    """One month of the console's trend charts."""

    period: Period
    cash_collected: MoneyTotals
    dso_simple: Figure
    dso_countback: Figure
    cei: Figure
    average_days_delinquent: Figure
    promise_adherence: Figure


def last_months(end: date, months: int) -> list[Period]:
    """The ``months`` calendar months ending with the one that contains ``end`` (oldest first)."""
    out = []
    y, m = end.year, end.month
    for _ in range(months):
        p = Period.month(y, m)
        out.append(Period(p.start, min(p.end, end)))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return list(reversed(out))


def monthly_series(
    session: Session, scope: Scope, end: date, months: int = 12, *, as_of: date | None = None
) -> list[MonthPoint]:
    """Month by month: cash collected, DSO (both methods), CEI, ADD and promise adherence."""
    points = []
    ar_cache: dict[date, dict[str, AgingRow]] = {}

    def ar_on(day: date) -> dict[str, AgingRow]:
        if day not in ar_cache:  # each month's end is the next month's start
            ar_cache[day] = aging(session, scope, day)
        return ar_cache[day]

    for period in last_months(end, months):
        end_ar = ar_on(period.end)
        start_ar = ar_on(period.start - timedelta(days=1))
        sales = credit_sales(session, scope, period)
        window = sales_window(period)
        window_sales = sales if window == period else credit_sales(session, scope, window)
        points.append(
            MonthPoint(
                period=period,
                cash_collected=cash_collected(session, scope, period),
                dso_simple=_dso_simple_from(scope, period, end_ar, window_sales),
                dso_countback=dso_countback(session, scope, period.end, receivables_on=end_ar),
                cei=_cei_from(scope, period, end_ar, sales, start_ar),
                average_days_delinquent=_add_from(scope, period, end_ar, window_sales),
                promise_adherence=promise_adherence(session, scope, period, as_of=as_of),
            )
        )
    return points


def latest_activity_date(session: Session, org_id: int) -> date | None:
    """The last day anything happened in the ledger (an invoice issued or a payment received)."""
    inv = session.scalar(select(func.max(Invoice.issue_date)).where(Invoice.org_id == org_id))
    pay = session.scalar(select(func.max(Payment.received_on)).where(Payment.org_id == org_id))
    days: Sequence[date] = [d for d in (inv, pay) if d is not None]
    return max(days) if days else None
