"""The conversation with a payer in the panel, and the statement of account as a PDF.

``POST /inbound/{id}/proposals/{n}/accept`` accepts a proposal a mailbox reply brought;
``GET /accounts/{id}/statement.pdf`` (Account 360) and ``GET /portal/{token}/statement.pdf``
(the mini-portal, with its own token checks and access log) download ``tools.ledger.statement``'s
PDF.

The conversation itself is shown on Account 360 and beside each draft (``_conversation.html``);
this route is the person's step that turns one of a reply's triage proposals into a ledger change,
through the same ``tools.replies.proposals.accept_proposal`` as ``POST /api/proposals/accept``
(checked,
audited, refused whole with the reason).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request, status
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from api.deps import AppSettings, Clock, CsrfChecked, DbSession, require
from memory.models import InboundMessage, User
from tools.insights.account360 import NotInOrganisation
from tools.ledger import statement
from tools.portal import access as portal
from tools.portal.access import PortalDenied
from tools.replies.proposals import ProposalRefused, accept_proposal

router = APIRouter(include_in_schema=False)

ReplyWorker = Annotated[User, Depends(require("triage_replies"))]
AccountViewer = Annotated[User, Depends(require("view_account"))]
PageId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _back(target: str, default: str) -> str:
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@router.post("/inbound/{inbound_id}/proposals/{index}/accept")
def accept_form(
    request: Request,
    inbound_id: PageId,
    index: Annotated[int, Path(ge=0, le=10)],
    user: ReplyWorker,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    back: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Accept proposal ``index`` of a stored reply's triage (refusals are flashed, not raised)."""
    message = db.scalars(
        select(InboundMessage).where(
            InboundMessage.id == inbound_id, InboundMessage.org_id == user.org_id
        )
    ).first()
    proposals = (message.triage or {}).get("acceptable", []) if message else []
    if message is None or index >= len(proposals):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such proposal in your organisation.")
    default = f"/accounts/{message.customer_id}" if message.customer_id else "/"
    try:
        accepted = accept_proposal(db, user.org_id, proposals[index], user, now=clock())
    except ProposalRefused as exc:
        db.rollback()
        request.session["flash"] = {"message": str(exc), "kind": "error", "reasons": []}
        return RedirectResponse(_back(back, default), status_code=303)
    db.commit()
    what = "Promise logged" if accepted.kind == "log_promise" else "Dispute opened"
    request.session["flash"] = {"message": f"{what}.", "kind": "ok", "reasons": []}
    return RedirectResponse(_back(back, default), status_code=303)


def _pdf(st: statement.Statement) -> Response:
    return Response(
        statement.render_pdf(st),
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{statement.filename(st)}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/accounts/{customer_id}/statement.pdf")
def account_statement(customer_id: PageId, user: AccountViewer, db: DbSession) -> Response:
    """The statement of account of one customer of the caller's organisation."""
    try:
        st = statement.build_statement(db, user.org_id, customer_id)
    except (LookupError, NotInOrganisation) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such customer.") from exc
    return _pdf(st)


@router.get("/portal/{token}/statement.pdf")
def portal_statement(
    request: Request,
    token: Annotated[str, Path(min_length=1, max_length=200)],
    db: DbSession,
    settings: AppSettings,
) -> Response:
    """The payer's own statement from the mini-portal (the token decides whose; logged)."""
    client = request.client.host if request.client else None
    try:
        access = portal.authenticate(db, token, client=client, action="view")
    except PortalDenied as exc:
        db.commit()  # the refusal stays on the access log
        raise HTTPException(exc.status_code, exc.public) from None
    portal.record_visit(db, access, summary="Downloaded the statement of account")
    db.commit()
    url = f"{settings.public_base_url.rstrip('/')}/portal/{token}"
    return _pdf(statement.build_statement(db, access.org_id, access.customer_id, pay_url=url))
