"""A person's own messages in the panel: the composer (a new message to a payer, a reply in a
thread, a dispute reply template), the account timeline with "log a call" and "log an outside
e-mail", and the scheduled view of approved messages waiting for their send time.

The composer does not send: ``tools.replies.messages.compose`` turns the text into a draft that
grounding
and the guardrails decide, and it then waits for review like any other (the draft page approves
it; the outbox delivers it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from api.deps import AppSettings, Clock, CsrfChecked, DbSession, require
from api.pages import checked_message
from api.pages import flash as _flash
from api.pages import render_page as _render
from memory.models import (
    ActivityKind,
    Contact,
    Customer,
    Dispute,
    Invoice,
    InvoiceStatus,
    Organisation,
    User,
)
from tools.drafts.service import DraftError
from tools.insights.account360 import pay_link
from tools.kit.authz import PermissionDenied
from tools.replies import dispute_replies, messages

router = APIRouter(include_in_schema=False)

PageId = Annotated[int, Path(ge=1, le=2**31 - 1)]
OptId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
Writer = Annotated[User, Depends(require("edit_draft"))]
Viewer = Annotated[User, Depends(require("view_account"))]
Queue = Annotated[User, Depends(require("view_queue"))]
NoteAuthor = Annotated[User, Depends(require("add_note"))]


def _customer(db: Any, user: User, customer_id: int) -> Customer:
    customer = db.get(Customer, customer_id)
    if customer is None or customer.org_id != user.org_id:
        raise HTTPException(404, "No such customer in your organisation.")
    return customer


def _open_invoices(db: Any, customer: Customer) -> list[Invoice]:
    return list(
        db.scalars(
            select(Invoice)
            .where(
                Invoice.customer_id == customer.id,
                Invoice.status == InvoiceStatus.OPEN,
                Invoice.balance_minor > 0,
            )
            .order_by(Invoice.due_date, Invoice.id)
        )
    )


def _starting_text(
    db: Any,
    user: User,
    customer: Customer,
    invoice: Invoice | None,
    contact: Contact | None,
    settings: Any,
) -> tuple[str, str]:
    """A plain start the person rewrites: the invoice it is about and its pay link (the
    guardrails block a message without either)."""
    if invoice is None:
        return "", ""
    org = db.get(Organisation, user.org_id)
    link = pay_link(settings, org.slug, invoice.number)
    greeting = f"Hello {contact.name}," if contact and contact.name else "Hello,"
    return (
        f"Invoice {invoice.number}",
        f"{greeting}\n\n\n\nInvoice {invoice.number}; you can pay it here: {link}\n\n"
        f"Kind regards,\n{user.name}",
    )


@router.get("/compose", response_class=HTMLResponse)
def compose_page(
    request: Request,
    user: Writer,
    db: DbSession,
    settings: AppSettings,
    customer_id: OptId = None,
    invoice_id: OptId = None,
    reply_to: OptId = None,
    dispute_id: OptId = None,
    template: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    if customer_id is None and reply_to is not None:
        # a reply: the customer is the one who wrote
        customer_id = messages.reply_target(db, user.org_id, reply_to).customer_id
    if customer_id is None:
        raise HTTPException(422, "Say whom to write to: open the composer from an account.")
    customer = _customer(db, user, customer_id)
    invoices = _open_invoices(db, customer)
    invoice = next((i for i in invoices if i.id == invoice_id), None)
    if invoice is None and invoice_id is not None:
        invoice = db.get(Invoice, invoice_id)
        if invoice is None or invoice.customer_id != customer.id:
            raise HTTPException(404, "No such invoice on this customer.")
    contacts = list(
        db.scalars(
            select(Contact)
            .where(Contact.customer_id == customer.id)
            .order_by(Contact.is_primary.desc(), Contact.id)
        )
    )
    contact = next((c for c in contacts if c.email), None)
    about: Invoice | None = invoice or (invoices[0] if invoices else None)
    subject, body = _starting_text(db, user, customer, about, contact, settings)
    reply = None
    if reply_to is not None:
        reply = messages.reply_target(db, user.org_id, reply_to)
        if reply.customer_id != customer.id:
            raise HTTPException(404, "That message is not from this customer.")
        contact = next((c for c in contacts if c.id == reply.contact_id and c.email), contact)
        subject = (
            reply.subject if reply.subject.lower().startswith("re:") else f"Re: {reply.subject}"
        )
    if template and dispute_id is not None:
        # a dispute's reply templates live in the dispute panel (one home): send the person there
        dispute = db.get(Dispute, dispute_id)
        if (
            dispute is None
            or dispute.org_id != user.org_id
            or dispute.customer_id != customer.id
            or template not in dispute_replies.TEMPLATES
        ):
            raise HTTPException(404, "No such dispute or reply template.")
        return RedirectResponse(
            f"/disputes/{dispute.id}?template={template}#reply", status_code=303
        )
    return _render(
        request,
        "compose.html",
        user,
        customer=customer,
        invoices=invoices,
        invoice=about,
        contacts=contacts,
        contact=contact,
        subject=subject,
        body=body,
        reply=reply,
    )


@router.post("/compose")
def compose_submit(
    request: Request,
    user: Writer,
    db: DbSession,
    clock: Clock,
    settings: AppSettings,
    _csrf: CsrfChecked,
    customer_id: Annotated[int, Form(ge=1, le=2**31 - 1)],
    subject: Annotated[str, Form(max_length=400)],
    body: Annotated[str, Form(max_length=25_000)],
    invoice_id: Annotated[str, Form(max_length=12)] = "",
    contact_id: Annotated[str, Form(max_length=12)] = "",
    reply_to: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Ground and decide the message as a draft; the person lands on it to review or approve."""
    back = f"/compose?customer_id={customer_id}"
    try:
        draft = messages.compose(
            db,
            user.org_id,
            user=user,
            customer_id=customer_id,
            subject=subject,
            body=body,
            invoice_id=int(invoice_id) if invoice_id.isdigit() else None,
            contact_id=int(contact_id) if contact_id.isdigit() else None,
            reply_to_id=int(reply_to) if reply_to.isdigit() else None,
            settings=settings,
            now=clock(),
        )
    except (DraftError, LookupError, PermissionDenied) as exc:
        db.rollback()
        _flash(request, str(exc), "error")
        return RedirectResponse(back, status_code=303)
    db.commit()
    return checked_message(request, draft)


# --- the account timeline ---------------------------------------------------------------------


@router.get("/accounts/{customer_id}/activity", response_class=HTMLResponse)
def timeline_page(
    request: Request, customer_id: PageId, user: Viewer, db: DbSession
) -> HTMLResponse:
    customer = _customer(db, user, customer_id)
    items = messages.timeline(db, user.org_id, customer.id)
    authors = {
        u.id: u.name
        for u in db.scalars(
            select(User).where(User.id.in_({a.user_id for a in items if a.user_id}))
        )
    }
    contacts = list(db.scalars(select(Contact).where(Contact.customer_id == customer.id)))
    return _render(
        request,
        "compose_timeline.html",
        user,
        customer=customer,
        items=items,
        authors=authors,
        contacts=contacts,
        invoices=_open_invoices(db, customer),
    )


@router.post("/accounts/{customer_id}/activity")
def log_touch(
    request: Request,
    customer_id: PageId,
    user: NoteAuthor,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    kind: Annotated[str, Form(max_length=10)],
    summary: Annotated[str, Form(max_length=1000)],
    direction: Annotated[str, Form(max_length=3)] = "out",
    body: Annotated[str, Form(max_length=20_000)] = "",
    contact_id: Annotated[str, Form(max_length=12)] = "",
    invoice_id: Annotated[str, Form(max_length=12)] = "",
    minutes_ago: Annotated[int, Form(ge=0, le=90 * 24 * 60)] = 0,
) -> Response:
    """Log a call (kind=call) or an e-mail sent or received outside plixo (kind=email)."""
    back = f"/accounts/{customer_id}/activity"
    now = clock()
    try:
        what = {"call": ActivityKind.CALL, "email": ActivityKind.EMAIL}[kind]
    except KeyError:
        _flash(request, "Log a call or an outside e-mail.", "error")
        return RedirectResponse(back, status_code=303)
    try:
        messages.log_touch(
            db,
            user.org_id,
            actor=user,
            customer_id=customer_id,
            kind=what,
            summary=summary,
            body=body,
            direction=direction,
            contact_id=int(contact_id) if contact_id.isdigit() else None,
            invoice_id=int(invoice_id) if invoice_id.isdigit() else None,
            occurred_at=now - timedelta(minutes=minutes_ago),
            now=now,
        )
    except (messages.MessageError, LookupError, PermissionDenied) as exc:
        db.rollback()
        _flash(request, str(exc), "error")
        return RedirectResponse(back, status_code=303)
    db.commit()
    _flash(request, "Call logged." if what == ActivityKind.CALL else "Outside e-mail logged.")
    return RedirectResponse(back, status_code=303)


# --- scheduled messages -------------------------------------------------------------------------


@router.get("/scheduled", response_class=HTMLResponse)
def scheduled_page(request: Request, user: Queue, db: DbSession, clock: Clock) -> HTMLResponse:
    """Approved messages waiting for their send time, soonest first, with who approved them."""
    now: datetime = clock()
    return _render(
        request, "scheduled.html", user, rows=messages.scheduled(db, user.org_id), now=now
    )
