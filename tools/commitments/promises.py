"""Promises-to-pay: add, keep, miss, remind, and measure adherence.

A promise is a payer's word: an amount by a date, optionally tied to invoices. While it is open the
guardrails pause chasing of its invoices until ``promised_date + grace_days``; once it is missed the
invoices re-enter the cadence (the Autopilot selector reads ``status == missed``) with a tailored
"promise broken" follow-up. Kept/missed is decided by hand or automatically from payments.

This module also holds the error types the other commitment tools share, because it is the lowest
of them (plans, payments and disputes import it, never the other way round).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory import clock
from memory.errors import PlixoError
from memory.models import (
    Contact,
    Customer,
    Draft,
    Invoice,
    InvoiceStatus,
    Organisation,
    Payment,
    PromiseStatus,
    PromiseToPay,
    User,
    promise_invoice,
    utcnow,
)
from tools.insights import metrics
from tools.kit import audit
from tools.kit.authz import guarded
from tools.ledger.policy_overrides import policy_set_for

K = TypeVar("K")

DEFAULT_GRACE_DAYS = 3  # the seed policy's promises.default_grace_days
MAX_GRACE_DAYS = 30
MAX_PROMISE_HORIZON_DAYS = 366
REMINDER_LEAD_DAYS = 2
REMINDER_RUN_KEY = "promise-reminder:{promise_id}"


# --- errors shared by the commitment tools --------------------------------------------------------


class CommitmentError(PlixoError, ValueError):
    """Bad input to a commitment operation. The message says what to do; nothing was changed."""

    http_status = 400


class NotFound(CommitmentError):
    """The id does not exist in the caller's organisation (foreign ids look the same as missing)."""

    http_status = 404


def foreign_not_found() -> NotFound:
    """What a caller from another organisation is told: the same as for a missing id."""
    return NotFound("That does not exist in your organisation.")


class Conflict(CommitmentError):
    """The subject is in a state that does not allow the operation (e.g. a kept promise)."""

    http_status = 409


# --- small helpers the other commitment tools reuse ----------------------------------------------


def org_today(session: Session, org_id: int, now: datetime | None = None) -> date:
    """Today's date in the organisation's own time zone: promise and plan dates are its dates."""
    org = session.get(Organisation, org_id)
    return clock.business_date(org.timezone if org is not None else None, now)


def get_customer(session: Session, org_id: int, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None or customer.org_id != org_id:
        raise NotFound(f"Customer {customer_id} does not exist in this organisation.")
    return customer


def get_invoice(session: Session, org_id: int, invoice_id: int) -> Invoice:
    invoice = session.get(Invoice, invoice_id)
    if invoice is None or invoice.org_id != org_id:
        raise NotFound(f"Invoice {invoice_id} does not exist in this organisation.")
    return invoice


def load_open_invoices(
    session: Session, org_id: int, customer_id: int, invoice_ids: Iterable[int]
) -> list[Invoice]:
    """The given invoices, all of this customer, open with a balance, in one currency.

    Raises a clear error naming the first invoice that does not qualify.
    """
    ids = list(dict.fromkeys(invoice_ids))
    invoices: list[Invoice] = []
    for invoice_id in ids:
        inv = get_invoice(session, org_id, invoice_id)
        if inv.customer_id != customer_id:
            raise CommitmentError(
                f"Invoice {inv.number} belongs to another customer; link only this customer's "
                "invoices."
            )
        if inv.status != InvoiceStatus.OPEN or inv.balance_minor <= 0:
            raise CommitmentError(
                f"Invoice {inv.number} is {inv.status.value} with nothing left to pay; "
                "link only open invoices."
            )
        invoices.append(inv)
    currencies = {inv.currency for inv in invoices}
    if len(currencies) > 1:
        raise CommitmentError(
            "The invoices are in different currencies "
            f"({', '.join(sorted(currencies))}); make one commitment per currency."
        )
    return sorted(invoices, key=lambda i: (i.due_date, i.id))


def actor_label(actor: User | str) -> str:
    return f"{actor.name} ({actor.role.value})" if isinstance(actor, User) else actor


# --- promises -----------------------------------------------------------------------------------


def get_promise(session: Session, org_id: int, promise_id: int) -> PromiseToPay:
    promise = session.get(PromiseToPay, promise_id)
    if promise is None or promise.org_id != org_id:
        raise NotFound(f"Promise {promise_id} does not exist in this organisation.")
    return promise


def covered_keys(amount_minor: int, invoices: Sequence[tuple[K, date, int, int]]) -> list[K]:
    """What a promise covers: its linked invoices the promised amount reaches, oldest due first.

    ``invoices``: (key, due date, id, open balance) per linked invoice. The amount is spread over
    the open ones by due date; each invoice it reaches (fully or in part) is covered and paused,
    the rest stay in the cadence: a promise of $1,000 on three invoices of $1,000 pauses only the
    oldest. With no open invoice left every link is returned (nothing is chased anyway, and a
    promise always names its invoices)."""
    open_ones = sorted((i for i in invoices if i[3] > 0), key=lambda i: (i[1], i[2]))
    if not open_ones:
        return [i[0] for i in invoices]
    left = amount_minor
    out: list[K] = []
    for key, _due, _id, balance in open_ones:
        if left <= 0:
            break
        out.append(key)
        left -= balance
    return out


def covered_invoices(promise: PromiseToPay) -> list[Invoice]:
    """The invoices an open promise pauses (see :func:`covered_keys`); every link otherwise."""
    if promise.status != PromiseStatus.OPEN:
        return list(promise.invoices)
    return covered_keys(
        promise.amount_minor,
        [
            (i, i.due_date, i.id, i.balance_minor if i.status == InvoiceStatus.OPEN else 0)
            for i in promise.invoices
        ],
    )


def promise_deadline(promise: PromiseToPay) -> date:
    """The last day a payment still keeps the promise: the promised date plus the grace days."""
    return promise.promised_date + timedelta(days=promise.grace_days)


def _check_promised_date(promised_date: date, today: date) -> None:
    """A promise is for today or later, and at most a year away (beyond that, a plan)."""
    if promised_date < today:
        raise CommitmentError(
            f"The promised date {promised_date.isoformat()} is in the past (today is "
            f"{today.isoformat()}); record the date the payer gave for the future, or mark the "
            "earlier promise kept or missed."
        )
    if promised_date > today + timedelta(days=MAX_PROMISE_HORIZON_DAYS):
        raise CommitmentError(
            "The promised date is more than a year away; propose a payment plan instead."
        )


def _promise_contact(
    session: Session, org_id: int, customer: Customer, contact_id: int | None
) -> Contact | None:
    """The contact who promised, who must be one of this customer's."""
    contact: Contact | None = None
    if contact_id is not None:
        contact = session.get(Contact, contact_id)
        if contact is None or contact.org_id != org_id or contact.customer_id != customer.id:
            raise CommitmentError(
                f"Contact {contact_id} is not a contact of {customer.name}; pick one of theirs."
            )
    return contact


def _promise_currency(
    session: Session,
    org_id: int,
    invoices: Sequence[Invoice],
    currency: str | None,
    amount_minor: int,
) -> str:
    """The promise's currency: the linked invoices' (which the amount may not exceed), else the
    one given, else the organisation's; always an ISO code."""
    if invoices:
        inv_currency = invoices[0].currency
        if currency and currency.upper() != inv_currency:
            raise CommitmentError(
                f"The promise is in {currency.upper()} but the invoices are in {inv_currency}."
            )
        currency = inv_currency
        open_total = sum(i.balance_minor for i in invoices)
        if amount_minor > open_total:
            raise CommitmentError(
                f"The promised amount ({amount_minor}) is more than the linked invoices' open "
                f"balance ({open_total} minor units); lower it or link more invoices."
            )
    currency = (currency or _org_currency(session, org_id)).upper()
    if len(currency) != 3 or not currency.isalpha():
        raise CommitmentError(f"'{currency}' is not an ISO currency code (e.g. USD, EUR).")
    return currency


@guarded("manage_promises", foreign=foreign_not_found)
def add_promise(
    session: Session,
    org_id: int,
    *,
    customer_id: int,
    amount_minor: int,
    promised_date: date,
    actor: User | str,
    invoice_ids: Sequence[int] = (),
    contact_id: int | None = None,
    currency: str | None = None,
    grace_days: int | None = None,
    source: str = "manual",
    now: datetime | None = None,
) -> PromiseToPay:
    """Record a payer's promise. Validates everything before writing anything.

    Refused: a date in the past (in the organisation's time zone), a non-positive amount, more than
    the linked invoices' open balance, a contact or invoice of another customer, mixed currencies.
    """
    now = now or utcnow()
    today = org_today(session, org_id, now)
    customer = get_customer(session, org_id, customer_id)
    if amount_minor <= 0:
        raise CommitmentError("The promised amount must be greater than zero.")
    _check_promised_date(promised_date, today)
    if grace_days is None:
        grace_days = default_grace_days(session, org_id)
    if not 0 <= grace_days <= MAX_GRACE_DAYS:
        raise CommitmentError(f"Grace days must be between 0 and {MAX_GRACE_DAYS}.")
    contact = _promise_contact(session, org_id, customer, contact_id)
    invoices = load_open_invoices(session, org_id, customer.id, invoice_ids)
    currency = _promise_currency(session, org_id, invoices, currency, amount_minor)

    promise = PromiseToPay(
        org_id=org_id,
        customer_id=customer.id,
        contact_id=contact.id if contact else None,
        amount_minor=amount_minor,
        currency=currency,
        promised_date=promised_date,
        grace_days=grace_days,
        status=PromiseStatus.OPEN,
        source=source,
        created_by_user_id=actor.id if isinstance(actor, User) else None,
        created_at=now,
    )
    promise.invoices = list(invoices)
    session.add(promise)
    session.flush()
    audit.record(
        session,
        org_id,
        actor=actor,
        action="promise.created",
        subject_type="promise",
        subject_id=promise.id,
        to_state=PromiseStatus.OPEN.value,
        detail={
            "amount_minor": amount_minor,
            "currency": currency,
            "promised_date": promised_date.isoformat(),
            "invoice_ids": [i.id for i in invoices],
            "source": source,
        },
    )
    return promise


def default_grace_days(session: Session, org_id: int) -> int:
    """The organisation's policy grace (``promises.default_grace_days``), the same number the
    guardrails use to pause chasing, so the two can never disagree."""

    ps = policy_set_for(session, org_id)
    return int(ps.promises.default_grace_days)


def _org_currency(session: Session, org_id: int) -> str:
    org = session.get(Organisation, org_id)
    return org.default_currency if org is not None else "USD"


def _resolve(
    session: Session,
    promise: PromiseToPay,
    to: PromiseStatus,
    *,
    actor: User | str,
    now: datetime,
    reason: str,
) -> PromiseToPay:
    if promise.status != PromiseStatus.OPEN:
        raise Conflict(
            f"Promise {promise.id} is already {promise.status.value}; only an open promise can "
            f"be marked {to.value}."
        )
    before = promise.status
    promise.status = to
    promise.resolved_at = now
    detail: dict[str, object] = {"reason": reason, "invoice_ids": [i.id for i in promise.invoices]}
    if to == PromiseStatus.MISSED:
        # The Autopilot selector reads the missed status; this tells the drafter which follow-up.
        detail["follow_up"] = "promise_broken"
    audit.record(
        session,
        promise.org_id,
        actor=actor,
        action=f"promise.{to.value}",
        subject_type="promise",
        subject_id=promise.id,
        from_state=before.value,
        to_state=to.value,
        detail=detail,
    )
    session.flush()
    return promise


@guarded("manage_promises", foreign=foreign_not_found)
def mark_kept(
    session: Session,
    org_id: int,
    promise_id: int,
    *,
    actor: User | str,
    now: datetime | None = None,
    reason: str = "marked kept by hand",
) -> PromiseToPay:
    """Mark an open promise kept (e.g. the payer paid by cheque that is not in the ledger yet)."""
    promise = get_promise(session, org_id, promise_id)
    return _resolve(
        session, promise, PromiseStatus.KEPT, actor=actor, now=now or utcnow(), reason=reason
    )


@guarded("manage_promises", foreign=foreign_not_found)
def mark_missed(
    session: Session,
    org_id: int,
    promise_id: int,
    *,
    actor: User | str,
    now: datetime | None = None,
    reason: str = "marked missed by hand",
) -> PromiseToPay:
    """Mark an open promise missed: its invoices go back into the cadence."""
    promise = get_promise(session, org_id, promise_id)
    return _resolve(
        session, promise, PromiseStatus.MISSED, actor=actor, now=now or utcnow(), reason=reason
    )


@guarded("manage_promises", foreign=foreign_not_found)
def cancel_promise(
    session: Session,
    org_id: int,
    promise_id: int,
    *,
    actor: User | str,
    now: datetime | None = None,
    reason: str = "cancelled",
) -> PromiseToPay:
    """Withdraw a promise recorded in error; it counts neither as kept nor as missed."""
    promise = get_promise(session, org_id, promise_id)
    return _resolve(
        session, promise, PromiseStatus.CANCELLED, actor=actor, now=now or utcnow(), reason=reason
    )


def paid_toward(session: Session, promise: PromiseToPay, *, until: date | None = None) -> int:
    """Minor units received toward a promise from the day it was made until ``until``.

    Counted: the customer's payments in the promise's currency on its linked invoices, plus
    payments not tied to one invoice (on-account money, plan installments spread over several
    invoices). A promise without invoice links counts every payment of the customer.
    """
    start = promise.created_at.date()
    end = until or promise_deadline(promise)
    q = select(func.coalesce(func.sum(Payment.amount_minor), 0)).where(
        Payment.org_id == promise.org_id,
        Payment.customer_id == promise.customer_id,
        Payment.currency == promise.currency,
        Payment.received_on >= start,
        Payment.received_on <= end,
    )
    invoice_ids = [i.id for i in promise.invoices]
    if invoice_ids:
        q = q.where(Payment.invoice_id.in_(invoice_ids) | Payment.invoice_id.is_(None))
    return int(session.scalar(q) or 0)


def _satisfied(session: Session, promise: PromiseToPay, as_of: date) -> bool:
    """Paid in full by the deadline. Zero balances count only while the deadline has not passed;
    after it, only payments dated by the deadline do (a late settlement is still a miss)."""
    if (
        as_of <= promise_deadline(promise)
        and promise.invoices
        and all(i.balance_minor <= 0 for i in promise.invoices)
    ):
        return True
    return paid_toward(session, promise) >= promise.amount_minor


def on_payment(
    session: Session,
    org_id: int,
    payment: Payment,
    *,
    actor: User | str = "payments",
    now: datetime | None = None,
) -> list[PromiseToPay]:
    """After a payment is posted: keep the customer's open promises it fulfils (by the deadline).

    A payment after a promise's deadline does not keep it; ``evaluate_promises`` marks it missed.
    """
    now = now or utcnow()
    kept: list[PromiseToPay] = []
    promises = session.scalars(
        select(PromiseToPay)
        .where(
            PromiseToPay.org_id == org_id,
            PromiseToPay.customer_id == payment.customer_id,
            PromiseToPay.status == PromiseStatus.OPEN,
            PromiseToPay.currency == payment.currency,
        )
        .order_by(PromiseToPay.promised_date, PromiseToPay.id)
    ).all()
    for promise in promises:
        if payment.received_on > promise_deadline(promise):
            continue
        if _satisfied(session, promise, payment.received_on):
            _resolve(
                session,
                promise,
                PromiseStatus.KEPT,
                actor=actor,
                now=now,
                reason=f"paid in full by payment {payment.id}",
            )
            kept.append(promise)
    return kept


@dataclass(frozen=True)
class PromiseSweep:
    """What one automatic pass decided."""

    kept: list[int]
    missed: list[int]


@guarded("manage_promises", foreign=foreign_not_found)
def evaluate_promises(
    session: Session,
    org_id: int,
    *,
    now: datetime | None = None,
    actor: User | str,
) -> PromiseSweep:
    """Decide every open promise the ledger can decide: kept when paid in full by the date plus
    grace, missed once that deadline has passed without it. Idempotent (only open ones change)."""
    now = now or utcnow()
    today = org_today(session, org_id, now)
    kept: list[int] = []
    missed: list[int] = []
    for promise in session.scalars(
        select(PromiseToPay)
        .where(PromiseToPay.org_id == org_id, PromiseToPay.status == PromiseStatus.OPEN)
        .order_by(PromiseToPay.id)
    ).all():
        if _satisfied(session, promise, today):
            _resolve(
                session,
                promise,
                PromiseStatus.KEPT,
                actor=actor,
                now=now,
                reason="paid in full by the deadline",
            )
            kept.append(promise.id)
        elif today > promise_deadline(promise):
            _resolve(
                session,
                promise,
                PromiseStatus.MISSED,
                actor=actor,
                now=now,
                reason=f"not paid in full by {promise_deadline(promise).isoformat()}",
            )
            missed.append(promise.id)
    return PromiseSweep(kept=kept, missed=missed)


@dataclass(frozen=True)
class PromiseReminder:
    """An open promise whose date is near: the drafter writes the reminder under ``run_key``,
    so a reminder is drafted at most once per promise (drafts are unique per org and run key)."""

    promise_id: int
    customer_id: int
    contact_id: int | None
    amount_minor: int
    currency: str
    promised_date: date
    days_until: int
    invoice_numbers: list[str]
    run_key: str


def due_reminders(
    session: Session,
    org_id: int,
    *,
    now: datetime | None = None,
    lead_days: int = REMINDER_LEAD_DAYS,
) -> list[PromiseReminder]:
    """Open promises due within ``lead_days`` (today included) that have no reminder draft yet."""
    today = org_today(session, org_id, now)
    rows = session.scalars(
        select(PromiseToPay)
        .where(
            PromiseToPay.org_id == org_id,
            PromiseToPay.status == PromiseStatus.OPEN,
            PromiseToPay.promised_date >= today,
            PromiseToPay.promised_date <= today + timedelta(days=lead_days),
        )
        .order_by(PromiseToPay.promised_date, PromiseToPay.id)
    ).all()
    keys = {REMINDER_RUN_KEY.format(promise_id=p.id): p for p in rows}
    drafted = (
        set(
            session.scalars(
                select(Draft.run_key).where(Draft.org_id == org_id, Draft.run_key.in_(list(keys)))
            ).all()
        )
        if keys
        else set()
    )
    return [
        PromiseReminder(
            promise_id=p.id,
            customer_id=p.customer_id,
            contact_id=p.contact_id,
            amount_minor=p.amount_minor,
            currency=p.currency,
            promised_date=p.promised_date,
            days_until=(p.promised_date - today).days,
            invoice_numbers=[i.number for i in p.invoices],
            run_key=key,
        )
        for key, p in keys.items()
        if key not in drafted
    ]


@dataclass(frozen=True)
class Adherence:
    """Kept over decided promises (kept + missed); open and cancelled ones do not count."""

    kept: int
    missed: int
    open: int

    @property
    def decided(self) -> int:
        return self.kept + self.missed

    @property
    def rate(self) -> float | None:
        """None when nothing is decided yet: "not enough data", never a division by zero."""
        return round(self.kept / self.decided, 4) if self.decided else None


def adherence(
    session: Session,
    org_id: int,
    *,
    customer_id: int | None = None,
    as_of: date | None = None,
) -> Adherence:
    """Promise adherence to date (every promise due by ``as_of``, the organisation's today by
    default) for one customer or the whole organisation, counted by ``tools.insights.metrics`` like
    every
    other page: an open promise past its date and grace counts as missed, one in grace as open."""
    day = as_of or org_today(session, org_id)
    scope = metrics.Scope(org_id, customer_id=customer_id)
    c = metrics.promise_counts(session, scope, None, as_of=day)[None]
    return Adherence(kept=c.kept, missed=c.missed, open=c.pending)


def adherence_by_customer(
    session: Session, org_id: int, *, as_of: date | None = None
) -> dict[int, Adherence]:
    """Adherence to date per customer in one query (for the radar and Renewal Risk)."""
    day = as_of or org_today(session, org_id)
    per = metrics.promise_counts(session, metrics.Scope(org_id), None, as_of=day, by_customer=True)
    return {
        int(cid): Adherence(kept=c.kept, missed=c.missed, open=c.pending)
        for cid, c in per.items()
        if cid is not None
    }


def promise_ids_for_invoice(session: Session, org_id: int, invoice_id: int) -> list[int]:
    """Promises linked to an invoice (for the policy facts and Account 360)."""
    return list(
        session.scalars(
            select(promise_invoice.c.promise_id)
            .join(PromiseToPay, PromiseToPay.id == promise_invoice.c.promise_id)
            .where(PromiseToPay.org_id == org_id, promise_invoice.c.invoice_id == invoice_id)
        ).all()
    )
