"""The ledger: SQLAlchemy 2.0 typed models for every fact plixo keeps.

Money is always integer minor units plus an ISO currency code. The aging bucket is derived from the
due date and an as-of date on read (``aging_bucket``), never stored, so it cannot go stale.
Every row carries ``org_id``: each query is scoped to one organisation (tenant).
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from memory import clock


def utcnow() -> datetime:
    """Column defaults read the one clock (``memory.clock.now``)."""
    return clock.now()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum(cls: type[enum.Enum], length: int = 32) -> SAEnum:
    """Enums stored as their readable values, portable across SQLite and PostgreSQL."""
    return SAEnum(
        cls,
        native_enum=False,
        length=length,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


# --- vocabulary -------------------------------------------------------------------------------


class Persona(enum.StrEnum):
    ADMIN = "Admin"
    CONTROLLER = "Controller"
    COLLECTIONS_MANAGER = "Collections Manager"
    COLLECTOR = "Collector"
    BILLING_ADMIN = "Billing Admin"
    SALES = "Sales"
    CSM = "CSM"
    LEGAL = "Legal"
    VIEWER = "Viewer"


class AgingBucket(enum.StrEnum):
    CURRENT = "Current"
    D1_30 = "1-30"
    D31_60 = "31-60"
    D61_90 = "61-90"
    D90_PLUS = "90+"


def aging_bucket(due_date: date, as_of: date) -> AgingBucket:
    """The aging bucket of an open invoice on ``as_of`` (days past due; not yet due is Current)."""
    days = (as_of - due_date).days
    if days <= 0:
        return AgingBucket.CURRENT
    if days <= 30:
        return AgingBucket.D1_30
    if days <= 60:
        return AgingBucket.D31_60
    if days <= 90:
        return AgingBucket.D61_90
    return AgingBucket.D90_PLUS


class InvoiceStatus(enum.StrEnum):
    OPEN = "open"
    PAID = "paid"
    VOID = "void"


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    CALL = "call"
    SLACK = "slack"
    PORTAL = "portal"


class PromiseStatus(enum.StrEnum):
    OPEN = "open"
    KEPT = "kept"
    MISSED = "missed"
    CANCELLED = "cancelled"


class PlanStatus(enum.StrEnum):
    PROPOSED = "proposed"
    PENDING_APPROVAL = "pending_approval"
    ACTIVE = "active"
    DEFAULTED = "defaulted"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class InstallmentStatus(enum.StrEnum):
    DUE = "due"
    PAID = "paid"
    MISSED = "missed"


class DisputeStatus(enum.StrEnum):
    OPEN = "open"
    INVESTIGATING = "investigating"
    AWAITING_CUSTOMER = "awaiting_customer"
    ESCALATED_LEGAL = "escalated_legal"
    RESOLVED_CREDIT = "resolved_credit"
    REJECTED = "rejected"


#: A dispute still being worked: its invoice is not chased, not totalled as due, not dunned.
OPEN_DISPUTE_STATUSES = (
    DisputeStatus.OPEN,
    DisputeStatus.INVESTIGATING,
    DisputeStatus.AWAITING_CUSTOMER,
    DisputeStatus.ESCALATED_LEGAL,
)


class ActivityKind(enum.StrEnum):
    EMAIL = "email"
    NUDGE = "nudge"
    CALL = "call"
    SMS = "sms"
    PORTAL_VISIT = "portal_visit"
    REPLY = "reply"
    PAYMENT = "payment"
    NOTE = "note"


class DraftStatus(enum.StrEnum):
    DRAFTED = "drafted"
    BLOCKED = "blocked"
    DEFERRED = "deferred"
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    EDITED = "edited"
    REJECTED = "rejected"
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    HELD = "held"  # the model failed: held for a human with the reason
    SUPERSEDED = "superseded"  # a newer draft for the same invoice replaced it before approval


class DraftKind(enum.StrEnum):
    CADENCE = "cadence"
    NUDGE = "nudge"
    MANUAL = "manual"
    FOLLOW_UP = "follow_up"


class DraftPersona(enum.StrEnum):
    AUTOPILOT = "autopilot"
    COLLECTOR = "collector"
    SALES_NUDGE = "sales_nudge"
    CSM_NUDGE = "csm_nudge"


class OutboxStatus(enum.StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"  # a worker recorded its attempt and is handing the message to the relay
    SENT = "sent"
    FAILED = "failed"
    UNCERTAIN = "uncertain"  # the worker died mid hand-off: a person confirms sent or resends
    CANCELLED = "cancelled"


# --- tenancy and people -----------------------------------------------------------------------


class Organisation(Base):
    """A tenant. Sending switches live here and on segments; the policies read them as facts."""

    __tablename__ = "organisation"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    default_currency: Mapped[str] = mapped_column(String(3), default="USD")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    shadow_mode: Mapped[bool] = mapped_column(Boolean, default=True)
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    cron_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    sending_domain: Mapped[str | None] = mapped_column(String(200))
    sending_domain_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    stripe_account: Mapped[str | None] = mapped_column(String(120))
    last_import_at: Mapped[datetime | None]
    # Bumped with every commit that changes what the review queue shows (memory/queue_version.py),
    # so a cached queue page is checked with one primary-key read.
    queue_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "app_user"
    __table_args__ = (UniqueConstraint("org_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Persona] = mapped_column(_enum(Persona))
    # The user's own approval limits by currency, in minor units ({"USD": 2500000, "EUR": ...}).
    # None: no limit of their own (the role's limits apply). A currency not listed: nothing in
    # it without a more senior approver (fail closed; limits are never converted).
    approval_limits: Mapped[dict[str, int] | None] = mapped_column(JSON)
    password_hash: Mapped[str | None] = mapped_column(String(300))
    api_token_hash: Mapped[str | None] = mapped_column(String(128), unique=True)
    slack_user_id: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- segments and cadences --------------------------------------------------------------------


class Cadence(Base):
    __tablename__ = "cadence"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    steps: Mapped[list[CadenceStep]] = relationship(
        back_populates="cadence", order_by="CadenceStep.position", cascade="all, delete-orphan"
    )


class CadenceStep(Base):
    """One touch of a cadence: ``day_offset`` days relative to the due date (negative = before)."""

    __tablename__ = "cadence_step"
    __table_args__ = (UniqueConstraint("cadence_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    cadence_id: Mapped[int] = mapped_column(ForeignKey("cadence.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    day_offset: Mapped[int] = mapped_column(Integer)
    channel: Mapped[Channel] = mapped_column(_enum(Channel), default=Channel.EMAIL)
    template: Mapped[str] = mapped_column(String(80))
    tone: Mapped[str] = mapped_column(String(32), default="friendly")
    cadence: Mapped[Cadence] = relationship(back_populates="steps")


class Segment(Base):
    __tablename__ = "segment"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    cadence_id: Mapped[int | None] = mapped_column(ForeignKey("cadence.id"))
    shadow_mode: Mapped[bool] = mapped_column(Boolean, default=True)
    autopilot_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    cadence: Mapped[Cadence | None] = relationship()


# --- customers --------------------------------------------------------------------------------


class Customer(Base):
    __tablename__ = "customer"
    __table_args__ = (UniqueConstraint("org_id", "external_ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    external_ref: Mapped[str] = mapped_column(String(80))
    name: Mapped[str] = mapped_column(String(200))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segment.id"), index=True)
    csm_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), index=True)
    sales_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), index=True)
    collector_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), index=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    country_code: Mapped[str | None] = mapped_column(String(8))
    language: Mapped[str] = mapped_column(String(8), default="en")
    renewal_date: Mapped[date | None] = mapped_column(Date)
    paperless_since: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    segment: Mapped[Segment | None] = relationship()
    contacts: Mapped[list[Contact]] = relationship(back_populates="customer")


class Contact(Base):
    __tablename__ = "contact"
    __table_args__ = (UniqueConstraint("org_id", "customer_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(40))
    timezone: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(8))
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out_email: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out_sms: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_email: Mapped[bool] = mapped_column(Boolean, default=True)
    consent_sms: Mapped[bool] = mapped_column(Boolean, default=False)
    bounced: Mapped[bool] = mapped_column(Boolean, default=False)

    customer: Mapped[Customer] = relationship(back_populates="contacts")


# --- invoices and cash ------------------------------------------------------------------------


class Invoice(Base):
    """An invoice. ``balance_minor`` is the open amount, kept in step with payments and credits."""

    __tablename__ = "invoice"
    __table_args__ = (
        UniqueConstraint("org_id", "number"),
        Index("ix_invoice_org_status_due", "org_id", "status", "due_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    number: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    balance_minor: Mapped[int] = mapped_column(BigInteger)
    issue_date: Mapped[date] = mapped_column(Date)
    due_date: Mapped[date] = mapped_column(Date)
    status: Mapped[InvoiceStatus] = mapped_column(_enum(InvoiceStatus), default=InvoiceStatus.OPEN)
    disputed: Mapped[bool] = mapped_column(Boolean, default=False)
    paperless: Mapped[bool | None] = mapped_column(Boolean)
    settled_date: Mapped[date | None] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(32), default="manual")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    customer: Mapped[Customer] = relationship()

    def aging_bucket(self, as_of: date) -> AgingBucket:
        return aging_bucket(self.due_date, as_of)

    def days_past_due(self, as_of: date) -> int:
        return max(0, (as_of - self.due_date).days)


class Payment(Base):
    __tablename__ = "payment"
    __table_args__ = (UniqueConstraint("org_id", "external_ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoice.id"), index=True)
    installment_id: Mapped[int | None] = mapped_column(ForeignKey("plan_installment.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    applied_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    unapplied_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    received_on: Mapped[date] = mapped_column(Date)
    method: Mapped[str] = mapped_column(String(32), default="manual")
    external_ref: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


promise_invoice = Table(
    "promise_invoice",
    Base.metadata,
    Column("promise_id", ForeignKey("promise_to_pay.id", ondelete="CASCADE"), primary_key=True),
    Column("invoice_id", ForeignKey("invoice.id", ondelete="CASCADE"), primary_key=True),
)

plan_invoice = Table(
    "plan_invoice",
    Base.metadata,
    Column("plan_id", ForeignKey("payment_plan.id", ondelete="CASCADE"), primary_key=True),
    Column("invoice_id", ForeignKey("invoice.id", ondelete="CASCADE"), primary_key=True),
)


class PromiseToPay(Base):
    __tablename__ = "promise_to_pay"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    promised_date: Mapped[date] = mapped_column(Date, index=True)
    grace_days: Mapped[int] = mapped_column(Integer, default=3)
    status: Mapped[PromiseStatus] = mapped_column(_enum(PromiseStatus), default=PromiseStatus.OPEN)
    source: Mapped[str] = mapped_column(String(32), default="manual")
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]

    invoices: Mapped[list[Invoice]] = relationship(secondary=promise_invoice)


class PaymentPlan(Base):
    __tablename__ = "payment_plan"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[PlanStatus] = mapped_column(_enum(PlanStatus), default=PlanStatus.PROPOSED)
    non_standard_terms: Mapped[bool] = mapped_column(Boolean, default=False)
    terms_note: Mapped[str | None] = mapped_column(Text)
    discount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    source: Mapped[str] = mapped_column(String(32), default="manual")
    proposed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    approved_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    from_promise_id: Mapped[int | None] = mapped_column(ForeignKey("promise_to_pay.id"))
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    invoices: Mapped[list[Invoice]] = relationship(secondary=plan_invoice)
    installments: Mapped[list[PlanInstallment]] = relationship(
        back_populates="plan", order_by="PlanInstallment.seq", cascade="all, delete-orphan"
    )


class PlanInstallment(Base):
    __tablename__ = "plan_installment"
    __table_args__ = (UniqueConstraint("plan_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("payment_plan.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    due_date: Mapped[date] = mapped_column(Date, index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    paid_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[InstallmentStatus] = mapped_column(
        _enum(InstallmentStatus), default=InstallmentStatus.DUE
    )

    plan: Mapped[PaymentPlan] = relationship(back_populates="installments")


class Dispute(Base):
    __tablename__ = "dispute"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id"), index=True)
    reason: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[DisputeStatus] = mapped_column(_enum(DisputeStatus), default=DisputeStatus.OPEN)
    source: Mapped[str] = mapped_column(String(32), default="collector")
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    sla_due_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    credit_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    opened_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    evidence: Mapped[list[DisputeEvidence]] = relationship(
        back_populates="dispute", cascade="all, delete-orphan"
    )


class DisputeEvidence(Base):
    __tablename__ = "dispute_evidence"

    id: Mapped[int] = mapped_column(primary_key=True)
    dispute_id: Mapped[int] = mapped_column(ForeignKey("dispute.id"), index=True)
    slot: Mapped[str] = mapped_column(String(64), default="other")
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_path: Mapped[str] = mapped_column(String(500))
    uploaded_by: Mapped[str] = mapped_column(String(120))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)

    dispute: Mapped[Dispute] = relationship(back_populates="evidence")


# --- notes and activity -----------------------------------------------------------------------


class Note(Base):
    """An internal note (``source='internal'``) or payer text kept as data (``'payer'``)."""

    __tablename__ = "note"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoice.id"))
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    source: Mapped[str] = mapped_column(String(32), default="internal")
    body: Mapped[str] = mapped_column(Text)
    mentions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Activity(Base):
    """Every touch: e-mail, nudge, call, portal visit, reply, payment."""

    __tablename__ = "activity"
    __table_args__ = (Index("ix_activity_contact_time", "contact_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoice.id"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    draft_id: Mapped[int | None] = mapped_column(ForeignKey("draft.id"))
    kind: Mapped[ActivityKind] = mapped_column(_enum(ActivityKind))
    direction: Mapped[str] = mapped_column(String(8), default="out")
    summary: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- drafts, approvals, outbox ----------------------------------------------------------------


class Draft(Base):
    """An outreach draft and everything needed to trust it: stated facts, grounding, decision."""

    __tablename__ = "draft"
    __table_args__ = (
        UniqueConstraint("org_id", "run_key"),
        Index("ix_draft_org_status", "org_id", "status"),
        # the review queue lists one status newest-first; this serves it without a sort
        Index("ix_draft_org_status_created", "org_id", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoice.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"))
    cadence_step_id: Mapped[int | None] = mapped_column(ForeignKey("cadence_step.id"))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segment.id"))
    run_key: Mapped[str | None] = mapped_column(String(160))
    kind: Mapped[DraftKind] = mapped_column(_enum(DraftKind), default=DraftKind.CADENCE)
    persona: Mapped[DraftPersona] = mapped_column(
        _enum(DraftPersona), default=DraftPersona.AUTOPILOT
    )
    channel: Mapped[Channel] = mapped_column(_enum(Channel), default=Channel.EMAIL)
    recipient: Mapped[str | None] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str] = mapped_column(String(8), default="en")
    tone: Mapped[str] = mapped_column(String(32), default="friendly")
    stated_facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    grounding: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    decision: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    decision_outcome: Mapped[str | None] = mapped_column(String(32), index=True)
    status: Mapped[DraftStatus] = mapped_column(
        _enum(DraftStatus), default=DraftStatus.DRAFTED, index=True
    )
    hold_reason: Mapped[str | None] = mapped_column(Text)
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    model_name: Mapped[str | None] = mapped_column(String(120))
    prompt_version: Mapped[str | None] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    recommendation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}

    revisions: Mapped[list[DraftRevision]] = relationship(
        back_populates="draft", order_by="DraftRevision.seq", cascade="all, delete-orphan"
    )


class DraftRevision(Base):
    """One turn of the review chat: an operator instruction or a co-pilot rewrite."""

    __tablename__ = "draft_revision"
    __table_args__ = (UniqueConstraint("draft_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("draft.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    author: Mapped[str] = mapped_column(String(32))  # "operator" | "copilot" | "editor"
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    instruction: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(String(300))
    body: Mapped[str | None] = mapped_column(Text)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    grounding: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    draft: Mapped[Draft] = relationship(back_populates="revisions")


class Approval(Base):
    __tablename__ = "approval"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    subject_type: Mapped[str] = mapped_column(String(32))  # draft | plan | credit | recommendation
    subject_id: Mapped[int] = mapped_column(Integer, index=True)
    approver_user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    outcome: Mapped[str] = mapped_column(String(16))  # approved | rejected
    reason: Mapped[str | None] = mapped_column(Text)
    batch_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxMessage(Base):
    """A message to deliver exactly once: one row per draft, claimed before it is sent."""

    __tablename__ = "outbox_message"
    # Ids name delivery workflows (``deliver:<ledger>:<id>:<round>``): SQLite must never hand a
    # withdrawn row's id to a new one, or the new message would meet the old, finished workflow.
    __table_args__ = (UniqueConstraint("draft_id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    draft_id: Mapped[int | None] = mapped_column(ForeignKey("draft.id"))
    channel: Mapped[Channel] = mapped_column(_enum(Channel))
    recipient: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300), default="")
    body: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[OutboxStatus] = mapped_column(
        _enum(OutboxStatus), default=OutboxStatus.QUEUED, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Bumped when a person resends: each round is its own delivery workflow (its id ends in it).
    delivery_round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


# --- governance -------------------------------------------------------------------------------


class AuditEvent(Base):
    """Who did what, when, from which state: written for every transition and switch."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[int | None] = mapped_column(Integer)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class PolicySetVersion(Base):
    """A per-organisation policy override, versioned: who changed what, when, and the diff."""

    __tablename__ = "policy_set_version"
    __table_args__ = (UniqueConstraint("org_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    diff: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    changed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    comment: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ImportRun(Base):
    """One import of a file: its report, kept for the Data-Ready score's freshness."""

    __tablename__ = "import_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- mini-portal, Stripe, risk, Autopilot -----------------------------------------------------


class PortalToken(Base):
    """A tokenized mini-portal link: only the token's hash is stored; scoped to one customer."""

    __tablename__ = "portal_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PortalAccessLog(Base):
    """Every use of a portal token, good or bad (refused attempts keep no customer)."""

    __tablename__ = "portal_access_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organisation.id"), index=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("portal_token.id"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    client: Mapped[str | None] = mapped_column(String(120))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class StripeEvent(Base):
    """Each Stripe webhook event id once: a replay finds its row and changes nothing."""

    __tablename__ = "stripe_event"
    __table_args__ = (UniqueConstraint("event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organisation.id"), index=True)
    event_id: Mapped[str] = mapped_column(String(120))
    event_type: Mapped[str] = mapped_column(String(80))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class PaymentIntentLink(Base):
    """A Stripe PaymentIntent in the organisation's own account, for an invoice or installment."""

    __tablename__ = "payment_intent_link"
    __table_args__ = (UniqueConstraint("intent_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoice.id"))
    installment_id: Mapped[int | None] = mapped_column(ForeignKey("plan_installment.id"))
    intent_id: Mapped[str] = mapped_column(String(120))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RiskModelVersion(Base):
    """A trained payment-risk model: version, training date, metrics and its parameters."""

    __tablename__ = "risk_model_version"
    __table_args__ = (UniqueConstraint("org_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    trained_at: Mapped[datetime] = mapped_column(default=utcnow)
    trained_through: Mapped[date | None] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(40))  # "logistic" | "fallback"
    features: Mapped[list[Any]] = mapped_column(JSON, default=list)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CustomerRiskSnapshot(Base):
    """Each customer's payment history as of a day, with the risk model's customer part.

    Why it exists: Today's Focus ranks every open invoice (a million in the benchmark) in one query;
    aggregating the whole history per request is too slow, so ``tools/insights/risk.py`` keeps one
    row per
    customer, refreshed when the day, the model version or the ledger changes. The invoice's own
    terms (amount, channel, dispute, days late) are still computed live.
    """

    __tablename__ = "customer_risk_snapshot"
    __table_args__ = (UniqueConstraint("org_id", "customer_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    as_of: Mapped[date] = mapped_column(Date)
    model_version: Mapped[int | None] = mapped_column(Integer)
    ledger_mark: Mapped[str] = mapped_column(String(120), default="")
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)
    n_earlier: Mapped[int] = mapped_column(BigInteger, default=0)
    sum_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    n_settled: Mapped[int] = mapped_column(BigInteger, default=0)
    n_late_settled: Mapped[int] = mapped_column(BigInteger, default=0)
    dl_settled: Mapped[int] = mapped_column(BigInteger, default=0)
    n_disp: Mapped[int] = mapped_column(BigInteger, default=0)
    n_open_pd: Mapped[int] = mapped_column(BigInteger, default=0)
    dl_open: Mapped[int] = mapped_column(BigInteger, default=0)
    open_currencies: Mapped[str] = mapped_column(String(120), default="")
    base_a: Mapped[float]
    base_b: Mapped[float]
    slope_b: Mapped[float]


class AutopilotRun(Base):
    """One Autopilot pass: counts and timings, so a stopped run can be inspected and re-run."""

    __tablename__ = "autopilot_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    as_of: Mapped[date] = mapped_column(Date)
    segment: Mapped[str | None] = mapped_column(String(120))
    shadow: Mapped[bool] = mapped_column(Boolean, default=True)
    model_name: Mapped[str] = mapped_column(String(120))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# --- branch security: server-side sessions, expiring bearer tokens, shared log-in counters ------


class UserSession(Base):
    """A signed-in browser session. The cookie carries a random id whose hash is kept here, so
    log-out and a password change end the session on the server (a copied cookie stops working)."""

    __tablename__ = "user_session"
    __table_args__ = (UniqueConstraint("sid_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    sid_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    client: Mapped[str | None] = mapped_column(String(120))


class ApiToken(Base):
    """A bearer token for scripts: only its SHA-256 is kept; it expires and can be revoked."""

    __tablename__ = "api_token"
    __table_args__ = (UniqueConstraint("token_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))  # "plx_AbCd": enough to recognise, not to use
    name: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class RateCounter(Base):
    """A fixed-window counter (the log-in limiter's storage for ``limits``): in the ledger, so
    every server worker and process shares it, and incremented atomically with one upsert."""

    __tablename__ = "rate_counter"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[float] = mapped_column(Float)


# --- conversations with payers (branch conversations) ------------------------------------------


class MailThread(Base):
    """An outbound message a payer may answer: its Message-ID and the per-thread reply token.

    The token is in the Reply-To address (``ar+<token>@…``), so a reply that lost its
    In-Reply-To header (forwarded, written fresh from a phone) still finds its thread.
    """

    __tablename__ = "mail_thread"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    token: Mapped[str] = mapped_column(String(40), unique=True)
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    outbox_message_id: Mapped[int | None] = mapped_column(ForeignKey("outbox_message.id"))
    draft_id: Mapped[int | None] = mapped_column(ForeignKey("draft.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MailboxCursor(Base):
    """How far ``plixo mailbox sync`` has read one IMAP folder: its UIDVALIDITY and last UID."""

    __tablename__ = "mailbox_cursor"
    __table_args__ = (UniqueConstraint("org_id", "mailbox"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    mailbox: Mapped[str] = mapped_column(String(400))
    uidvalidity: Mapped[int] = mapped_column(BigInteger, default=0)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    synced_at: Mapped[datetime | None]


class InboundMessage(Base):
    """A message read from the mailbox, once per Message-ID, with what plixo made of it.

    ``kind``: reply (went to reply triage), auto_reply (labelled, pauses nothing), bounce (a DSN:
    the contact is marked bounced), opt_out (the contact is marked opted out) or unmatched (no
    thread and no known sender: a person files it).
    """

    __tablename__ = "inbound_message"
    __table_args__ = (
        UniqueConstraint("org_id", "message_id"),
        Index("ix_inbound_customer_time", "customer_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    message_id: Mapped[str] = mapped_column(String(300))
    mailbox: Mapped[str] = mapped_column(String(400))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(ForeignKey("mail_thread.id"), index=True)
    draft_id: Mapped[int | None] = mapped_column(ForeignKey("draft.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"))
    sender: Mapped[str] = mapped_column(String(254), default="")
    subject: Mapped[str] = mapped_column(String(300), default="")
    sent_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text, default="")
    full_text: Mapped[str] = mapped_column(Text, default="")
    return_date: Mapped[date | None] = mapped_column(Date)
    triage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    attachments: Mapped[list[InboundAttachment]] = relationship(
        back_populates="message", cascade="all, delete-orphan"
    )


class InboundAttachment(Base):
    """A file that came with a payer's message, kept as evidence (type and size checked)."""

    __tablename__ = "inbound_attachment"

    id: Mapped[int] = mapped_column(primary_key=True)
    inbound_message_id: Mapped[int] = mapped_column(ForeignKey("inbound_message.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_path: Mapped[str] = mapped_column(String(500))

    message: Mapped[InboundMessage] = relationship(back_populates="attachments")


# --- branch copilot: what each draft cost (issue 19) ----------------------------------------------


class DraftCost(Base):
    """The model usage of one stored draft: requests, tokens and, when priced, its cost.

    ``cost_micro_usd`` is None for a model LiteLLM's price table does not know (the offline
    model, a local server): the tokens are still recorded. Written with the draft, in the same
    transaction (``agent.drafter``).
    """

    __tablename__ = "draft_cost"

    draft_id: Mapped[int] = mapped_column(
        ForeignKey("draft.id", ondelete="CASCADE"), primary_key=True
    )
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(120))
    requests: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_micro_usd: Mapped[int | None] = mapped_column(BigInteger)
    priced_as: Mapped[str | None] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    draft: Mapped[Draft] = relationship()


# --- onboarding (branch onboarding): set-up, invitations, segment rules, admin versions ----------


class OrganisationProfile(Base):
    """What ``plixo init`` asks beyond the tenant row: country, fiscal calendar (one per org)."""

    __tablename__ = "organisation_profile"

    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), primary_key=True)
    country_code: Mapped[str] = mapped_column(String(2))
    subdivision: Mapped[str | None] = mapped_column(String(8))
    fiscal_year_start_month: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Invitation(Base):
    """A one-time, expiring link that lets an invited person (or the first Admin) set a password.

    Only the token's hash is stored; ``accepted_at`` makes it single-use.
    """

    __tablename__ = "invitation"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    invited_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CustomerTag(Base):
    """A free tag on a customer ("strategic", "public-sector"); segment rules can match on it."""

    __tablename__ = "customer_tag"
    __table_args__ = (UniqueConstraint("customer_id", "tag"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    tag: Mapped[str] = mapped_column(String(60))


class SegmentRule(Base):
    """The rule that places customers in a segment; lower ``priority`` is tried first."""

    __tablename__ = "segment_rule"

    segment_id: Mapped[int] = mapped_column(ForeignKey("segment.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=100)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CadenceStepMode(Base):
    """Per cadence step: ``autopilot`` (sent when the guardrails allow) or ``shadow`` (a human
    reviews every draft of this step whatever the segment says)."""

    __tablename__ = "cadence_step_mode"

    step_id: Mapped[int] = mapped_column(ForeignKey("cadence_step.id"), primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    mode: Mapped[str] = mapped_column(String(16), default="shadow")


class ConfigVersion(Base):
    """A version of a segment or cadence as it was saved: the content, who, when."""

    __tablename__ = "config_version"
    __table_args__ = (UniqueConstraint("org_id", "kind", "subject_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    changed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SendingDomain(Base):
    """The organisation's sending domain: its DKIM key pair, the records to publish, the last check.

    The private key signs outgoing mail (tools/delivery/dkim.py); it is never shown or logged.
    """

    __tablename__ = "sending_domain"

    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), primary_key=True)
    domain: Mapped[str] = mapped_column(String(200))
    selector: Mapped[str] = mapped_column(String(63))
    spf_include: Mapped[str] = mapped_column(String(200))
    private_key_pem: Mapped[str] = mapped_column(Text)
    public_key_b64: Mapped[str] = mapped_column(Text)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    check_ok: Mapped[bool] = mapped_column(Boolean, default=False)
    check_reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    verified_since: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# --- cashapp: Cash App Assist (bank files and remittances matched to invoices) ----------------


class CashLineStatus(enum.StrEnum):
    EXCEPTION = "exception"  # waiting for a person in the exceptions queue
    APPLIED = "applied"  # posted through tools/payments/posting.py (by a person or by auto-apply)
    PARKED = "parked"  # unapplied cash: kept on the line, on no invoice, until someone acts
    IGNORED = "ignored"  # not a customer payment (a debit, a bank's own entry)


class CashImport(Base):
    """One bank statement or remittance file as it arrived: its kind, its hash and its report."""

    __tablename__ = "cash_import"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # camt053 | mt940 | bai2 | csv | pdf | email
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    statement_ref: Mapped[str | None] = mapped_column(String(140))
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CashLine(Base):
    """One incoming amount from a bank file or remittance, with its match suggestions.

    ``fingerprint`` identifies the bank line across files (the bank's own reference when it has
    one), so the same line imported twice is stored once and can never be applied twice.
    """

    __tablename__ = "cash_line"
    __table_args__ = (
        UniqueConstraint("org_id", "fingerprint"),
        Index("ix_cash_line_org_status", "org_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("cash_import.id"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64))
    booked_on: Mapped[date] = mapped_column(Date)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    payer_name: Mapped[str | None] = mapped_column(String(200))
    payer_iban: Mapped[str | None] = mapped_column(String(40))
    reference: Mapped[str] = mapped_column(Text, default="")
    bank_ref: Mapped[str | None] = mapped_column(String(140))
    status: Mapped[CashLineStatus] = mapped_column(
        _enum(CashLineStatus), default=CashLineStatus.EXCEPTION
    )
    suggestions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    best_score: Mapped[int] = mapped_column(Integer, default=0)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customer.id"))
    note: Mapped[str | None] = mapped_column(Text)
    applied_by: Mapped[str | None] = mapped_column(String(120))
    applied_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CashApplication(Base):
    """The part of a bank line posted to one invoice (or on account): the payment it made, any
    difference written off with it, and what an undo has to put back."""

    __tablename__ = "cash_application"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("cash_line.id"), index=True)
    # The payment it posted; None once undone (the payment is reversed) or for a write-off only.
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payment.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoice.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    adjustment_kind: Mapped[str | None] = mapped_column(String(32))  # discount | bank_fee
    adjustment_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    period: Mapped[str] = mapped_column(String(7), index=True)  # YYYY-MM of the bank booking
    effects: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    applied_by: Mapped[str] = mapped_column(String(120))
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[datetime | None]
    undone_by: Mapped[str | None] = mapped_column(String(120))


class CashPeriodClose(Base):
    """A closed cash period (a month): its applications are final and can no longer be undone."""

    __tablename__ = "cash_period_close"
    __table_args__ = (UniqueConstraint("org_id", "period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    period: Mapped[str] = mapped_column(String(7))
    closed_by: Mapped[str] = mapped_column(String(120))
    closed_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomerBankAccount(Base):
    """An account a customer pays from (IBAN), learned when a person confirms a bank line."""

    __tablename__ = "customer_bank_account"
    __table_args__ = (UniqueConstraint("org_id", "iban"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"), index=True)
    iban: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(32), default="confirmed")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- branch dbos: durable execution ---------------------------------------------------------------


class LedgerIdentity(Base):
    """One random key per ledger: DBOS workflow ids start with it, so a fresh ledger (a new demo,
    a test database) never meets the finished workflows of an earlier one in the system
    database."""

    __tablename__ = "ledger_identity"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkerHeartbeat(Base):
    """A live ``plixo worker`` (or embedded run): its DBOS executor id and when it was last seen.

    A worker whose heartbeat is older than the stale limit is presumed dead: another worker
    recovers its pending workflows, then deletes the row."""

    __tablename__ = "worker_heartbeat"

    executor_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    host: Mapped[str] = mapped_column(String(200), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(32), default="worker")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


# --- notifications people receive ---------------------------------------------------------------


class Notification(Base):
    """One item of a person's in-app inbox (an @mention, an approval waiting, a nudge the A/R team
    must know about, a breached SLA, a missed promise). ``key`` makes each one idempotent per
    person: a sweep or a retried request cannot notify twice about the same event."""

    __tablename__ = "notification"
    __table_args__ = (
        UniqueConstraint("user_id", "key"),
        Index("ix_notification_user_unread", "user_id", "read_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str | None] = mapped_column(String(500))
    key: Mapped[str] = mapped_column(String(200))
    emailed: Mapped[bool] = mapped_column(Boolean, default=False)
    slacked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]


class NotificationPreference(Base):
    """Where a person wants notifications besides the in-app inbox: e-mail and/or Slack."""

    __tablename__ = "notification_preference"

    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), primary_key=True)
    email: Mapped[bool] = mapped_column(Boolean, default=False)
    slack: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
