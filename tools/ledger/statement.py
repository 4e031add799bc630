"""Statement of account: one customer's open items, aging, payments and commitments, as a PDF.

Why a PDF: it is what a payer's accounts-payable team files and forwards, and what the final
notice attaches. The figures come straight from the ledger (``build_statement``: integer minor
units, never summed across currencies), the layout from a Jinja template
(``tools/ledger/templates/statement.html``, the same engine as the panel), the words in the payer's
language (en, de, fr, es; English otherwise), dates and amounts formatted by Babel for that
language, and WeasyPrint turns it into a PDF (it needs Debian's Pango; see README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.errors import PlixoError
from memory.models import (
    OPEN_DISPUTE_STATUSES,
    AgingBucket,
    Dispute,
    Invoice,
    InvoiceStatus,
    Organisation,
    Payment,
    PaymentPlan,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
    aging_bucket,
)
from tools.insights.account360 import get_customer, org_today
from tools.kit.formatting import format_amount, format_day

PAYMENT_DAYS = 90
#: Cadence step templates whose message carries the PDF statement of account (a statement, the
#: final notice) and the drafter templates of a consolidated message
#: (``tools.outreach.consolidation``:
#: the statement, and the same with the final-notice wording).
STATEMENT_STEPS = frozenset({"statement", "final_notice"})
ATTACHED_TO = STATEMENT_STEPS | {"account_statement", "final_notice_statement"}
BUCKETS = [b.value for b in AgingBucket]
_LOCALES = {"en": "en_US", "de": "de_DE", "fr": "fr_FR", "es": "es_ES"}

#: The statement's words per language (interface text, not figures).
LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Statement of account", "accounts_receivable": "Accounts receivable",
        "as_of": "as of", "open_items": "Open items", "invoice": "Invoice", "issued": "Issued",
        "due": "Due", "bucket": "Aging", "amount": "Amount", "balance": "Open balance",
        "total_open": "Total open", "nothing_open": "Nothing is open.", "aging": "Aging",
        "currency": "Currency", "payments": f"Payments received (last {PAYMENT_DAYS} days)",
        "received": "Received", "method": "Method", "no_payments": "No payments received.",
        "commitments": "Promises and plan installments", "kind": "Kind", "date": "Date",
        "promise": "Promise to pay", "installment": "Installment", "page": "Page",
        "pay_here": "Pay online:",
        "in_dispute": "In dispute", "of_which_disputed": "of which in dispute", "to_pay": "To pay",
    },
    "de": {
        "title": "Kontoauszug", "accounts_receivable": "Debitorenbuchhaltung", "as_of": "Stand",
        "open_items": "Offene Posten", "invoice": "Rechnung", "issued": "Datum",
        "due": "Fällig", "bucket": "Fälligkeit", "amount": "Betrag", "balance": "Offen",
        "total_open": "Summe offen", "nothing_open": "Keine offenen Posten.",
        "aging": "Altersstruktur", "currency": "Währung",
        "payments": f"Zahlungseingänge (letzte {PAYMENT_DAYS} Tage)", "received": "Eingang",
        "method": "Art", "no_payments": "Keine Zahlungseingänge.",
        "commitments": "Zahlungszusagen und Raten", "kind": "Art", "date": "Datum",
        "promise": "Zahlungszusage", "installment": "Rate", "page": "Seite",
        "pay_here": "Online bezahlen:",
        "in_dispute": "In Klärung", "of_which_disputed": "davon in Klärung", "to_pay": "Zu zahlen",
    },
    "fr": {
        "title": "Relevé de compte", "accounts_receivable": "Comptabilité clients",
        "as_of": "au", "open_items": "Postes ouverts", "invoice": "Facture",
        "issued": "Émise", "due": "Échéance", "bucket": "Ancienneté", "amount": "Montant",
        "balance": "Solde", "total_open": "Total dû", "nothing_open": "Aucun poste ouvert.",
        "aging": "Balance âgée", "currency": "Devise",
        "payments": f"Paiements reçus ({PAYMENT_DAYS} derniers jours)", "received": "Reçu",
        "method": "Mode", "no_payments": "Aucun paiement reçu.",
        "commitments": "Promesses et échéances de plan", "kind": "Type", "date": "Date",
        "promise": "Promesse de paiement", "installment": "Échéance", "page": "Page",
        "pay_here": "Payer en ligne :",
        "in_dispute": "En litige", "of_which_disputed": "dont en litige", "to_pay": "À régler",
    },
    "es": {
        "title": "Estado de cuenta", "accounts_receivable": "Cuentas por cobrar",
        "as_of": "a", "open_items": "Partidas abiertas", "invoice": "Factura",
        "issued": "Emitida", "due": "Vence", "bucket": "Antigüedad", "amount": "Importe",
        "balance": "Pendiente", "total_open": "Total pendiente",
        "nothing_open": "No hay partidas abiertas.", "aging": "Antigüedad de saldos",
        "currency": "Moneda", "payments": f"Pagos recibidos (últimos {PAYMENT_DAYS} días)",
        "received": "Recibido", "method": "Forma", "no_payments": "No se recibieron pagos.",
        "commitments": "Promesas y cuotas del plan", "kind": "Tipo", "date": "Fecha",
        "promise": "Promesa de pago", "installment": "Cuota", "page": "Página",
        "pay_here": "Pagar en línea:",
        "in_dispute": "En disputa", "of_which_disputed": "de lo cual en disputa",
        "to_pay": "A pagar",
    },
}  # fmt: skip


@dataclass
class Statement:
    """The figures of one statement, straight from the ledger."""

    org_name: str
    org_domain: str | None
    customer_id: int
    customer_name: str
    language: str
    as_of: date
    open_items: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    #: per currency, the open balance of invoices in an open dispute: listed, but not asked for
    disputed: dict[str, int] = field(default_factory=dict)
    aging: dict[str, dict[str, int]] = field(default_factory=dict)
    payments: list[dict[str, Any]] = field(default_factory=list)
    promises: list[dict[str, Any]] = field(default_factory=list)
    installments: list[dict[str, Any]] = field(default_factory=list)
    pay_url: str | None = None


def build_statement(
    session: Session,
    org_id: int,
    customer_id: int,
    *,
    as_of: date | None = None,
    pay_url: str | None = None,
) -> Statement:
    """Every open invoice of the customer (oldest due first), aging per currency, payments of the
    last ``PAYMENT_DAYS`` days, open promises and unpaid installments of active plans."""
    customer = get_customer(session, org_id, customer_id)
    org = session.get(Organisation, org_id)
    as_of = as_of or org_today(session, org_id)
    language = (customer.language or "en")[:2].lower()
    st = Statement(
        org_name=org.name if org else "", org_domain=org.sending_domain if org else None,
        customer_id=customer.id, customer_name=customer.name,
        language=language if language in LABELS else "en", as_of=as_of, pay_url=pay_url,
    )  # fmt: skip
    invoices = session.scalars(
        select(Invoice)
        .where(
            Invoice.org_id == org_id,
            Invoice.customer_id == customer_id,
            Invoice.status == InvoiceStatus.OPEN,
            Invoice.balance_minor > 0,
        )
        .order_by(Invoice.due_date, Invoice.id)
    ).all()
    numbers = {i.id: i.number for i in invoices}
    in_dispute = _in_dispute(session, org_id, invoices)
    for inv in invoices:
        bucket = aging_bucket(inv.due_date, as_of).value
        st.open_items.append(
            {"number": inv.number, "issue_date": inv.issue_date, "due_date": inv.due_date,
             "bucket": bucket, "amount_minor": inv.amount_minor,
             "balance_minor": inv.balance_minor, "currency": inv.currency,
             "disputed": inv.id in in_dispute}
        )  # fmt: skip
        st.totals[inv.currency] = st.totals.get(inv.currency, 0) + inv.balance_minor
        if inv.id in in_dispute:
            st.disputed[inv.currency] = st.disputed.get(inv.currency, 0) + inv.balance_minor
        row = st.aging.setdefault(inv.currency, dict.fromkeys(BUCKETS, 0))
        row[bucket] += inv.balance_minor
    _payments(session, org_id, customer_id, as_of, st)
    _commitments(session, org_id, customer_id, st, numbers)
    return st


def _in_dispute(session: Session, org_id: int, invoices: Sequence[Invoice]) -> set[int]:
    """The invoices in an open dispute (flagged, or with a dispute still being worked). Why: the
    message a statement travels with leaves them out of what it asks for, so the statement shows
    them as in dispute and its amount to pay is the same as the message's total."""
    flagged = {i.id for i in invoices if i.disputed}
    worked = session.scalars(
        select(Dispute.invoice_id).where(
            Dispute.org_id == org_id,
            Dispute.invoice_id.in_([i.id for i in invoices]),
            Dispute.status.in_(OPEN_DISPUTE_STATUSES),
        )
    ).all()
    return flagged | {i for i in worked if i is not None}


def _payments(session: Session, org_id: int, customer_id: int, as_of: date, st: Statement) -> None:
    rows = session.scalars(
        select(Payment)
        .where(
            Payment.org_id == org_id,
            Payment.customer_id == customer_id,
            Payment.received_on > as_of - timedelta(days=PAYMENT_DAYS),
            Payment.received_on <= as_of,
        )
        .order_by(Payment.received_on, Payment.id)
    ).all()
    for p in rows:
        number = session.get(Invoice, p.invoice_id).number if p.invoice_id else None  # type: ignore[union-attr]
        st.payments.append(
            {"received_on": p.received_on, "invoice_number": number, "method": p.method,
             "amount_minor": p.amount_minor, "currency": p.currency}
        )  # fmt: skip


def _commitments(
    session: Session, org_id: int, customer_id: int, st: Statement, numbers: dict[int, str]
) -> None:
    for pr in session.scalars(
        select(PromiseToPay)
        .where(
            PromiseToPay.org_id == org_id,
            PromiseToPay.customer_id == customer_id,
            PromiseToPay.status == PromiseStatus.OPEN,
        )
        .order_by(PromiseToPay.promised_date)
    ):
        st.promises.append(
            {"on_date": pr.promised_date, "amount_minor": pr.amount_minor,
             "currency": pr.currency, "invoice_numbers": [i.number for i in pr.invoices]}
        )  # fmt: skip
    for plan in session.scalars(
        select(PaymentPlan).where(
            PaymentPlan.org_id == org_id,
            PaymentPlan.customer_id == customer_id,
            PaymentPlan.status == PlanStatus.ACTIVE,
        )
    ):
        for inst in plan.installments:
            if inst.paid_minor >= inst.amount_minor:
                continue
            st.installments.append(
                {"seq": inst.seq, "due_date": inst.due_date,
                 "amount_minor": inst.amount_minor - inst.paid_minor, "currency": plan.currency,
                 "invoice_numbers": [i.number for i in plan.invoices]}
            )  # fmt: skip


_ENV: Environment | None = None


def _env() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = Environment(
            loader=FileSystemLoader(Path(__file__).parent / "templates"),
            autoescape=select_autoescape(["html"]),
        )
    return _ENV


def render_html(st: Statement) -> str:
    locale = _LOCALES.get(st.language, "en_US")
    env = _env().overlay()
    env.filters["money"] = lambda minor, currency: format_amount(int(minor), currency, locale)
    env.filters["day"] = lambda d: format_day(d, locale)
    return env.get_template("statement.html").render(
        s=st, t=LABELS[st.language], lang=st.language, buckets=BUCKETS
    )


class StatementUnavailable(PlixoError, RuntimeError):
    """WeasyPrint cannot run here; the message says what to install (503: the server's lack)."""

    http_status = 503


def unavailable() -> str | None:
    """None when PDFs can be made here, else why not and what to install."""
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as exc:
        return (
            f"PDF statements need WeasyPrint and Pango ({type(exc).__name__}: {exc}); install "
            "`weasyprint` and Debian's libpango-1.0-0 libpangoft2-1.0-0."
        )
    return None


def render_pdf(st: Statement) -> bytes:
    """The statement as PDF bytes (WeasyPrint; no network: the template has no external links)."""
    reason = unavailable()
    if reason:
        raise StatementUnavailable(reason)
    from weasyprint import HTML

    pdf = HTML(string=render_html(st), base_url=str(Path(__file__).parent)).write_pdf()
    assert pdf is not None
    return bytes(pdf)


def filename(st: Statement) -> str:
    safe = "".join(c if c.isalnum() else "-" for c in st.customer_name).strip("-")[:60]
    return f"statement-{safe or st.customer_id}-{st.as_of.isoformat()}.pdf"


def attaches(template: str | None) -> bool:
    """Whether an e-mail written from this template carries the statement
    (``tools.delivery.outbox``)."""
    return (template or "") in ATTACHED_TO
