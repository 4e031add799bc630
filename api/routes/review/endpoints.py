"""The review API: queue, drafts, co-pilot revisions, approvals, batches, Account 360, notes,
nudges, the outbox and the sending modes.

Every route names its permission from the access matrix (``require``) and scopes every query to the
caller's organisation: an id from another organisation is answered exactly like an unknown one
(404). Writes carry the draft ``version`` the caller saw; a mismatch is a 409, never a lost update.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Integer, bindparam, func, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError
from starlette.concurrency import run_in_threadpool

from api.deps import AppSettings, Clock, DbSession, can, require, require_snapshot
from api.queue_cache import QueuePageCache, page_key
from memory import business_day
from memory.models import (
    Customer,
    Draft,
    DraftRevision,
    DraftStatus,
    Invoice,
    Note,
    OutboxStatus,
    Segment,
    User,
)
from tools.delivery import outbox
from tools.drafts import batch, shadow_agreement
from tools.drafts import service as drafts
from tools.inbox import notifications
from tools.insights.account360 import account_360
from tools.kit import audit
from tools.ledger.users import CallerSnapshot
from tools.outreach import nudges, sending_modes

router = APIRouter(prefix="/api", tags=["review"])

ViewQueue = Annotated[User, Depends(require("view_queue"))]
QueueReader = Annotated[CallerSnapshot, Depends(require_snapshot("view_queue"))]
ViewAccount = Annotated[User, Depends(require("view_account"))]
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

DraftId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
Version = Annotated[int, Field(ge=1, le=2**31 - 1, description="The draft version you loaded.")]

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown id in your org"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The draft changed since you loaded it, or its state forbids this"}
}


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- schemas ----------------------------------------------------------------------------------


class ReasonOut(BaseModel):
    rule_id: str | None = None
    outcome: str | None = None
    message: str | None = None
    approver_role: str | None = None
    not_before: str | None = None


class QueueItem(BaseModel):
    id: int
    version: int
    status: str
    kind: str
    channel: str
    subject: str
    customer_id: int
    customer: str
    segment: str | None
    invoice_number: str | None
    balance_minor: int | None
    currency: str | None
    due_date: date | None
    outcome: str | None
    reasons: list[str]
    created_at: datetime


class QueuePage(BaseModel):
    total: int
    items: list[QueueItem]


class RevisionOut(BaseModel):
    seq: int
    author: str
    user_id: int | None
    instruction: str | None
    subject: str | None
    body: str | None
    outcome: str | None
    reasons: list[ReasonOut]
    created_at: datetime


class DraftOut(BaseModel):
    id: int
    version: int
    status: str
    kind: str
    persona: str
    channel: str
    recipient: str | None
    subject: str
    body: str
    language: str
    tone: str
    customer_id: int
    invoice_id: int | None
    segment_id: int | None
    outcome: str | None
    reasons: list[ReasonOut]
    not_before: str | None
    approver_roles: list[str]
    grounding: dict[str, Any]
    stated_facts: dict[str, Any]
    reviewer_notes: list[str] = Field(
        default_factory=list,
        description=(
            "What the reviewer should know and the payer never reads: for a consolidated "
            "message, the invoices left out and why, and why it speaks as a final notice."
        ),
    )
    recommendation: dict[str, Any] | None
    hold_reason: str | None
    rejection_reason: str | None
    model_name: str | None
    prompt_version: str | None
    created_at: datetime
    updated_at: datetime
    revisions: list[RevisionOut]
    actions: dict[str, bool] = Field(description="What the caller may do to this draft now.")


class VersionIn(_In):
    version: Version


class ApproveIn(VersionIn):
    pass


class RejectIn(VersionIn):
    reason: str = Field(min_length=1, max_length=drafts.MAX_REASON_CHARS)


class EditIn(VersionIn):
    subject: str = Field(min_length=1, max_length=drafts.MAX_SUBJECT_CHARS)
    body: str = Field(min_length=1, max_length=drafts.MAX_BODY_CHARS)


class ReviseIn(VersionIn):
    instruction: str = Field(
        min_length=1,
        max_length=1000,
        description='Plain words: "shorter", "mention the promise from 3 October", "more formal".',
    )


class BatchItemIn(_In):
    draft_id: Id
    version: Version


class BatchIn(_In):
    action: Literal["approve", "reject"]
    items: list[BatchItemIn] = Field(min_length=1, max_length=batch.MAX_BATCH)
    reason: str | None = Field(default=None, max_length=drafts.MAX_REASON_CHARS)


class BatchItemOut(BaseModel):
    draft_id: int
    version: int
    customer: str
    subject: str
    invoice_number: str | None
    amount_minor: int | None
    currency: str | None
    status: str
    recommendation: str | None
    approvable: bool
    problem: str | None


class BatchGroupOut(BaseModel):
    key: str
    segment: str
    step: str
    reasons: list[str]
    count: int
    totals: dict[str, int]
    items: list[BatchItemOut]


class BatchItemResult(BaseModel):
    draft_id: int
    outcome: Literal["approved", "rejected", "refused"]
    status: str | None
    message: str


class BatchOut(BaseModel):
    batch_id: str
    action: str
    done: int
    refused: int
    results: list[BatchItemResult]


class NoteIn(_In):
    body: str = Field(min_length=1, max_length=5000)
    invoice_id: Id | None = None


class NoteOut(BaseModel):
    id: int
    customer_id: int
    invoice_id: int | None
    author_user_id: int | None
    source: str
    body: str
    mentions: list[Any]
    created_at: datetime


class NudgeIn(_In):
    template_id: str = Field(min_length=1, max_length=80)
    invoice_id: Id | None = None
    contact_id: Id | None = None


class NudgeSuggestIn(NudgeIn):
    notify_slack: bool = True


class NudgeOut(BaseModel):
    draft_id: int
    status: str
    outcome: str | None
    reasons: list[ReasonOut]
    not_before: str | None
    notified: list[str]
    slack_ts: str | None = None


class NudgeTemplateOut(BaseModel):
    id: str
    label: str
    subject: str
    body: str
    personas: list[str]


class OutboxOut(BaseModel):
    id: int
    draft_id: int | None
    channel: str
    recipient: str
    subject: str
    message_id: str
    status: str
    attempts: int
    claimed_by: str | None
    claimed_at: datetime | None
    sent_at: datetime | None
    last_error: str | None
    created_at: datetime


class SegmentModeOut(BaseModel):
    id: int
    name: str
    shadow_mode: bool
    autopilot_enabled: bool


class SendingModesOut(BaseModel):
    shadow_mode: bool
    maintenance: bool
    cron_paused: bool
    segments: list[SegmentModeOut]


class OrgSwitchIn(_In):
    switch: Literal["shadow_mode", "maintenance", "cron_pause"]
    value: bool


class SegmentSwitchIn(_In):
    switch: Literal["shadow_mode", "autopilot"]
    value: bool


# --- helpers ----------------------------------------------------------------------------------


def _reasons(decision: dict[str, Any] | None) -> list[ReasonOut]:
    out = []
    for r in (decision or {}).get("reasons") or []:
        if isinstance(r, dict):
            out.append(
                ReasonOut(
                    rule_id=_s(r.get("rule_id")),
                    outcome=_s(r.get("outcome")),
                    message=_s(r.get("message")),
                    approver_role=_s(r.get("approver_role")),
                    not_before=_s(r.get("not_before")),
                )
            )
    return out


def _s(value: Any) -> str | None:
    return None if value is None else str(value)


def draft_actions(session: Session, draft: Draft, user: User) -> dict[str, bool]:
    """Which buttons the caller sees: the matrix, the draft's state and the approval limits."""
    reviewable = draft.status in drafts.REVIEWABLE
    return {
        "approve": reviewable
        and can(user, "approve_draft")
        and drafts.approval_problem(session, draft, user) is None,
        "edit": draft.status in drafts.EDITABLE and can(user, "edit_draft"),
        "reject": draft.status in drafts.REJECTABLE and can(user, "reject_draft"),
        "revise": draft.status in drafts.EDITABLE and can(user, "revise_draft"),
    }


def _reviewer_notes(draft: Draft) -> list[str]:
    """The notes the drafter stored for the reviewer (``stated_facts.reviewer_notes``), as text."""
    notes = (draft.stated_facts or {}).get("reviewer_notes") or []
    return [str(n) for n in notes if str(n).strip()] if isinstance(notes, list) else []


def draft_out(session: Session, draft: Draft, user: User) -> DraftOut:
    decision = draft.decision or {}
    revisions = session.scalars(
        select(DraftRevision).where(DraftRevision.draft_id == draft.id).order_by(DraftRevision.seq)
    ).all()
    return DraftOut(
        id=draft.id,
        version=draft.version,
        status=draft.status.value,
        kind=draft.kind.value,
        persona=draft.persona.value,
        channel=draft.channel.value,
        recipient=draft.recipient,
        subject=draft.subject,
        body=draft.body,
        language=draft.language,
        tone=draft.tone,
        customer_id=draft.customer_id,
        invoice_id=draft.invoice_id,
        segment_id=draft.segment_id,
        outcome=draft.decision_outcome,
        reasons=_reasons(decision),
        not_before=_s(decision.get("not_before")),
        approver_roles=drafts.required_roles(decision),
        grounding=draft.grounding or {},
        stated_facts=draft.stated_facts or {},
        reviewer_notes=_reviewer_notes(draft),
        recommendation=draft.recommendation,
        hold_reason=draft.hold_reason,
        rejection_reason=draft.rejection_reason,
        model_name=draft.model_name,
        prompt_version=draft.prompt_version,
        created_at=draft.created_at,
        updated_at=draft.updated_at,
        revisions=[
            RevisionOut(
                seq=r.seq,
                author=r.author,
                user_id=r.user_id,
                instruction=r.instruction,
                subject=r.subject,
                body=r.body,
                outcome=_s((r.decision or {}).get("outcome")),
                reasons=_reasons(r.decision),
                created_at=r.created_at,
            )
            for r in revisions
        ],
        actions=draft_actions(session, draft, user),
    )


QueueStatus = Literal[
    "pending_review",
    "edited",
    "blocked",
    "deferred",
    "held",
    "approved",
    "queued",
    "sent",
    "failed",
    "rejected",
    "drafted",
]


_QUEUE_STATEMENTS: dict[tuple[bool, bool, bool], Any] = {}
_STATUS_TYPE = Draft.__table__.c.status.type


def _queue_statement(by_segment: bool, by_customer: bool, mine: bool) -> tuple[Any, Any]:
    """The queue query for one filter shape, built once: every value is a bound parameter, so a
    request pays for neither statement construction nor compilation (SQLAlchemy caches it)."""
    key = (by_segment, by_customer, mine)
    stmt = _QUEUE_STATEMENTS.get(key)
    if stmt is not None:
        return stmt
    seg = aliased(Segment)
    where = [
        Draft.org_id == bindparam("org_id"),
        Draft.status.in_(bindparam("statuses", expanding=True, type_=_STATUS_TYPE)),
    ]
    if by_segment:
        where.append(Draft.segment_id == bindparam("segment_id"))
    if by_customer:
        where.append(Draft.customer_id == bindparam("customer_id"))
    if mine:
        uid = bindparam("user_id", type_=Integer)
        where.append(
            or_(
                Customer.collector_user_id == uid,
                Customer.sales_user_id == uid,
                Customer.csm_user_id == uid,
            )
        )
    # Page the drafts first (one table, its index), then join the 50 rows: joining every queued
    # draft before sorting costs more than the page itself.
    page_ids = (
        select(Draft.id.label("id"), Draft.created_at.label("created_at"))
        .where(*where)
        .order_by(Draft.created_at, Draft.id)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )
    if mine:
        page_ids = page_ids.join(Customer, Customer.id == Draft.customer_id)
    paged = page_ids.subquery("paged")
    stmt = (
        select(
            Draft.id,
            Draft.version,
            Draft.status,
            Draft.kind,
            Draft.channel,
            Draft.subject,
            Draft.customer_id,
            Customer.name.label("customer"),
            seg.name.label("segment"),
            Invoice.number,
            Invoice.balance_minor,
            Invoice.currency,
            Invoice.due_date,
            Draft.decision_outcome,
            Draft.decision,
            Draft.created_at,
        )
        .select_from(paged)
        .join(Draft, Draft.id == paged.c.id)
        .join(Customer, Customer.id == Draft.customer_id)
        .outerjoin(Invoice, Invoice.id == Draft.invoice_id)
        .outerjoin(seg, seg.id == Draft.segment_id)
        .order_by(paged.c.created_at, paged.c.id)
    )
    count = select(func.count(Draft.id)).where(*where)
    if mine:
        count = count.join(Customer, Customer.id == Draft.customer_id)
    _QUEUE_STATEMENTS[key] = (stmt, count)
    return stmt, count


def _queue_reasons(decision: Any) -> list[str]:
    if not isinstance(decision, dict):
        return []
    return [
        str(x.get("message"))
        for x in decision.get("reasons") or []
        if isinstance(x, dict) and x.get("outcome") != "allow"
    ]


def queue_page(
    session: Session,
    org_id: int,
    user_id: int,
    *,
    statuses: list[str] | None = None,
    segment_id: int | None = None,
    customer_id: int | None = None,
    mine: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """The review queue, oldest first, as plain data (``QueuePage``'s shape). The hot path of the
    review panel: prebuilt statements on the Core connection, no ORM objects. ``mine`` keeps the
    drafts of customers ``user_id`` owns (as collector, sales or CSM)."""
    wanted = (
        [DraftStatus(s).value for s in statuses]
        if statuses
        else sorted(s.value for s in drafts.QUEUE_STATES)
    )
    params: dict[str, Any] = {
        "org_id": org_id,
        "statuses": wanted,
        "limit": limit,
        "offset": offset,
    }
    if segment_id is not None:
        params["segment_id"] = segment_id
    if customer_id is not None:
        params["customer_id"] = customer_id
    if mine:
        params["user_id"] = user_id
    stmt, count = _queue_statement(segment_id is not None, customer_id is not None, mine)
    conn = session.connection()
    rows = conn.execute(stmt, params).all()
    if offset == 0 and len(rows) < limit:
        total = len(rows)
    else:
        total = int(conn.execute(count, params).scalar() or 0)
    items = [
        {
            "id": r.id,
            "version": r.version,
            "status": r.status.value,
            "kind": r.kind.value,
            "channel": r.channel.value,
            "subject": r.subject,
            "customer_id": r.customer_id,
            "customer": r.customer,
            "segment": r.segment,
            "invoice_number": r.number,
            "balance_minor": r.balance_minor,
            "currency": r.currency,
            "due_date": r.due_date,
            "outcome": r.decision_outcome,
            "reasons": _queue_reasons(r.decision),
            "created_at": r.created_at,
        }
        for r in rows
    ]
    return {"total": total, "items": items}


def json_response(data: Any, status_code: int = 200) -> Response:
    """Pre-serialized JSON for hot read paths (the response model still documents the shape)."""
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


def get_customer(session: Session, org_id: int, customer_id: int) -> Customer:
    customer = session.scalars(
        select(Customer).where(Customer.id == customer_id, Customer.org_id == org_id)
    ).first()
    if customer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No customer {customer_id} in your org.")
    return customer


# --- queue and drafts -------------------------------------------------------------------------


@router.get("/queue", response_model=QueuePage)
async def get_queue(
    request: Request,
    caller: QueueReader,
    db: DbSession,
    status_: Annotated[list[QueueStatus] | None, Query(alias="status", max_length=11)] = None,
    segment_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    customer_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    mine: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    """Drafts awaiting review (pending review and edited by default), oldest first.

    The page is served from a cache while the organisation's queue version (read with the
    caller, before the page) is unchanged; see ``api/queue_cache.py``.
    """
    statuses: list[str] | None = sorted(set(status_)) if status_ else None
    cache: QueuePageCache = request.app.state.queue_cache
    key = page_key(caller, request.scope.get("query_string", b""))
    body = cache.get(key, caller.queue_version)
    if body is None:  # a miss reads the ledger: in the thread pool, never on the event loop
        page = await run_in_threadpool(
            queue_page,
            db,
            caller.org_id,
            caller.id,
            statuses=statuses,
            segment_id=segment_id,
            customer_id=customer_id,
            mine=mine,
            limit=limit,
            offset=offset,
        )
        body = orjson.dumps(page)
        cache.put(key, caller.queue_version, body)
    return Response(body, media_type="application/json")


@router.get("/drafts/{draft_id}", response_model=DraftOut, responses=NOT_FOUND)
def get_draft(draft_id: DraftId, user: ViewQueue, db: DbSession) -> DraftOut:
    """A draft with its chat turns, the decision with every reason, and what you may do to it."""
    return draft_out(db, drafts.get_draft(db, user.org_id, draft_id), user)


@router.get("/drafts/{draft_id}/revisions", response_model=list[RevisionOut], responses=NOT_FOUND)
def list_revisions(draft_id: DraftId, user: ViewQueue, db: DbSession) -> list[RevisionOut]:
    """The review chat of a draft: operator instructions, co-pilot rewrites, hand edits."""
    return draft_out(db, drafts.get_draft(db, user.org_id, draft_id), user).revisions


@router.post(
    "/drafts/{draft_id}/revisions",
    response_model=DraftOut,
    status_code=201,
    responses={**NOT_FOUND, **CONFLICT},
)
def revise(
    draft_id: DraftId,
    body: ReviseIn,
    user: Reviser,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
) -> DraftOut:
    """Ask the co-pilot to revise the draft; the rewrite is a new turn, re-checked."""
    draft = drafts.get_draft(db, user.org_id, draft_id)
    drafts.check_version(draft, body.version)
    if draft.status not in drafts.EDITABLE:
        raise drafts.InvalidTransition(
            f"Draft {draft.id} is {draft.status.value}; it can no longer be revised."
        )
    revised = run_revision(db, user, draft_id, body.instruction, settings, clock())
    return draft_out(db, revised, user)


def run_revision(
    db: Session,
    user: User,
    draft_id: int,
    instruction: str,
    settings: AppSettings,
    now: datetime,
) -> Draft:
    """Ask the agent's reviser (it adds the chat turns and audits) and commit; a concurrent change
    to the draft is a 409."""
    # lazy: the agent (pydantic-ai, ~280 modules) loads on first use, not at app start-up
    from agent.service import revise_draft

    try:
        draft = drafts.get_draft(db, user.org_id, draft_id)
        if draft.status in drafts.EDITABLE:
            drafts.ensure_original_turn(db, draft)
        revised = revise_draft(db, user.org_id, draft_id, instruction, user, settings, now=now)
        drafts.commit_or_conflict(db, revised)
    except LookupError as exc:
        db.rollback()
        raise drafts.DraftNotFound(f"No draft {draft_id} in your organisation.") from exc
    except StaleDataError as exc:
        db.rollback()
        raise drafts.StaleDraft(
            f"Draft {draft_id} was changed by someone else at the same moment; reload it."
        ) from exc
    except drafts.DraftError:
        db.rollback()
        raise
    return revised


@router.post(
    "/drafts/{draft_id}/approve", response_model=DraftOut, responses={**NOT_FOUND, **CONFLICT}
)
def approve(
    draft_id: DraftId,
    body: ApproveIn,
    user: Approver,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
) -> DraftOut:
    """Approve the version you reviewed; it is queued for delivery exactly once."""
    draft = drafts.approve_draft(
        db,
        user.org_id,
        draft_id,
        user=user,
        expected_version=body.version,
        settings=settings,
        now=clock(),
    )
    drafts.commit_or_conflict(db, draft)
    return draft_out(db, draft, user)


@router.post(
    "/drafts/{draft_id}/edit", response_model=DraftOut, responses={**NOT_FOUND, **CONFLICT}
)
def edit(
    draft_id: DraftId,
    body: EditIn,
    user: Editor,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
) -> DraftOut:
    """Replace the text by hand; grounding and the guardrails re-check it."""
    draft = drafts.edit_draft(
        db,
        user.org_id,
        draft_id,
        user=user,
        expected_version=body.version,
        subject=body.subject,
        body=body.body,
        settings=settings,
        now=clock(),
    )
    drafts.commit_or_conflict(db, draft)
    return draft_out(db, draft, user)


@router.post(
    "/drafts/{draft_id}/reject", response_model=DraftOut, responses={**NOT_FOUND, **CONFLICT}
)
def reject(draft_id: DraftId, body: RejectIn, user: Rejecter, db: DbSession) -> DraftOut:
    """Reject with a reason (kept on the draft for the evals)."""
    draft = drafts.reject_draft(
        db, user.org_id, draft_id, user=user, expected_version=body.version, reason=body.reason
    )
    drafts.commit_or_conflict(db, draft)
    return draft_out(db, draft, user)


@router.get("/drafts/{draft_id}/recommendation", response_model=dict[str, Any], responses=NOT_FOUND)
def recommendation(
    draft_id: DraftId, user: ViewQueue, db: DbSession, settings: AppSettings, clock: Clock
) -> dict[str, Any]:
    """The inspector's next best action for this draft, with a rationale and a confidence."""
    draft = drafts.get_draft(db, user.org_id, draft_id)
    return inspector_recommendation(db, draft, settings, clock())


def inspector_recommendation(
    db: Session, draft: Draft, settings: AppSettings, now: datetime
) -> dict[str, Any]:
    """The inspector's recommendation, cached on the draft per version and day.

    The cache is written with a plain UPDATE that does not bump the draft's version: it is advice
    about the draft, not a change to it, and must not turn a reviewer's approval into a conflict.
    A held (failed) recommendation is not cached.
    """
    # lazy: the agent (pydantic-ai, ~280 modules) loads on first use, not at app start-up
    from agent.service import recommend

    key = f"{draft.version}:{business_day.org_business_date(db, draft.org_id, now).isoformat()}"
    cached = draft.recommendation or {}
    if cached.get("cache_key") == key:
        return dict(cached)
    try:
        rec = recommend(db, draft.org_id, draft_id=draft.id, settings=settings, now=now)
    except LookupError as exc:
        raise drafts.DraftNotFound(f"No draft {draft.id} in your organisation.") from exc
    data: dict[str, Any] = rec.model_dump(mode="json")
    if not data.get("held"):
        data["cache_key"] = key
        db.execute(
            update(Draft)
            .where(Draft.id == draft.id, Draft.version == draft.version)
            .values(recommendation=data)
            .execution_options(synchronize_session=False)
        )
        set_committed_value(draft, "recommendation", data)
        db.commit()
    return data


# --- batches ----------------------------------------------------------------------------------


@router.get("/batches", response_model=list[BatchGroupOut])
def batch_groups(user: BatchApprover, db: DbSession) -> list[BatchGroupOut]:
    """Drafts awaiting review grouped by segment, cadence step and policy reasons."""
    groups = batch.pending_groups(db, user.org_id, user=user)
    return [
        BatchGroupOut(
            key=g.key,
            segment=g.segment,
            step=g.step,
            reasons=g.reasons,
            count=g.count,
            totals=g.totals,
            items=[BatchItemOut(**vars(i)) for i in g.items],
        )
        for g in groups
    ]


@router.post("/batches", response_model=BatchOut, responses={422: {"description": "Bad batch"}})
def decide_batch(
    body: BatchIn, user: BatchApprover, db: DbSession, settings: AppSettings, clock: Clock
) -> BatchOut:
    """Approve or reject many drafts; items over your limit or changed meanwhile are refused."""
    result = batch.decide_batch(
        db,
        user.org_id,
        user=user,
        action=body.action,
        items=[(i.draft_id, i.version) for i in body.items],
        reason=body.reason,
        recheck=drafts.make_recheck(settings, approved_by=[user.role.value]),
        now=clock(),
    )
    db.commit()
    return BatchOut(
        batch_id=result.batch_id,
        action=result.action,
        done=result.done,
        refused=result.refused,
        results=[BatchItemResult(**vars(r)) for r in result.results],
    )


# --- Account 360 and notes --------------------------------------------------------------------


@router.get(
    "/customers/{customer_id}/account360", response_model=dict[str, Any], responses=NOT_FOUND
)
def account360(
    customer_id: DraftId, user: ViewAccount, db: DbSession, settings: AppSettings
) -> dict[str, Any]:
    """Account 360 for a customer: invoices, aging, promises, plans, disputes, notes, activity."""
    customer = get_customer(db, user.org_id, customer_id)
    return account_summary(db, customer, settings)


def account_summary(db: Session, customer: Customer, settings: AppSettings) -> dict[str, Any]:
    """Account 360 (``tools.insights.account360``) as of the organisation's business date."""
    today = business_day.org_business_date(db, customer.org_id)
    result = account_360(db, customer.org_id, customer.id, as_of=today)
    data: dict[str, Any] = result.model_dump(mode="json")
    return data


def _note_out(n: Note) -> NoteOut:
    return NoteOut(
        id=n.id,
        customer_id=n.customer_id,
        invoice_id=n.invoice_id,
        author_user_id=n.author_user_id,
        source=n.source,
        body=n.body,
        mentions=list(n.mentions or []),
        created_at=n.created_at,
    )


@router.get("/customers/{customer_id}/notes", response_model=list[NoteOut], responses=NOT_FOUND)
def list_notes(
    customer_id: DraftId,
    user: ViewAccount,
    db: DbSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[NoteOut]:
    """Internal notes and payer texts on the account, newest first."""
    get_customer(db, user.org_id, customer_id)
    notes = db.scalars(
        select(Note)
        .where(Note.org_id == user.org_id, Note.customer_id == customer_id)
        .order_by(Note.created_at.desc(), Note.id.desc())
        .limit(limit)
    ).all()
    return [_note_out(n) for n in notes]


_MENTION = re.compile(r"@([A-Za-z0-9._-]{2,64})")


def add_note(
    db: Session, user: User, customer_id: int, body: str, invoice_id: int | None = None
) -> Note:
    """An internal note; ``@name`` mentions resolve to users of the org by their e-mail's name."""
    customer = get_customer(db, user.org_id, customer_id)
    if invoice_id is not None:
        inv = db.scalars(
            select(Invoice).where(
                Invoice.id == invoice_id,
                Invoice.org_id == user.org_id,
                Invoice.customer_id == customer.id,
            )
        ).first()
        if inv is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"No invoice {invoice_id} on this customer."
            )
    handles = {h.lower().rstrip(".") for h in _MENTION.findall(body)}
    mentioned: list[int] = []
    if handles:
        for u in db.scalars(select(User).where(User.org_id == user.org_id, User.active.is_(True))):
            if u.email.split("@", 1)[0].lower() in handles:
                mentioned.append(u.id)
    note = Note(
        org_id=user.org_id,
        customer_id=customer.id,
        invoice_id=invoice_id,
        author_user_id=user.id,
        source="internal",
        body=body.strip(),
        mentions=sorted(mentioned),
    )
    db.add(note)
    db.flush()
    audit.record(
        db,
        user.org_id,
        actor=user,
        action="note.added",
        subject_type="customer",
        subject_id=customer.id,
        detail={"note_id": note.id, "mentions": sorted(mentioned)},
    )
    notifications.notify(
        db,
        user.org_id,
        [i for i in mentioned if i != user.id],
        "mention",
        f"{user.name} mentioned you on {customer.name}",
        key=f"note:{note.id}",
        body=note.body,
        link=f"/accounts/{customer.id}",
    )
    return note


@router.post(
    "/customers/{customer_id}/notes", response_model=NoteOut, status_code=201, responses=NOT_FOUND
)
def create_note(customer_id: DraftId, body: NoteIn, user: NoteAuthor, db: DbSession) -> NoteOut:
    """Add an internal note (``@name`` mentions notify colleagues)."""
    if not body.body.strip():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "The note is empty.")
    note = add_note(db, user, customer_id, body.body, body.invoice_id)
    db.commit()
    return _note_out(note)


# --- nudges -----------------------------------------------------------------------------------


def _nudge_out(result: nudges.NudgeResult) -> NudgeOut:
    decision = result.draft.decision or {}
    return NudgeOut(
        draft_id=result.draft.id,
        status=result.draft.status.value,
        outcome=result.draft.decision_outcome,
        reasons=_reasons(decision),
        not_before=_s(decision.get("not_before")),
        notified=result.notified,
        slack_ts=result.slack_ts,
    )


@router.get("/nudges/templates", response_model=list[NudgeTemplateOut])
def nudge_templates(user: ViewAccount) -> list[NudgeTemplateOut]:
    """The pre-approved nudge templates Sales and CSM may send."""
    return [
        NudgeTemplateOut(
            id=t.id, label=t.label, subject=t.subject, body=t.body, personas=list(t.personas)
        )
        for t in nudges.TEMPLATES.values()
    ]


@router.post(
    "/customers/{customer_id}/nudges",
    response_model=NudgeOut,
    status_code=201,
    responses={**NOT_FOUND, 422: {"description": "Unknown template or no contact"}},
)
def send_nudge(
    customer_id: DraftId,
    body: NudgeIn,
    user: Nudger,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
) -> NudgeOut:
    """Send a pre-approved nudge through the nudge rules (quiet hours, Autopilot spacing)."""
    result = nudges.request_nudge(
        db,
        user.org_id,
        user=user,
        customer_id=customer_id,
        template_id=body.template_id,
        invoice_id=body.invoice_id,
        contact_id=body.contact_id,
        settings=settings,
        now=clock(),
    )
    db.commit()
    return _nudge_out(result)


@router.post(
    "/customers/{customer_id}/nudge-suggestions",
    response_model=NudgeOut,
    status_code=201,
    responses={**NOT_FOUND, 422: {"description": "Unknown template, no owner or no contact"}},
)
def suggest_nudge(
    customer_id: DraftId,
    body: NudgeSuggestIn,
    user: Editor,
    db: DbSession,
    settings: AppSettings,
) -> NudgeOut:
    """Suggest a nudge to the account's owner (Sales, else CSM), in Slack with Approve / Dismiss."""
    result = nudges.suggest_nudge(
        db,
        user.org_id,
        user=user,
        customer_id=customer_id,
        template_id=body.template_id,
        invoice_id=body.invoice_id,
        contact_id=body.contact_id,
        settings=settings,
        notify_slack=body.notify_slack,
    )
    db.commit()
    return _nudge_out(result)


# --- outbox -----------------------------------------------------------------------------------


@router.get("/outbox", response_model=list[OutboxOut])
def list_outbox(
    user: ViewQueue,
    db: DbSession,
    status_: Annotated[
        Literal["queued", "claimed", "sent", "failed", "uncertain", "cancelled"] | None,
        Query(alias="status"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[OutboxOut]:
    """Messages approved for delivery and what became of them (newest first)."""
    rows = outbox.list_messages(
        db,
        user.org_id,
        status=OutboxStatus(status_) if status_ else None,
        limit=limit,
        offset=offset,
    )
    return [
        OutboxOut(
            id=m.id,
            draft_id=m.draft_id,
            channel=m.channel.value,
            recipient=m.recipient,
            subject=m.subject,
            message_id=m.message_id,
            status=m.status.value,
            attempts=m.attempts,
            claimed_by=m.claimed_by,
            claimed_at=m.claimed_at,
            sent_at=m.sent_at,
            last_error=m.last_error,
            created_at=m.created_at,
        )
        for m in rows
    ]


class OutboxResolveIn(BaseModel):
    action: Literal["confirm_sent", "resend", "cancel"] = Field(
        description="confirm_sent: you found it in the relay's log or the mailbox; resend: send "
        "it again with the same Message-ID; cancel: do not send it."
    )


@router.post("/outbox/{outbox_id}/resolve", response_model=OutboxOut)
def resolve_outbox(
    outbox_id: DraftId, body: OutboxResolveIn, user: DeliveryManager, db: DbSession
) -> OutboxOut:
    """A person decides for a message whose delivery is uncertain (or failed); audited."""
    m = outbox.resolve(db, user.org_id, outbox_id, user=user, action=body.action)
    db.commit()
    return OutboxOut(
        id=m.id,
        draft_id=m.draft_id,
        channel=m.channel.value,
        recipient=m.recipient,
        subject=m.subject,
        message_id=m.message_id,
        status=m.status.value,
        attempts=m.attempts,
        claimed_by=m.claimed_by,
        claimed_at=m.claimed_at,
        sent_at=m.sent_at,
        last_error=m.last_error,
        created_at=m.created_at,
    )


# --- sending modes ----------------------------------------------------------------------------


def _modes_out(db: Session, org_id: int) -> SendingModesOut:
    state = sending_modes.sending_state(db, org_id)
    return SendingModesOut(
        shadow_mode=state.shadow_mode,
        maintenance=state.maintenance,
        cron_paused=state.cron_paused,
        segments=[
            SegmentModeOut(
                id=s.id,
                name=s.name,
                shadow_mode=s.shadow_mode,
                autopilot_enabled=s.autopilot_enabled,
            )
            for s in state.segments
        ],
    )


@router.get("/sending-modes", response_model=SendingModesOut)
def get_sending_modes(user: ViewConsole, db: DbSession) -> SendingModesOut:
    """The org's Shadow Mode, maintenance and cron pause; each segment's Shadow Mode, Autopilot."""
    return _modes_out(db, user.org_id)


@router.put(
    "/sending-modes",
    response_model=SendingModesOut,
    responses={403: {"description": "Refused by the matrix or the guardrails"}},
)
def set_org_mode(body: OrgSwitchIn, user: ModeSwitcher, db: DbSession) -> SendingModesOut:
    """Flip an organisation switch (audited; the guardrails may refuse)."""
    sending_modes.set_org_switch(db, user.org_id, user=user, switch=body.switch, value=body.value)
    db.commit()
    return _modes_out(db, user.org_id)


@router.get("/shadow-agreement", response_model=shadow_agreement.AgreementReport)
def get_shadow_agreement(
    user: ViewConsole,
    db: DbSession,
    clock: Clock,
    weeks: Annotated[int, Query(ge=1, le=104)] = 12,
) -> shadow_agreement.AgreementReport:
    """Shadow Mode agreement for the organisation, each segment and cadence step: Autopilot
    drafts approved unchanged, edited (edit distance, what changed) and rejected (reasons) over
    the policy's window of recent decisions, week by week, and whether each segment meets the
    policy's minimum for Autopilot."""
    return shadow_agreement.agreement_report(db, user.org_id, weeks=weeks, now=clock())


@router.put(
    "/segments/{segment_id}/sending-modes",
    response_model=SendingModesOut,
    responses={
        **NOT_FOUND,
        403: {
            "description": "Refused by the matrix or the guardrails: `detail`, `reasons` and, "
            "when enabling Autopilot, `shadow_agreement` (the figures the guardrails read)"
        },
    },
)
def set_segment_mode(
    segment_id: DraftId, body: SegmentSwitchIn, user: ModeSwitcher, db: DbSession, clock: Clock
) -> SendingModesOut:
    """Flip a segment's Shadow Mode or Autopilot (audited; enabling Autopilot is gated)."""
    sending_modes.set_segment_switch(
        db,
        user.org_id,
        segment_id,
        user=user,
        switch=body.switch,
        value=body.value,
        now=clock(),
    )
    db.commit()
    return _modes_out(db, user.org_id)
