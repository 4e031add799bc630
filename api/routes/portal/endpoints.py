"""The payer mini-portal: a tokenized page per customer to see open invoices, pay, propose a plan
or open a dispute with evidence.

No staff session is involved: the token in the path is the credential, checked on every request
(``tools.portal.access.authenticate``: unknown, expired, revoked and rate-limited tokens are
refused and
logged). Everything the payer reaches is scoped to the token's customer; another customer's id is a
logged "foreign" attempt answered like an unknown one. The pages never show the staff navigation,
and responses carry ``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store`` so the token
does not leak to other sites or caches.

Payment: the payer's browser creates a PaymentMethod with Stripe.js (card data never reaches plixo)
and posts its id; plixo confirms the PaymentIntent in the organisation's own Stripe account. The
ledger changes only when Stripe's signed ``payment_intent.succeeded`` webhook arrives.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from api.deps import AppSettings, DbSession
from api.pages import templates
from memory.config import Settings
from memory.models import Invoice, InvoiceStatus, Organisation
from tools.commitments import disputes, plans
from tools.commitments.plans import PolicyRefused
from tools.commitments.promises import CommitmentError, org_today
from tools.kit import labels
from tools.payments import stripe_pay
from tools.portal import access as portal
from tools.portal.access import PortalAccess, PortalDenied

router = APIRouter(include_in_schema=False)
log = logging.getLogger("plixo.portal")

Token = Annotated[str, Path(min_length=1, max_length=200)]
PageId = Annotated[int, Path(ge=1, le=2**31 - 1)]
PORTAL_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}
MAX_PORTAL_INSTALLMENTS = 12


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {"request": request, "payer_dispute_status": labels.payer_dispute_status, **ctx},
        status_code=status_code,
        headers=PORTAL_HEADERS,
    )


def _denied(request: Request, db: Session, exc: PortalDenied) -> HTMLResponse:
    """Keep the refusal on the record (commit the log row), then answer without detail."""
    db.commit()
    return _render(request, "portal_error.html", exc.status_code, message=exc.public)


def _enter(request: Request, db: Session, token: str, action: str) -> PortalAccess:
    return portal.authenticate(db, token, client=_client(request), action=action)


def _home(
    request: Request,
    db: Session,
    token: str,
    access: PortalAccess,
    settings: Settings,
    *,
    status_code: int = 200,
    error: str | None = None,
    notice: str | None = None,
    reasons: list[str] | None = None,
) -> HTMLResponse:
    customer = portal.customer_of(db, access)
    org = db.get(Organisation, access.org_id)
    today = org_today(db, access.org_id)
    invoices = portal.open_invoices(db, access)
    visible = portal.visible_plans(db, access)
    customer_disputes = portal.customer_disputes(db, access)
    in_plan = {i.id for p in visible if p.status in plans.RUNNING for i in p.invoices}
    return _render(
        request,
        "portal.html",
        status_code,
        token=token,
        org=org,
        customer=customer,
        invoices=invoices,
        in_plan=in_plan,
        plans=[(p, plans.summarize(p, today)) for p in visible],
        under_review=portal.proposals_under_review(db, access),
        disputes=customer_disputes,
        invoice_numbers={
            d.invoice_id: inv.number
            for d in customer_disputes
            if (inv := db.get(Invoice, d.invoice_id)) is not None
        },
        reasons_list=disputes.REASONS,
        slots=disputes.EVIDENCE_SLOTS,
        evidence_types=", ".join(
            sorted({v.strip(".").upper() for v in disputes.EVIDENCE_TYPES.values()})
        ),
        max_mb=disputes.MAX_EVIDENCE_BYTES // (1024 * 1024),
        max_installments=MAX_PORTAL_INSTALLMENTS,
        today=today,
        first_due=today + timedelta(days=7),
        stripe_enabled=settings.stripe_api_key is not None,
        error=error,
        notice=notice,
        reasons=reasons or [],
        expires_at=access.expires_at,
        day=_payer_day(request, customer),
    )


def _payer_day(request: Request, customer: Any) -> Any:
    """Dates as the payer reads them: in their account's language when it has one (German
    "07.10.2025"), else their browser's; the portal's own words stay as they are."""
    locale = labels.locale_from_header(
        getattr(customer, "language", None) or request.headers.get("accept-language")
    )
    return lambda value: labels.day(value, locale=locale)


@router.get("/portal/{token}", response_class=HTMLResponse)
def portal_home(request: Request, token: Token, db: DbSession, settings: AppSettings) -> Response:
    try:
        access = _enter(request, db, token, "view")
    except PortalDenied as exc:
        return _denied(request, db, exc)
    portal.record_visit(db, access, summary="Opened the mini-portal")
    db.commit()
    return _home(request, db, token, access, settings)


# --- paying ---------------------------------------------------------------------------------------


def _start_payment(
    request: Request,
    db: Session,
    settings: Settings,
    token: str,
    *,
    invoice_id: int | None = None,
    installment_id: int | None = None,
) -> Response:
    try:
        access = _enter(request, db, token, "pay")
        if invoice_id is not None:
            invoice = portal.customer_invoice(db, access, invoice_id, action="pay")
            invoice_id = invoice.id
    except PortalDenied as exc:
        return _denied(request, db, exc)
    try:
        with db.begin_nested():
            link = stripe_pay.create_intent(
                db,
                access.org_id,
                settings=settings,
                invoice_id=invoice_id,
                installment_id=installment_id,
                customer_id=access.customer_id,
            )
    except CommitmentError as exc:
        if exc.status_code == 404:
            what = f"installment:{installment_id}" if installment_id else f"invoice:{invoice_id}"
            return _denied(request, db, portal.refuse_foreign(db, access, action="pay", what=what))
        db.commit()  # the access log row
        return _home(
            request, db, token, access, settings, status_code=exc.status_code, error=str(exc)
        )
    db.commit()
    return RedirectResponse(
        f"/portal/{token}/pay/{link.intent_id}", status_code=303, headers=PORTAL_HEADERS
    )


@router.post("/portal/{token}/invoices/{invoice_id}/pay")
def pay_invoice(
    request: Request, token: Token, invoice_id: PageId, db: DbSession, settings: AppSettings
) -> Response:
    """Start paying one invoice's open balance: a PaymentIntent, then the pay page."""
    return _start_payment(request, db, settings, token, invoice_id=invoice_id)


@router.post("/portal/{token}/installments/{installment_id}/pay")
def pay_installment(
    request: Request, token: Token, installment_id: PageId, db: DbSession, settings: AppSettings
) -> Response:
    return _start_payment(request, db, settings, token, installment_id=installment_id)


def _link_for(
    request: Request, db: Session, token: str, intent_id: str, action: str
) -> tuple[PortalAccess, Any] | HTMLResponse:
    try:
        access = _enter(request, db, token, action)
    except PortalDenied as exc:
        return _denied(request, db, exc)
    try:
        link = stripe_pay.get_link(db, access.org_id, intent_id, customer_id=access.customer_id)
    except CommitmentError:
        return _denied(
            request,
            db,
            portal.refuse_foreign(db, access, action=action, what=f"intent:{intent_id}"),
        )
    return access, link


@router.get("/portal/{token}/pay/{intent_id}", response_class=HTMLResponse)
def pay_page(
    request: Request,
    token: Token,
    intent_id: Annotated[str, Path(max_length=120)],
    db: DbSession,
    settings: AppSettings,
) -> Response:
    found = _link_for(request, db, token, intent_id, "pay")
    if isinstance(found, HTMLResponse):
        return found
    access, link = found
    db.commit()
    publishable = settings.stripe_publishable_key
    js_url = (
        f"{settings.stripe_api_base.rstrip('/')}/js.stripe.com/v3/"
        if settings.stripe_api_base
        else "https://js.stripe.com/v3/"
    )
    return _render(
        request,
        "portal_pay.html",
        token=token,
        link=link,
        customer=portal.customer_of(db, access),
        publishable_key=publishable,
        stripe_js=js_url,
        stripe_account=(db.get(Organisation, access.org_id) or Organisation()).stripe_account,
    )


@router.post("/portal/{token}/pay/{intent_id}/confirm", response_class=HTMLResponse)
def confirm_payment(
    request: Request,
    token: Token,
    intent_id: Annotated[str, Path(max_length=120)],
    db: DbSession,
    settings: AppSettings,
    payment_method: Annotated[str, Form(min_length=3, max_length=100)],
) -> Response:
    """Confirm the PaymentIntent with the PaymentMethod Stripe.js created in the payer's browser."""
    found = _link_for(request, db, token, intent_id, "confirm")
    if isinstance(found, HTMLResponse):
        return found
    access, link = found
    if link.status == "succeeded":
        db.commit()
        return _render(
            request,
            "portal_paid.html",
            token=token,
            link=link,
            status="succeeded",
            customer=portal.customer_of(db, access),
        )
    try:
        status = stripe_pay.confirm_intent(
            db, access.org_id, link, payment_method=payment_method, settings=settings
        )
    except CommitmentError as exc:
        db.commit()  # the access log row
        return _render(
            request,
            "portal_pay.html",
            exc.status_code,
            token=token,
            link=link,
            customer=portal.customer_of(db, access),
            error=str(exc),
            publishable_key=settings.stripe_publishable_key,
            stripe_js=None,
            stripe_account=None,
        )
    db.commit()
    return _render(
        request,
        "portal_paid.html",
        token=token,
        link=link,
        status=status,
        customer=portal.customer_of(db, access),
    )


# --- proposing a plan -----------------------------------------------------------------------------


@router.post("/portal/{token}/plans", response_class=HTMLResponse)
def propose_plan(
    request: Request,
    token: Token,
    db: DbSession,
    settings: AppSettings,
    invoice_ids: Annotated[list[int], Form(min_length=1, max_length=100)],
    installments: Annotated[int, Form(ge=2, le=MAX_PORTAL_INSTALLMENTS)],
    first_due: Annotated[date, Form()],
) -> Response:
    """The payer proposes an even monthly schedule; it waits for approval and stays invisible
    to them (only "under review" is shown) until a person approves it."""
    try:
        access = _enter(request, db, token, "propose_plan")
        invoices = [
            portal.customer_invoice(db, access, i, action="propose_plan") for i in invoice_ids
        ]
    except PortalDenied as exc:
        return _denied(request, db, exc)
    try:
        open_total = sum(i.balance_minor for i in invoices if i.status == InvoiceStatus.OPEN)
        with db.begin_nested():
            schedule = plans.split_evenly(open_total, installments, first_due)
            plans.propose_plan(
                db,
                access.org_id,
                customer_id=access.customer_id,
                invoice_ids=invoice_ids,
                installments=schedule,
                proposer=None,
                source="portal",
            )
    except PolicyRefused as exc:
        reasons = [
            r["message"] for r in exc.decision.get("reasons", []) if r.get("outcome") == "block"
        ]
        db.commit()
        return _home(
            request,
            db,
            token,
            access,
            settings,
            status_code=422,
            error="We cannot accept that schedule.",
            reasons=reasons,
        )
    except CommitmentError as exc:
        db.commit()
        return _home(
            request, db, token, access, settings, status_code=exc.status_code, error=str(exc)
        )
    db.commit()
    return _home(
        request,
        db,
        token,
        access,
        settings,
        status_code=201,
        notice="Thank you. Your proposal was received and is under review; we will "
        "confirm the schedule once it is approved.",
    )


# --- disputes -------------------------------------------------------------------------------------


def _read(upload: UploadFile | None) -> bytes | None:
    """At most one byte over the evidence limit: enough to refuse, never the whole file.
    (The routes are plain ``def``: FastAPI runs them in its thread pool, so the database work and
    the fsync of the evidence file never block the event loop.)"""
    if upload is None or not upload.filename:
        return None
    return upload.file.read(disputes.MAX_EVIDENCE_BYTES + 1)


@router.post("/portal/{token}/disputes", response_class=HTMLResponse)
def open_dispute(
    request: Request,
    token: Token,
    db: DbSession,
    settings: AppSettings,
    invoice_id: Annotated[int, Form(ge=1, le=2**31 - 1)],
    reason: Annotated[str, Form(max_length=64)],
    description: Annotated[str, Form(max_length=5000)] = "",
    slot: Annotated[str, Form(max_length=64)] = "other",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Open a dispute on one of the customer's invoices, optionally with one evidence file.
    A bad file refuses the whole request: no dispute is opened without its evidence."""
    data = _read(file)
    try:
        access = _enter(request, db, token, "dispute")
        portal.customer_invoice(db, access, invoice_id, action="dispute")
    except PortalDenied as exc:
        return _denied(request, db, exc)
    try:
        with db.begin_nested():
            dispute = disputes.open_dispute(
                db,
                access.org_id,
                invoice_id=invoice_id,
                reason=reason,
                description=description,
                source="portal",
                customer_id=access.customer_id,
                actor="payer (mini-portal)",
            )
            if data is not None and file is not None:
                disputes.add_evidence(
                    db,
                    access.org_id,
                    dispute.id,
                    filename=file.filename or "evidence",
                    data=data,
                    content_type=file.content_type,
                    slot=slot,
                    evidence_dir=settings.evidence_dir,
                    uploaded_by="payer (mini-portal)",
                    actor="payer (mini-portal)",
                    customer_id=access.customer_id,
                )
    except CommitmentError as exc:
        db.commit()
        return _home(
            request, db, token, access, settings, status_code=exc.status_code, error=str(exc)
        )
    db.commit()
    return _home(
        request,
        db,
        token,
        access,
        settings,
        status_code=201,
        notice="Your dispute was opened. Reminders for this invoice are paused while "
        "we look into it.",
    )


@router.post("/portal/{token}/disputes/{dispute_id}/evidence", response_class=HTMLResponse)
def add_evidence(
    request: Request,
    token: Token,
    dispute_id: PageId,
    db: DbSession,
    settings: AppSettings,
    file: Annotated[UploadFile, File()],
    slot: Annotated[str, Form(max_length=64)] = "other",
) -> Response:
    data = _read(file) or b""
    try:
        access = _enter(request, db, token, "evidence")
    except PortalDenied as exc:
        return _denied(request, db, exc)
    try:
        with db.begin_nested():
            disputes.add_evidence(
                db,
                access.org_id,
                dispute_id,
                filename=file.filename or "evidence",
                data=data,
                content_type=file.content_type,
                slot=slot,
                evidence_dir=settings.evidence_dir,
                uploaded_by="payer (mini-portal)",
                actor="payer (mini-portal)",
                customer_id=access.customer_id,
            )
    except CommitmentError as exc:
        if exc.status_code == 404:
            return _denied(
                request,
                db,
                portal.refuse_foreign(db, access, action="evidence", what=f"dispute:{dispute_id}"),
            )
        db.commit()
        return _home(
            request, db, token, access, settings, status_code=exc.status_code, error=str(exc)
        )
    db.commit()
    return _home(
        request,
        db,
        token,
        access,
        settings,
        status_code=201,
        notice="Thank you, the file was added to your dispute.",
    )


# --- the stable pay link in drafts ---------------------------------------------------------------

Slug = Annotated[str, Path(min_length=1, max_length=80)]
Number = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/pay/{org_slug}/{invoice_number}", response_class=HTMLResponse)
def pay_link_page(request: Request, org_slug: Slug, invoice_number: Number) -> Response:
    """The secret-free link in drafts. A GET changes nothing (mail scanners follow links): the
    payer presses a button to have a secure link e-mailed to the billing contact on file."""
    return _render(
        request,
        "portal_link.html",
        invoice_number=invoice_number,
        sent=False,
        action=f"/pay/{org_slug}/{invoice_number}",
    )


@router.post("/pay/{org_slug}/{invoice_number}", response_class=HTMLResponse)
def request_pay_link(
    request: Request,
    org_slug: Slug,
    invoice_number: Number,
    db: DbSession,
    settings: AppSettings,
) -> Response:
    """E-mail a fresh portal link to the invoice's billing contact. The answer is the same
    whether or not the invoice exists, so numbers cannot be probed; refusals are logged."""
    result = portal.request_link_for_invoice(
        db, org_slug, invoice_number, client=_client(request), base_url=settings.public_base_url
    )
    db.commit()
    if result.outcome == "rate_limited":
        return _render(request, "portal_error.html", 429, message=portal.RATE_LIMITED_MESSAGE)
    return _render(
        request, "portal_link.html", invoice_number=invoice_number, sent=True, action=None
    )
