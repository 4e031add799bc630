"""Account 360 and the other read-only questions the co-pilot and the review panel ask the ledger.

Why a separate module: the agent's tools must not be able to write or send anything, so everything
they can reach lives here, as functions that only ``SELECT``. Every function takes the caller's
``org_id`` and raises ``NotInOrganisation`` for a record of another organisation, exactly as for a
missing one (a foreign id must not be told apart from an unknown one).

Outputs are pydantic models with bounded lists, so a customer with 5,000 invoices cannot blow up a
prompt. Payer-written text (notes from outside, dispute descriptions, replies) is marked
``untrusted`` so the agent layer can fence it off as data.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from urllib.parse import quote

from pydantic import BaseModel, Field
from sqlalchemy import Table, exists, func, select
from sqlalchemy.orm import Session

from memory import clock
from memory.config import Settings
from memory.models import (
    OPEN_DISPUTE_STATUSES,
    Activity,
    AgingBucket,
    Contact,
    Customer,
    Dispute,
    DisputeStatus,
    Invoice,
    InvoiceStatus,
    Note,
    Organisation,
    Payment,
    PaymentPlan,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
    Segment,
    User,
    aging_bucket,
    plan_invoice,
    promise_invoice,
)

MAX_INVOICES = 50
MAX_ITEMS = 20
MAX_TEXT = 1_000
ACTIVE_PLAN = (PlanStatus.ACTIVE, PlanStatus.PENDING_APPROVAL, PlanStatus.PROPOSED)
#: Note sources written by staff; anything else (payer, portal, reply, import) is payer text.
INTERNAL_SOURCES = frozenset({"internal", "collector", "system"})


class NotInOrganisation(LookupError):
    """The record does not exist in the caller's organisation (foreign and missing look alike)."""


# --- scoped lookups ------------------------------------------------------------------------------


def get_customer(session: Session, org_id: int, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None or customer.org_id != org_id:
        raise NotInOrganisation(f"customer {customer_id} does not exist in this organisation")
    return customer


def get_invoice(session: Session, org_id: int, invoice_id: int) -> Invoice:
    invoice = session.get(Invoice, invoice_id)
    if invoice is None or invoice.org_id != org_id:
        raise NotInOrganisation(f"invoice {invoice_id} does not exist in this organisation")
    return invoice


def find_invoice(session: Session, org_id: int, number: str) -> Invoice:
    """An invoice by its number, within the organisation."""
    invoice = session.scalars(
        select(Invoice).where(Invoice.org_id == org_id, Invoice.number == number.strip())
    ).first()
    if invoice is None:
        raise NotInOrganisation(f"invoice {number!r} does not exist in this organisation")
    return invoice


# --- the pay link --------------------------------------------------------------------------------


def pay_link(
    settings: Settings, org_slug: str, invoice_number: str, *, issued_url: str | None = None
) -> str:
    """The link a draft states for paying an invoice.

    An already-issued mini-portal link (``{public_base_url}/portal/{token}``, issued by
    ``tools/portal/access.py``) wins when the caller has one. Otherwise the stable link
    ``{public_base_url}/pay/{org_slug}/{invoice_number}``: it carries no secret, so it can be
    written into a draft before anyone approves it; the portal answers it by sending the payer a
    fresh tokenized link, never by showing account data.
    """
    if issued_url:
        return issued_url.strip()
    base = settings.public_base_url.rstrip("/")
    return f"{base}/pay/{quote(org_slug, safe='')}/{quote(invoice_number, safe='')}"


def org_today(session: Session, org_id: int, now: datetime | None = None) -> date:
    """Today in the organisation's own time zone (due dates and promises are its dates)."""
    org = session.get(Organisation, org_id)
    if org is None:
        raise NotInOrganisation(f"organisation {org_id} does not exist")
    return clock.business_date(org.timezone, now)


def org_slug(session: Session, org_id: int) -> str:
    org = session.get(Organisation, org_id)
    if org is None:
        raise NotInOrganisation(f"organisation {org_id} does not exist")
    return org.slug


# --- views ---------------------------------------------------------------------------------------


class InvoiceLine(BaseModel):
    id: int
    number: str
    currency: str
    amount_minor: int
    balance_minor: int
    issue_date: date
    due_date: date
    days_past_due: int
    aging_bucket: AgingBucket
    status: InvoiceStatus
    disputed: bool
    pay_link: str | None = None

    @classmethod
    def of(cls, inv: Invoice, as_of: date, *, link: str | None = None) -> InvoiceLine:
        return cls(
            id=inv.id,
            number=inv.number,
            currency=inv.currency,
            amount_minor=inv.amount_minor,
            balance_minor=inv.balance_minor,
            issue_date=inv.issue_date,
            due_date=inv.due_date,
            days_past_due=inv.days_past_due(as_of),
            aging_bucket=aging_bucket(inv.due_date, as_of),
            status=inv.status,
            disputed=inv.disputed,
            pay_link=link,
        )


class ContactView(BaseModel):
    id: int
    name: str
    email: str | None
    phone: str | None
    language: str | None
    timezone: str | None
    is_primary: bool
    reachable_by_email: bool = Field(description="E-mail, consent, not opted out, not bounced.")


class PromiseView(BaseModel):
    id: int
    amount_minor: int
    currency: str
    promised_date: date
    grace_days: int
    deadline: date = Field(description="Promised date plus grace: the last day that keeps it.")
    status: PromiseStatus
    lapsed: bool = Field(description="Still open in the ledger but past its deadline.")
    invoice_numbers: list[str]
    source: str
    created_at: datetime


class InstallmentView(BaseModel):
    seq: int
    due_date: date
    amount_minor: int
    paid_minor: int
    status: str
    overdue: bool


class PlanView(BaseModel):
    id: int
    status: PlanStatus
    total_minor: int
    currency: str
    invoice_numbers: list[str]
    installments: list[InstallmentView]
    next_installment: InstallmentView | None
    missed_installments: int


class DisputeView(BaseModel):
    id: int
    invoice_id: int
    invoice_number: str
    reason: str
    status: DisputeStatus
    opened_at: datetime
    sla_due_at: datetime | None
    sla_breached: bool
    hours_to_sla: float | None
    credit_minor: int
    description: str | None = Field(description="Untrusted: may be payer-written text.")


class ActivityView(BaseModel):
    occurred_at: datetime
    kind: str
    direction: str
    summary: str
    invoice_id: int | None


class NoteView(BaseModel):
    id: int
    created_at: datetime
    source: str
    untrusted: bool = Field(description="True when the text came from outside (payer, portal).")
    body: str
    invoice_id: int | None


class BucketBalance(BaseModel):
    bucket: AgingBucket
    currency: str
    balance_minor: int
    invoices: int


class PaymentView(BaseModel):
    id: int
    amount_minor: int
    currency: str
    received_on: date
    method: str
    invoice_id: int | None


class CustomerView(BaseModel):
    id: int
    name: str
    external_ref: str
    segment: str | None
    language: str
    timezone: str
    country_code: str | None
    renewal_date: date | None
    csm: str | None
    sales: str | None
    collector: str | None


class Account360(BaseModel):
    """One customer at a glance, as of a date: what the drafter and the inspector reason over."""

    as_of: date
    customer: CustomerView
    contacts: list[ContactView]
    open_invoices: list[InvoiceLine] = Field(description=f"Oldest first, at most {MAX_INVOICES}.")
    open_invoice_count: int
    balances_by_bucket: list[BucketBalance]
    total_open_minor: dict[str, int]
    total_overdue_minor: dict[str, int]
    promises: list[PromiseView]
    plans: list[PlanView]
    open_disputes: list[DisputeView]
    recent_activity: list[ActivityView]
    notes: list[NoteView]


class InvoiceDetail(BaseModel):
    as_of: date
    invoice: InvoiceLine
    customer_id: int
    customer_name: str
    promises: list[PromiseView]
    plans: list[PlanView]
    disputes: list[DisputeView]
    payments: list[PaymentView]
    pay_link: str


# --- builders ------------------------------------------------------------------------------------


def _clip(text: str | None, limit: int = MAX_TEXT) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _contact_view(c: Contact) -> ContactView:
    return ContactView(
        id=c.id,
        name=c.name,
        email=c.email,
        phone=c.phone,
        language=c.language,
        timezone=c.timezone,
        is_primary=c.is_primary,
        reachable_by_email=bool(c.email)
        and c.consent_email
        and not c.opted_out_email
        and not c.bounced,
    )


def _promise_view(p: PromiseToPay, numbers: list[str], as_of: date) -> PromiseView:
    deadline = p.promised_date + timedelta(days=p.grace_days)
    return PromiseView(
        id=p.id,
        amount_minor=p.amount_minor,
        currency=p.currency,
        promised_date=p.promised_date,
        grace_days=p.grace_days,
        deadline=deadline,
        status=p.status,
        lapsed=p.status is PromiseStatus.OPEN and deadline < as_of,
        invoice_numbers=numbers,
        source=p.source,
        created_at=p.created_at,
    )


def _plan_view(plan: PaymentPlan, numbers: list[str], as_of: date) -> PlanView:
    items = [
        InstallmentView(
            seq=i.seq,
            due_date=i.due_date,
            amount_minor=i.amount_minor,
            paid_minor=i.paid_minor,
            status=i.status.value,
            overdue=i.paid_minor < i.amount_minor and i.due_date < as_of,
        )
        for i in plan.installments
    ]
    upcoming = [i for i in items if i.paid_minor < i.amount_minor]
    return PlanView(
        id=plan.id,
        status=plan.status,
        total_minor=plan.total_minor,
        currency=plan.currency,
        invoice_numbers=numbers,
        installments=items[:MAX_ITEMS],
        next_installment=upcoming[0] if upcoming else None,
        missed_installments=sum(1 for i in items if i.status == "missed" or i.overdue),
    )


def _dispute_view(d: Dispute, number: str, now: datetime) -> DisputeView:
    hours = None if d.sla_due_at is None else (d.sla_due_at - now).total_seconds() / 3600
    return DisputeView(
        id=d.id,
        invoice_id=d.invoice_id,
        invoice_number=number,
        reason=d.reason,
        status=d.status,
        opened_at=d.opened_at,
        sla_due_at=d.sla_due_at,
        sla_breached=hours is not None and hours < 0 and d.status in OPEN_DISPUTE_STATUSES,
        hours_to_sla=None if hours is None else round(hours, 1),
        credit_minor=d.credit_minor,
        description=_clip(d.description) if d.description else None,
    )


def _numbers_for(session: Session, table: Table, key: str, ids: list[int]) -> dict[int, list[str]]:
    """Invoice numbers linked to each promise/plan id through an association table."""
    if not ids:
        return {}
    col = table.c
    rows = session.execute(
        select(col[key], Invoice.number)
        .join(Invoice, Invoice.id == col.invoice_id)
        .where(col[key].in_(ids))
        .order_by(Invoice.number)
    ).all()
    out: dict[int, list[str]] = {}
    for owner, number in rows:
        out.setdefault(owner, []).append(number)
    return out


def promise_history(
    session: Session, org_id: int, customer_id: int, *, as_of: date, limit: int = MAX_ITEMS
) -> list[PromiseView]:
    """The customer's promises-to-pay, newest first, with lapsed open ones flagged."""
    get_customer(session, org_id, customer_id)
    promises = session.scalars(
        select(PromiseToPay)
        .where(PromiseToPay.org_id == org_id, PromiseToPay.customer_id == customer_id)
        .order_by(PromiseToPay.promised_date.desc(), PromiseToPay.id.desc())
        .limit(limit)
    ).all()
    numbers = _numbers_for(session, promise_invoice, "promise_id", [p.id for p in promises])
    return [_promise_view(p, numbers.get(p.id, []), as_of) for p in promises]


def plan_history(
    session: Session, org_id: int, customer_id: int, *, as_of: date, limit: int = MAX_ITEMS
) -> list[PlanView]:
    """The customer's payment plans, newest first, with their installments."""
    get_customer(session, org_id, customer_id)
    plans = session.scalars(
        select(PaymentPlan)
        .where(PaymentPlan.org_id == org_id, PaymentPlan.customer_id == customer_id)
        .order_by(PaymentPlan.created_at.desc(), PaymentPlan.id.desc())
        .limit(limit)
    ).all()
    numbers = _numbers_for(session, plan_invoice, "plan_id", [p.id for p in plans])
    return [_plan_view(p, numbers.get(p.id, []), as_of) for p in plans]


def dispute_status(
    session: Session,
    org_id: int,
    *,
    customer_id: int | None = None,
    invoice_id: int | None = None,
    open_only: bool = False,
    now: datetime | None = None,
) -> list[DisputeView]:
    """Disputes of a customer or of one invoice, with SLA timers (hours left, breached)."""
    if customer_id is None and invoice_id is None:
        raise ValueError("dispute_status needs a customer_id or an invoice_id")
    query = select(Dispute, Invoice.number).join(Invoice, Invoice.id == Dispute.invoice_id)
    query = query.where(Dispute.org_id == org_id)
    if customer_id is not None:
        get_customer(session, org_id, customer_id)
        query = query.where(Dispute.customer_id == customer_id)
    if invoice_id is not None:
        get_invoice(session, org_id, invoice_id)
        query = query.where(Dispute.invoice_id == invoice_id)
    if open_only:
        query = query.where(Dispute.status.in_(OPEN_DISPUTE_STATUSES))
    rows = session.execute(query.order_by(Dispute.opened_at.desc()).limit(MAX_ITEMS)).all()
    moment = now or clock.now()
    return [_dispute_view(d, number, moment) for d, number in rows]


def internal_note_bodies(
    session: Session, org_id: int, customer_ids: Sequence[int], *, per_customer: int = 5
) -> dict[int, list[str]]:
    """The newest internal (staff-written) notes of each customer, newest first, in one query.

    Payer-written notes are left out on purpose: what the drafter repeats from a note must come
    from staff, never from text a payer could have planted.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rank = (
        func.row_number()
        .over(partition_by=Note.customer_id, order_by=(Note.created_at.desc(), Note.id.desc()))
        .label("rank")
    )
    ranked = (
        select(Note.customer_id, Note.body, rank)
        .where(
            Note.org_id == org_id,
            Note.customer_id.in_(ids),
            Note.source.in_(sorted(INTERNAL_SOURCES)),
        )
        .subquery()
    )
    out: dict[int, list[str]] = {}
    for cid, body in session.execute(
        select(ranked.c.customer_id, ranked.c.body)
        .where(ranked.c.rank <= per_customer)
        .order_by(ranked.c.customer_id, ranked.c.rank)
    ):
        out.setdefault(cid, []).append(body)
    return out


def _user_name(session: Session, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    user = session.get(User, user_id)
    return user.name if user is not None else None


def _aging_balances(
    open_invoices: Sequence[Invoice], as_of: date
) -> tuple[list[BucketBalance], dict[str, int], dict[str, int]]:
    """Open balances by aging bucket and currency (buckets in aging order), and the open and
    overdue totals per currency."""
    buckets: dict[tuple[AgingBucket, str], list[int]] = {}
    total: dict[str, int] = {}
    overdue: dict[str, int] = {}
    for inv in open_invoices:
        bucket = aging_bucket(inv.due_date, as_of)
        slot = buckets.setdefault((bucket, inv.currency), [0, 0])
        slot[0] += inv.balance_minor
        slot[1] += 1
        total[inv.currency] = total.get(inv.currency, 0) + inv.balance_minor
        if inv.due_date < as_of:
            overdue[inv.currency] = overdue.get(inv.currency, 0) + inv.balance_minor
    order = list(AgingBucket)
    balances = [
        BucketBalance(bucket=b, currency=c, balance_minor=v[0], invoices=v[1])
        for (b, c), v in sorted(buckets.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1]))
    ]
    return balances, total, overdue


def _recent_activity_and_notes(
    session: Session, org_id: int, customer_id: int, activity_limit: int, note_limit: int
) -> tuple[list[ActivityView], list[NoteView]]:
    """The latest activity and notes, newest first; notes from outside are marked untrusted."""
    activity = session.scalars(
        select(Activity)
        .where(Activity.org_id == org_id, Activity.customer_id == customer_id)
        .order_by(Activity.occurred_at.desc(), Activity.id.desc())
        .limit(activity_limit)
    ).all()
    notes = session.scalars(
        select(Note)
        .where(Note.org_id == org_id, Note.customer_id == customer_id)
        .order_by(Note.created_at.desc(), Note.id.desc())
        .limit(note_limit)
    ).all()
    return [
        ActivityView(
            occurred_at=a.occurred_at,
            kind=a.kind.value,
            direction=a.direction,
            summary=_clip(a.summary, 300),
            invoice_id=a.invoice_id,
        )
        for a in activity
    ], [
        NoteView(
            id=n.id,
            created_at=n.created_at,
            source=n.source,
            untrusted=n.source not in INTERNAL_SOURCES,
            body=_clip(n.body),
            invoice_id=n.invoice_id,
        )
        for n in notes
    ]


def _customer_view(session: Session, customer: Customer, segment: Segment | None) -> CustomerView:
    """The customer's header: segment and the names of its CSM, sales owner and collector."""
    return CustomerView(
        id=customer.id,
        name=customer.name,
        external_ref=customer.external_ref,
        segment=segment.name if segment else None,
        language=customer.language,
        timezone=customer.timezone,
        country_code=customer.country_code,
        renewal_date=customer.renewal_date,
        csm=_user_name(session, customer.csm_user_id),
        sales=_user_name(session, customer.sales_user_id),
        collector=_user_name(session, customer.collector_user_id),
    )


def account_360(
    session: Session,
    org_id: int,
    customer_id: int,
    *,
    as_of: date | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
    activity_limit: int = 10,
    note_limit: int = 10,
) -> Account360:
    """Account 360: open invoices, balances by aging bucket, promises, plans, disputes, activity
    and notes of one customer of ``org_id``.

    ``as_of`` defaults to today in the organisation's time zone; with ``settings`` each open
    invoice carries its pay link.
    """
    customer = get_customer(session, org_id, customer_id)
    as_of = as_of or org_today(session, org_id, now)
    segment = session.get(Segment, customer.segment_id) if customer.segment_id else None
    contacts = session.scalars(
        select(Contact)
        .where(Contact.org_id == org_id, Contact.customer_id == customer_id)
        .order_by(Contact.is_primary.desc(), Contact.id)
        .limit(MAX_ITEMS)
    ).all()
    open_invoices = session.scalars(
        select(Invoice)
        .where(
            Invoice.org_id == org_id,
            Invoice.customer_id == customer_id,
            Invoice.status == InvoiceStatus.OPEN,
            Invoice.balance_minor > 0,
        )
        .order_by(Invoice.due_date, Invoice.id)
    ).all()
    balances, total, overdue = _aging_balances(open_invoices, as_of)
    slug = org_slug(session, org_id) if settings else None
    promises = promise_history(session, org_id, customer_id, as_of=as_of, limit=MAX_ITEMS)
    plans = [
        p
        for p in plan_history(session, org_id, customer_id, as_of=as_of)
        if p.status in (*ACTIVE_PLAN, PlanStatus.DEFAULTED)
    ]
    disputes = dispute_status(session, org_id, customer_id=customer_id, open_only=True, now=now)
    activity, notes = _recent_activity_and_notes(
        session, org_id, customer_id, activity_limit, note_limit
    )
    return Account360(
        as_of=as_of,
        customer=_customer_view(session, customer, segment),
        contacts=[_contact_view(c) for c in contacts],
        open_invoices=[
            InvoiceLine.of(
                i,
                as_of,
                link=pay_link(settings, slug, i.number) if settings and slug else None,
            )
            for i in open_invoices[:MAX_INVOICES]
        ],
        open_invoice_count=len(open_invoices),
        balances_by_bucket=balances,
        total_open_minor=total,
        total_overdue_minor=overdue,
        promises=promises,
        plans=plans,
        open_disputes=disputes,
        recent_activity=activity,
        notes=notes,
    )


def invoice_detail(
    session: Session,
    org_id: int,
    invoice_id: int,
    *,
    as_of: date,
    settings: Settings,
    issued_link: str | None = None,
    now: datetime | None = None,
) -> InvoiceDetail:
    """One invoice with the promises and plans covering it, its disputes, payments and pay link."""
    inv = get_invoice(session, org_id, invoice_id)
    customer = get_customer(session, org_id, inv.customer_id)
    # One round trip says which related records exist; most invoices have none, and the drafter
    # asks for invoice detail once per draft.
    has = session.execute(
        select(
            exists().where(promise_invoice.c.invoice_id == inv.id),
            exists().where(plan_invoice.c.invoice_id == inv.id),
            exists().where(Payment.org_id == org_id, Payment.invoice_id == inv.id),
            exists().where(Dispute.org_id == org_id, Dispute.invoice_id == inv.id),
        )
    ).one()
    promises: Sequence[PromiseToPay] = []
    if has[0]:
        promises = session.scalars(
            select(PromiseToPay)
            .join(promise_invoice, promise_invoice.c.promise_id == PromiseToPay.id)
            .where(promise_invoice.c.invoice_id == inv.id, PromiseToPay.org_id == org_id)
            .order_by(PromiseToPay.promised_date.desc())
        ).all()
    p_numbers = _numbers_for(session, promise_invoice, "promise_id", [p.id for p in promises])
    plans: Sequence[PaymentPlan] = []
    if has[1]:
        plans = session.scalars(
            select(PaymentPlan)
            .join(plan_invoice, plan_invoice.c.plan_id == PaymentPlan.id)
            .where(plan_invoice.c.invoice_id == inv.id, PaymentPlan.org_id == org_id)
            .order_by(PaymentPlan.created_at.desc())
        ).all()
    pl_numbers = _numbers_for(session, plan_invoice, "plan_id", [p.id for p in plans])
    payments: Sequence[Payment] = []
    if has[2]:
        payments = session.scalars(
            select(Payment)
            .where(Payment.org_id == org_id, Payment.invoice_id == inv.id)
            .order_by(Payment.received_on.desc())
            .limit(MAX_ITEMS)
        ).all()
    disputes = dispute_status(session, org_id, invoice_id=inv.id, now=now) if has[3] else []
    return InvoiceDetail(
        as_of=as_of,
        invoice=InvoiceLine.of(inv, as_of),
        customer_id=customer.id,
        customer_name=customer.name,
        promises=[_promise_view(p, p_numbers.get(p.id, []), as_of) for p in promises],
        plans=[_plan_view(p, pl_numbers.get(p.id, []), as_of) for p in plans],
        disputes=disputes,
        payments=[
            PaymentView(
                id=p.id,
                amount_minor=p.amount_minor,
                currency=p.currency,
                received_on=p.received_on,
                method=p.method,
                invoice_id=p.invoice_id,
            )
            for p in payments
        ],
        pay_link=pay_link(settings, org_slug(session, org_id), inv.number, issued_url=issued_link),
    )


def invoice_details(
    session: Session,
    org_id: int,
    invoice_ids: Sequence[int],
    *,
    as_of: date,
    settings: Settings,
    issued_links: dict[str, str] | None = None,
    now: datetime | None = None,
) -> dict[int, InvoiceDetail]:
    """``invoice_detail`` for many invoices in a handful of queries (Autopilot's batches).

    Most invoices have no promise, plan, payment or dispute: those are built from one query
    each for the invoices and their customers; the few with related records go through
    ``invoice_detail`` one by one, so both paths give the same answer.
    """
    ids = sorted(set(invoice_ids))
    if not ids:
        return {}
    invoices = {
        inv.id: inv
        for inv in session.scalars(
            select(Invoice).where(Invoice.org_id == org_id, Invoice.id.in_(ids))
        )
    }
    customers = {
        c.id: c
        for c in session.scalars(
            select(Customer).where(
                Customer.org_id == org_id,
                Customer.id.in_(sorted({i.customer_id for i in invoices.values()})),
            )
        )
    }
    found = sorted(invoices)
    related: set[int] = set()
    for query in (
        select(promise_invoice.c.invoice_id).where(promise_invoice.c.invoice_id.in_(found)),
        select(plan_invoice.c.invoice_id).where(plan_invoice.c.invoice_id.in_(found)),
        select(Payment.invoice_id).where(Payment.org_id == org_id, Payment.invoice_id.in_(found)),
        select(Dispute.invoice_id).where(Dispute.org_id == org_id, Dispute.invoice_id.in_(found)),
    ):
        related.update(i for i in session.scalars(query) if i is not None)
    slug = org_slug(session, org_id)
    links = issued_links or {}
    out: dict[int, InvoiceDetail] = {}
    for inv_id, inv in invoices.items():
        if inv_id in related:
            out[inv_id] = invoice_detail(
                session, org_id, inv_id, as_of=as_of, settings=settings,
                issued_link=links.get(inv.number), now=now,
            )  # fmt: skip
            continue
        customer = customers[inv.customer_id]
        out[inv_id] = InvoiceDetail(
            as_of=as_of,
            invoice=InvoiceLine.of(inv, as_of),
            customer_id=customer.id,
            customer_name=customer.name,
            promises=[],
            plans=[],
            disputes=[],
            payments=[],
            pay_link=pay_link(settings, slug, inv.number, issued_url=links.get(inv.number)),
        )
    return out
