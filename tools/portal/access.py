"""The payer mini-portal's security and data: tokens, access checks, the access log.

A portal link carries a random token (``secrets.token_urlsafe``, 256 bits); only its SHA-256 is
stored, so a database leak yields no working links. A token is scoped to one customer, expires, and
can be revoked. Every use is logged in ``portal_access_log`` — successes with the token and
customer, refusals (unknown/guessed, expired, revoked, foreign, rate-limited) with the client.

Brute force: a client (IP address) with :data:`RATE_MAX_FAILURES` refused attempts in
:data:`RATE_WINDOW` is refused outright — even with a valid token — until the window has passed.
The count comes from the log table itself, so it holds across workers and restarts.

Nothing here commits: the route commits after a refusal too, so the refusal stays on the record.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.errors import PlixoError
from memory.models import (
    Activity,
    ActivityKind,
    Customer,
    Dispute,
    Invoice,
    InvoiceStatus,
    Organisation,
    OutboxMessage,
    PaymentPlan,
    PlanStatus,
    PortalAccessLog,
    PortalToken,
    User,
    utcnow,
)
from tools.commitments.plans import CUSTOMER_VISIBLE, UNDECIDED, get_plan
from tools.commitments.promises import CommitmentError, NotFound, foreign_not_found, get_customer
from tools.delivery import outbox
from tools.kit import audit
from tools.kit.authz import guarded
from tools.payments import posting as payments

TOKEN_BYTES = 32
DEFAULT_TTL = timedelta(days=14)
MAX_TTL = timedelta(days=90)
RATE_WINDOW = timedelta(minutes=15)
RATE_MAX_FAILURES = 10
# Outcomes that count against a client's brute-force budget (a sent or throttled link does not).
FAILURE_OUTCOMES = ("unknown", "expired", "revoked", "foreign", "rate_limited")
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{20,100}$")

# What the payer is told: never which check failed (that would help someone guessing).
DENIED_MESSAGE = "This link is not valid or has expired. Ask the sender for a new link."
RATE_LIMITED_MESSAGE = "Too many attempts from your network. Wait 15 minutes and try again."


class PortalDenied(PlixoError):
    """A refused portal request; ``reason`` is for the log, ``public`` for the payer."""

    def __init__(self, reason: str, *, status_code: int = 404, public: str = DENIED_MESSAGE):
        super().__init__(reason, http_status=status_code)
        self.reason = reason
        self.public = public


@dataclass(frozen=True)
class PortalAccess:
    """An authenticated portal request: who it is for, and the token that let it in."""

    token_id: int
    org_id: int
    customer_id: int
    expires_at: datetime
    client: str | None


@dataclass(frozen=True)
class IssuedToken:
    token: PortalToken
    raw: str
    url: str


def hash_token(raw: str) -> str:
    """A 256-bit random token needs no slow hash: SHA-256 is enough to store it safely."""
    return hashlib.sha256(raw.encode()).hexdigest()


def portal_url(base_url: str, raw: str) -> str:
    return f"{base_url.rstrip('/')}/portal/{raw}"


@guarded("manage_portal_tokens", foreign=foreign_not_found)
def issue_token(
    session: Session,
    org_id: int,
    customer_id: int,
    *,
    actor: User | str,
    base_url: str,
    ttl: timedelta = DEFAULT_TTL,
    now: datetime | None = None,
) -> IssuedToken:
    """A new portal link for one customer. The raw token is returned once and never stored."""
    now = now or utcnow()
    customer = get_customer(session, org_id, customer_id)
    if not timedelta(minutes=5) <= ttl <= MAX_TTL:
        raise CommitmentError(f"A portal link lives between 5 minutes and {MAX_TTL.days} days.")
    raw = secrets.token_urlsafe(TOKEN_BYTES)
    token = PortalToken(
        org_id=org_id,
        customer_id=customer.id,
        token_hash=hash_token(raw),
        expires_at=now + ttl,
        created_by_user_id=actor.id if isinstance(actor, User) else None,
        created_at=now,
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        org_id,
        actor=actor,
        action="portal.token_issued",
        subject_type="portal_token",
        subject_id=token.id,
        detail={"customer_id": customer.id, "expires_at": token.expires_at.isoformat()},
    )
    return IssuedToken(token=token, raw=raw, url=portal_url(base_url, raw))


@guarded("manage_portal_tokens", foreign=foreign_not_found)
def revoke_token(
    session: Session,
    org_id: int,
    token_id: int,
    *,
    actor: User | str,
    now: datetime | None = None,
) -> PortalToken:
    """Revoke a link at once; later uses are refused and logged."""
    now = now or utcnow()
    token = session.get(PortalToken, token_id)
    if token is None or token.org_id != org_id:
        raise NotFound(f"Portal link {token_id} does not exist in this organisation.")
    if token.revoked_at is None:
        token.revoked_at = now
        audit.record(
            session,
            org_id,
            actor=actor,
            action="portal.token_revoked",
            subject_type="portal_token",
            subject_id=token.id,
            detail={"customer_id": token.customer_id},
        )
        session.flush()
    return token


def list_tokens(session: Session, org_id: int, customer_id: int | None = None) -> list[PortalToken]:
    q = select(PortalToken).where(PortalToken.org_id == org_id)
    if customer_id is not None:
        q = q.where(PortalToken.customer_id == customer_id)
    return list(session.scalars(q.order_by(PortalToken.id.desc()).limit(200)))


def _log(
    session: Session,
    *,
    action: str,
    outcome: str,
    client: str | None,
    now: datetime,
    token: PortalToken | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        PortalAccessLog(
            org_id=token.org_id if token else None,
            token_id=token.id if token else None,
            customer_id=token.customer_id if token and outcome == "ok" else None,
            action=action[:32],
            outcome=outcome[:32],
            client=(client or "")[:120] or None,
            detail=detail or {},
            created_at=now,
        )
    )
    session.flush()


def recent_failures(session: Session, client: str | None, *, now: datetime) -> int:
    """Refused attempts from ``client`` in the rate window (all tokens, all organisations)."""
    if not client:
        return 0
    return int(
        session.scalar(
            select(func.count())
            .select_from(PortalAccessLog)
            .where(
                PortalAccessLog.client == client[:120],
                PortalAccessLog.outcome.in_(FAILURE_OUTCOMES),
                PortalAccessLog.created_at >= now - RATE_WINDOW,
            )
        )
        or 0
    )


def token_is_live(session: Session, raw: str, *, now: datetime | None = None) -> bool:
    """True when ``raw`` is a known portal token, neither revoked nor expired (nothing logged:
    the upload guard asks this before reading a body, then logs a refusal through
    :func:`authenticate`)."""
    if not _TOKEN_SHAPE.match(raw or ""):
        return False
    token = session.scalars(
        select(PortalToken).where(PortalToken.token_hash == hash_token(raw))
    ).first()
    return token is not None and token.revoked_at is None and token.expires_at > (now or utcnow())


def authenticate(
    session: Session,
    raw: str,
    *,
    client: str | None,
    action: str = "view",
    now: datetime | None = None,
) -> PortalAccess:
    """Let a portal request in, or log the refusal and raise :class:`PortalDenied`."""
    now = now or utcnow()
    if recent_failures(session, client, now=now) >= RATE_MAX_FAILURES:
        _log(session, action=action, outcome="rate_limited", client=client, now=now)
        raise PortalDenied("rate_limited", status_code=429, public=RATE_LIMITED_MESSAGE)
    token = (
        session.scalars(
            select(PortalToken).where(PortalToken.token_hash == hash_token(raw))
        ).first()
        if _TOKEN_SHAPE.match(raw or "")
        else None
    )
    if token is None:
        _log(
            session,
            action=action,
            outcome="unknown",
            client=client,
            now=now,
            detail={"token_prefix": (raw or "")[:4]},
        )
        raise PortalDenied("unknown")
    if token.revoked_at is not None:
        _log(session, action=action, outcome="revoked", client=client, now=now, token=token)
        raise PortalDenied("revoked", status_code=410)
    if token.expires_at <= now:
        _log(session, action=action, outcome="expired", client=client, now=now, token=token)
        raise PortalDenied("expired", status_code=410)
    _log(session, action=action, outcome="ok", client=client, now=now, token=token)
    return PortalAccess(
        token_id=token.id,
        org_id=token.org_id,
        customer_id=token.customer_id,
        expires_at=token.expires_at,
        client=client,
    )


def refuse_foreign(
    session: Session,
    access: PortalAccess,
    *,
    action: str,
    what: str,
    now: datetime | None = None,
) -> PortalDenied:
    """Log an attempt to reach another customer's invoice, plan or dispute with this token."""
    token = session.get(PortalToken, access.token_id)
    _log(
        session,
        action=action,
        outcome="foreign",
        client=access.client,
        now=now or utcnow(),
        token=token,
        detail={"target": what},
    )
    return PortalDenied("foreign")


def customer_invoice(
    session: Session, access: PortalAccess, invoice_id: int, *, action: str
) -> Invoice:
    """The invoice, if it is this token's customer's; anything else is a logged foreign attempt."""
    invoice = session.get(Invoice, invoice_id)
    if (
        invoice is None
        or invoice.org_id != access.org_id
        or invoice.customer_id != access.customer_id
    ):
        raise refuse_foreign(session, access, action=action, what=f"invoice:{invoice_id}")
    return invoice


def record_visit(session: Session, access: PortalAccess, *, summary: str) -> None:
    """A portal visit is an activity on the account (Account 360 shows it)."""
    session.add(
        Activity(
            org_id=access.org_id,
            customer_id=access.customer_id,
            kind=ActivityKind.PORTAL_VISIT,
            direction="in",
            summary=summary[:500],
        )
    )


# --- what the payer sees ------------------------------------------------------------------------


def customer_of(session: Session, access: PortalAccess) -> Customer:
    return get_customer(session, access.org_id, access.customer_id)


def open_invoices(session: Session, access: PortalAccess) -> list[Invoice]:
    return list(
        session.scalars(
            select(Invoice)
            .where(
                Invoice.org_id == access.org_id,
                Invoice.customer_id == access.customer_id,
                Invoice.status == InvoiceStatus.OPEN,
                Invoice.balance_minor > 0,
            )
            .order_by(Invoice.due_date, Invoice.id)
        )
    )


def visible_plans(session: Session, access: PortalAccess) -> list[PaymentPlan]:
    """Approved plans only: an unapproved plan is never shown to the customer."""
    return list(
        session.scalars(
            select(PaymentPlan)
            .where(
                PaymentPlan.org_id == access.org_id,
                PaymentPlan.customer_id == access.customer_id,
                PaymentPlan.status.in_(list(CUSTOMER_VISIBLE)),
            )
            .order_by(PaymentPlan.id.desc())
        )
    )


def proposals_under_review(session: Session, access: PortalAccess) -> int:
    """How many of the payer's own proposals wait for a decision (the count only, no terms)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(PaymentPlan)
            .where(
                PaymentPlan.org_id == access.org_id,
                PaymentPlan.customer_id == access.customer_id,
                PaymentPlan.source == "portal",
                PaymentPlan.status.in_(list(UNDECIDED)),
            )
        )
        or 0
    )


def customer_disputes(session: Session, access: PortalAccess) -> list[Dispute]:
    return list(
        session.scalars(
            select(Dispute)
            .where(Dispute.org_id == access.org_id, Dispute.customer_id == access.customer_id)
            .order_by(Dispute.opened_at.desc())
            .limit(50)
        )
    )


def access_log(
    session: Session, org_id: int, *, token_id: int | None = None, limit: int = 200
) -> list[PortalAccessLog]:
    q = select(PortalAccessLog).where(PortalAccessLog.org_id == org_id)
    if token_id is not None:
        q = q.where(PortalAccessLog.token_id == token_id)
    return list(session.scalars(q.order_by(PortalAccessLog.id.desc()).limit(limit)))


# --- "resend link" (plan inspector) ------------------------------------------------------------


@dataclass(frozen=True)
class ResentLink:
    issued: IssuedToken
    message: OutboxMessage | None
    skipped: str | None


@guarded("manage_plans", "manage_portal_tokens", foreign=foreign_not_found)
def resend_plan_link(
    session: Session,
    org_id: int,
    plan_id: int,
    *,
    actor: User,
    base_url: str,
    now: datetime | None = None,
) -> ResentLink:
    """A fresh portal link for an approved plan's customer, queued as a transactional e-mail to the
    primary contact (who must not have opted out or bounced), like a receipt."""

    now = now or utcnow()
    plan = get_plan(session, org_id, plan_id)
    if plan.status not in (PlanStatus.ACTIVE, PlanStatus.DEFAULTED):
        raise CommitmentError(
            f"Plan {plan.id} is {plan.status.value}; only an approved, running plan's link can be "
            "sent (the customer never sees an unapproved plan)."
        )
    issued = issue_token(session, org_id, plan.customer_id, actor=actor, base_url=base_url, now=now)
    customer = get_customer(session, org_id, plan.customer_id)
    contact = payments.receipt_recipient(session, customer)
    if contact is None or not contact.email:
        return ResentLink(issued, None, "no contact with a usable e-mail address")
    body = (
        f"Hello {customer.name},\n\nHere is your link to view your payment plan and pay the next "
        f"installment:\n\n{issued.url}\n\nThe link is valid until "
        f"{issued.token.expires_at.date().isoformat()}.\n"
    )
    msg = outbox.enqueue_email(
        session,
        org_id,
        to=contact.email,
        subject="Your payment plan link",
        body=body,
        idempotency_key=f"plan-link:{plan.id}:{issued.token.id}",
        actor=actor,
    )
    audit.record(
        session,
        org_id,
        actor=actor,
        action="plan.link_resent",
        subject_type="plan",
        subject_id=plan.id,
        detail={"token_id": issued.token.id, "outbox_id": msg.id},
    )
    return ResentLink(issued, msg, None)


# --- the stable pay link drafts state -------------------------------------------------------------

LINK_REQUEST_THROTTLE = timedelta(minutes=15)
LINK_REQUEST_TTL = timedelta(days=7)


@dataclass(frozen=True)
class LinkRequest:
    """What happened to a request at ``/pay/{org}/{invoice}`` (the payer is never told which)."""

    outcome: str  # sent | throttled | unknown | closed | no_contact | rate_limited
    token_id: int | None = None


def _requested_invoice(session: Session, org_slug: str, invoice_number: str) -> Invoice | None:
    """The invoice a pay-link request names, or None for an unknown organisation or number."""
    org = session.scalars(select(Organisation).where(Organisation.slug == org_slug[:80])).first()
    return (
        session.scalars(
            select(Invoice).where(Invoice.org_id == org.id, Invoice.number == invoice_number[:64])
        ).first()
        if org is not None
        else None
    )


def _note_link_request(
    session: Session,
    invoice: Invoice,
    client: str | None,
    now: datetime,
    outcome: str,
    token: PortalToken | None = None,
) -> LinkRequest:
    """Log what happened to a request for a known invoice, and answer it."""
    session.add(
        PortalAccessLog(
            org_id=invoice.org_id,
            token_id=token.id if token else None,
            customer_id=invoice.customer_id,
            action="link_request",
            outcome=outcome,
            client=(client or "")[:120] or None,
            detail={"invoice_id": invoice.id},
            created_at=now,
        )
    )
    session.flush()
    return LinkRequest(outcome, token.id if token else None)


def _link_sent_lately(session: Session, invoice: Invoice, now: datetime) -> bool:
    """Was a link already sent to this customer within :data:`LINK_REQUEST_THROTTLE`?"""
    recent = session.scalar(
        select(func.count())
        .select_from(PortalAccessLog)
        .where(
            PortalAccessLog.org_id == invoice.org_id,
            PortalAccessLog.customer_id == invoice.customer_id,
            PortalAccessLog.action == "link_request",
            PortalAccessLog.outcome == "sent",
            PortalAccessLog.created_at >= now - LINK_REQUEST_THROTTLE,
        )
    )
    return bool(recent)


def _email_pay_link(
    session: Session,
    invoice: Invoice,
    customer: Customer,
    email: str,
    base_url: str,
    now: datetime,
) -> PortalToken:
    """Issue a fresh portal token and queue the e-mail carrying its link to the contact."""

    issued = issue_token(
        session,
        invoice.org_id,
        customer.id,
        actor="pay link request",
        base_url=base_url,
        ttl=LINK_REQUEST_TTL,
        now=now,
    )
    outbox.enqueue_email(
        session,
        invoice.org_id,
        to=email,
        subject=f"Your secure link to pay invoice {invoice.number}",
        body=(
            f"Hello {customer.name},\n\nSomeone (hopefully you) asked to pay invoice "
            f"{invoice.number}. Here is your secure link to view and pay your open invoices:\n\n"
            f"{issued.url}\n\nThe link is valid for {LINK_REQUEST_TTL.days} days. If you did not "
            "ask for it, you can ignore this e-mail.\n"
        ),
        idempotency_key=f"pay-link:{issued.token.id}",
        actor="pay link request",
    )
    return issued.token


def request_link_for_invoice(
    session: Session,
    org_slug: str,
    invoice_number: str,
    *,
    client: str | None,
    base_url: str,
    now: datetime | None = None,
) -> LinkRequest:
    """Answer the secret-free pay link a draft states (``/pay/{org_slug}/{invoice_number}``).

    A fresh tokenized portal link is e-mailed to the invoice's own billing contact, never shown to
    whoever asked, so knowing an invoice number reveals nothing. Unknown numbers count as refused
    attempts for the per-client brute-force limit; a contact gets at most one link per
    :data:`LINK_REQUEST_THROTTLE`.
    """

    now = now or utcnow()
    if recent_failures(session, client, now=now) >= RATE_MAX_FAILURES:
        _log(session, action="link_request", outcome="rate_limited", client=client, now=now)
        return LinkRequest("rate_limited")
    invoice = _requested_invoice(session, org_slug, invoice_number)
    if invoice is None:
        _log(
            session,
            action="link_request",
            outcome="unknown",
            client=client,
            now=now,
            detail={"org": org_slug[:80], "invoice": invoice_number[:64]},
        )
        return LinkRequest("unknown")
    if invoice.status != InvoiceStatus.OPEN or invoice.balance_minor <= 0:
        return _note_link_request(session, invoice, client, now, "closed")
    if _link_sent_lately(session, invoice, now):
        return _note_link_request(session, invoice, client, now, "throttled")
    customer = get_customer(session, invoice.org_id, invoice.customer_id)
    contact = payments.receipt_recipient(session, customer)
    if contact is None or not contact.email:
        return _note_link_request(session, invoice, client, now, "no_contact")
    token = _email_pay_link(session, invoice, customer, contact.email, base_url, now)
    return _note_link_request(session, invoice, client, now, "sent", token)
