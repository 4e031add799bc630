"""Renewal Risk: accounts renewing soon, ranked by how their receivables look.

Why: a CSM walking into a renewal should know whether the account owes money, broke promises or
keeps disputing invoices, while there is still time to sort it out.

Definitions (all as of ``as_of``; the look-back is the last ``lookback_days``, 365 by default):

* **In the window**: renewal date from ``as_of`` to ``as_of + window_days`` (inclusive).
* **Past-due balance**: open balance of invoices past their due date, per currency.
* **Broken promises**: promises-to-pay falling due in the look-back that were missed, or are still
  open after their promised date plus grace.
* **Dispute frequency**: disputes opened in the look-back ÷ invoices issued in the look-back.
* **Risk score** (0 to 4): 2 × the account's past-due balance ÷ the largest past-due balance in the
  list *in the same currency* (never mixing currencies) + min(broken promises, 3) ÷ 3 + dispute
  frequency (capped at 1). High from 1.5, Medium from 0.5, else Low. Ties go to the earlier renewal.
* **Freshness**: the time the figures were computed, and the last time the ledger changed (last
  import, newest payment or invoice change), so nobody mistakes old data for news.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from memory import business_day, clock
from memory.errors import PlixoError
from memory.models import (
    Customer,
    Dispute,
    Invoice,
    InvoiceStatus,
    Organisation,
    Payment,
    PromiseStatus,
    PromiseToPay,
    Segment,
    User,
)
from tools.insights.metrics import is_broken_promise

DEFAULT_WINDOW_DAYS = 90
DEFAULT_LOOKBACK_DAYS = 365
MAX_WINDOW_DAYS = 730
OwnerRole = Literal["csm", "sales", "collector", "any"]


@dataclass
class RenewalRow:
    """One account renewing inside the window, with the figures behind its rank."""

    customer_id: int
    customer_name: str
    segment: str | None
    csm: str | None
    sales: str | None
    renewal_date: date
    days_to_renewal: int
    open_minor: dict[str, int]
    past_due_minor: dict[str, int]
    broken_promises: int
    disputes: int
    invoices: int
    dispute_frequency: float | None
    score: float = 0.0
    level: str = "Low"
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "customer_name": self.customer_name,
            "segment": self.segment,
            "csm": self.csm,
            "sales": self.sales,
            "renewal_date": self.renewal_date.isoformat(),
            "days_to_renewal": self.days_to_renewal,
            "open_minor": self.open_minor,
            "past_due_minor": self.past_due_minor,
            "broken_promises": self.broken_promises,
            "disputes": self.disputes,
            "invoices": self.invoices,
            "dispute_frequency": (
                None if self.dispute_frequency is None else round(self.dispute_frequency, 4)
            ),
            "score": round(self.score, 3),
            "level": self.level,
            "reasons": self.reasons,
        }


@dataclass
class RenewalReport:
    as_of: date
    window_days: int
    lookback_days: int
    segment_id: int | None
    owner_user_id: int | None
    rows: list[RenewalRow]
    computed_at: datetime
    ledger_updated_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "window_days": self.window_days,
            "lookback_days": self.lookback_days,
            "segment_id": self.segment_id,
            "owner_user_id": self.owner_user_id,
            "computed_at": self.computed_at.isoformat(),
            "ledger_updated_at": (
                self.ledger_updated_at.isoformat() if self.ledger_updated_at else None
            ),
            "rows": [r.to_dict() for r in self.rows],
        }


class RenewalInputError(PlixoError, ValueError):
    """A filter that cannot be honoured; the message says what to send instead (422)."""

    http_status = 422


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def ledger_updated_at(session: Session, org_id: int) -> datetime | None:
    """The last time the ledger changed: the last import, newest payment, newest invoice edit."""
    org = session.get(Organisation, org_id)
    stamps = [
        org.last_import_at if org else None,
        session.scalar(select(func.max(Payment.created_at)).where(Payment.org_id == org_id)),
        session.scalar(select(func.max(Invoice.updated_at)).where(Invoice.org_id == org_id)),
    ]
    found = [s for s in (_aware(v) for v in stamps) if s is not None]
    return max(found) if found else None


def _renewing_accounts(
    org_id: int,
    as_of: date,
    window_days: int,
    segment_id: int | None,
    owner_user_id: int | None,
    owner_role: OwnerRole,
) -> Any:
    """The accounts renewing inside the window, with segment and owners' names, optionally
    narrowed to one segment and to the accounts one person owns (in a role, or in any)."""
    csm = aliased(User)
    sales = aliased(User)
    q = (
        select(
            Customer.id,
            Customer.name,
            Segment.name,
            csm.name,
            sales.name,
            Customer.renewal_date,
        )
        .outerjoin(Segment, Segment.id == Customer.segment_id)
        .outerjoin(csm, csm.id == Customer.csm_user_id)
        .outerjoin(sales, sales.id == Customer.sales_user_id)
        .where(
            Customer.org_id == org_id,
            Customer.renewal_date.is_not(None),
            Customer.renewal_date >= as_of,
            Customer.renewal_date <= as_of + timedelta(days=window_days),
        )
    )
    if segment_id is not None:
        q = q.where(Customer.segment_id == segment_id)
    if owner_user_id is not None:
        owner_columns = {
            "csm": Customer.csm_user_id,
            "sales": Customer.sales_user_id,
            "collector": Customer.collector_user_id,
        }
        if owner_role == "any":
            q = q.where(
                (Customer.csm_user_id == owner_user_id)
                | (Customer.sales_user_id == owner_user_id)
                | (Customer.collector_user_id == owner_user_id)
            )
        else:
            q = q.where(owner_columns[owner_role] == owner_user_id)
    return q


def _open_and_past_due(
    session: Session, org_id: int, ids: list[int], as_of: date
) -> tuple[dict[int, dict[str, int]], dict[int, dict[str, int]]]:
    """Per account and currency: the open balance, and the part of it past due on ``as_of``."""
    open_by: dict[int, dict[str, int]] = defaultdict(dict)
    past_by: dict[int, dict[str, int]] = defaultdict(dict)
    balances = session.execute(
        select(
            Invoice.customer_id,
            Invoice.currency,
            func.sum(Invoice.balance_minor),
            func.sum(case((Invoice.due_date < as_of, Invoice.balance_minor), else_=0)),
        )
        .where(
            Invoice.org_id == org_id,
            Invoice.customer_id.in_(ids),
            Invoice.status == InvoiceStatus.OPEN,
            Invoice.balance_minor > 0,
            Invoice.issue_date <= as_of,
        )
        .group_by(Invoice.customer_id, Invoice.currency)
    ).all()
    for cid, cur, total, past in balances:
        open_by[cid][cur] = int(total or 0)
        if past:
            past_by[cid][cur] = int(past)
    return open_by, past_by


def _broken_promises(
    session: Session, org_id: int, ids: list[int], since: date, as_of: date
) -> dict[int, int]:
    """Per account, the promises due in the look-back that were broken by ``as_of``."""
    broken: dict[int, int] = defaultdict(int)
    for cid, status, promised, grace in session.execute(
        select(
            PromiseToPay.customer_id,
            PromiseToPay.status,
            PromiseToPay.promised_date,
            PromiseToPay.grace_days,
        ).where(
            PromiseToPay.org_id == org_id,
            PromiseToPay.customer_id.in_(ids),
            PromiseToPay.promised_date >= since,
            PromiseToPay.promised_date <= as_of,
            PromiseToPay.status.in_((PromiseStatus.OPEN, PromiseStatus.MISSED)),
        )
    ).all():
        if is_broken_promise(status, promised, int(grace), as_of):
            broken[cid] += 1
    return broken


def _disputes_and_invoices(
    session: Session, org_id: int, ids: list[int], since: date, as_of: date
) -> tuple[dict[int, int], dict[int, int]]:
    """Per account, the disputes opened and the invoices issued in the look-back (disputes by
    the organisation's business days, so the window matches the one the user sees)."""
    disputes: dict[int, int] = defaultdict(int)
    invoices: dict[int, int] = defaultdict(int)
    tz = business_day.org_zone(session, org_id)
    window_start = clock.start_of_business_day(since, tz)
    window_end = clock.start_of_business_day(as_of + timedelta(days=1), tz)
    for cid, n in session.execute(
        select(Dispute.customer_id, func.count())
        .where(
            Dispute.org_id == org_id,
            Dispute.customer_id.in_(ids),
            Dispute.opened_at >= window_start,
            Dispute.opened_at < window_end,
        )
        .group_by(Dispute.customer_id)
    ).all():
        disputes[cid] = int(n)
    for cid, n in session.execute(
        select(Invoice.customer_id, func.count())
        .where(
            Invoice.org_id == org_id,
            Invoice.customer_id.in_(ids),
            Invoice.status != InvoiceStatus.VOID,
            Invoice.issue_date > since,
            Invoice.issue_date <= as_of,
        )
        .group_by(Invoice.customer_id)
    ).all():
        invoices[cid] = int(n)
    return disputes, invoices


def renewal_risk(
    session: Session,
    org_id: int,
    *,
    as_of: date | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
    segment_id: int | None = None,
    owner_user_id: int | None = None,
    owner_role: OwnerRole = "csm",
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    now: datetime | None = None,
) -> RenewalReport:
    """Accounts of ``org_id`` renewing inside the window, highest risk first."""
    if not 0 <= window_days <= MAX_WINDOW_DAYS:
        raise RenewalInputError(f"window must be 0 to {MAX_WINDOW_DAYS} days (got {window_days})")
    if lookback_days < 1:
        raise RenewalInputError(f"look-back must be at least 1 day (got {lookback_days})")
    now = now or clock.now()
    as_of = as_of or business_day.org_business_date(session, org_id, now)
    since = as_of - timedelta(days=lookback_days)
    q = _renewing_accounts(org_id, as_of, window_days, segment_id, owner_user_id, owner_role)
    accounts = session.execute(q).all()
    ids = [a[0] for a in accounts]
    open_by: dict[int, dict[str, int]] = {}
    past_by: dict[int, dict[str, int]] = {}
    broken: dict[int, int] = {}
    disputes: dict[int, int] = {}
    invoices: dict[int, int] = {}
    if ids:
        open_by, past_by = _open_and_past_due(session, org_id, ids, as_of)
        broken = _broken_promises(session, org_id, ids, since, as_of)
        disputes, invoices = _disputes_and_invoices(session, org_id, ids, since, as_of)

    rows = []
    for cid, name, segment, csm_name, sales_name, renewal in accounts:
        assert renewal is not None  # filtered in the query
        n_inv = invoices.get(cid, 0)
        rows.append(
            RenewalRow(
                customer_id=cid,
                customer_name=name,
                segment=segment,
                csm=csm_name,
                sales=sales_name,
                renewal_date=renewal,
                days_to_renewal=(renewal - as_of).days,
                open_minor=dict(sorted(open_by.get(cid, {}).items())),
                past_due_minor=dict(sorted(past_by.get(cid, {}).items())),
                broken_promises=broken.get(cid, 0),
                disputes=disputes.get(cid, 0),
                invoices=n_inv,
                dispute_frequency=(disputes.get(cid, 0) / n_inv) if n_inv else None,
            )
        )
    _score(rows)
    rows.sort(key=lambda r: (-r.score, r.renewal_date, r.customer_name, r.customer_id))
    return RenewalReport(
        as_of=as_of,
        window_days=window_days,
        lookback_days=lookback_days,
        segment_id=segment_id,
        owner_user_id=owner_user_id,
        rows=rows,
        computed_at=now,
        ledger_updated_at=ledger_updated_at(session, org_id),
    )


def _score(rows: list[RenewalRow]) -> None:
    """Score and level each row (see the module docstring); past due is relative per currency."""
    largest: dict[str, int] = defaultdict(int)
    for r in rows:
        for cur, amount in r.past_due_minor.items():
            largest[cur] = max(largest[cur], amount)
    for r in rows:
        past_share = max(
            (amount / largest[cur] for cur, amount in r.past_due_minor.items() if largest[cur]),
            default=0.0,
        )
        broken_part = min(r.broken_promises, 3) / 3
        dispute_part = min(r.dispute_frequency or 0.0, 1.0)
        r.score = 2 * past_share + broken_part + dispute_part
        r.level = "High" if r.score >= 1.5 else "Medium" if r.score >= 0.5 else "Low"
        if r.past_due_minor:
            r.reasons.append("Past-due balance")
        if r.broken_promises:
            r.reasons.append(
                f"{r.broken_promises} broken promise{'s' if r.broken_promises != 1 else ''}"
            )
        if r.disputes:
            r.reasons.append(f"{r.disputes} dispute{'s' if r.disputes != 1 else ''} in the period")
