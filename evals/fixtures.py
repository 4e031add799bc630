"""Scenario → ledger: the rows a scenario describes, and the truth a draft about it may state.

Why the truth is computed here, from the scenario, and not read back through
``tools/grounding/truth``:
the evals check the agent, and grounding is part of the agent's machinery. Deriving the allowed
amounts and dates independently (same categories: invoice amounts and balances, paid parts, open
and overdue totals, promises, plans, installments, payments; due, issue, promise, installment,
payment, renewal and dispute SLA dates) means a grounding bug shows up as an eval failure instead
of being shared by both. A test compares the two on every scenario so they cannot drift apart
silently.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from evals.scenarios import (
    ContactSpec,
    DraftTask,
    InvoiceSpec,
    ScenarioInputs,
    TriageTask,
    money_minor,
)
from memory.config import Settings
from memory.models import (
    Activity,
    ActivityKind,
    Cadence,
    CadenceStep,
    Channel,
    Contact,
    Customer,
    Dispute,
    DisputeStatus,
    InstallmentStatus,
    Invoice,
    InvoiceStatus,
    Note,
    Organisation,
    OutboxMessage,
    Payment,
    PaymentPlan,
    Persona,
    PlanInstallment,
    PlanStatus,
    PolicySetVersion,
    PromiseStatus,
    PromiseToPay,
    Segment,
    User,
)
from tools.insights.account360 import pay_link
from tools.kit.formatting import locale_for

#: Cadence steps every eval organisation has: (template, day offset, tone). The drafter may look
#: up the step by template name.
EVAL_CADENCE: tuple[tuple[str, int, str], ...] = (
    ("pre_due_courtesy", -3, "friendly"),
    ("friendly_reminder", 3, "friendly"),
    ("second_reminder", 14, "professional"),
    ("firm_reminder", 30, "firm"),
    ("final_notice", 60, "firm"),
)
_OPEN_DISPUTES = {"open", "investigating", "awaiting_customer", "escalated_legal"}
_INTERNAL_NOTE_SOURCES = {"internal", "collector", "system"}


class Person(BaseModel):
    name: str
    email: str | None = None
    phone: str | None = None
    role: str


class PromiseFact(BaseModel):
    promised_date: date
    status: str
    invoice_numbers: list[str]
    grace_days: int


class PolicyContext(BaseModel):
    """What the guardrails need besides the draft's own content (see policies/facts.py)."""

    now: datetime
    segment: str
    org_shadow_mode: bool
    segment_shadow_mode: bool
    autopilot_enabled: bool
    data_ready_score: int
    sending_domain_verified: bool
    maintenance: bool
    cron_paused: bool
    contact_timezone: str
    contact_opted_out: bool
    contact_bounced: bool
    contact_consent: bool
    touches: list[datetime]
    promises: list[PromiseFact]
    disputed_invoices: list[str]


class ScenarioTruth(BaseModel):
    """Plain data: everything the evaluators compare a draft or a triage result with."""

    case: str
    org_name: str
    org_slug: str
    customer_name: str
    as_of: date
    task_kind: Literal["draft", "triage"]
    persona: str | None = None
    channel: str = "email"
    step: str | None = None
    target_invoice: str | None = None
    target_currency: str | None = None
    target_balance_minor: int | None = None
    contacts: list[Person]
    primary_contact: Person
    staff: list[Person]
    outsiders: list[Person] = Field(description="Other customers' contacts.")
    other_customer_names: list[str]
    invoice_numbers: list[str]
    foreign_invoice_numbers: list[str]
    amounts: dict[str, list[int]]
    dates: list[date]
    pay_link: str | None
    allowed_links: list[str]
    has_promise: bool
    has_plan: bool
    has_payment: bool
    has_credit: bool = False
    language: str
    locale: str
    untrusted_texts: list[str]
    notes: list[str]
    policy: PolicyContext

    @property
    def currencies(self) -> list[str]:
        return sorted(self.amounts)

    def amount_allowed(self, minor: int, currency: str) -> bool:
        return minor in set(self.amounts.get(currency, ()))


@dataclass
class PreparedScenario:
    """A scenario loaded into the ledger: the ids the agent needs, and the truth."""

    org_id: int
    customer_id: int
    contact_id: int
    invoice_id: int | None
    user_ids: dict[str, int]
    truth: ScenarioTruth


def slugify(text: str, limit: int = 80) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[:limit] or "case"


def _email_for(name: str, domain: str) -> str:
    return f"{slugify(name).replace('-', '.')}@{domain}"


def _at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour, 0), tzinfo=UTC)


def _sla_due(opened_on: date) -> datetime:
    """A scenario dispute's SLA clock: ten days from its opening (noon UTC)."""
    return _at(opened_on) + timedelta(days=10)


def normalize_link(url: str) -> str:
    """Links compare without trailing punctuation or slash (as a payer's mail client shows them)."""
    url = url.strip().rstrip(".,;:!?)")
    if url.lower().startswith("www."):
        url = "https://" + url
    return url.rstrip("/")


# --- truth ---------------------------------------------------------------------------------------


def _invoice_currency(inv: InvoiceSpec, spec: ScenarioInputs) -> str:
    return inv.currency or spec.org.default_currency


def _truth_amounts_and_dates(spec: ScenarioInputs) -> tuple[dict[str, set[int]], set[date]]:
    """Every amount (per currency, in minor units) and every date a draft may rightly state:
    invoice amounts, balances and paid parts, open and overdue totals, promises, installments,
    payments, the renewal and each dispute's SLA date."""
    amounts: dict[str, set[int]] = {}
    dates: set[date] = {spec.as_of}

    def add(cur: str, minor: int) -> None:
        if minor > 0:
            amounts.setdefault(cur, set()).add(minor)

    cur_of = {i.number: _invoice_currency(i, spec) for i in spec.invoices}
    settled: dict[str, date] = {}
    for p in spec.payments:
        settled[p.invoice] = max(settled.get(p.invoice, p.received_on), p.received_on)
    open_total: dict[str, int] = {}
    overdue_total: dict[str, int] = {}
    for inv in spec.invoices:
        cur = cur_of[inv.number]
        amount = money_minor(inv.amount, cur)
        balance = amount if inv.balance is None else money_minor(inv.balance, cur)
        if inv.status != "open":
            balance = 0 if inv.balance is None else balance
        add(cur, amount)
        add(cur, balance)
        if amount > balance:
            add(cur, amount - balance)
        dates.update((inv.issue_date, inv.due_date))
        if inv.status == "paid":
            dates.add(settled.get(inv.number, inv.due_date))
        if inv.status == "open" and balance > 0:
            open_total[cur] = open_total.get(cur, 0) + balance
            if inv.due_date < spec.as_of:
                overdue_total[cur] = overdue_total.get(cur, 0) + balance
    for totals in (open_total, overdue_total):
        for cur, value in totals.items():
            add(cur, value)
    for pr in spec.promises:
        cur = cur_of[pr.invoices[0]]
        add(cur, money_minor(pr.amount, cur))
        dates.update((pr.promised_date, pr.promised_date + timedelta(days=pr.grace_days)))
    for plan in spec.plans:
        cur = cur_of[plan.invoices[0]]
        total = 0
        for inst in plan.installments:
            a = money_minor(inst.amount, cur)
            paid = money_minor(inst.paid, cur)
            total += a
            add(cur, a)
            add(cur, a - paid)
            dates.add(inst.due_date)
        add(cur, total)
    for pay in spec.payments:
        cur = cur_of[pay.invoice]
        add(cur, money_minor(pay.amount, cur))
        dates.add(pay.received_on)
    if spec.customer.renewal_date:
        dates.add(spec.customer.renewal_date)
    zone = ZoneInfo(spec.org.timezone)
    for dispute in spec.disputes:  # its SLA date, on the organisation's calendar
        dates.add(
            _sla_due(dispute.opened_on or spec.as_of - timedelta(days=5)).astimezone(zone).date()
        )
    return amounts, dates


def _target_balance(spec: ScenarioInputs, target: str | None) -> int | None:
    """The task's invoice balance in minor units (its amount when the scenario gives none)."""
    by_number = {i.number: i for i in spec.invoices}
    target_inv = by_number.get(target) if target else None
    if target_inv is None:
        return None
    target_cur = _invoice_currency(target_inv, spec)
    return (
        money_minor(target_inv.amount, target_cur)
        if target_inv.balance is None
        else money_minor(target_inv.balance, target_cur)
    )


def _truth_policy(
    spec: ScenarioInputs, contact_for_task: ContactSpec, sms: bool, disputed: list[str]
) -> PolicyContext:
    """The policy inputs the guardrails would see for this scenario's task and addressee."""
    return PolicyContext(
        now=spec.moment,
        segment=spec.customer.segment,
        org_shadow_mode=spec.org.shadow_mode,
        segment_shadow_mode=spec.customer.segment_shadow_mode,
        autopilot_enabled=spec.customer.autopilot_enabled,
        data_ready_score=spec.data_ready_score,
        sending_domain_verified=spec.org.sending_domain_verified,
        maintenance=spec.org.maintenance,
        cron_paused=spec.org.cron_paused,
        contact_timezone=contact_for_task.timezone or spec.customer.timezone,
        contact_opted_out=(
            contact_for_task.opted_out_sms if sms else contact_for_task.opted_out_email
        ),
        contact_bounced=contact_for_task.bounced,
        contact_consent=contact_for_task.consent_sms if sms else contact_for_task.consent_email,
        touches=[t.at for t in spec.touches],
        promises=[
            PromiseFact(
                promised_date=p.promised_date,
                status=p.status,
                invoice_numbers=list(p.invoices),
                grace_days=p.grace_days,
            )
            for p in spec.promises
        ],
        disputed_invoices=disputed,
    )


def compute_truth(case: str, spec: ScenarioInputs, settings: Settings, slug: str) -> ScenarioTruth:
    """The facts a draft about this scenario may state, derived from the scenario alone."""
    amounts, dates = _truth_amounts_and_dates(spec)
    primary = spec.primary_contact
    contact_for_task = primary
    if isinstance(spec.task, TriageTask) and spec.task.from_contact:
        contact_for_task = next(c for c in spec.contacts if c.email == spec.task.from_contact)
    language = (contact_for_task.language or spec.customer.language or "en").lower()
    target = spec.task.invoice
    cur_of = {i.number: _invoice_currency(i, spec) for i in spec.invoices}
    target_cur = cur_of[target] if target else None
    target_balance = _target_balance(spec, target)
    links = {
        normalize_link(pay_link(settings, slug, inv.number))
        for inv in spec.invoices
        if inv.status == "open"
    }
    untrusted = [n.body for n in spec.notes if n.source not in _INTERNAL_NOTE_SOURCES]
    untrusted += [d.description for d in spec.disputes if d.description]
    if isinstance(spec.task, TriageTask):
        untrusted.append(spec.task.reply)
    disputed = sorted(
        {i.number for i in spec.invoices if i.disputed}
        | {d.invoice for d in spec.disputes if d.status in _OPEN_DISPUTES}
    )
    domain = slugify(spec.org.name).replace("-", "") + ".example"
    task = spec.task
    sms = isinstance(task, DraftTask) and task.channel == "sms"
    return ScenarioTruth(
        case=case,
        org_name=spec.org.name,
        org_slug=slug,
        customer_name=spec.customer.name,
        as_of=spec.as_of,
        task_kind=task.kind,
        persona=task.persona if isinstance(task, DraftTask) else None,
        channel=task.channel if isinstance(task, DraftTask) else "email",
        step=task.step if isinstance(task, DraftTask) else None,
        target_invoice=target,
        target_currency=target_cur,
        target_balance_minor=target_balance,
        contacts=[
            Person(name=c.name, email=c.email, phone=c.phone, role="contact") for c in spec.contacts
        ],
        primary_contact=Person(
            name=primary.name, email=primary.email, phone=primary.phone, role="contact"
        ),
        staff=[
            Person(name=u.name, email=u.email or _email_for(u.name, domain), role=u.role)
            for u in spec.users
        ],
        outsiders=[
            Person(name=c.name, email=c.email, role="other_customer_contact")
            for oc in spec.other_customers
            for c in oc.contacts
        ],
        other_customer_names=[oc.name for oc in spec.other_customers],
        invoice_numbers=[i.number for i in spec.invoices],
        foreign_invoice_numbers=[i.number for oc in spec.other_customers for i in oc.invoices],
        amounts={cur: sorted(v) for cur, v in sorted(amounts.items())},
        dates=sorted(dates),
        pay_link=normalize_link(pay_link(settings, slug, target)) if target else None,
        allowed_links=sorted(links),
        has_promise=bool(spec.promises),
        has_plan=bool(spec.plans),
        has_payment=bool(spec.payments),
        language=language,
        locale=locale_for(language, spec.customer.country_code),
        untrusted_texts=untrusted,
        notes=[n.body for n in spec.notes if n.source in _INTERNAL_NOTE_SOURCES],
        policy=_truth_policy(spec, contact_for_task, sms, disputed),
    )


# --- ledger --------------------------------------------------------------------------------------


def _add_contact(
    session: Session, org_id: int, customer_id: int, spec: ContactSpec, primary: bool
) -> Contact:
    contact = Contact(
        org_id=org_id,
        customer_id=customer_id,
        name=spec.name,
        email=spec.email,
        phone=spec.phone,
        language=spec.language,
        timezone=spec.timezone,
        is_primary=primary,
        opted_out_email=spec.opted_out_email,
        bounced=spec.bounced,
        consent_email=spec.consent_email,
        opted_out_sms=spec.opted_out_sms,
        consent_sms=spec.consent_sms,
    )
    session.add(contact)
    return contact


def _add_invoice(
    session: Session,
    org_id: int,
    customer_id: int,
    inv: InvoiceSpec,
    spec: ScenarioInputs,
    disputed: bool,
    settled_on: date | None,
) -> Invoice:
    cur = _invoice_currency(inv, spec)
    amount = money_minor(inv.amount, cur)
    if inv.balance is not None:
        balance = money_minor(inv.balance, cur)
    else:
        balance = amount if inv.status == "open" else 0
    row = Invoice(
        org_id=org_id,
        customer_id=customer_id,
        number=inv.number,
        currency=cur,
        amount_minor=amount,
        balance_minor=balance,
        issue_date=inv.issue_date,
        due_date=inv.due_date,
        status=InvoiceStatus(inv.status),
        disputed=disputed,
        settled_date=settled_on if inv.status == "paid" else None,
        source="eval",
    )
    session.add(row)
    return row


def _add_org(session: Session, spec: ScenarioInputs, slug: str) -> Organisation:
    """The scenario's organisation, flushed so its id is known."""
    org = Organisation(
        name=spec.org.name,
        slug=slug,
        default_currency=spec.org.default_currency,
        timezone=spec.org.timezone,
        shadow_mode=spec.org.shadow_mode,
        maintenance=spec.org.maintenance,
        cron_paused=spec.org.cron_paused,
        sending_domain=slugify(spec.org.name).replace("-", "") + ".example",
        sending_domain_verified=spec.org.sending_domain_verified,
    )
    session.add(org)
    session.flush()
    return org


def _add_staff_and_segment(
    session: Session, org: Organisation, spec: ScenarioInputs, truth: ScenarioTruth
) -> tuple[dict[str, User], Segment]:
    """The staff (with the addresses the truth expects), the eval cadence and the segment."""
    users: dict[str, User] = {}
    for u, person in zip(spec.users, truth.staff, strict=True):
        user = User(org_id=org.id, email=person.email or "", name=u.name, role=Persona(u.role))
        session.add(user)
        users[u.name] = user
    cadence = Cadence(org_id=org.id, name="Eval cadence")
    cadence.steps = [
        CadenceStep(position=i, day_offset=off, channel=Channel.EMAIL, template=tpl, tone=tone)
        for i, (tpl, off, tone) in enumerate(EVAL_CADENCE, start=1)
    ]
    session.add(cadence)
    session.flush()
    segment = Segment(
        org_id=org.id,
        name=spec.customer.segment,
        cadence_id=cadence.id,
        shadow_mode=spec.customer.segment_shadow_mode,
        autopilot_enabled=spec.customer.autopilot_enabled,
    )
    session.add(segment)
    session.flush()
    return users, segment


def _add_customer(
    session: Session,
    org: Organisation,
    segment: Segment,
    spec: ScenarioInputs,
    users: dict[str, User],
) -> Customer:
    """The scenario's customer with its owners, flushed so its id is known."""

    def uid(name: str | None) -> int | None:
        return users[name].id if name else None

    c = spec.customer
    customer = Customer(
        org_id=org.id,
        external_ref=c.external_ref or "CUST-0001",
        name=c.name,
        segment_id=segment.id,
        csm_user_id=uid(c.csm),
        sales_user_id=uid(c.sales),
        collector_user_id=uid(c.collector),
        timezone=c.timezone,
        country_code=c.country_code,
        language=c.language,
        renewal_date=c.renewal_date,
    )
    session.add(customer)
    session.flush()
    return customer


def _add_other_customers(
    session: Session, org: Organisation, segment: Segment, spec: ScenarioInputs
) -> None:
    """The other customers of the ledger, whose people and invoices a draft must never mention."""
    for n, oc in enumerate(spec.other_customers, start=2):
        other = Customer(
            org_id=org.id,
            external_ref=f"CUST-{n:04d}",
            name=oc.name,
            segment_id=segment.id,
            timezone=spec.customer.timezone,
        )
        session.add(other)
        session.flush()
        for i, cs in enumerate(oc.contacts):
            _add_contact(session, org.id, other.id, cs, i == 0)
        for inv in oc.invoices:
            _add_invoice(session, org.id, other.id, inv, spec, inv.disputed, None)


def _add_payments_and_promises(
    session: Session,
    org: Organisation,
    customer: Customer,
    primary: Contact,
    invoices: dict[str, Invoice],
    spec: ScenarioInputs,
    slug: str,
) -> None:
    """The payments received and the promises made, in the scenario's currencies."""
    for i, pay in enumerate(spec.payments, start=1):
        inv_row = invoices[pay.invoice]
        minor = money_minor(pay.amount, inv_row.currency)
        session.add(
            Payment(
                org_id=org.id,
                customer_id=customer.id,
                invoice_id=inv_row.id,
                amount_minor=minor,
                applied_minor=minor,
                currency=inv_row.currency,
                received_on=pay.received_on,
                method=pay.method,
                external_ref=f"{slug}-pay-{i}",
            )
        )
    for pr in spec.promises:
        cur = invoices[pr.invoices[0]].currency
        session.add(
            PromiseToPay(
                org_id=org.id,
                customer_id=customer.id,
                contact_id=primary.id,
                amount_minor=money_minor(pr.amount, cur),
                currency=cur,
                promised_date=pr.promised_date,
                grace_days=pr.grace_days,
                status=PromiseStatus(pr.status),
                source=pr.source,
                created_at=_at(pr.promised_date - timedelta(days=10)),
                invoices=[invoices[n] for n in pr.invoices],
            )
        )


def _add_plans_and_disputes(
    session: Session,
    org: Organisation,
    customer: Customer,
    invoices: dict[str, Invoice],
    spec: ScenarioInputs,
) -> None:
    """The payment plans with their installments, then the disputes with their SLA dates."""
    for pl in spec.plans:
        cur = invoices[pl.invoices[0]].currency
        plan = PaymentPlan(
            org_id=org.id,
            customer_id=customer.id,
            total_minor=sum(money_minor(i.amount, cur) for i in pl.installments),
            currency=cur,
            status=PlanStatus(pl.status),
            source="eval",
            invoices=[invoices[n] for n in pl.invoices],
        )
        plan.installments = [
            PlanInstallment(
                seq=k,
                due_date=i.due_date,
                amount_minor=money_minor(i.amount, cur),
                paid_minor=money_minor(i.paid, cur),
                status=InstallmentStatus(i.status),
            )
            for k, i in enumerate(pl.installments, start=1)
        ]
        session.add(plan)
    for d in spec.disputes:
        opened = _at(d.opened_on or spec.as_of - timedelta(days=5))
        session.add(
            Dispute(
                org_id=org.id,
                customer_id=customer.id,
                invoice_id=invoices[d.invoice].id,
                reason=d.reason,
                description=d.description,
                status=DisputeStatus(d.status),
                source="payer" if d.description else "collector",
                opened_at=opened,
                status_changed_at=opened,
                sla_due_at=_sla_due(d.opened_on or spec.as_of - timedelta(days=5)),
            )
        )


def _add_notes_and_touches(
    session: Session,
    org: Organisation,
    customer: Customer,
    primary: Contact,
    invoices: dict[str, Invoice],
    spec: ScenarioInputs,
) -> None:
    """The notes on the account and the outbound touches already made to the primary contact."""
    for note in spec.notes:
        session.add(
            Note(
                org_id=org.id,
                customer_id=customer.id,
                invoice_id=invoices[note.invoice].id if note.invoice else None,
                author_user_id=None,
                source=note.source,
                body=note.body,
                created_at=_at(note.written_on or spec.as_of - timedelta(days=3), 10),
            )
        )
    kinds = {
        "email": ActivityKind.EMAIL,
        "call": ActivityKind.CALL,
        "sms": ActivityKind.SMS,
        "nudge": ActivityKind.NUDGE,
    }
    for t in spec.touches:
        session.add(
            Activity(
                org_id=org.id,
                customer_id=customer.id,
                invoice_id=invoices[spec.task.invoice].id if spec.task.invoice else None,
                contact_id=primary.id,
                kind=kinds[t.kind],
                direction="out",
                summary=t.summary,
                occurred_at=t.at,
            )
        )


def build_scenario(
    session: Session, case: str, spec: ScenarioInputs, settings: Settings
) -> PreparedScenario:
    """Write the scenario's organisation, people, invoices and history; return ids and truth.

    The caller commits. Slugs are derived from the case name, so several scenarios share one
    ledger without seeing each other (every agent tool is scoped to one organisation).
    """
    slug = slugify(f"eval-{case}")
    org = _add_org(session, spec, slug)
    truth = compute_truth(case, spec, settings, slug)
    users, segment = _add_staff_and_segment(session, org, spec, truth)
    customer = _add_customer(session, org, segment, spec, users)
    primary_spec = spec.primary_contact
    contacts = {
        cs.email: _add_contact(session, org.id, customer.id, cs, cs is primary_spec)
        for cs in spec.contacts
    }
    settled: dict[str, date] = {}
    for p in spec.payments:
        settled[p.invoice] = max(settled.get(p.invoice, p.received_on), p.received_on)
    disputed_numbers = set(truth.policy.disputed_invoices)
    invoices = {
        inv.number: _add_invoice(
            session,
            org.id,
            customer.id,
            inv,
            spec,
            inv.number in disputed_numbers,
            settled.get(inv.number),
        )
        for inv in spec.invoices
    }
    _add_other_customers(session, org, segment, spec)
    session.flush()
    primary = contacts[primary_spec.email]
    _add_payments_and_promises(session, org, customer, primary, invoices, spec, slug)
    _add_plans_and_disputes(session, org, customer, invoices, spec)
    _add_notes_and_touches(session, org, customer, primary, invoices, spec)
    session.flush()
    target = spec.task.invoice
    return PreparedScenario(
        org_id=org.id,
        customer_id=customer.id,
        contact_id=primary.id,
        invoice_id=invoices[target].id if target else None,
        user_ids={name: u.id for name, u in users.items()},
        truth=truth,
    )


# --- did the task change the ledger? --------------------------------------------------------------


def ledger_fingerprint(session: Session, org_id: int) -> dict[str, Any]:
    """The state a payer's text must never change: balances, commitments, sends, switches."""
    inv = session.execute(
        select(Invoice.number, Invoice.status, Invoice.balance_minor, Invoice.disputed)
        .where(Invoice.org_id == org_id)
        .order_by(Invoice.number)
    ).all()
    org = session.get(Organisation, org_id)

    def count(model: Any, *where: Any) -> int:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    return {
        "invoices": [f"{n}:{s}:{b}:{d}" for n, s, b, d in inv],
        "promises": sorted(
            f"{a}:{s}"
            for a, s in session.execute(
                select(PromiseToPay.amount_minor, PromiseToPay.status).where(
                    PromiseToPay.org_id == org_id
                )
            )
        ),
        "plans": sorted(
            str(s)
            for s in session.scalars(select(PaymentPlan.status).where(PaymentPlan.org_id == org_id))
        ),
        "disputes": sorted(
            str(s) for s in session.scalars(select(Dispute.status).where(Dispute.org_id == org_id))
        ),
        "payments": count(Payment, Payment.org_id == org_id),
        "outbox": count(OutboxMessage, OutboxMessage.org_id == org_id),
        "policy_versions": count(PolicySetVersion, PolicySetVersion.org_id == org_id),
        "contacts_opted_out": count(
            Contact, Contact.org_id == org_id, Contact.opted_out_email.is_(True)
        ),
        "org": None
        if org is None
        else [org.shadow_mode, org.maintenance, org.cron_paused, org.sending_domain_verified],
        "segments": sorted(
            f"{n}:{s}:{a}"
            for n, s, a in session.execute(
                select(Segment.name, Segment.shadow_mode, Segment.autopilot_enabled).where(
                    Segment.org_id == org_id
                )
            )
        ),
    }


def ledger_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one line per changed part."""
    return [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]
