"""The ledger's side of grounding: every amount, date, invoice number and link a text to one
customer may state (``LedgerTruth``).

Why apart: this is the part of grounding that reads the ledger, and it reads it in batches
(``ledger_truths``: a handful of queries for every customer of an Autopilot run, one query per
table); the comparison then works on the plain ``LedgerTruth``, with no database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory import business_day, clock
from memory.models import (
    Customer,
    Dispute,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentPlan,
    PlanInstallment,
    PromiseToPay,
)
from tools.grounding.extraction import normalize_link
from tools.kit.formatting import format_amount


class LedgerTruth(BaseModel):
    """Everything a draft to one customer may state: amounts per currency, dates, numbers, links."""

    customer_id: int
    currencies: list[str]
    amounts: dict[str, list[int]] = Field(description="currency -> amounts in minor units")
    dates: list[date]
    invoice_numbers: list[str]
    links: list[str]
    locale: str = "en_US"
    open_balances: dict[str, tuple[str, int]] = Field(
        default_factory=dict, description="open invoice number -> (currency, balance minor)"
    )
    open_due_dates: dict[str, date] = Field(
        default_factory=dict, description="open invoice number -> due date"
    )

    def amount_set(self, currency: str) -> frozenset[int]:
        return frozenset(self.amounts.get(currency, ()))

    def with_named_totals(self, invoice_numbers: Iterable[str]) -> LedgerTruth:
        """This truth plus, per currency, the open balance of the open invoices a text names, and
        the subtotals of those named invoices that fall due within one period.

        Why: a statement lists several invoices and totals them per currency; that total is a
        ledger figure for exactly the invoices the same text names (it changes when the text
        names others), so it is allowed for that text only. A consolidated message also heads
        its invoices by aging bucket with a subtotal per bucket (``tools.outreach.consolidation``);
        a
        bucket is a range of due dates, so its subtotal is the sum of the named invoices due in
        one such range. Every such range is allowed (not only today's buckets): the message is
        checked again when it is approved and sent, days later, when the buckets have moved.
        Unchanged when fewer than two are named.
        """
        named = {n.lower() for n in invoice_numbers}
        by_currency: dict[str, dict[date | None, int]] = {}
        count = 0
        for number, (currency, balance) in self.open_balances.items():
            if number.lower() in named:
                due = self.open_due_dates.get(number)
                per_day = by_currency.setdefault(currency, {})
                per_day[due] = per_day.get(due, 0) + balance
                count += 1
        if count < 2:
            return self
        amounts = {cur: list(v) for cur, v in self.amounts.items()}
        for cur, per_day in by_currency.items():
            have = amounts.setdefault(cur, [])
            extra = _range_sums(per_day) - set(have)
            if extra:
                amounts[cur] = sorted([*have, *extra])
        return self.model_copy(update={"amounts": amounts})

    def describe_amounts(self, limit: int = 6) -> str:
        parts: list[str] = []
        for cur, values in self.amounts.items():
            for v in sorted(set(values))[:limit]:
                parts.append(format_amount(v, cur, self.locale))
        return ", ".join(parts)


#: Above this many distinct due dates among the named invoices of one currency only their total
#: is allowed (the subtotals of every period would be too many figures to allow).
MAX_SUBTOTAL_DATES = 40


def _range_sums(per_day: dict[date | None, int]) -> set[int]:
    """The total of ``per_day`` (balance per due date), and the sum over every run of
    consecutive due dates when all dates are known and there are not too many."""
    total = sum(per_day.values())
    days = sorted(d for d in per_day if d is not None)
    if len(days) != len(per_day) or len(days) > MAX_SUBTOTAL_DATES:
        return {total}
    values = [per_day[d] for d in days]
    sums = {total}
    for start in range(len(values)):
        running = 0
        for value in values[start:]:
            running += value
            sums.add(running)
    return sums


def ledger_truth(
    session: Session,
    org_id: int,
    customer_id: int,
    *,
    as_of: date,
    links: Iterable[str] = (),
    locale: str = "en_US",
) -> LedgerTruth:
    """What the ledger says about one customer, for comparison with a draft.

    ``links`` are the pay links the caller allows (see ``tools.insights.account360.pay_link``).
    Scoped to
    ``org_id``: a customer of another organisation raises ``LookupError``.
    """
    customer = session.get(Customer, customer_id)
    if customer is None or customer.org_id != org_id:
        raise LookupError(f"customer {customer_id} is not in organisation {org_id}")
    return ledger_truths(
        session,
        org_id,
        [customer_id],
        as_of=as_of,
        links={customer_id: list(links)},
        locales={customer_id: locale},
    )[customer_id]


@dataclass
class _TruthParts:
    """What ``ledger_truths`` gathers per customer while it reads the ledger one table at a time:
    each table is one query for all customers (a batch), not one per customer."""

    amounts: dict[int, dict[str, set[int]]]
    dates: dict[int, set[date]]
    numbers: dict[int, list[str]]
    currencies: dict[int, set[str]]
    balances: dict[int, dict[str, tuple[str, int]]]
    due_dates: dict[int, dict[str, date]]

    @classmethod
    def empty(cls, ids: Sequence[int], as_of: date) -> _TruthParts:
        """Nothing read yet; ``as_of`` (today) is a date any draft may state."""
        return cls(
            amounts={c: {} for c in ids},
            dates={c: {as_of} for c in ids},
            numbers={c: [] for c in ids},
            currencies={c: set() for c in ids},
            balances={c: {} for c in ids},
            due_dates={c: {} for c in ids},
        )

    def add(self, cid: int, cur: str, value: int) -> None:
        """Allow an amount; zero and negative ones are never a figure a draft should state."""
        if value > 0:
            self.amounts[cid].setdefault(cur, set()).add(value)


def _invoice_truths(
    session: Session, org_id: int, ids: Sequence[int], as_of: date, parts: _TruthParts
) -> None:
    """Invoices: their numbers, dates, amounts, balances and part-payments, and per currency the
    open and the overdue total (a reminder states them)."""
    numbers, currencies, dates = parts.numbers, parts.currencies, parts.dates
    balances, due_dates, add = parts.balances, parts.due_dates, parts.add
    open_total: dict[tuple[int, str], int] = {}
    overdue_total: dict[tuple[int, str], int] = {}
    for inv in session.execute(
        select(
            Invoice.customer_id,
            Invoice.number,
            Invoice.currency,
            Invoice.amount_minor,
            Invoice.balance_minor,
            Invoice.issue_date,
            Invoice.due_date,
            Invoice.settled_date,
            Invoice.status,
        ).where(Invoice.org_id == org_id, Invoice.customer_id.in_(ids))
    ):
        cid = inv.customer_id
        numbers[cid].append(inv.number)
        currencies[cid].add(inv.currency)
        dates[cid].update((inv.issue_date, inv.due_date))
        if inv.settled_date:
            dates[cid].add(inv.settled_date)
        add(cid, inv.currency, inv.amount_minor)
        add(cid, inv.currency, inv.balance_minor)
        if inv.amount_minor > inv.balance_minor > 0:
            add(cid, inv.currency, inv.amount_minor - inv.balance_minor)
        if inv.status is InvoiceStatus.OPEN and inv.balance_minor > 0:
            balances[cid][inv.number] = (inv.currency, inv.balance_minor)
            due_dates[cid][inv.number] = inv.due_date
            key = (cid, inv.currency)
            open_total[key] = open_total.get(key, 0) + inv.balance_minor
            if inv.due_date < as_of:
                overdue_total[key] = overdue_total.get(key, 0) + inv.balance_minor
    for totals in (open_total, overdue_total):
        for (cid, cur), value in totals.items():
            add(cid, cur, value)


def _commitment_truths(
    session: Session, org_id: int, ids: Sequence[int], parts: _TruthParts
) -> None:
    """Promises-to-pay and payment plans: what was promised or agreed, by when (with grace), and
    each installment's amount, what is left of it, and its date."""
    dates, add = parts.dates, parts.add
    for pr in session.execute(
        select(
            PromiseToPay.customer_id,
            PromiseToPay.currency,
            PromiseToPay.amount_minor,
            PromiseToPay.promised_date,
            PromiseToPay.grace_days,
        ).where(PromiseToPay.org_id == org_id, PromiseToPay.customer_id.in_(ids))
    ):
        add(pr.customer_id, pr.currency, pr.amount_minor)
        dates[pr.customer_id].update(
            (pr.promised_date, pr.promised_date + timedelta(days=pr.grace_days))
        )
    for row in session.execute(
        select(
            PaymentPlan.customer_id,
            PaymentPlan.currency,
            PaymentPlan.total_minor,
            PlanInstallment.amount_minor,
            PlanInstallment.paid_minor,
            PlanInstallment.due_date,
        )
        .outerjoin(PlanInstallment, PlanInstallment.plan_id == PaymentPlan.id)
        .where(PaymentPlan.org_id == org_id, PaymentPlan.customer_id.in_(ids))
    ):
        add(row.customer_id, row.currency, row.total_minor)
        if row.due_date is not None:
            add(row.customer_id, row.currency, row.amount_minor)
            add(row.customer_id, row.currency, row.amount_minor - row.paid_minor)
            dates[row.customer_id].add(row.due_date)


def _other_truths(session: Session, org_id: int, ids: Sequence[int], parts: _TruthParts) -> None:
    """Payments received (amount and day), disputes' SLA dates and contract renewal dates."""
    dates, add = parts.dates, parts.add
    for pay in session.execute(
        select(
            Payment.customer_id, Payment.currency, Payment.amount_minor, Payment.received_on
        ).where(Payment.org_id == org_id, Payment.customer_id.in_(ids))
    ):
        add(pay.customer_id, pay.currency, pay.amount_minor)
        dates[pay.customer_id].add(pay.received_on)
    # A dispute's SLA date is the ledger's too (a dispute reply tells the payer when to expect
    # an answer), on the organisation's calendar as the dispute panel's replies write it.
    slas = session.execute(
        select(Dispute.customer_id, Dispute.sla_due_at).where(
            Dispute.org_id == org_id,
            Dispute.customer_id.in_(ids),
            Dispute.sla_due_at.is_not(None),
        )
    ).all()
    org_tz = business_day.org_zone(session, org_id) if slas else "UTC"
    for cid, sla_due in slas:
        if sla_due is not None:
            dates[cid].add(clock.business_date(org_tz, _aware(sla_due)))
    for cid, renewal in session.execute(
        select(Customer.id, Customer.renewal_date).where(
            Customer.org_id == org_id, Customer.id.in_(ids)
        )
    ):
        if renewal:
            dates[cid].add(renewal)


def ledger_truths(
    session: Session,
    org_id: int,
    customer_ids: Sequence[int],
    *,
    as_of: date,
    links: dict[int, list[str]] | None = None,
    locales: dict[int, str] | None = None,
) -> dict[int, LedgerTruth]:
    """``ledger_truth`` for many customers in a handful of queries (Autopilot's batches)."""
    ids = sorted(set(customer_ids))
    links = links or {}
    locales = locales or {}
    parts = _TruthParts.empty(ids, as_of)
    amounts, dates, numbers = parts.amounts, parts.dates, parts.numbers
    currencies, balances, due_dates = parts.currencies, parts.balances, parts.due_dates

    if not ids:
        return {}
    _invoice_truths(session, org_id, ids, as_of, parts)
    _commitment_truths(session, org_id, ids, parts)
    _other_truths(session, org_id, ids, parts)
    return {
        cid: LedgerTruth(
            customer_id=cid,
            currencies=sorted(set(amounts[cid]) | currencies[cid]),
            amounts={cur: sorted(v) for cur, v in amounts[cid].items()},
            dates=sorted(dates[cid]),
            invoice_numbers=numbers[cid],
            links=sorted({normalize_link(u) for u in links.get(cid, ())}),
            locale=locales.get(cid, "en_US"),
            open_balances=balances[cid],
            open_due_dates=due_dates[cid],
        )
        for cid in ids
    }


def _aware(moment: datetime) -> datetime:
    """A stored UTC moment (naive on SQLite) as an aware one."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
