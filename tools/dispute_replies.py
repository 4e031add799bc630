"""Reply templates for disputes: the payer-facing words a Collector or Legal starts from.

A template only fills the composer; the text is then the person's own message (``tools.messages``)
and is grounded and decided like any draft, so a figure that no longer matches the ledger, or
legal language without Legal, is caught before it leaves. Figures are written the way grounding
reads them (``tools.grounding.format_amount`` in the payer's locale).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from memory.models import Customer, Dispute, Invoice
from tools.disputes import REASONS


@dataclass(frozen=True)
class ReplyTemplate:
    key: str
    label: str
    subject: str
    body: str


TEMPLATES: dict[str, ReplyTemplate] = {
    t.key: t
    for t in (
        ReplyTemplate(
            "acknowledge",
            "Acknowledge the dispute",
            "Your query about invoice {number}",
            "Hello {contact},\n\nThank you for letting us know about invoice {number} ({reason}). "
            "We have opened a case and paused reminders for this invoice while we look into "
            "it. We will come back to you with what we find.\n\nKind regards,\n{sender}",
        ),
        ReplyTemplate(
            "request_information",
            "Ask the customer for documents",
            "Invoice {number}: information we need",
            "Hello {contact},\n\nTo resolve your query about invoice {number}, could you send "
            "us the documents that show the difference (for example the order, the delivery "
            "note or your remittance)? You can reply to this e-mail with them attached.\n\n"
            "Kind regards,\n{sender}",
        ),
        ReplyTemplate(
            "credit_granted",
            "Confirm a credit",
            "Invoice {number}: credit note",
            "Hello {contact},\n\nWe have reviewed your query about invoice {number} and issued a "
            "credit of {credit}. The balance of the invoice is now {balance}.\n\n"
            "Kind regards,\n{sender}",
        ),
        ReplyTemplate(
            "rejected",
            "Explain a rejection",
            "Invoice {number}: outcome of your query",
            "Hello {contact},\n\nWe have reviewed your query about invoice {number} and found "
            "the invoice correct as issued. The balance of {balance} remains due; please let us "
            "know if you have documents we have not seen.\n\nKind regards,\n{sender}",
        ),
    )
}


def render(
    session: Session, dispute: Dispute, key: str, *, sender: str, contact_name: str | None
) -> tuple[str, str]:
    """The template's subject and body filled for this dispute (a ``KeyError`` for an unknown
    template, so a made-up key is refused rather than sent blank)."""
    from tools.grounding import format_amount, locale_for

    template = TEMPLATES[key]
    invoice = session.get(Invoice, dispute.invoice_id)
    customer = session.get(Customer, dispute.customer_id)
    if invoice is None or customer is None:
        raise LookupError(f"Dispute {dispute.id} has no invoice or customer.")
    locale = locale_for(customer.language, customer.country_code)
    values = {
        "number": invoice.number,
        "reason": REASONS.get(dispute.reason, dispute.reason).lower(),
        "contact": contact_name or customer.name,
        "sender": sender,
        "credit": format_amount(dispute.credit_minor, invoice.currency, locale),
        "balance": format_amount(invoice.balance_minor, invoice.currency, locale),
    }
    return template.subject.format(**values), template.body.format(**values)
