"""Small ledgers for the agent tests, written through the real ORM into the real test ledger.

``AS_OF`` and ``NOW`` are fixed so aging, cadence steps, promise deadlines and quiet hours are
deterministic (NOW is a Tuesday, 15:00 UTC: inside office hours in New York and Berlin).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.orm import Session

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
    Payment,
    PaymentPlan,
    Persona,
    PlanInstallment,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
    Segment,
    User,
)

AS_OF = date(2025, 10, 21)
NOW = datetime(2025, 10, 21, 15, 0, tzinfo=UTC)
_seq = itertools.count(1)

STANDARD_STEPS: tuple[tuple[int, Channel, str, str], ...] = (
    (-3, Channel.EMAIL, "pre_due_courtesy", "friendly"),
    (3, Channel.EMAIL, "friendly_reminder", "friendly"),
    (14, Channel.EMAIL, "second_reminder", "professional"),
    (30, Channel.EMAIL, "firm_reminder", "firm"),
    (60, Channel.EMAIL, "final_notice", "firm"),
)


def settings_for(data_dir: str = "/tmp/plixo-agent-tests", **overrides: object) -> Settings:
    """Settings for a test: offline model, a fixed public URL, no env file."""
    values: dict[str, object] = {
        "model": "offline",
        "public_base_url": "https://ar.acme.example",
        "data_dir": data_dir,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class Builder:
    """Builders bound to one session and organisation."""

    session: Session
    org: Organisation

    @classmethod
    def new_org(
        cls, session: Session, *, name: str = "Acme Test Ltd", shadow: bool = True
    ) -> Builder:
        org = Organisation(
            name=name,
            slug=f"acme-{uuid.uuid4().hex[:8]}",
            shadow_mode=shadow,
            timezone="America/New_York",
            sending_domain="acme.example",
            sending_domain_verified=True,
            last_import_at=NOW - timedelta(hours=2),
        )
        session.add(org)
        session.flush()
        return cls(session, org)

    def user(self, role: Persona, name: str | None = None) -> User:
        n = next(_seq)
        user = User(
            org_id=self.org.id,
            email=f"user{n}@acme.example",
            name=name or f"{role.value} {n}",
            role=role,
        )
        self.session.add(user)
        self.session.flush()
        return user

    def cadence(
        self,
        name: str = "Standard",
        steps: Sequence[tuple[int, Channel, str, str]] = STANDARD_STEPS,
    ) -> Cadence:
        cadence = Cadence(org_id=self.org.id, name=f"{name} {next(_seq)}")
        cadence.steps = [
            CadenceStep(position=i + 1, day_offset=off, channel=ch, template=tpl, tone=tone)
            for i, (off, ch, tpl, tone) in enumerate(steps)
        ]
        self.session.add(cadence)
        self.session.flush()
        return cadence

    def segment(
        self,
        name: str = "SMB",
        *,
        cadence: Cadence | None = None,
        shadow: bool = True,
        autopilot: bool = False,
    ) -> Segment:
        seg = Segment(
            org_id=self.org.id,
            name=name,
            cadence_id=cadence.id if cadence else None,
            shadow_mode=shadow,
            autopilot_enabled=autopilot,
        )
        self.session.add(seg)
        self.session.flush()
        return seg

    def customer(
        self,
        name: str | None = None,
        *,
        segment: Segment | None = None,
        language: str = "en",
        country: str = "US",
        tz: str = "America/New_York",
        collector: User | None = None,
        sales: User | None = None,
        csm: User | None = None,
    ) -> Customer:
        n = next(_seq)
        customer = Customer(
            org_id=self.org.id,
            external_ref=f"C{n:05d}",
            name=name or f"Payer {n} Inc.",
            segment_id=segment.id if segment else None,
            language=language,
            country_code=country,
            timezone=tz,
            collector_user_id=collector.id if collector else None,
            sales_user_id=sales.id if sales else None,
            csm_user_id=csm.id if csm else None,
        )
        self.session.add(customer)
        self.session.flush()
        return customer

    def contact(
        self,
        customer: Customer,
        name: str = "Dana Smith",
        *,
        email: str | None = None,
        phone: str | None = "+1 555 0100",
        language: str | None = None,
        primary: bool = True,
        opted_out: bool = False,
        bounced: bool = False,
        consent: bool = True,
    ) -> Contact:
        n = next(_seq)
        contact = Contact(
            org_id=self.org.id,
            customer_id=customer.id,
            name=name,
            email=email if email is not None else f"ap{n}@payer.example",
            phone=phone,
            timezone=customer.timezone,
            language=language,
            is_primary=primary,
            opted_out_email=opted_out,
            bounced=bounced,
            consent_email=consent,
        )
        self.session.add(contact)
        self.session.flush()
        return contact

    def invoice(
        self,
        customer: Customer,
        *,
        number: str | None = None,
        amount_minor: int = 125_000,
        balance_minor: int | None = None,
        due: date | None = None,
        days_overdue: int | None = None,
        currency: str = "USD",
        disputed: bool = False,
        status: InvoiceStatus = InvoiceStatus.OPEN,
    ) -> Invoice:
        n = next(_seq)
        if due is None:
            due = AS_OF - timedelta(days=days_overdue if days_overdue is not None else 10)
        inv = Invoice(
            org_id=self.org.id,
            customer_id=customer.id,
            number=number or f"INV-{1000 + n}",
            currency=currency,
            amount_minor=amount_minor,
            balance_minor=amount_minor if balance_minor is None else balance_minor,
            issue_date=due - timedelta(days=30),
            due_date=due,
            status=status,
            disputed=disputed,
        )
        self.session.add(inv)
        self.session.flush()
        return inv

    def promise(
        self,
        customer: Customer,
        invoices: Sequence[Invoice],
        *,
        amount_minor: int,
        promised: date,
        status: PromiseStatus = PromiseStatus.OPEN,
        grace_days: int = 3,
    ) -> PromiseToPay:
        p = PromiseToPay(
            org_id=self.org.id,
            customer_id=customer.id,
            amount_minor=amount_minor,
            currency=invoices[0].currency,
            promised_date=promised,
            grace_days=grace_days,
            status=status,
        )
        p.invoices = list(invoices)
        self.session.add(p)
        self.session.flush()
        return p

    def plan(
        self,
        customer: Customer,
        invoices: Sequence[Invoice],
        installments: Sequence[tuple[date, int, int]],
        *,
        status: PlanStatus = PlanStatus.ACTIVE,
    ) -> PaymentPlan:
        plan = PaymentPlan(
            org_id=self.org.id,
            customer_id=customer.id,
            total_minor=sum(a for _, a, _ in installments),
            currency=invoices[0].currency,
            status=status,
        )
        plan.invoices = list(invoices)
        plan.installments = [
            PlanInstallment(
                seq=i + 1,
                due_date=d,
                amount_minor=a,
                paid_minor=p,
                status=InstallmentStatus.PAID if p >= a else InstallmentStatus.DUE,
            )
            for i, (d, a, p) in enumerate(installments)
        ]
        self.session.add(plan)
        self.session.flush()
        return plan

    def dispute(
        self,
        invoice: Invoice,
        *,
        reason: str = "quantity",
        status: DisputeStatus = DisputeStatus.OPEN,
        sla_hours: float | None = 48,
        description: str | None = None,
    ) -> Dispute:
        d = Dispute(
            org_id=self.org.id,
            customer_id=invoice.customer_id,
            invoice_id=invoice.id,
            reason=reason,
            description=description,
            status=status,
            opened_at=NOW - timedelta(days=2),
            status_changed_at=NOW - timedelta(days=2),
            sla_due_at=NOW + timedelta(hours=sla_hours) if sla_hours is not None else None,
        )
        invoice.disputed = True
        self.session.add(d)
        self.session.flush()
        return d

    def note(self, customer: Customer, body: str, *, source: str = "internal") -> Note:
        note = Note(
            org_id=self.org.id,
            customer_id=customer.id,
            body=body,
            source=source,
            created_at=NOW - timedelta(days=1),
        )
        self.session.add(note)
        self.session.flush()
        return note

    def touch(
        self, contact: Contact, at: datetime, *, kind: ActivityKind = ActivityKind.EMAIL
    ) -> None:
        self.session.add(
            Activity(
                org_id=self.org.id,
                customer_id=contact.customer_id,
                contact_id=contact.id,
                kind=kind,
                direction="out",
                summary="reminder",
                occurred_at=at,
            )
        )
        self.session.flush()

    def payment(self, invoice: Invoice, amount_minor: int, on: date) -> Payment:
        pay = Payment(
            org_id=self.org.id,
            customer_id=invoice.customer_id,
            invoice_id=invoice.id,
            amount_minor=amount_minor,
            applied_minor=amount_minor,
            currency=invoice.currency,
            received_on=on,
            external_ref=f"pay-{next(_seq)}",
        )
        self.session.add(pay)
        self.session.flush()
        return pay


@dataclass
class Ledger:
    """One organisation with a Standard cadence, a segment and one customer to chase."""

    b: Builder
    cadence: Cadence
    segment: Segment
    customer: Customer
    contact: Contact
    invoice: Invoice
    collector: User
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def org(self) -> Organisation:
        return self.b.org


def small_ledger(session: Session, *, shadow: bool = True, language: str = "en") -> Ledger:
    """An org with one customer whose invoice INV-1042 ($1,250.00) was due 3 days ago.

    3 days past due is exactly the Standard cadence's ``friendly_reminder`` step (+3).
    """
    b = Builder.new_org(session, shadow=shadow)
    collector = b.user(Persona.COLLECTOR, "Sam Okafor")
    cadence = b.cadence()
    segment = b.segment("SMB", cadence=cadence, shadow=shadow)
    country = {"en": "US", "de": "DE", "fr": "FR", "es": "ES"}.get(language, "US")
    customer = b.customer(
        "Northwind Foods Inc.", segment=segment, language=language, country=country,
        collector=collector,
    )  # fmt: skip
    contact = b.contact(customer, "Dana Smith", email="dana@northwind.example")
    invoice = b.invoice(customer, number="INV-1042", amount_minor=125_000, days_overdue=3)
    session.commit()
    return Ledger(b, cadence, segment, customer, contact, invoice, collector)


def due_ledger(session: Session, numbers: list[str], *, name: str = "Due") -> Builder:
    """An org with one customer per invoice number, each with a contact and that invoice due 3
    days ago (the Standard cadence's ``friendly_reminder``): as many due items, committed."""
    b = Builder.new_org(session)
    segment = b.segment("SMB", cadence=b.cadence())
    for n, number in enumerate(numbers):
        customer = b.customer(f"{name} {n} Inc.", segment=segment)
        b.contact(customer, f"Payer {n}")
        b.invoice(customer, number=number, days_overdue=3)
    session.commit()
    return b
