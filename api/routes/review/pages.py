"""The review panel: server-rendered pages over the same tools as the JSON API.

Today's Focus cards and the queue on the home page; a draft opened as a chat (context on the left,
the turns and the decision in the middle, the inspector on the right); batch approval for
Collections Managers; sending modes; the outbox. Forms post with a CSRF token and redirect back
(post/redirect/get), so a reload never repeats an approval. Buttons are shown only to those the
access matrix lets press them, and the routes check again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from api.deps import AppSettings, Clock, CsrfChecked, DbSession, require
from api.pages import flash as _flash
from api.pages import render_page as _render
from api.routes.review import endpoints as api
from memory.business_day import org_business_date as business_date
from memory.models import (
    Channel,
    Customer,
    Dispute,
    DisputeStatus,
    Invoice,
    InvoiceStatus,
    OutboxMessage,
    OutboxStatus,
    PaymentPlan,
    PlanInstallment,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
    User,
)
from policies.access import allowed
from tools.delivery import outbox
from tools.drafts import batch, shadow_agreement
from tools.drafts import service as drafts
from tools.drafts.service import DraftError
from tools.insights.account360 import account_360
from tools.insights.focus import scope_for, todays_focus
from tools.outreach import nudges, sending_modes
from tools.replies import conversations

router = APIRouter(include_in_schema=False)
log = logging.getLogger("plixo.panel")

PageId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ViewQueue = Annotated[User, Depends(require("view_queue"))]
ViewConsole = Annotated[User, Depends(require("view_console"))]
Approver = Annotated[User, Depends(require("approve_draft"))]
Editor = Annotated[User, Depends(require("edit_draft"))]
Rejecter = Annotated[User, Depends(require("reject_draft"))]
Reviser = Annotated[User, Depends(require("revise_draft"))]
BatchApprover = Annotated[User, Depends(require("batch_approve"))]
NoteAuthor = Annotated[User, Depends(require("add_note"))]
Nudger = Annotated[User, Depends(require("send_nudge"))]
ModeSwitcher = Annotated[User, Depends(require("set_sending_mode"))]
DeliveryManager = Annotated[User, Depends(require("manage_delivery"))]
Version = Annotated[int, Form(ge=1, le=2**31 - 1)]

OPEN_DISPUTES = (
    DisputeStatus.OPEN,
    DisputeStatus.INVESTIGATING,
    DisputeStatus.AWAITING_CUSTOMER,
    DisputeStatus.ESCALATED_LEGAL,
)


def _back(target: str | None, default: str) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


# --- home: Today's Focus and the queue -------------------------------------------------------


def focus_cards(session: Session, user: User, now: datetime) -> list[dict[str, Any]]:
    """The four cards: what is due, promises due today, plans near default, disputes near SLA."""

    scope, scope_label, _legal = scope_for(user)
    today = business_date(session, user.org_id, now)
    in_scope = [Customer.org_id == user.org_id, *scope]

    due = session.execute(
        select(func.count(Invoice.id), func.coalesce(func.sum(Invoice.balance_minor), 0))
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(
            *in_scope,
            Invoice.status == InvoiceStatus.OPEN,
            Invoice.balance_minor > 0,
            Invoice.due_date <= today,
        )
    ).one()
    promises = session.scalar(
        select(func.count(PromiseToPay.id))
        .join(Customer, Customer.id == PromiseToPay.customer_id)
        .where(
            *in_scope,
            PromiseToPay.status == PromiseStatus.OPEN,
            PromiseToPay.promised_date == today,
        )
    )
    plans = session.scalar(
        select(func.count(func.distinct(PaymentPlan.id)))
        .join(Customer, Customer.id == PaymentPlan.customer_id)
        .join(PlanInstallment, PlanInstallment.plan_id == PaymentPlan.id)
        .where(
            *in_scope,
            PaymentPlan.status == PlanStatus.ACTIVE,
            and_(
                PlanInstallment.paid_minor < PlanInstallment.amount_minor,
                PlanInstallment.due_date < today,
            ),
        )
    )
    disputes = session.scalar(
        select(func.count(Dispute.id))
        .join(Customer, Customer.id == Dispute.customer_id)
        .where(
            *in_scope,
            Dispute.status.in_(OPEN_DISPUTES),
            Dispute.sla_due_at.is_not(None),
            Dispute.sla_due_at <= now + timedelta(hours=4),
        )
    )
    return [
        {"label": "Due and overdue", "value": int(due[0]), "amount": int(due[1]), "tone": "warn"},
        {"label": "Promises due today", "value": int(promises or 0), "tone": "ok"},
        {"label": "Plans near default", "value": int(plans or 0), "tone": "warn"},
        {"label": "Disputes near SLA breach", "value": int(disputes or 0), "tone": "bad"},
        {"label": "Scope", "text": scope_label},
    ]


@router.get("/", response_class=HTMLResponse)
def home(request: Request, user: ViewQueue, db: DbSession, clock: Clock) -> HTMLResponse:
    now = clock()
    cards = focus_cards(db, user, now)
    focus = None
    try:
        focus = todays_focus(db, user, now=now, limit=10)
    except Exception:  # the ranking is advice; the queue must still open without it
        log.exception("Today's Focus failed")
    queue = api.QueuePage.model_validate(api.queue_page(db, user.org_id, user.id, limit=25))
    return _render(request, "panel.html", user, cards=cards, focus=focus, queue=queue)


@router.get("/queue", response_class=HTMLResponse)
def queue(
    request: Request,
    user: ViewQueue,
    db: DbSession,
    status_: Annotated[list[api.QueueStatus] | None, Query(alias="status", max_length=11)] = None,
    mine: bool = False,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    size = 50
    data = api.QueuePage.model_validate(
        api.queue_page(
            db,
            user.org_id,
            user.id,
            statuses=list(status_) if status_ else None,
            mine=mine,
            limit=size,
            offset=(page - 1) * size,
        )
    )
    return _render(
        request,
        "queue.html",
        user,
        queue=data,
        page=page,
        pages=max(1, (data.total + size - 1) // size),
        statuses=list(status_ or []),
        mine=mine,
    )


# --- a draft as a chat -------------------------------------------------------------------------


@router.get("/drafts/{draft_id}", response_class=HTMLResponse)
def draft_page(
    request: Request,
    draft_id: PageId,
    user: ViewQueue,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
) -> HTMLResponse:
    draft = drafts.get_draft(db, user.org_id, draft_id)
    view = api.draft_out(db, draft, user)
    account = None
    try:
        today = business_date(db, user.org_id, clock())
        account = account_360(db, user.org_id, draft.customer_id, as_of=today)
    except LookupError:
        account = None
    recommendation = None
    try:
        recommendation = api.inspector_recommendation(db, draft, settings, clock())
    except Exception:  # the inspector is advice; never let it break the review
        log.exception("inspector failed for draft %s", draft.id)
        db.rollback()
    next_id = db.scalar(
        select(func.min(drafts.Draft.id)).where(
            drafts.Draft.org_id == user.org_id,
            drafts.Draft.status.in_(drafts.QUEUE_STATES),
            drafts.Draft.id != draft.id,
        )
    )
    problem = (
        drafts.approval_problem(db, draft, user)
        if view.status in ("pending_review", "edited")
        else None
    )
    return _render(
        request,
        "draft.html",
        user,
        draft=view,
        account=account,
        recommendation=recommendation,
        templates_=list(nudges.TEMPLATES.values()),
        next_id=next_id,
        approval_problem=problem,
        conversation=conversations.conversation(db, user.org_id, draft_id=draft.id),
    )


def _draft_action(request: Request, draft_id: int, fn: Any) -> Response:
    """Run a review action; domain refusals come back to the draft page as a message."""
    try:
        message = fn()
    except DraftError as exc:
        if exc.http_status == 404:
            raise
        reasons = getattr(exc, "reasons", None) or []
        _flash(request, str(exc), "bad", [str(r.get("message")) for r in reasons])
        return RedirectResponse(f"/drafts/{draft_id}", status_code=303)
    _flash(request, message)
    return RedirectResponse(f"/drafts/{draft_id}", status_code=303)


@router.post("/drafts/{draft_id}/approve")
def approve_form(
    request: Request,
    draft_id: PageId,
    user: Approver,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
    _csrf: CsrfChecked,
    version: Version,
) -> Response:
    def run() -> str:
        try:
            draft = drafts.approve_draft(
                db,
                user.org_id,
                draft_id,
                user=user,
                expected_version=version,
                settings=settings,
                now=clock(),
            )
            drafts.commit_or_conflict(db, draft)
        except DraftError:
            db.rollback()
            raise
        if draft.status.value == "queued":
            return "Approved: the message is queued for delivery."
        return draft.hold_reason or "Approved."

    return _draft_action(request, draft_id, run)


@router.post("/drafts/{draft_id}/edit")
def edit_form(
    request: Request,
    draft_id: PageId,
    user: Editor,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
    _csrf: CsrfChecked,
    version: Version,
    subject: Annotated[str, Form(min_length=1, max_length=drafts.MAX_SUBJECT_CHARS)],
    body: Annotated[str, Form(min_length=1, max_length=drafts.MAX_BODY_CHARS)],
) -> Response:
    def run() -> str:
        try:
            draft = drafts.edit_draft(
                db,
                user.org_id,
                draft_id,
                user=user,
                expected_version=version,
                subject=subject,
                body=body.replace("\r\n", "\n"),
                settings=settings,
                now=clock(),
            )
            drafts.commit_or_conflict(db, draft)
        except DraftError:
            db.rollback()
            raise
        if draft.status.value == "blocked":
            return "Saved, but the guardrails block the new text: see the reasons."
        return "Saved and re-checked."

    return _draft_action(request, draft_id, run)


@router.post("/drafts/{draft_id}/reject")
def reject_form(
    request: Request,
    draft_id: PageId,
    user: Rejecter,
    db: DbSession,
    _csrf: CsrfChecked,
    version: Version,
    reason: Annotated[str, Form(min_length=1, max_length=drafts.MAX_REASON_CHARS)],
) -> Response:
    def run() -> str:
        try:
            draft = drafts.reject_draft(
                db, user.org_id, draft_id, user=user, expected_version=version, reason=reason
            )
            drafts.commit_or_conflict(db, draft)
        except DraftError:
            db.rollback()
            raise
        return "Rejected; the reason is kept."

    return _draft_action(request, draft_id, run)


@router.post("/drafts/{draft_id}/revise")
def revise_form(
    request: Request,
    draft_id: PageId,
    user: Reviser,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
    _csrf: CsrfChecked,
    version: Version,
    instruction: Annotated[str, Form(min_length=1, max_length=1000)],
) -> Response:
    def run() -> str:
        draft = drafts.get_draft(db, user.org_id, draft_id)
        drafts.check_version(draft, version)
        if draft.status not in drafts.EDITABLE:
            raise drafts.InvalidTransition(
                f"Draft {draft.id} is {draft.status.value}; it can no longer be revised."
            )
        revised = api.run_revision(db, user, draft_id, instruction.strip(), settings, clock())
        outcome = (revised.decision_outcome or "checked").replace("_", " ")
        return f"The co-pilot revised the draft; the guardrails say: {outcome}."

    return _draft_action(request, draft_id, run)


# --- notes and nudges from the panel -----------------------------------------------------------


@router.post("/customers/{customer_id}/notes")
def note_form(
    request: Request,
    customer_id: PageId,
    user: NoteAuthor,
    db: DbSession,
    _csrf: CsrfChecked,
    body: Annotated[str, Form(min_length=1, max_length=5000)],
    back: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    if not body.strip():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "The note is empty.")
    api.add_note(db, user, customer_id, body)
    db.commit()
    _flash(request, "Note added.")
    return RedirectResponse(_back(back, "/"), status_code=303)


@router.post("/customers/{customer_id}/nudge")
def nudge_form(
    request: Request,
    customer_id: PageId,
    user: Nudger,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
    _csrf: CsrfChecked,
    template_id: Annotated[str, Form(min_length=1, max_length=80)],
    invoice_id: Annotated[int | None, Form(ge=1, le=2**31 - 1)] = None,
    back: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    try:
        result = nudges.request_nudge(
            db,
            user.org_id,
            user=user,
            customer_id=customer_id,
            template_id=template_id,
            invoice_id=invoice_id,
            settings=settings,
            now=clock(),
        )
        db.commit()
    except nudges.NudgeNotFound as exc:
        db.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except nudges.NudgeError as exc:
        db.rollback()
        _flash(request, str(exc), "bad")
        return RedirectResponse(_back(back, "/"), status_code=303)
    status_text = {
        "queued": "Nudge queued; the A/R team has been told.",
        "approved": f"Nudge approved; {result.draft.hold_reason or 'it leaves when allowed'}.",
    }.get(result.draft.status.value, f"Nudge {result.draft.status.value}: see the reasons.")
    _flash(request, status_text, "ok" if result.draft.status.value != "blocked" else "bad")
    return RedirectResponse(_back(back, "/"), status_code=303)


# --- batch approval ----------------------------------------------------------------------------


@router.get("/batch", response_class=HTMLResponse)
def batch_page(request: Request, user: BatchApprover, db: DbSession) -> HTMLResponse:
    groups = batch.pending_groups(db, user.org_id, user=user)
    return _render(request, "batch.html", user, groups=groups, result=None)


@router.post("/batch", response_class=HTMLResponse)
def batch_submit(
    request: Request,
    user: BatchApprover,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
    _csrf: CsrfChecked,
    action: Annotated[Literal["approve", "reject"], Form()],
    item: Annotated[list[str] | None, Form(max_length=batch.MAX_BATCH)] = None,
    reason: Annotated[str, Form(max_length=drafts.MAX_REASON_CHARS)] = "",
) -> HTMLResponse:
    pairs: list[tuple[int, int]] = []
    for raw in item or []:
        try:
            draft_s, version_s = raw.split(":", 1)
            pairs.append((int(draft_s), int(version_s)))
        except ValueError as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"Malformed item {raw[:40]!r}."
            ) from exc
    try:
        result = batch.decide_batch(
            db,
            user.org_id,
            user=user,
            action=action,
            items=pairs,
            reason=reason or None,
            recheck=None
            if action == "reject"
            else drafts.make_recheck(settings, approved_by=[user.role.value]),
            now=clock(),
        )
    except batch.BatchError as exc:
        db.rollback()
        groups = batch.pending_groups(db, user.org_id, user=user)
        return _render(
            request,
            "batch.html",
            user,
            status_code=422,
            groups=groups,
            result=None,
            error=str(exc),
        )
    db.commit()
    groups = batch.pending_groups(db, user.org_id, user=user)
    return _render(request, "batch.html", user, groups=groups, result=result)


# --- sending modes and outbox ------------------------------------------------------------------


@router.get("/sending-modes", response_class=HTMLResponse)
def modes_page(request: Request, user: ViewConsole, db: DbSession) -> HTMLResponse:
    state = sending_modes.sending_state(db, user.org_id)
    confirm = request.session.pop("confirm_shadow_off", None)
    agreement = shadow_agreement.agreement_report(db, user.org_id, weeks=8)
    return _render(
        request, "sending_modes.html", user, state=state, confirm=confirm, agreement=agreement
    )


def _autopilot_on(db: Session, org_id: int, segment_id: int | None) -> list[str]:
    """Segments where Autopilot is on and turning Shadow Mode off would let drafts go unreviewed."""
    state = sending_modes.sending_state(db, org_id)
    return [
        s.name
        for s in state.segments
        if s.autopilot_enabled and (segment_id is None or s.id == segment_id)
    ]


@router.post("/sending-modes")
def modes_submit(
    request: Request,
    user: ModeSwitcher,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    switch: Annotated[Literal["shadow_mode", "maintenance", "cron_pause", "autopilot"], Form()],
    value: Annotated[bool, Form()],
    segment_id: Annotated[int | None, Form(ge=1, le=2**31 - 1)] = None,
    confirmed: Annotated[bool, Form()] = False,
) -> Response:
    if switch == "shadow_mode" and not value and not confirmed:  # onboarding: confirm first
        live = _autopilot_on(db, user.org_id, segment_id)
        if live:
            request.session["confirm_shadow_off"] = {"segment_id": segment_id, "segments": live}
            return RedirectResponse("/sending-modes", status_code=303)
    try:
        if segment_id is None:
            if switch == "autopilot":
                raise sending_modes.ModeRefused("Autopilot is switched per segment.")
            sending_modes.set_org_switch(db, user.org_id, user=user, switch=switch, value=value)
        else:
            if switch not in ("shadow_mode", "autopilot"):
                raise sending_modes.ModeRefused(f"{switch} is switched for the organisation.")
            sending_modes.set_segment_switch(
                db,
                user.org_id,
                segment_id,
                user=user,
                switch="autopilot" if switch == "autopilot" else "shadow_mode",
                value=value,
                now=clock(),
            )
        db.commit()
        _flash(
            request, f"{switch.replace('_', ' ').capitalize()} is now {'on' if value else 'off'}."
        )
    except sending_modes.ModeRefused as exc:
        db.rollback()
        _flash(request, str(exc), "bad")
    return RedirectResponse("/sending-modes", status_code=303)


def _slack_recipients(db: Session, org_id: int, rows: list[OutboxMessage]) -> dict[int, str]:
    """A Slack notification's recipient as the person it notifies (their name), not the Slack
    user id the row is addressed to; e-mail rows keep their address."""
    ids = {m.recipient for m in rows if m.channel == Channel.SLACK}
    if not ids:
        return {}
    people = {
        u.slack_user_id: u.name
        for u in db.scalars(select(User).where(User.org_id == org_id, User.slack_user_id.in_(ids)))
    }
    return {
        m.id: f"{people.get(m.recipient, 'a person')} (Slack)"
        for m in rows
        if m.channel == Channel.SLACK
    }


@router.get("/outbox", response_class=HTMLResponse)
def outbox_page(
    request: Request,
    user: ViewQueue,
    db: DbSession,
    status_: Annotated[
        Literal["queued", "claimed", "sent", "failed", "uncertain", "cancelled"] | None,
        Query(alias="status"),
    ] = None,
) -> HTMLResponse:
    rows = outbox.list_messages(
        db, user.org_id, status=OutboxStatus(status_) if status_ else None, limit=200
    )

    return _render(
        request,
        "outbox.html",
        user,
        messages=rows,
        recipients=_slack_recipients(db, user.org_id, rows),
        status=status_,
        may_resolve=allowed(user.role.value, "manage_delivery"),
    )


@router.post("/outbox/{outbox_id}/resolve")
def outbox_resolve(
    request: Request,
    outbox_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    user: DeliveryManager,
    db: DbSession,
    _csrf: CsrfChecked,
    action: Annotated[Literal["confirm_sent", "resend", "cancel"], Form()],
) -> Response:
    """Confirm sent, resend or cancel an uncertain or failed message (audited)."""
    try:
        row = outbox.resolve(db, user.org_id, outbox_id, user=user, action=action)
        db.commit()
        _flash(request, f"Message {row.message_id} is now {row.status.value}.")
    except outbox.OutboxNotFound as exc:
        db.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except outbox.OutboxError as exc:
        db.rollback()
        _flash(request, str(exc), "bad")
    return RedirectResponse("/outbox", status_code=303)
