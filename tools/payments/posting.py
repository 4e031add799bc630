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
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper, Session, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state

from memory import business_day
from memory.bulk import among, built, insert_rows, select_among, write_changes
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
    PromiseStatus,
    PromiseToPay,
    User,
    plan_invoice,
    utcnow,
)
from policies.money import format_money
from tools.commitments import plans, promises
from tools.commitments.promises import (
    CommitmentError,
    Conflict,
    NotFound,
    foreign_not_found,
    get_customer,
    get_invoice,
)
from tools.delivery import outbox
from tools.kit import audit
from tools.kit.authz import guarded


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
    posting = Posting(session, org_id, actor=actor, now=now)
    result = posting.post(
        PaymentRequest(
            amount_minor=amount_minor,
            currency=currency,
            received_on=received_on,
            customer_id=customer_id,
            invoice_id=invoice_id,
            installment_id=installment_id,
            method=method,
            external_ref=external_ref,
        )
    )
    posting.finish()
    if send_receipt and not result.duplicate:
        result.receipt, result.receipt_skipped = queue_receipt(session, result, actor=actor)
    session.flush()
    return result


@dataclass(frozen=True)
class PaymentRequest:
    """One payment to post: :func:`post_payment`'s arguments, for posting many at once."""

    amount_minor: int
    currency: str
    received_on: date
    customer_id: int | None = None
    invoice_id: int | None = None
    installment_id: int | None = None
    method: str = "manual"
    external_ref: str | None = None


@guarded("post_payment", foreign=foreign_not_found)
def payment_batch(
    session: Session,
    org_id: int,
    *,
    actor: User | str,
    requests: list[PaymentRequest],
    now: datetime | None = None,
    in_plans: set[int] | None = None,
    promisers: set[tuple[int, str]] | None = None,
) -> Posting:
    """A :class:`Posting` for ``requests`` with what they read loaded once (no receipts: a batch
    is bank cash, acknowledged by the bank statement, not a payer's own act).

    Why: posting one payment at a time costs a handful of queries and a flush each (its reference,
    its invoice and customer, its plans, the customer's promises); a bank statement of 10,000
    lines would spend minutes there. Post each request with ``Posting.post`` (same rules, same
    order, same results as :func:`post_payment` one after another), then ``Posting.finish``.
    ``in_plans`` and ``promisers``: what the caller already read (see :meth:`Posting.preload`).
    """
    posting = Posting(session, org_id, actor=actor, now=now)
    posting.preload(requests, in_plans=in_plans, promisers=promisers)
    return posting


class Posting:
    """Posting payments in one transaction: the rules of :func:`post_payment`, with the reads a
    batch shares done once and the flush (which gives payments their ids) done at the end.

    A payment whose invoices are in a payment plan, or whose customer has an open promise in its
    currency, is flushed and followed up (installments, promises) at once, in order, so a later
    payment sees exactly what it would have seen one at a time; the rest (almost all bank cash)
    only need their ids for the activity and audit rows written in :meth:`finish`.
    """

    def __init__(
        self, session: Session, org_id: int, *, actor: User | str, now: datetime | None
    ) -> None:
        self.session = session
        self.org_id = org_id
        self.actor = actor
        self.now = now or utcnow()
        self.today = business_day.org_business_date(session, org_id, self.now)
        self._refs: dict[str, Payment] | None = None  # None: look each reference up
        self._in_plans: set[int] | None = None  # invoices in some plan (None: ask each time)
        self._promisers: set[tuple[int, str]] | None = None  # (customer, currency) with promises
        self._unfinished: list[tuple[Payment, list[Allocation]]] = []
        self._touched: dict[int, Invoice] = {}  # invoices whose balance moved, by id
        self._held: list[object] = []  # rows preloaded: the identity map keeps only held ones

    def preload(
        self,
        requests: list[PaymentRequest],
        *,
        in_plans: set[int] | None = None,
        promisers: set[tuple[int, str]] | None = None,
    ) -> None:
        """Read once what ``requests`` will look at (references, invoices, customers, plan and
        promise membership); rows land in the session's identity map. A caller that read the
        plan membership of the requests' invoices (``in_plans``: those in some plan) or the
        open promises of their customers (``promisers``) in the same transaction passes them,
        and they are not read twice."""
        s, org = self.session, self.org_id
        refs = [r.external_ref for r in requests if r.external_ref]
        self._refs = {}
        by_ref = select(Payment).where(Payment.org_id == org)
        for stmt in select_among(s, by_ref, Payment.external_ref, sorted(set(refs))):
            for p in s.scalars(stmt):
                self._refs[p.external_ref or ""] = p
        inv_ids = sorted({r.invoice_id for r in requests if r.invoice_id is not None})
        customer_ids = {r.customer_id for r in requests if r.customer_id is not None}
        held = held_rows(s, Invoice, inv_ids)
        self._held += held
        customer_ids.update(inv.customer_id for inv in held)
        have = {inv.id for inv in held}
        for cond in among(s, Invoice.id, [i for i in inv_ids if i not in have]):
            for inv in s.scalars(select(Invoice).where(cond)):
                customer_ids.add(inv.customer_id)
                self._held.append(inv)
        if in_plans is None:
            in_plans = set()
            for cond in among(s, plan_invoice.c.invoice_id, inv_ids):
                in_plans.update(s.scalars(select(plan_invoice.c.invoice_id).where(cond)))
        self._in_plans = in_plans
        held = held_rows(s, Customer, sorted(customer_ids))
        self._held += held
        have = {c.id for c in held}
        for cond in among(s, Customer.id, [c for c in sorted(customer_ids) if c not in have]):
            self._held += s.scalars(select(Customer).where(cond))
        if promisers is None:
            promisers = set()
            for cond in among(s, PromiseToPay.customer_id, sorted(customer_ids)):
                promisers.update(
                    (cid, cur)
                    for cid, cur in s.execute(
                        select(PromiseToPay.customer_id, PromiseToPay.currency).where(
                            PromiseToPay.org_id == org,
                            cond,
                            PromiseToPay.status == PromiseStatus.OPEN,
                        )
                    )
                )
        self._promisers = promisers

    def post(self, req: PaymentRequest) -> PaymentResult:
        """Post one payment (see :func:`post_payment`); its id is set by :meth:`finish` at the
        latest."""
        session, org_id = self.session, self.org_id
        if req.external_ref:
            existing = self._existing(req.external_ref)
            if existing is not None:
                return PaymentResult(payment=existing, duplicate=True)
        if req.amount_minor <= 0:
            raise CommitmentError("A payment amount must be greater than zero.")
        cur = _check_currency(req.currency)
        if req.received_on > self.today + timedelta(days=1):
            raise CommitmentError(
                f"The payment date {req.received_on.isoformat()} is in the future; use the day "
                "the money arrived."
            )
        installment, targets, customer_id = self._targets(req, cur)
        customer = get_customer(session, org_id, customer_id)

        allocations = _apply(targets, req.amount_minor, req.received_on)
        self._touched.update((inv.id, inv) for inv in targets)
        applied = sum(a.amount_minor for a in allocations)
        single = {a.invoice_id for a in allocations}
        payment = built(
            Payment,
            dict(
                org_id=org_id,
                customer_id=customer.id,
                invoice_id=req.invoice_id
                if req.invoice_id is not None
                else (single.pop() if len(single) == 1 else None),
                installment_id=installment.id if installment else None,
                amount_minor=req.amount_minor,
                applied_minor=applied,
                unapplied_minor=req.amount_minor - applied,
                currency=cur,
                received_on=req.received_on,
                method=req.method,
                external_ref=req.external_ref,
                created_at=self.now,
            ),
        )
        session.add(payment)
        if self._refs is not None and req.external_ref:
            self._refs[req.external_ref] = payment
        result = PaymentResult(payment=payment, allocations=allocations)
        if self._follows_up(payment, installment, allocations):
            session.flush()
            advance = plans.apply_payment(
                session,
                org_id,
                payment,
                applied_by_invoice={a.invoice_id: a.amount_minor for a in allocations},
                installment=installment,
                actor=self.actor,
                now=self.now,
            )
            kept = promises.on_payment(session, org_id, payment, actor=self.actor, now=self.now)
            result.promises_kept = [p.id for p in kept]
            result.installments_paid = advance.installments_paid
            result.plans_completed = advance.plans_completed
        self._unfinished.append((payment, allocations))
        return result

    def finish(self) -> None:
        """Write the payments (their ids) and the invoice balances they moved, then their
        activity and audit rows, each kind in one statement."""
        insert_pending(self.session, Payment, [p for p, _ in self._unfinished], ("external_ref",))
        write_changes(self.session, list(self._touched.values()))
        self._touched = {}
        self.session.flush()
        if self._unfinished:
            insert_rows(
                self.session,
                cast(Table, Activity.__table__),
                [_activity_row(self.org_id, p, self.now) for p, _ in self._unfinished],
            )
            audit.record_many(
                self.session,
                [_audit_row(self.org_id, p, a, self.actor) for p, a in self._unfinished],
            )
        self._unfinished = []

    def _existing(self, ref: str) -> Payment | None:
        if self._refs is None:
            return find_by_ref(self.session, self.org_id, ref)
        return self._refs.get(ref)

    def _targets(
        self, req: PaymentRequest, cur: str
    ) -> tuple[PlanInstallment | None, list[Invoice], int]:
        """The installment, the invoices the money goes to (in order) and whose money it is."""
        session, org_id = self.session, self.org_id
        customer_id = req.customer_id
        if req.installment_id is not None:
            installment = plans.get_installment(session, org_id, req.installment_id)
            plan = installment.plan
            if plan.status not in (PlanStatus.ACTIVE, PlanStatus.DEFAULTED):
                raise Conflict(
                    f"Plan {plan.id} is {plan.status.value}; only an approved, running plan "
                    "takes installment payments."
                )
            if plan.currency != cur:
                raise CommitmentError(f"Plan {plan.id} is in {plan.currency}, not {cur}.")
            if customer_id is not None and customer_id != plan.customer_id:
                raise CommitmentError("The installment belongs to another customer.")
            return (
                installment,
                sorted(plan.invoices, key=lambda i: (i.due_date, i.id)),
                (plan.customer_id),
            )
        if req.invoice_id is not None:
            inv = get_invoice(session, org_id, req.invoice_id)
            if customer_id is not None and customer_id != inv.customer_id:
                raise CommitmentError(f"Invoice {inv.number} belongs to another customer.")
            if inv.currency != cur:
                raise CommitmentError(
                    f"Invoice {inv.number} is in {inv.currency}; a {cur} payment cannot be "
                    "applied to it. Post it on account instead."
                )
            return None, [inv], inv.customer_id
        if customer_id is None:
            raise CommitmentError(
                "Say whose money this is: give a customer, an invoice or an installment."
            )
        return None, [], customer_id

    def _follows_up(
        self, payment: Payment, installment: PlanInstallment | None, allocations: list[Allocation]
    ) -> bool:
        """Whether a plan or a promise may move with this payment (unknown: yes)."""
        if installment is not None or self._in_plans is None or self._promisers is None:
            return True
        if any(a.invoice_id in self._in_plans for a in allocations):
            return True
        return (payment.customer_id, payment.currency) in self._promisers


def held_rows(session: Session, model: type, ids: list[int]) -> list[Any]:
    """The ``model`` rows of ``ids`` the session holds with every column loaded: reading them
    again would change nothing (a query never overwrites what the session has, only expired
    columns), so a batch that has them reads only the others."""
    identity_map = session.identity_map
    mapper: Mapper[Any] = sa_inspect(model)  # once, not per id
    key = mapper.identity_key_from_primary_key
    out: list[Any] = []
    for i in ids:
        row = identity_map.get(key((i,)))
        if row is not None and not instance_state(row).expired_attributes:
            out.append(row)
    return out


def held_or_get(session: Session, model: type, row_id: int) -> Any:
    """``session.get(model, row_id)``: the row the session holds, loaded and not deleted, is
    returned as ``get`` would return it, without its per-call machinery (a batch of bank lines
    snapshots some 70,000 rows it already holds); anything else is left to ``get``."""
    mapper: Mapper[Any] = sa_inspect(model)
    row = session.identity_map.get(mapper.identity_key_from_primary_key((row_id,)))
    if row is not None:
        state = instance_state(row)
        if not state.expired_attributes and not state.deleted:
            return row
    return session.get(model, row_id)


def insert_pending(session: Session, model: type, rows: list[Any], keys: tuple[str, ...]) -> None:
    """Write these new ``model`` rows (pending in the session, or not yet added) in multi-row
    INSERTs; each stays the same object, now persistent with its id.

    Why: to learn each new id the unit of work inserts one row at a time on SQLite, and a bank
    file of 10,000 lines makes as many payments (:func:`memory.bulk.insert_rows` writes them in
    one statement per batch on either backend). RETURNING gives the ids in no promised order,
    so each is matched by its ``keys`` columns, unique among the rows written here; a row whose
    keys repeat another's, or with a column left to its default, is only added to the session
    and written by the next flush.
    """
    mapper: Mapper[Any] = sa_inspect(model)
    props = [p for p in mapper.column_attrs if not p.columns[0].primary_key]
    todo: dict[tuple[Any, ...], Any] = {}
    for row in rows:
        state = sa_inspect(row)
        value = tuple(state.dict.get(k) for k in keys)
        whole = all(p.key in state.dict for p in props)
        if (state.pending or state.transient) and value not in todo and whole:
            todo[value] = row
    if len(todo) > 1:  # one row: the flush does no worse
        pk = mapper.primary_key[0]
        returned = [pk, *(mapper.get_property(k).columns[0] for k in keys)]
        params = [{p.columns[0].key: row.__dict__[p.key] for p in props} for row in todo.values()]
        with session.no_autoflush:
            written = insert_rows(session, cast(Table, mapper.local_table), params, returned)
            for new_id, *found in written:
                row = todo[tuple(found)]
                if sa_inspect(row).pending:
                    session.expunge(row)
                setattr(row, mapper.get_property_by_column(pk).key, new_id)
                make_transient_to_detached(row)
                session.add(row)
    session.add_all([row for row in rows if sa_inspect(row).transient])


def _activity_row(org_id: int, payment: Payment, now: datetime) -> dict[str, object]:
    return {
        "org_id": org_id,
        "customer_id": payment.customer_id,
        "invoice_id": payment.invoice_id,
        "kind": ActivityKind.PAYMENT,
        "direction": "in",
        "summary": f"Payment of {format_money(payment.amount_minor, payment.currency)} received "
        f"({payment.method})",
        "occurred_at": now,
    }


def _audit_row(
    org_id: int, payment: Payment, allocations: list[Allocation], actor: User | str
) -> dict[str, object]:
    return audit.row(
        org_id,
        actor=actor,
        action="payment.posted",
        subject_type="payment",
        subject_id=payment.id,
        detail={
            "amount_minor": payment.amount_minor,
            "currency": payment.currency,
            "applied_minor": payment.applied_minor,
            "unapplied_minor": payment.unapplied_minor,
            "allocations": [
                {"invoice_id": a.invoice_id, "amount_minor": a.amount_minor} for a in allocations
            ],
            "external_ref": payment.external_ref,
            "method": payment.method,
        },
    )


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
    allocations = _apply([inv], amount, business_day.org_business_date(session, inv.org_id, now))
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
