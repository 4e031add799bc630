"""Posting a payment: apply it to invoice balances, keep credit, advance promises and plans.

One function, :func:`post_payment`, is the only way money enters the ledger (by hand, from the
Stripe webhook, from an import), so the rules live in one place:

* the amount is applied to the target invoice(s) oldest due first, never below a zero balance;
  whatever is left is *unapplied* credit on the payment (an over-payment), shown and re-usable
  with :func:`apply_credit`;
* a partial payment lowers the balance and leaves the invoice open;
* a payment with an ``external_ref`` (a Stripe PaymentIntent id) is posted once: the same reference
  again returns the first payment and changes nothing;
* promises it fulfils are kept, plan installments it covers are paid, and a receipt e-mail is
  queued in the outbox (delivered by the outbox worker, exactly once per payment).

Nothing is committed here: the caller owns the transaction, so a failure leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory import clock
from memory.models import (
    Activity,
    ActivityKind,
    Contact,
    Customer,
    Invoice,
    InvoiceStatus,
    OutboxMessage,
    Payment,
    PlanInstallment,
    PlanStatus,
    User,
    utcnow,
)
from policies.money import format_money
from tools import audit, plans, promises
from tools.authz import guarded
from tools.promises import (
    CommitmentError,
    Conflict,
    NotFound,
    foreign_not_found,
    get_customer,
    get_invoice,
)


@dataclass(frozen=True)
class Allocation:
    """The part of a payment applied to one invoice, and that invoice's balance afterwards."""

    invoice_id: int
    invoice_number: str
    amount_minor: int
    balance_after_minor: int


@dataclass
class PaymentResult:
    """What posting did: for the API response, the portal page and the receipt."""

    payment: Payment
    duplicate: bool = False
    allocations: list[Allocation] = field(default_factory=list)
    promises_kept: list[int] = field(default_factory=list)
    installments_paid: list[int] = field(default_factory=list)
    plans_completed: list[int] = field(default_factory=list)
    receipt: OutboxMessage | None = None
    receipt_skipped: str | None = None

    @property
    def applied_minor(self) -> int:
        return self.payment.applied_minor

    @property
    def unapplied_minor(self) -> int:
        return self.payment.unapplied_minor


def find_by_ref(session: Session, org_id: int, external_ref: str) -> Payment | None:
    return session.scalars(
        select(Payment).where(Payment.org_id == org_id, Payment.external_ref == external_ref)
    ).first()


def _check_currency(currency: str) -> str:
    cur = currency.strip().upper()
    if len(cur) != 3 or not cur.isalpha():
        raise CommitmentError(f"'{currency}' is not an ISO currency code (e.g. USD, EUR).")
    return cur


def _apply(invoices: list[Invoice], amount: int, received_on: date) -> list[Allocation]:
    """Apply ``amount`` to ``invoices`` in order, never taking a balance below zero."""
    allocations: list[Allocation] = []
    remaining = amount
    for inv in invoices:
        if remaining <= 0:
            break
        if inv.status != InvoiceStatus.OPEN or inv.balance_minor <= 0:
            continue
        take = min(remaining, inv.balance_minor)
        inv.balance_minor -= take
        remaining -= take
        if inv.balance_minor == 0:
            inv.status = InvoiceStatus.PAID
            inv.settled_date = received_on
        allocations.append(Allocation(inv.id, inv.number, take, inv.balance_minor))
    return allocations


@guarded("post_payment", foreign=foreign_not_found)
def post_payment(
    session: Session,
    org_id: int,
    *,
    amount_minor: int,
    currency: str,
    received_on: date,
    actor: User | str,
    customer_id: int | None = None,
    invoice_id: int | None = None,
    installment_id: int | None = None,
    method: str = "manual",
    external_ref: str | None = None,
    send_receipt: bool = True,
    now: datetime | None = None,
) -> PaymentResult:
    """Record money received and everything that follows from it (see the module docstring).

    Targets: an installment (its plan's invoices, oldest due first), one invoice, or neither (the
    whole amount is on-account credit for ``customer_id``).
    """
    now = now or utcnow()
    if external_ref:
        existing = find_by_ref(session, org_id, external_ref)
        if existing is not None:
            return PaymentResult(payment=existing, duplicate=True)
    if amount_minor <= 0:
        raise CommitmentError("A payment amount must be greater than zero.")
    cur = _check_currency(currency)
    if received_on > clock.org_business_date(session, org_id, now) + timedelta(days=1):
        raise CommitmentError(
            f"The payment date {received_on.isoformat()} is in the future; use the day the money "
            "arrived."
        )

    installment: PlanInstallment | None = None
    targets: list[Invoice] = []
    if installment_id is not None:
        installment = plans.get_installment(session, org_id, installment_id)
        plan = installment.plan
        if plan.status not in (PlanStatus.ACTIVE, PlanStatus.DEFAULTED):
            raise Conflict(
                f"Plan {plan.id} is {plan.status.value}; only an approved, running plan takes "
                "installment payments."
            )
        if plan.currency != cur:
            raise CommitmentError(f"Plan {plan.id} is in {plan.currency}, not {cur}.")
        if customer_id is not None and customer_id != plan.customer_id:
            raise CommitmentError("The installment belongs to another customer.")
        customer_id = plan.customer_id
        targets = sorted(plan.invoices, key=lambda i: (i.due_date, i.id))
    elif invoice_id is not None:
        inv = get_invoice(session, org_id, invoice_id)
        if customer_id is not None and customer_id != inv.customer_id:
            raise CommitmentError(f"Invoice {inv.number} belongs to another customer.")
        if inv.currency != cur:
            raise CommitmentError(
                f"Invoice {inv.number} is in {inv.currency}; a {cur} payment cannot be applied "
                "to it. Post it on account instead."
            )
        customer_id = inv.customer_id
        targets = [inv]
    elif customer_id is None:
        raise CommitmentError(
            "Say whose money this is: give a customer, an invoice or an installment."
        )
    customer = get_customer(session, org_id, customer_id)

    allocations = _apply(targets, amount_minor, received_on)
    applied = sum(a.amount_minor for a in allocations)
    single = {a.invoice_id for a in allocations}
    payment = Payment(
        org_id=org_id,
        customer_id=customer.id,
        invoice_id=invoice_id
        if invoice_id is not None
        else (single.pop() if len(single) == 1 else None),
        installment_id=installment.id if installment else None,
        amount_minor=amount_minor,
        applied_minor=applied,
        unapplied_minor=amount_minor - applied,
        currency=cur,
        received_on=received_on,
        method=method,
        external_ref=external_ref,
        created_at=now,
    )
    session.add(payment)
    session.flush()

    advance = plans.apply_payment(
        session,
        org_id,
        payment,
        applied_by_invoice={a.invoice_id: a.amount_minor for a in allocations},
        installment=installment,
        actor=actor,
        now=now,
    )
    kept = promises.on_payment(session, org_id, payment, actor=actor, now=now)
    session.add(
        Activity(
            org_id=org_id,
            customer_id=customer.id,
            invoice_id=payment.invoice_id,
            kind=ActivityKind.PAYMENT,
            direction="in",
            summary=f"Payment of {format_money(amount_minor, cur)} received ({method})",
            occurred_at=now,
        )
    )
    audit.record(
        session,
        org_id,
        actor=actor,
        action="payment.posted",
        subject_type="payment",
        subject_id=payment.id,
        detail={
            "amount_minor": amount_minor,
            "currency": cur,
            "applied_minor": applied,
            "unapplied_minor": payment.unapplied_minor,
            "allocations": [
                {"invoice_id": a.invoice_id, "amount_minor": a.amount_minor} for a in allocations
            ],
            "external_ref": external_ref,
            "method": method,
        },
    )
    result = PaymentResult(
        payment=payment,
        allocations=allocations,
        promises_kept=[p.id for p in kept],
        installments_paid=advance.installments_paid,
        plans_completed=advance.plans_completed,
    )
    if send_receipt:
        result.receipt, result.receipt_skipped = queue_receipt(session, result, actor=actor)
    session.flush()
    return result


@guarded("post_payment", foreign=foreign_not_found)
def apply_credit(
    session: Session,
    org_id: int,
    payment_id: int,
    *,
    invoice_id: int,
    actor: User | str,
    amount_minor: int | None = None,
    now: datetime | None = None,
) -> PaymentResult:
    """Apply a payment's unapplied credit (an over-payment) to another open invoice."""
    now = now or utcnow()
    payment = session.get(Payment, payment_id)
    if payment is None or payment.org_id != org_id:
        raise NotFound(f"Payment {payment_id} does not exist in this organisation.")
    if payment.unapplied_minor <= 0:
        raise Conflict(f"Payment {payment_id} has no unapplied credit left.")
    inv = get_invoice(session, org_id, invoice_id)
    if inv.customer_id != payment.customer_id:
        raise CommitmentError(f"Invoice {inv.number} belongs to another customer.")
    if inv.currency != payment.currency:
        raise CommitmentError(f"Invoice {inv.number} is in {inv.currency}, not {payment.currency}.")
    if inv.status != InvoiceStatus.OPEN or inv.balance_minor <= 0:
        raise Conflict(f"Invoice {inv.number} has nothing left to pay.")
    amount = payment.unapplied_minor if amount_minor is None else amount_minor
    if not 0 < amount <= payment.unapplied_minor:
        raise CommitmentError(
            f"Apply between 1 and {payment.unapplied_minor} minor units of this credit."
        )
    allocations = _apply([inv], amount, clock.org_business_date(session, inv.org_id, now))
    moved = sum(a.amount_minor for a in allocations)
    payment.applied_minor += moved
    payment.unapplied_minor -= moved
    advance = plans.apply_payment(
        session,
        org_id,
        payment,
        applied_by_invoice={a.invoice_id: a.amount_minor for a in allocations},
        installment=None,
        actor=actor,
        now=now,
    )
    audit.record(
        session,
        org_id,
        actor=actor,
        action="payment.credit_applied",
        subject_type="payment",
        subject_id=payment.id,
        detail={"invoice_id": inv.id, "amount_minor": moved},
    )
    session.flush()
    return PaymentResult(
        payment=payment,
        allocations=allocations,
        installments_paid=advance.installments_paid,
        plans_completed=advance.plans_completed,
    )


def receipt_recipient(session: Session, customer: Customer) -> Contact | None:
    """Who gets receipts: the primary e-mail contact, unless opted out or bounced."""
    contacts = session.scalars(
        select(Contact)
        .where(Contact.org_id == customer.org_id, Contact.customer_id == customer.id)
        .order_by(Contact.is_primary.desc(), Contact.id)
    ).all()
    for c in contacts:
        if c.email and not c.bounced and not c.opted_out_email:
            return c
    return None


def receipt_text(session: Session, result: PaymentResult, customer: Customer) -> tuple[str, str]:
    """Subject and plain-text body of a payment receipt (facts only, all from the ledger)."""
    p = result.payment
    subject = f"Payment received: {format_money(p.amount_minor, p.currency)}"
    lines = [
        f"Hello {customer.name},",
        "",
        f"Thank you. We received your payment of {format_money(p.amount_minor, p.currency)} "
        f"on {p.received_on.isoformat()}.",
    ]
    if p.external_ref:
        lines.append(f"Reference: {p.external_ref}")
    if result.allocations:
        lines.append("")
        lines.append("Applied to:")
        for a in result.allocations:
            lines.append(
                f"  Invoice {a.invoice_number}: {format_money(a.amount_minor, p.currency)} "
                f"(remaining balance {format_money(a.balance_after_minor, p.currency)})"
            )
    if p.unapplied_minor:
        lines.append("")
        lines.append(
            f"{format_money(p.unapplied_minor, p.currency)} is held as a credit on your account "
            "and will be applied to your next invoice unless you ask for a refund."
        )
    lines += ["", "This receipt was sent automatically; no action is needed."]
    return subject, "\n".join(lines)


def queue_receipt(
    session: Session, result: PaymentResult, *, actor: User | str
) -> tuple[OutboxMessage | None, str | None]:
    """Queue the receipt in the outbox once per payment (the outbox worker delivers it)."""
    from tools import outbox  # the outbox imports delivery settings; keep it off the import path

    p = result.payment
    customer = session.get(Customer, p.customer_id)
    assert customer is not None
    contact = receipt_recipient(session, customer)
    if contact is None or not contact.email:
        audit.record(
            session,
            p.org_id,
            actor=actor,
            action="payment.receipt_skipped",
            subject_type="payment",
            subject_id=p.id,
            detail={"reason": "no contact with a usable e-mail address"},
        )
        return None, "no contact with a usable e-mail address"
    subject, body = receipt_text(session, result, customer)
    try:
        msg = outbox.enqueue_email(
            session,
            p.org_id,
            to=contact.email,
            subject=subject,
            body=body,
            idempotency_key=f"receipt:payment:{p.id}",
            actor=actor,
        )
    except outbox.OutboxError as exc:
        return None, str(exc)
    return msg, None


def payments_for_customer(session: Session, org_id: int, customer_id: int) -> list[Payment]:
    return list(
        session.scalars(
            select(Payment)
            .where(Payment.org_id == org_id, Payment.customer_id == customer_id)
            .order_by(Payment.received_on.desc(), Payment.id.desc())
        )
    )


def unapplied_credit(session: Session, org_id: int, customer_id: int) -> dict[str, int]:
    """A customer's unapplied credit per currency (over-payments not yet applied)."""
    out: dict[str, int] = {}
    for p in payments_for_customer(session, org_id, customer_id):
        if p.unapplied_minor:
            out[p.currency] = out.get(p.currency, 0) + p.unapplied_minor
    return out
