"""The collector's workspace in the panel: promises, payment plans and the approvals inbox.

Server-rendered pages over the commitment tools (``tools.commitments.promises``,
``tools.commitments.plans``,
``tools.inbox.approvals``): "Add promise" from an invoice, the queue or Account 360; the promise
inspector (Mark kept / Mark missed / Send reminder, the reminder being a draft like any other,
decided by the guardrails); the "Create payment plan" card (prefilled from a promise, the schedule
templates the policy allows, the guardrails' answer shown inline before submitting); the plan
panel; and the approvals inbox for Controllers and Legal, where every decision needs a rationale.

Forms post with a CSRF token and redirect (post/redirect/get). Buttons are shown only to those the
access matrix lets press them, and the tools check again where the write happens. Money is shown
in its own currency, never converted; statuses and rules are shown in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import AppSettings, Clock, CsrfChecked, DbSession, can, require
from api.pages import flash as _flash
from api.pages import render_page as _render
from memory.models import (
    Approval,
    Contact,
    Customer,
    DraftKind,
    DraftPersona,
    Invoice,
    InvoiceStatus,
    Organisation,
    PaymentPlan,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
    User,
)
from memory.money import MoneyError, format_money, parse_amount
from tools.commitments import plans, promises
from tools.commitments.plans import InstallmentSpec, PolicyRefused
from tools.commitments.promises import CommitmentError, org_today
from tools.drafts.service import DraftError
from tools.inbox import approvals
from tools.kit import labels
from tools.kit.authz import PermissionDenied
from tools.ledger.policy_overrides import policy_set_for
from tools.ledger.users import own_limit
from tools.portal import access as portal

router = APIRouter(include_in_schema=False)

PageId = Annotated[int, Path(ge=1, le=2**31 - 1)]
QueryId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
AccountViewer = Annotated[User, Depends(require("view_account"))]
PromiseManager = Annotated[User, Depends(require("manage_promises"))]
PlanManager = Annotated[User, Depends(require("manage_plans"))]
PaymentPoster = Annotated[User, Depends(require("post_payment"))]
PlanApprover = Annotated[User, Depends(require("approve_plan"))]
PlanProposer = Annotated[User, Depends(require("propose_plan"))]

INTERVALS = {1: "monthly", 2: "every two months", 3: "quarterly"}


def _refused(request: Request, db: Session, exc: Exception) -> None:
    """Roll back and flash the tool's sentence (and the guardrails' own sentences)."""
    db.rollback()
    reasons: list[str] = []
    if isinstance(exc, PolicyRefused):
        outcome = exc.decision.get("outcome")
        reasons = [
            str(r.get("message"))
            for r in exc.decision.get("reasons") or []
            if r.get("outcome") == outcome and r.get("message")
        ]
    _flash(request, str(exc), "bad", reasons)


def _customer(db: Session, org_id: int, customer_id: int | None) -> Customer:
    customer = db.get(Customer, customer_id) if customer_id else None
    if customer is None or customer.org_id != org_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such customer in your organisation.")
    return customer


def _open_invoices(db: Session, org_id: int, customer_id: int) -> list[Invoice]:
    return list(
        db.scalars(
            select(Invoice)
            .where(
                Invoice.org_id == org_id,
                Invoice.customer_id == customer_id,
                Invoice.status == InvoiceStatus.OPEN,
                Invoice.balance_minor > 0,
            )
            .order_by(Invoice.due_date, Invoice.id)
        )
    )


def _contacts(db: Session, org_id: int, customer_id: int) -> list[Contact]:
    return list(
        db.scalars(
            select(Contact)
            .where(Contact.org_id == org_id, Contact.customer_id == customer_id)
            .order_by(Contact.is_primary.desc(), Contact.name)
        )
    )


def _form_ids(values: list[str]) -> list[int]:
    out: list[int] = []
    for v in values:
        if v.isdigit() and 0 < int(v) < 2**31:
            out.append(int(v))
    return out


# --- promises -------------------------------------------------------------------------------------


@router.get("/promises/new", response_class=HTMLResponse)
def promise_form(
    request: Request,
    user: PromiseManager,
    db: DbSession,
    clock: Clock,
    customer_id: QueryId = None,
    invoice_id: QueryId = None,
) -> HTMLResponse:
    """The "Add promise" form, from an invoice (``invoice_id``) or an account (``customer_id``)."""
    if invoice_id is not None:
        invoice = db.get(Invoice, invoice_id)
        if invoice is None or invoice.org_id != user.org_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "No such invoice in your organisation.")
        customer_id = invoice.customer_id
    customer = _customer(db, user.org_id, customer_id)
    invoices = _open_invoices(db, user.org_id, customer.id)
    today = org_today(db, user.org_id, clock())
    selected = [invoice_id] if invoice_id else [i.id for i in invoices[:1]]
    return _render(
        request,
        "promise_new.html",
        user,
        customer=customer,
        invoices=invoices,
        selected=selected,
        contacts=_contacts(db, user.org_id, customer.id),
        today=today,
        default_date=today + timedelta(days=7),
        grace_days=promises.default_grace_days(db, user.org_id),
    )


@router.post("/promises/new")
def promise_add(
    request: Request,
    user: PromiseManager,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    customer_id: Annotated[int, Form(ge=1, le=2**31 - 1)],
    amount: Annotated[str, Form(max_length=40)],
    promised_date: Annotated[date, Form()],
    invoice_ids: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI form default
    contact_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Record the promise; refusals come back on the form with the reason, nothing written."""
    back = f"/promises/new?customer_id={customer_id}"
    customer = _customer(db, user.org_id, customer_id)
    ids = _form_ids(invoice_ids)
    chosen = [i for i in _open_invoices(db, user.org_id, customer.id) if i.id in ids]
    currency = chosen[0].currency if chosen else (customer_currency(db, customer))
    try:
        minor = parse_amount(amount, currency)
        promise = promises.add_promise(
            db,
            user.org_id,
            customer_id=customer.id,
            amount_minor=minor,
            promised_date=promised_date,
            actor=user,
            invoice_ids=ids,
            contact_id=int(contact_id) if contact_id.isdigit() else None,
            currency=currency,
            now=clock(),
        )
    except (CommitmentError, MoneyError, PermissionDenied) as exc:
        _refused(request, db, exc)
        return RedirectResponse(back, status_code=303)
    db.commit()
    _flash(request, f"Promise of {format_money(promise.amount_minor, promise.currency)} logged.")
    return RedirectResponse(f"/promises/{promise.id}", status_code=303)


def customer_currency(db: Session, customer: Customer) -> str:
    org = db.get(Organisation, customer.org_id)
    return org.default_currency if org is not None else "USD"


@dataclass(frozen=True)
class PromiseView:
    promise: PromiseToPay
    status_label: str
    deadline: date
    covered: list[Invoice]
    still_chased: list[Invoice]
    paid_minor: int
    contact: Contact | None
    plan: PaymentPlan | None


def _promise_view(db: Session, org_id: int, promise_id: int) -> PromiseView:
    p = promises.get_promise(db, org_id, promise_id)
    covered = promises.covered_invoices(p)
    rest = [
        i
        for i in p.invoices
        if i not in covered and i.status == InvoiceStatus.OPEN and i.balance_minor > 0
    ]
    plan = db.scalars(
        select(PaymentPlan)
        .where(PaymentPlan.org_id == org_id, PaymentPlan.from_promise_id == p.id)
        .order_by(PaymentPlan.id.desc())
        .limit(1)
    ).first()
    return PromiseView(
        promise=p,
        status_label=labels.promise_label(p.status),
        deadline=promises.promise_deadline(p),
        covered=sorted(covered, key=lambda i: (i.due_date, i.id)),
        still_chased=sorted(rest, key=lambda i: (i.due_date, i.id)),
        paid_minor=promises.paid_toward(db, p),
        contact=db.get(Contact, p.contact_id) if p.contact_id else None,
        plan=plan,
    )


@router.get("/promises/{promise_id}", response_class=HTMLResponse)
def promise_page(
    request: Request, promise_id: PageId, user: AccountViewer, db: DbSession
) -> HTMLResponse:
    """The promise inspector: amount, date, status, what it pauses, and what to do next."""
    view = _promise_view(db, user.org_id, promise_id)
    customer = _customer(db, user.org_id, view.promise.customer_id)
    return _render(request, "promise.html", user, view=view, customer=customer)


@router.post("/promises/{promise_id}/reminder")
def promise_reminder(
    request: Request,
    promise_id: PageId,
    user: PromiseManager,
    db: DbSession,
    clock: Clock,
    settings: AppSettings,
    _csrf: CsrfChecked,
) -> Response:
    """Draft a reminder of the promise: written, grounded and decided like any draft (Shadow
    Mode review, quiet hours, caps); it waits in the review queue, nothing is sent from here."""
    # lazy: the agent (pydantic-ai, ~280 modules) loads on the first draft, not at app start-up
    from agent.casefile import TaskError, build_task
    from agent.deps import AgentDeps
    from agent.drafter import Drafter, run_sync

    now = clock()
    back = f"/promises/{promise_id}"
    view = _promise_view(db, user.org_id, promise_id)
    p = view.promise
    if p.status != PromiseStatus.OPEN:
        _flash(request, "Only an open promise can be reminded of.", "bad")
        return RedirectResponse(back, status_code=303)
    targets = [i for i in view.covered if i.status == InvoiceStatus.OPEN and i.balance_minor > 0]
    if not targets:
        _flash(request, "Nothing is left to pay on this promise's invoices.", "bad")
        return RedirectResponse(back, status_code=303)
    as_of = org_today(db, user.org_id, now)
    try:
        task = build_task(
            db,
            user.org_id,
            settings,
            as_of=as_of,
            customer_id=p.customer_id,
            invoice_ids=[i.id for i in targets],
            contact_id=p.contact_id,
            persona=DraftPersona.COLLECTOR,
            kind=DraftKind.FOLLOW_UP,
            template="promise_reminder",
            promise_id=p.id,
            run_key=promises.REMINDER_RUN_KEY.format(promise_id=p.id),
        )
    except TaskError as exc:
        db.rollback()
        _flash(request, str(exc), "bad")
        return RedirectResponse(back, status_code=303)
    deps = AgentDeps(session=db, org_id=user.org_id, settings=settings, as_of=as_of, now=now)
    drafter = Drafter(settings, actor=user)
    result = run_sync(
        drafter.draft(deps, task, persona=DraftPersona.COLLECTOR, kind=DraftKind.FOLLOW_UP)
    )
    db.commit()
    if result.draft_id is None:
        _flash(request, "The reminder could not be drafted; try again later.", "bad")
        return RedirectResponse(back, status_code=303)
    _flash(request, "Reminder drafted: it waits for review like any message.")
    return RedirectResponse(f"/drafts/{result.draft_id}", status_code=303)


@router.post("/promises/{promise_id}/{verdict}")
def promise_resolve(
    request: Request,
    promise_id: PageId,
    verdict: Annotated[str, Path(pattern="^(kept|missed)$")],
    user: PromiseManager,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
) -> Response:
    """Mark kept (paid outside the ledger's sight) or missed (its invoices are chased again)."""
    mark = promises.mark_kept if verdict == "kept" else promises.mark_missed
    try:
        mark(db, user.org_id, promise_id, actor=user, now=clock())
    except (CommitmentError, PermissionDenied) as exc:
        _refused(request, db, exc)
        return RedirectResponse(f"/promises/{promise_id}", status_code=303)
    db.commit()
    _flash(
        request,
        "Marked kept."
        if verdict == "kept"
        else "Marked missed: its invoices are back in the cadence with a follow-up.",
    )
    return RedirectResponse(f"/promises/{promise_id}", status_code=303)


# --- payment plans --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleTemplate:
    """A schedule shape the policy allows (count and spacing within its caps)."""

    key: str
    count: int
    interval_months: int

    @property
    def label(self) -> str:
        return f"{labels.plural(self.count, 'installment')}, {INTERVALS[self.interval_months]}"


def schedule_templates(db: Session, org_id: int) -> list[ScheduleTemplate]:
    """The plan templates the organisation's policy allows: counts up to ``max_installments``
    whose span stays within ``max_months``."""
    pl = policy_set_for(db, org_id).plans
    out: list[ScheduleTemplate] = []
    for interval in (1, 2, 3):
        for count in (2, 3, 4, 6, 9, 12):
            if count <= pl.max_installments and (count - 1) * interval + 1 <= pl.max_months:
                out.append(ScheduleTemplate(f"{count}x{interval}", count, interval))
    return out


@dataclass
class PlanForm:
    customer: Customer
    invoices: list[Invoice]
    selected: list[int]
    template: str
    first_due: date
    discount: str
    non_standard: bool
    terms_note: str
    promise: PromiseToPay | None


def _schedule(
    form: PlanForm, templates: list[ScheduleTemplate]
) -> tuple[list[InstallmentSpec], int, str]:
    chosen = [i for i in form.invoices if i.id in form.selected]
    if not chosen:
        raise CommitmentError("Choose the invoices the plan settles.")
    currencies = {i.currency for i in chosen}
    if len(currencies) > 1:
        raise CommitmentError(
            f"The invoices are in {', '.join(sorted(currencies))}; a plan settles one currency, "
            "so make one plan per currency."
        )
    currency = chosen[0].currency
    balance = sum(i.balance_minor for i in chosen)
    discount = parse_amount(form.discount, currency) if form.discount.strip() else 0
    shape = next((t for t in templates if t.key == form.template), None)
    if shape is None:
        raise CommitmentError("Pick one of the schedules the policy allows.")
    specs = plans.split_evenly(
        balance - discount, shape.count, form.first_due, interval_months=shape.interval_months
    )
    return specs, discount, currency


def _preview(
    db: Session, user: User, form: PlanForm, templates: list[ScheduleTemplate], today: date
) -> dict[str, Any]:
    """What the guardrails will say, before anything is saved (the same facts as proposing)."""
    try:
        specs, discount, currency = _schedule(form, templates)
    except (CommitmentError, MoneyError) as exc:
        return {"error": str(exc), "schedule": [], "reasons": [], "outcome": None}
    chosen = [i for i in form.invoices if i.id in form.selected]
    balance = sum(i.balance_minor for i in chosen)
    facts = plans.plan_terms_facts(
        total_minor=balance,
        currency=currency,
        installments=specs,
        discount_minor=discount,
        non_standard_terms=form.non_standard,
        start=today,
    )
    facts["proposed_via"] = "staff"
    facts["actor_role"] = user.role.value
    facts["actor_limit_minor"] = own_limit(user, currency)
    decision = plans.decide(db, user.org_id, "offer_plan", facts)
    outcome = decision["outcome"]
    reasons = [
        str(r["message"])
        for r in decision.get("reasons") or []
        if r.get("outcome") in ("block", "needs_approval") and r.get("message")
    ]
    if outcome == "allow" and not can(user, "manage_plans"):
        outcome = "needs_approval"
    escalation = policy_set_for(db, user.org_id).plans.escalation_role
    waits_for = ", ".join(decision.get("approver_roles") or [escalation])
    headline = {
        "allow": "Within your authority: the plan starts as soon as you submit it.",
        "needs_approval": f"The plan will wait for {waits_for} approval before the payer sees it.",
        "block": "The guardrails will not allow this plan as it stands.",
    }.get(outcome, "The guardrails did not answer; the plan cannot be submitted.")
    return {
        "error": None,
        "schedule": [(s.due_date, format_money(s.amount_minor, currency)) for s in specs],
        "total": format_money(balance - discount, currency),
        "currency": currency,
        "reasons": reasons,
        "outcome": outcome,
        "headline": headline,
    }


def _plan_form(
    db: Session,
    user: User,
    *,
    customer_id: int | None,
    promise_id: int | None,
    invoice_id: int | None,
    today: date,
) -> PlanForm:
    promise = None
    if promise_id is not None:
        promise = promises.get_promise(db, user.org_id, promise_id)
        customer_id = promise.customer_id
    if invoice_id is not None:
        inv = db.get(Invoice, invoice_id)
        if inv is None or inv.org_id != user.org_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "No such invoice in your organisation.")
        customer_id = inv.customer_id
    customer = _customer(db, user.org_id, customer_id)
    invoices = _open_invoices(db, user.org_id, customer.id)
    if promise is not None:
        selected = [i.id for i in promise.invoices if i in invoices]
        first = max(promise.promised_date, today)
    else:
        selected = [invoice_id] if invoice_id else [i.id for i in invoices[:1]]
        first = today + timedelta(days=7)
    return PlanForm(customer, invoices, selected, "3x1", first, "", False, "", promise)


@router.get("/plans/new", response_class=HTMLResponse)
def plan_form(
    request: Request,
    user: PlanProposer,
    db: DbSession,
    clock: Clock,
    customer_id: QueryId = None,
    promise_id: QueryId = None,
    invoice_id: QueryId = None,
) -> HTMLResponse:
    """The "Create payment plan" card (``promise_id``: prefilled from that promise)."""
    today = org_today(db, user.org_id, clock())
    form = _plan_form(
        db, user, customer_id=customer_id, promise_id=promise_id, invoice_id=invoice_id, today=today
    )
    return _plan_page(request, db, user, form, today)


def _plan_page(
    request: Request, db: Session, user: User, form: PlanForm, today: date
) -> HTMLResponse:
    templates = schedule_templates(db, user.org_id)
    open_promises = list(
        db.scalars(
            select(PromiseToPay)
            .where(
                PromiseToPay.org_id == user.org_id,
                PromiseToPay.customer_id == form.customer.id,
                PromiseToPay.status.in_([PromiseStatus.OPEN, PromiseStatus.MISSED]),
            )
            .order_by(PromiseToPay.promised_date.desc())
        )
    )
    return _render(
        request,
        "plan_new.html",
        user,
        form=form,
        templates=templates,
        preview=_preview(db, user, form, templates, today),
        open_promises=open_promises,
        proposes_only=not can(user, "manage_plans"),
        today=today,
    )


@router.post("/plans/new", response_model=None)
def plan_submit(
    request: Request,
    user: PlanProposer,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    customer_id: Annotated[int, Form(ge=1, le=2**31 - 1)],
    template: Annotated[str, Form(max_length=10)],
    first_due: Annotated[date, Form()],
    action: Annotated[str, Form(pattern="^(check|submit)$")] = "check",
    invoice_ids: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI form default
    discount: Annotated[str, Form(max_length=40)] = "",
    non_standard_terms: Annotated[str, Form(max_length=5)] = "",
    terms_note: Annotated[str, Form(max_length=5000)] = "",
    promise_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """ "Check with the guardrails" re-renders the card with their answer; "Submit" proposes."""
    now = clock()
    today = org_today(db, user.org_id, now)
    customer = _customer(db, user.org_id, customer_id)
    promise = None
    if promise_id.isdigit():
        promise = promises.get_promise(db, user.org_id, int(promise_id))
    form = PlanForm(
        customer,
        _open_invoices(db, user.org_id, customer.id),
        _form_ids(invoice_ids),
        template,
        first_due,
        discount,
        non_standard_terms == "on",
        terms_note,
        promise,
    )
    if action == "check":
        return _plan_page(request, db, user, form, today)
    try:
        specs, discount_minor, _cur = _schedule(form, schedule_templates(db, user.org_id))
        out = plans.propose_plan(
            db,
            user.org_id,
            customer_id=customer.id,
            invoice_ids=form.selected,
            installments=specs,
            proposer=user,
            discount_minor=discount_minor,
            non_standard_terms=form.non_standard,
            terms_note=terms_note or None,
            from_promise_id=promise.id if promise else None,
            for_approval=not can(user, "manage_plans"),
            now=now,
        )
    except (CommitmentError, MoneyError, PermissionDenied) as exc:
        _refused(request, db, exc)
        return _plan_page(request, db, user, form, today)
    db.commit()
    if out.plan.status == PlanStatus.ACTIVE:
        _flash(request, "Plan created and active.")
    else:
        who = ", ".join(out.awaiting_roles) or "an approver"
        _flash(request, f"Plan proposed: it waits for {who} approval.", "ok", [out.message])
    return RedirectResponse(f"/plans/{out.plan.id}", status_code=303)


@router.get("/plans/{plan_id}", response_class=HTMLResponse)
def plan_page(
    request: Request, plan_id: PageId, user: AccountViewer, db: DbSession, clock: Clock
) -> HTMLResponse:
    """The plan panel: schedule, adherence, next due, and what the caller may do with it."""
    plan = plans.get_plan(db, user.org_id, plan_id)
    today = org_today(db, user.org_id, clock())
    customer = _customer(db, user.org_id, plan.customer_id)
    proposer = db.get(User, plan.proposed_by_user_id) if plan.proposed_by_user_id else None
    approver = db.get(User, plan.approved_by_user_id) if plan.approved_by_user_id else None
    decision = plan.decision or {}
    return _render(
        request,
        "plan.html",
        user,
        plan=plan,
        customer=customer,
        summary=plans.summarize(plan, today),
        status_label=labels.plan_label(plan.status),
        invoices=plans.invoices_of(plan),
        proposer=proposer,
        approver=approver,
        reasons=[
            str(r["message"])
            for r in decision.get("reasons") or []
            if decision.get("outcome") in ("needs_approval", "block")
            and r.get("outcome") == decision.get("outcome")
            and r.get("message")
        ],
        rationales=_rationales(db, plan),
        awaiting=list(decision.get("approver_roles") or []),
        running=plan.status in plans.RUNNING,
        undecided=plan.status in plans.UNDECIDED,
    )


def _rationales(db: Session, plan: PaymentPlan) -> list[str]:
    """Who decided the plan and why, as written in the approvals inbox."""
    out: list[str] = []
    for row in db.scalars(
        select(Approval)
        .where(
            Approval.org_id == plan.org_id,
            Approval.subject_type == "plan",
            Approval.subject_id == plan.id,
        )
        .order_by(Approval.id)
    ):
        who = db.get(User, row.approver_user_id)
        verb = "Approved" if row.outcome == "approved" else "Turned down"
        name = f"{who.name} ({who.role.value})" if who else "someone"
        out.append(f"{verb} by {name}" + (f": {row.reason}" if row.reason else "."))
    return out


@router.post("/plans/{plan_id}/{action}")
def plan_action(
    request: Request,
    plan_id: PageId,
    action: Annotated[str, Path(pattern="^(cancel|complete|resend-link)$")],
    user: PlanManager,
    db: DbSession,
    clock: Clock,
    settings: AppSettings,
    _csrf: CsrfChecked,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Cancel (with a reason), complete, or send the payer a fresh mini-portal link."""
    now = clock()
    try:
        if action == "cancel":
            if not reason.strip():
                raise CommitmentError("Say why the plan is cancelled.")
            plans.cancel_plan(db, user.org_id, plan_id, actor=user, reason=reason.strip(), now=now)
            message = "Plan cancelled: what is still open goes back into the cadence."
        elif action == "complete":
            plans.complete_plan(db, user.org_id, plan_id, actor=user, now=now)
            message = "Plan completed."
        else:
            sent = portal.resend_plan_link(
                db, user.org_id, plan_id, actor=user, base_url=settings.public_base_url, now=now
            )
            message = (
                f"Link not sent: {sent.skipped}."
                if sent.skipped
                else "A fresh link to the plan is on its way to the payer."
            )
    except (CommitmentError, PermissionDenied) as exc:
        _refused(request, db, exc)
        return RedirectResponse(f"/plans/{plan_id}", status_code=303)
    db.commit()
    _flash(request, message)
    return RedirectResponse(f"/plans/{plan_id}", status_code=303)


@router.post("/plans/{plan_id}/installments/{seq}/paid")
def installment_paid(
    request: Request,
    plan_id: PageId,
    seq: Annotated[int, Path(ge=1, le=1000)],
    user: PaymentPoster,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    reference: Annotated[str, Form(max_length=120)] = "",
) -> Response:
    """Record an installment paid outside Stripe (bank transfer, cheque) as a payment."""
    try:
        plans.mark_installment_paid(
            db, user.org_id, plan_id, seq, actor=user, reference=reference or None, now=clock()
        )
    except (CommitmentError, PermissionDenied) as exc:
        _refused(request, db, exc)
        return RedirectResponse(f"/plans/{plan_id}", status_code=303)
    db.commit()
    _flash(request, f"Installment {seq} recorded as paid.")
    return RedirectResponse(f"/plans/{plan_id}", status_code=303)


# --- the approvals inbox --------------------------------------------------------------------------


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(
    request: Request, user: PlanApprover, db: DbSession, clock: Clock
) -> HTMLResponse:
    """What waits for the caller's decision, oldest first, with the one-business-day target."""
    now = clock()
    locale = labels.locale_from_header(request.headers.get("accept-language"))
    items = approvals.pending_items(
        db, user.org_id, viewer=user, now=now, day=lambda d: labels.day(d, locale=locale)
    )
    return _render(
        request,
        "approvals.html",
        user,
        items=items,
        overdue=sum(1 for i in items if i.overdue),
        now=now,
    )


@router.post("/approvals/{kind}/{subject_id}")
def approvals_decide(
    request: Request,
    kind: Annotated[str, Path(pattern="^(plan|credit|draft)$")],
    subject_id: PageId,
    user: PlanApprover,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    verdict: Annotated[str, Form(pattern="^(approve|reject)$")],
    rationale: Annotated[str, Form(max_length=approvals.MAX_RATIONALE_CHARS + 10)] = "",
) -> Response:
    """Approve or reject with a rationale (required); the owning tool checks everything else."""
    try:
        message = approvals.decide(
            db,
            user.org_id,
            kind,
            subject_id,
            user=user,
            approve=verdict == "approve",
            rationale=rationale,
            now=clock(),
        )
    except (CommitmentError, DraftError, PermissionDenied) as exc:
        _refused(request, db, exc)
        return RedirectResponse("/approvals", status_code=303)
    db.commit()
    _flash(request, message)
    return RedirectResponse("/approvals", status_code=303)
