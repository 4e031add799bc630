"""The disputes workspace in the panel: the queue with SLA clocks and breach flags, the Legal view,
and one dispute's panel (evidence, status changes, a credit through the guardrails, escalation to
Legal, reply templates).

Every write goes through ``tools.commitments.disputes`` (which checks the access matrix and asks the
guardrails), so these pages only translate forms and show refusals as flashes: nothing is
half-written, and a reload never repeats a change (post/redirect/get).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from api.deps import AppSettings, Clock, CsrfChecked, DbSession, require
from api.pages import checked_message
from api.pages import flash as _flash
from api.pages import render_page as _render
from memory.models import (
    AuditEvent,
    Contact,
    Customer,
    Dispute,
    DisputeStatus,
    Invoice,
    Persona,
    User,
)
from memory.money import MoneyError, parse_amount
from tools.commitments import disputes
from tools.commitments.promises import CommitmentError
from tools.drafts.service import DraftError
from tools.kit import labels
from tools.kit.authz import PermissionDenied
from tools.replies import dispute_replies

router = APIRouter(include_in_schema=False)

PageId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Viewer = Annotated[User, Depends(require("view_account"))]
Worker = Annotated[User, Depends(require("manage_disputes"))]
CreditGranter = Annotated[User, Depends(require("grant_credit"))]
View = Literal["active", "legal", "breaching", "closed"]

#: Where a person may move a dispute by the status form (credits have their own form).
FORM_TARGETS = (
    DisputeStatus.INVESTIGATING,
    DisputeStatus.AWAITING_CUSTOMER,
    DisputeStatus.ESCALATED_LEGAL,
    DisputeStatus.REJECTED,
)


def _row(d: Dispute, invoice: Invoice, customer: Customer, now: datetime) -> dict[str, Any]:
    clock = disputes.sla_clock(d, now)
    return {
        "d": d,
        "invoice": invoice,
        "customer": customer,
        "clock": clock,
        "reason": disputes.REASONS.get(d.reason, labels.humanize(d.reason)),
    }


@router.get("/disputes", response_class=HTMLResponse)
def queue(
    request: Request,
    user: Viewer,
    db: DbSession,
    clock: Clock,
    view: Annotated[View | None, Query()] = None,
) -> HTMLResponse:
    """Active disputes by SLA due time; Legal lands on the disputes escalated to them."""
    now = clock()
    view = view or ("legal" if user.role == Persona.LEGAL else "active")
    statuses = {
        "active": sorted(disputes.ACTIVE),
        "legal": [DisputeStatus.ESCALATED_LEGAL],
        "breaching": sorted(disputes.ACTIVE),
        "closed": sorted(disputes.FINAL),
    }[view]
    rows = [
        _row(d, inv, cust, now)
        for d, inv, cust in db.execute(
            select(Dispute, Invoice, Customer)
            .join(Invoice, Invoice.id == Dispute.invoice_id)
            .join(Customer, Customer.id == Dispute.customer_id)
            .where(Dispute.org_id == user.org_id, Dispute.status.in_(statuses))
            .order_by(Dispute.sla_due_at, Dispute.opened_at.desc(), Dispute.id)
            .limit(500)
        ).all()
    ]
    if view == "breaching":
        rows = [r for r in rows if r["clock"].breached]
    snapshot = disputes.sla_snapshot(db, user.org_id, now=now)
    return _render(
        request,
        "disputes.html",
        user,
        rows=rows,
        view=view,
        snapshot=snapshot,
        views=[
            ("active", "Active"),
            ("breaching", "SLA breached"),
            ("legal", "Legal"),
            ("closed", "Closed"),
        ],
    )


def _reply_form(db: Any, user: User, d: Dispute, template: str | None) -> dict[str, Any]:
    """The reply form: the templates that fit the dispute's status, the payer's contacts, and the
    chosen template's text filled with the dispute's facts (editable before it is checked)."""
    fitting = dispute_replies.templates_for(d)
    contacts = list(
        db.scalars(
            select(Contact)
            .where(Contact.customer_id == d.customer_id, Contact.email.is_not(None))
            .order_by(Contact.is_primary.desc(), Contact.id)
        )
    )
    chosen = template if template in fitting else None
    subject = body = ""
    if chosen:
        subject, body = dispute_replies.render(
            db,
            d,
            chosen,
            sender=user.name,
            contact_name=contacts[0].name if contacts else None,
        )
    return {
        "templates": fitting,
        "template": chosen,
        "reply_subject": subject,
        "reply_body": body,
        "reply_contacts": contacts,
    }


def _panel_context(
    db: Any, user: User, dispute_id: int, now: datetime, template: str | None = None
) -> dict[str, Any]:
    d = disputes.get_dispute(db, user.org_id, dispute_id)
    invoice = db.get(Invoice, d.invoice_id)
    customer = db.get(Customer, d.customer_id)
    history = _history(db, d)
    targets = [t for t in FORM_TARGETS if t in disputes.TRANSITIONS[d.status]]
    return {
        **_row(d, invoice, customer, now),
        "history": history,
        "targets": targets,
        "slots": disputes.EVIDENCE_SLOTS,
        **_reply_form(db, user, d, template),
        "active": d.status in disputes.ACTIVE,
        "credit_waiting": d.status in disputes.ACTIVE and d.credit_minor > 0,
        "max_mb": disputes.MAX_EVIDENCE_BYTES // (1024 * 1024),
    }


def _history(db: Any, d: Dispute) -> list[dict[str, Any]]:
    """The dispute's audit trail in words (who moved it where, evidence, credits)."""
    events = db.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.org_id == d.org_id,
            AuditEvent.subject_type == "dispute",
            AuditEvent.subject_id == d.id,
        )
        .order_by(AuditEvent.id)
    ).all()
    words = {
        "dispute.opened": "Opened",
        "dispute.evidence_added": "Evidence added",
        "dispute.credit_proposed": "Credit proposed",
    }
    out = []
    for e in events:
        action = e.action
        text = words.get(action) or labels.label(action.removeprefix("dispute."))
        note = (e.detail or {}).get("note") if isinstance(e.detail, dict) else None
        if note and "minor units" in str(note):
            note = None  # the credit itself is shown with its amount
        out.append({"at": e.created_at, "actor": e.actor, "text": text, "note": note})
    return out


@router.get("/disputes/{dispute_id}", response_class=HTMLResponse)
def panel(
    request: Request,
    dispute_id: PageId,
    user: Viewer,
    db: DbSession,
    clock: Clock,
    template: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    """One dispute; ``?template=`` fills the reply form with that reply template."""
    context = _panel_context(db, user, dispute_id, clock(), template)
    return _render(request, "dispute.html", user, **context)


@router.post("/disputes/{dispute_id}/reply")
def reply(
    request: Request,
    dispute_id: PageId,
    user: Worker,
    db: DbSession,
    clock: Clock,
    settings: AppSettings,
    _csrf: CsrfChecked,
    subject: Annotated[str, Form(max_length=400)],
    body: Annotated[str, Form(max_length=25_000)],
    contact_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Send a reply template (as edited) to the payer: a draft of dispute correspondence, checked
    like any message, that then waits for review and goes out through the outbox."""
    try:
        draft = dispute_replies.send_reply(
            db,
            user.org_id,
            dispute_id,
            user=user,
            subject=subject,
            body=body,
            contact_id=int(contact_id) if contact_id.isdigit() else None,
            settings=settings,
            now=clock(),
        )
    except (DraftError, LookupError, PermissionDenied) as exc:
        db.rollback()
        _flash(request, str(exc), "error")
        return _done(request, dispute_id)
    db.commit()
    return checked_message(request, draft)


def _done(request: Request, dispute_id: int) -> RedirectResponse:
    return RedirectResponse(f"/disputes/{dispute_id}", status_code=303)


def _refused(request: Request, db: Any, exc: Exception, dispute_id: int) -> RedirectResponse:
    db.rollback()
    reasons = [
        labels.rule_label(r.get("rule_id")) + ": " + str(r.get("message"))
        for r in (getattr(exc, "decision", None) or {}).get("reasons", [])
        if r.get("outcome") != "allow"
    ]
    _flash(request, str(exc), "error", reasons)
    return _done(request, dispute_id)


@router.post("/disputes/{dispute_id}/status")
def change_status(
    request: Request,
    dispute_id: PageId,
    user: Worker,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    to: Annotated[str, Form(max_length=40)],
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    try:
        target = DisputeStatus(to)
    except ValueError:
        _flash(request, "Choose a status from the list.", "error")
        return _done(request, dispute_id)
    try:
        disputes.change_status(
            db, user.org_id, dispute_id, target, actor=user, note=note.strip() or None, now=clock()
        )
    except (CommitmentError, PermissionDenied) as exc:
        return _refused(request, db, exc, dispute_id)
    db.commit()
    _flash(request, f"Dispute is now: {labels.label(target).lower()}.")
    return _done(request, dispute_id)


@router.post("/disputes/{dispute_id}/evidence")
def add_evidence(
    request: Request,
    dispute_id: PageId,
    user: Worker,
    db: DbSession,
    clock: Clock,
    settings: AppSettings,
    _csrf: CsrfChecked,
    file: Annotated[UploadFile, File()],
    slot: Annotated[str, Form(max_length=64)] = "other",
) -> Response:
    data = file.file.read(disputes.MAX_EVIDENCE_BYTES + 1)
    try:
        item = disputes.add_evidence(
            db,
            user.org_id,
            dispute_id,
            filename=file.filename or "evidence",
            data=data,
            content_type=file.content_type,
            slot=slot,
            evidence_dir=settings.evidence_dir,
            uploaded_by=f"{user.name} ({user.role.value})",
            actor=user,
            now=clock(),
        )
    except (CommitmentError, PermissionDenied) as exc:
        return _refused(request, db, exc, dispute_id)
    db.commit()
    _flash(request, f"{item.filename} attached as {disputes.EVIDENCE_SLOTS[item.slot].lower()}.")
    return _done(request, dispute_id)


@router.get("/disputes/{dispute_id}/evidence/{evidence_id}")
def evidence_file(
    dispute_id: PageId, evidence_id: PageId, user: Viewer, db: DbSession, settings: AppSettings
) -> FileResponse:
    d = disputes.get_dispute(db, user.org_id, dispute_id)
    item = next((e for e in d.evidence if e.id == evidence_id), None)
    if item is None:
        raise HTTPException(404, "No such evidence on this dispute.")
    path = disputes.evidence_path(settings.evidence_dir, item)
    if not path.is_file():
        raise HTTPException(404, "The evidence file is missing from the evidence directory.")
    return FileResponse(
        path,
        media_type=item.content_type,
        filename=item.filename,
        headers={"X-Content-Type-Options": "nosniff"},
        content_disposition_type="attachment",
    )


@router.post("/disputes/{dispute_id}/credit")
def credit(
    request: Request,
    dispute_id: PageId,
    user: CreditGranter,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    amount: Annotated[str, Form(max_length=40)],
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Resolve with a credit as far as the person's authority goes (else it waits for approval)."""
    try:
        d = disputes.get_dispute(db, user.org_id, dispute_id)
        invoice = db.get(Invoice, d.invoice_id)
        currency = invoice.currency if invoice else "USD"
        minor = parse_amount(amount.replace(",", "").strip(), currency)
        outcome = disputes.propose_credit(
            db,
            user.org_id,
            dispute_id,
            amount_minor=minor,
            actor=user,
            note=note or None,
            now=clock(),
        )
    except MoneyError as exc:
        _flash(request, f"{exc}.", "error")
        return _done(request, dispute_id)
    except (CommitmentError, PermissionDenied) as exc:
        return _refused(request, db, exc, dispute_id)
    db.commit()
    text = labels.money(minor, currency)
    if outcome.granted:
        _flash(request, f"Credit of {text} granted; the dispute is resolved.")
    else:
        _flash(
            request,
            f"Credit of {text} proposed; it waits for an approver whose limit covers it.",
            "warn",
            [outcome.message],
        )
    return _done(request, dispute_id)


@router.post("/disputes/{dispute_id}/credit/approve")
def approve_credit(
    request: Request,
    dispute_id: PageId,
    user: CreditGranter,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
) -> Response:
    try:
        disputes.approve_credit(db, user.org_id, dispute_id, approver=user, now=clock())
    except (CommitmentError, PermissionDenied) as exc:
        return _refused(request, db, exc, dispute_id)
    db.commit()
    _flash(request, "Credit approved; the dispute is resolved.")
    return _done(request, dispute_id)
