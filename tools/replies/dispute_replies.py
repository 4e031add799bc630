"""Reply templates for disputes: the payer-facing words a Collector or Legal starts from, and the
one way such a reply becomes a draft.

A template only fills the dispute panel's reply form with the dispute's facts (invoice number,
amount, status, SLA date); the text is then the person's own and goes through the one home of a
person's message (``tools.replies.messages.write_message``): grounded against the ledger, decided
by the
guardrails, reviewed, delivered by the outbox. :func:`send_reply` marks the draft as *dispute
correspondence* (``stated_facts.dispute_id``), the only path that does: the guardrails then let it
name the disputed invoice without a pay link, and block it if it asks for the disputed amount
(``dispute.correspondence_*`` in ``policies/README.md``). Figures are written the way grounding
reads them (``tools.kit.formatting.format_amount`` / ``format_day`` in the payer's locale).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory import business_day
from memory.config import Settings
from memory.models import AuditEvent, Customer, Dispute, DisputeStatus, Draft, Invoice, User
from tools.commitments.disputes import ACTIVE, REASONS, get_dispute
from tools.drafts.service import DRAFT_GUARD
from tools.kit import labels
from tools.kit.authz import guarded
from tools.kit.formatting import format_amount, format_day, locale_for
from tools.replies.messages import write_message

_ANSWER_BY = "We will come back to you by {sla}."
_ANSWER_SOON = "We will come back to you as soon as we can."


@dataclass(frozen=True)
class ReplyTemplate:
    key: str
    label: str
    subject: str
    body: str
    #: The dispute statuses it fits (the panel offers it only then).
    statuses: frozenset[DisputeStatus]


TEMPLATES: dict[str, ReplyTemplate] = {
    t.key: t
    for t in (
        ReplyTemplate(
            "acknowledge",
            "Acknowledge receipt",
            "Your query about invoice {number}",
            "Hello {contact},\n\nThank you for letting us know about invoice {number} for "
            "{amount} ({reason}). Your query is {status}; we have paused reminders for this "
            "invoice while we look into it. {answer}\n\nKind regards,\n{sender}",
            frozenset(ACTIVE),
        ),
        ReplyTemplate(
            "request_information",
            "Request evidence",
            "Invoice {number}: information we need",
            "Hello {contact},\n\nTo resolve your query about invoice {number} for {amount} "
            "(now {status}), could you send us the documents that show the difference (for "
            "example the order, the delivery note or your remittance)? You can reply to this "
            "e-mail with them attached. {answer}\n\nKind regards,\n{sender}",
            frozenset(ACTIVE),
        ),
        ReplyTemplate(
            "credit_granted",
            "Resolution: credit issued",
            "Invoice {number}: credit note",
            "Hello {contact},\n\nWe have reviewed your query about invoice {number} for {amount} "
            "and issued a credit of {credit}; your query is {status}. {balance_sentence}\n\n"
            "Kind regards,\n{sender}",
            frozenset({DisputeStatus.RESOLVED_CREDIT}),
        ),
        ReplyTemplate(
            "rejected",
            "Rejection with reasons",
            "Invoice {number}: outcome of your query",
            "Hello {contact},\n\nWe have reviewed your query about invoice {number} for {amount} "
            "and found the invoice correct as issued, for this reason: {why}\n\n"
            "{balance_sentence} Please let us know if you have documents we have not seen.\n\n"
            "Kind regards,\n{sender}",
            frozenset({DisputeStatus.REJECTED}),
        ),
    )
}


def templates_for(dispute: Dispute) -> dict[str, ReplyTemplate]:
    """The templates that fit the dispute's status, in the panel's order."""
    return {k: t for k, t in TEMPLATES.items() if dispute.status in t.statuses}


def _sla_due(dispute: Dispute) -> datetime | None:
    """When the SLA is due (aware UTC), or None for a closed dispute."""
    due = dispute.sla_due_at
    if due is None:
        return None
    return due if due.tzinfo else due.replace(tzinfo=UTC)


def _rejection_reason(session: Session, dispute: Dispute) -> str:
    """The note given when the dispute was rejected (required then: the payer is told why)."""
    detail = session.scalars(
        select(AuditEvent.detail)
        .where(
            AuditEvent.org_id == dispute.org_id,
            AuditEvent.subject_type == "dispute",
            AuditEvent.subject_id == dispute.id,
            AuditEvent.action == f"dispute.{DisputeStatus.REJECTED.value}",
        )
        .order_by(AuditEvent.id.desc())
    ).first()
    note = detail.get("note") if isinstance(detail, dict) else None
    return str(note).strip() if note else "[say why the invoice stands]"


def render(
    session: Session, dispute: Dispute, key: str, *, sender: str, contact_name: str | None
) -> tuple[str, str]:
    """The template's subject and body filled with this dispute's facts (a ``KeyError`` for an
    unknown template, so a made-up key is refused rather than sent blank)."""
    template = TEMPLATES[key]
    invoice = session.get(Invoice, dispute.invoice_id)
    customer = session.get(Customer, dispute.customer_id)
    if invoice is None or customer is None:
        raise LookupError(f"Dispute {dispute.id} has no invoice or customer.")
    locale = locale_for(customer.language, customer.country_code)
    due = _sla_due(dispute)
    sla = (
        format_day(business_day.org_business_date(session, dispute.org_id, due), locale)
        if due
        else ""
    )
    balance = format_amount(invoice.balance_minor, invoice.currency, locale)
    values = {
        "number": invoice.number,
        "amount": format_amount(invoice.amount_minor, invoice.currency, locale),
        "reason": REASONS.get(dispute.reason, dispute.reason).lower(),
        "status": labels.payer_dispute_status(dispute.status),
        "answer": _ANSWER_BY.format(sla=sla) if sla else _ANSWER_SOON,
        "contact": contact_name or customer.name,
        "sender": sender,
        "credit": format_amount(dispute.credit_minor, invoice.currency, locale),
        "balance_sentence": (
            f"The balance of the invoice is now {balance}."
            if invoice.balance_minor
            else "The invoice is now settled in full."
        ),
        "why": _rejection_reason(session, dispute) if key == "rejected" else "",
    }
    return template.subject.format(**values), template.body.format(**values)


@guarded("manage_disputes", **DRAFT_GUARD)
def send_reply(
    session: Session,
    org_id: int,
    dispute_id: int,
    *,
    user: User,
    subject: str,
    body: str,
    contact_id: int | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> Draft:
    """A person's reply to the payer about a dispute, as a draft of dispute correspondence about
    its invoice: grounded and decided like any message, then reviewed and delivered by the outbox.
    Collectors and Legal (``manage_disputes``) write them; no pay link is added."""
    dispute = get_dispute(session, org_id, dispute_id)
    return write_message(
        session,
        org_id,
        user=user,
        customer_id=dispute.customer_id,
        subject=subject,
        body=body,
        invoice_id=dispute.invoice_id,
        contact_id=contact_id,
        dispute=dispute,
        settings=settings,
        now=now,
    )
