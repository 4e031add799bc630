"""Administration: people (invitations, personas, limits, owned accounts), segments, cadences.

JSON under ``/api/admin/...`` and pages under ``/people``, ``/segments`` for the same tools. Every
write is checked again in the tool (``tools/admin``), where it happens; the routes' own guards
decide who sees the pages. Refusals answer 4xx with a sentence and nothing is saved.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.deps import AppSettings, Clock, CsrfChecked, DbSession, check_csrf, require
from api.pages import flash as _flash
from api.pages import render_page as _render
from memory.errors import PlixoError
from memory.models import (
    Cadence,
    Customer,
    Organisation,
    Persona,
    Segment,
    SegmentRule,
    SendingDomain,
    User,
)
from policies.types import PolicyError
from tools.admin import people as people_tool
from tools.admin import policy_apply as pa
from tools.admin import readiness_ops
from tools.admin import segments as seg_tool
from tools.admin.people import PeopleError
from tools.admin.units import UnitError, format_amount, format_percent, parse_money
from tools.delivery import sending_domain as sd
from tools.delivery.dkim import forget_keys
from tools.delivery.smtp import DeliveryError
from tools.ledger.policy_overrides import PolicyChangeRefused, active_policy_set, history
from tools.outreach.sending_modes import sending_state

router = APIRouter()
Manager = Annotated[User, Depends(require("manage_users"))]
Viewer = Annotated[User, Depends(require("view_console"))]
SegmentEditor = Annotated[User, Depends(require("edit_segment"))]
CadenceEditor = Annotated[User, Depends(require("edit_cadence"))]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
RowId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class InviteIn(BaseModel):
    email: str = Field(max_length=254)
    name: str = Field(max_length=200)
    role: str = Field(max_length=40)
    approval_limits: dict[str, str] | None = None


class PersonPatch(BaseModel):
    role: str | None = Field(default=None, max_length=40)
    approval_limits: dict[str, str] | None = None
    clear_limits: bool = False
    active: bool | None = None
    owned_customer_ids: list[RowId] | None = Field(default=None, max_length=10_000)


def _person(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role.value,
        "active": user.active,
        "pending": user.password_hash is None,
        "approval_limits": people_tool.describe_limits(user.approval_limits),
    }


def _refusal(exc: HTTPException | PlixoError) -> str:
    """What a form shows when its write was refused: the API's message, whichever way it came."""
    return str(exc.detail) if isinstance(exc, HTTPException) else str(exc)


def _invite(db: DbSession, settings: Any, user: User, body: InviteIn, now: Any) -> User:
    """Invite and e-mail in one transaction: if the e-mail cannot be sent, nothing is saved."""
    try:
        issued = people_tool.invite(
            db,
            user.org_id,
            user,
            email=body.email,
            name=body.name,
            role=body.role,
            approval_limits=body.approval_limits,
            now=now,
        )
        org = db.get(Organisation, user.org_id)
        assert org is not None
        people_tool.send_invitation(settings, org, issued)
    except DeliveryError as exc:
        db.rollback()
        raise HTTPException(
            502, f"The invitation e-mail could not be sent ({exc}); nothing was saved."
        ) from None
    db.commit()
    return issued.user


@router.get("/api/admin/people", tags=["admin"])
def list_people(user: Manager, db: DbSession) -> list[dict[str, Any]]:
    return [_person(u) for u in people_tool.people(db, user.org_id)]


@router.post("/api/admin/people", status_code=201, tags=["admin"])
def invite_person(
    body: InviteIn, user: Manager, db: DbSession, settings: AppSettings, clock: Clock
) -> dict[str, Any]:
    """Invite a person: a one-time link valid 72 hours is e-mailed to them."""
    return _person(_invite(db, settings, user, body, clock()))


def _apply_patch(db: DbSession, user: User, person_id: int, body: PersonPatch) -> User:
    org = user.org_id
    person = db.get(User, person_id)
    if person is None or person.org_id != org:
        raise PeopleError("No such person in this organisation.", 404)
    if body.role is not None:
        people_tool.set_persona(db, org, user, person_id, body.role)
    if body.approval_limits is not None or body.clear_limits:
        people_tool.set_limits(
            db, org, user, person_id, None if body.clear_limits else body.approval_limits
        )
    if body.owned_customer_ids is not None:
        people_tool.set_owned_accounts(db, org, user, person_id, body.owned_customer_ids)
    if body.active is not None:
        people_tool.set_active(db, org, user, person_id, body.active)
    return person


@router.patch("/api/admin/people/{person_id}", tags=["admin"])
def change_person(person_id: Id, body: PersonPatch, user: Manager, db: DbSession) -> dict[str, Any]:
    """Change persona, approval limits, owned accounts or active state (all or nothing)."""
    person = _apply_patch(db, user, person_id, body)
    db.commit()
    return _person(person)


@router.post("/api/admin/people/{person_id}/resend", tags=["admin"])
def resend_invitation(
    person_id: Id, user: Manager, db: DbSession, settings: AppSettings, clock: Clock
) -> dict[str, Any]:
    try:
        issued = people_tool.resend(db, user.org_id, user, person_id, clock())
        org = db.get(Organisation, user.org_id)
        assert org is not None
        people_tool.send_invitation(settings, org, issued)
    except DeliveryError as exc:
        db.rollback()
        raise HTTPException(
            502, f"The e-mail could not be sent ({exc}); nothing changed."
        ) from None
    db.commit()
    return _person(issued.user)


# --- invitation links (public: the token is the credential) ---------------------------------


@router.get("/invitations/{token}", response_class=HTMLResponse, include_in_schema=False)
def invitation_page(request: Request, token: str, db: DbSession, clock: Clock) -> HTMLResponse:
    try:
        row = people_tool.invitation_for(db, token, clock())
    except PeopleError as exc:
        return _render(request, "invitation.html", None, exc.status_code, problem=str(exc))
    person = db.get(User, row.user_id)
    return _render(request, "invitation.html", None, person=person, token=token, problem=None)


@router.post("/invitations/{token}", include_in_schema=False)
def invitation_accept(
    request: Request,
    token: str,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    password: Annotated[str, Form(max_length=200)],
    confirm: Annotated[str, Form(max_length=200)],
) -> Response:
    if password != confirm:
        return _invitation_problem(
            request, db, token, clock, "The two passwords differ; type them again."
        )
    try:
        people_tool.accept(db, token, password, clock())
    except PeopleError as exc:
        db.rollback()
        return _invitation_problem(request, db, token, clock, str(exc), exc.status_code)
    db.commit()
    _flash(request, "Your password is set; log in with your e-mail and it.")
    return RedirectResponse("/login", status_code=303)


def _invitation_problem(
    request: Request, db: DbSession, token: str, clock: Clock, message: str, status_code: int = 422
) -> HTMLResponse:
    try:
        row = people_tool.invitation_for(db, token, clock())
        person = db.get(User, row.user_id)
    except PeopleError:
        person = None
    return _render(
        request,
        "invitation.html",
        None,
        status_code,
        person=person,
        token=token if person else None,
        problem=message,
    )


# --- the People page ------------------------------------------------------------------------


@router.get("/people", response_class=HTMLResponse, include_in_schema=False)
def people_page(request: Request, user: Manager, db: DbSession) -> HTMLResponse:
    customers = db.scalars(
        select(Customer).where(Customer.org_id == user.org_id).order_by(Customer.name)
    ).all()
    return _render(
        request,
        "people.html",
        user,
        people=[_person(u) for u in people_tool.people(db, user.org_id)],
        customers=customers,
        personas=[p.value for p in people_tool.Persona],
    )


@router.post("/people", include_in_schema=False)
def people_invite_form(
    request: Request,
    user: Manager,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
    _csrf: CsrfChecked,
    email: Annotated[str, Form(max_length=254)],
    name: Annotated[str, Form(max_length=200)],
    role: Annotated[str, Form(max_length=40)],
    limit_currency: Annotated[str, Form(max_length=3)] = "",
    limit_amount: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    limits = {limit_currency: limit_amount} if limit_currency and limit_amount else None
    try:
        person = _invite(
            db,
            settings,
            user,
            InviteIn(email=email, name=name, role=role, approval_limits=limits),
            clock(),
        )
        _flash(request, f"Invitation sent to {person.email}.")
    except (HTTPException, PlixoError) as exc:
        _flash(request, _refusal(exc), "bad")
    return RedirectResponse("/people", status_code=303)


@router.post("/people/{person_id}", include_in_schema=False)
def people_change_form(
    request: Request,
    person_id: Id,
    user: Manager,
    db: DbSession,
    _csrf: CsrfChecked,
    role: Annotated[str, Form(max_length=40)] = "",
    limits: Annotated[str, Form(max_length=400)] = "",
    active: Annotated[str, Form(max_length=5)] = "",
    accounts: Annotated[list[int] | None, Form()] = None,
    set_accounts: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    """One form per person: persona, limits ("25,000.00 USD; 20,000.00 EUR"), accounts, active."""
    try:
        parsed = _limits_text(limits) if limits.strip() else None
        patch = PersonPatch(
            role=role or None,
            approval_limits=parsed,
            active=None if not active else active == "true",
            owned_customer_ids=(accounts or []) if set_accounts else None,
        )
        _apply_patch(db, user, person_id, patch)
        db.commit()
        _flash(request, "Saved.")
    except PeopleError as exc:
        db.rollback()
        _flash(request, str(exc), "bad")
    return RedirectResponse("/people", status_code=303)


def _limits_text(text: str) -> dict[str, str]:
    """ "25,000.00 USD; 20,000.00 EUR" -> {"USD": "25,000.00 USD", "EUR": "20,000.00 EUR"}."""

    out: dict[str, str] = {}
    for part in text.split(";"):
        if part.strip():
            try:
                _, currency = parse_money(part)
            except UnitError as exc:
                raise PeopleError(str(exc)) from None
            out[currency] = part.strip()
    return out


# --- segments and cadences ------------------------------------------------------------------


class SegmentIn(BaseModel):
    name: str = Field(max_length=120)
    rule: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=100, ge=0, le=10_000)
    cadence_id: RowId | None = None


class CadenceIn(BaseModel):
    name: str = Field(max_length=120)
    steps: list[dict[str, Any]] = Field(max_length=30)


def _segment_out(db: DbSession, org: Organisation, segment: Any) -> dict[str, Any]:

    row = db.get(SegmentRule, segment.id)
    rule = row.rule if row else {}
    return {
        "id": segment.id,
        "name": segment.name,
        "priority": row.priority if row else None,
        "rule": rule,
        "rule_text": seg_tool.describe_rule(rule, org.default_currency),
        "cadence": segment.cadence.name if segment.cadence else None,
        "cadence_id": segment.cadence_id,
        "shadow_mode": segment.shadow_mode,
        "autopilot_enabled": segment.autopilot_enabled,
    }


def _cadence_out(cadence: Any, modes: dict[int, str]) -> dict[str, Any]:
    return {
        "id": cadence.id,
        "name": cadence.name,
        "steps": [
            {
                "offset": s.day_offset,
                "channel": s.channel.value,
                "template": s.template,
                "tone": s.tone,
                "mode": modes.get(s.id, "segment"),
            }
            for s in cadence.steps
        ],
    }


def _org(db: DbSession, user: User) -> Organisation:
    org = db.get(Organisation, user.org_id)
    assert org is not None
    return org


def _config(user: User, db: DbSession) -> dict[str, Any]:

    org = _org(db, user)
    modes = seg_tool.step_modes(db, user.org_id)
    segments = db.scalars(
        select(Segment).where(Segment.org_id == user.org_id).order_by(Segment.name)
    )
    cadences = db.scalars(
        select(Cadence).where(Cadence.org_id == user.org_id).order_by(Cadence.name)
    )
    return {
        "segments": [_segment_out(db, org, s) for s in segments],
        "cadences": [_cadence_out(c, modes) for c in cadences],
    }


@router.get("/api/admin/segments", tags=["admin"])
def list_config(user: Viewer, db: DbSession) -> dict[str, Any]:
    """Segments with their rules and cadences with their steps (read-only for every persona)."""
    return _config(user, db)


def _save_segment(
    db: DbSession, user: User, body: SegmentIn, clock: Clock, segment_id: int | None
) -> dict[str, Any]:
    segment = seg_tool.save_segment(
        db,
        user.org_id,
        user,
        name=body.name,
        rule=body.rule,
        priority=body.priority,
        cadence_id=body.cadence_id,
        segment_id=segment_id,
    )
    moves = seg_tool.place_customers(db, user.org_id, user, clock())
    db.commit()
    return {**_segment_out(db, _org(db, user), segment), "moved": moves}


@router.post("/api/admin/segments", status_code=201, tags=["admin"])
def create_segment(
    body: SegmentIn, user: SegmentEditor, db: DbSession, clock: Clock
) -> dict[str, Any]:
    """Create a segment; customers its rule matches move into it (the moves are listed)."""
    return _save_segment(db, user, body, clock, None)


@router.put("/api/admin/segments/{segment_id}", tags=["admin"])
def edit_segment(
    segment_id: Id, body: SegmentIn, user: SegmentEditor, db: DbSession, clock: Clock
) -> dict[str, Any]:
    return _save_segment(db, user, body, clock, segment_id)


def _save_cadence(
    db: DbSession, user: User, body: CadenceIn, cadence_id: int | None
) -> dict[str, Any]:
    cadence = seg_tool.save_cadence(
        db, user.org_id, user, name=body.name, steps=body.steps, cadence_id=cadence_id
    )
    db.commit()
    return _cadence_out(cadence, seg_tool.step_modes(db, user.org_id))


@router.post("/api/admin/cadences", status_code=201, tags=["admin"])
def create_cadence(body: CadenceIn, user: CadenceEditor, db: DbSession) -> dict[str, Any]:
    """Create a cadence: steps with offset (days from due), channel, template, tone, mode."""
    return _save_cadence(db, user, body, None)


@router.put("/api/admin/cadences/{cadence_id}", tags=["admin"])
def edit_cadence(
    cadence_id: Id, body: CadenceIn, user: CadenceEditor, db: DbSession
) -> dict[str, Any]:
    return _save_cadence(db, user, body, cadence_id)


@router.get("/segments", response_class=HTMLResponse, include_in_schema=False)
def segments_page(request: Request, user: Viewer, db: DbSession) -> HTMLResponse:

    owners = [
        u
        for u in people_tool.people(db, user.org_id)
        if u.role in (Persona.COLLECTOR, Persona.COLLECTIONS_MANAGER)
    ]
    return _render(
        request,
        "segments.html",
        user,
        **_config(user, db),
        owners=owners,
        templates_=seg_tool.TEMPLATES,
        tones=seg_tool.TONES,
        channels=["email", "sms", "call"],
        currency=_org(db, user).default_currency,
    )


@router.post("/segments", include_in_schema=False)
def segments_form(
    request: Request,
    user: SegmentEditor,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    name: Annotated[str, Form(max_length=120)],
    min_size: Annotated[str, Form(max_length=40)] = "",
    max_size: Annotated[str, Form(max_length=40)] = "",
    regions: Annotated[str, Form(max_length=200)] = "",
    tags: Annotated[str, Form(max_length=200)] = "",
    owners: Annotated[list[int] | None, Form()] = None,
    priority: Annotated[int, Form(ge=0, le=10_000)] = 100,
    cadence_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    rule = {
        "min_size": min_size or None,
        "max_size": max_size or None,
        "regions": [r for r in regions.replace(";", ",").split(",") if r.strip()],
        "tags": [t for t in tags.replace(";", ",").split(",") if t.strip()],
        "owners": owners or [],
    }
    body = SegmentIn(
        name=name,
        rule=rule,
        priority=priority,
        cadence_id=int(cadence_id) if cadence_id.isdigit() else None,
    )
    try:
        out = _save_segment(db, user, body, clock, None)
        _flash(
            request,
            f"Segment {out['name']} saved; {len(out['moved'])} customers moved.",
        )
    except (HTTPException, PlixoError) as exc:
        _flash(request, _refusal(exc), "bad")
    return RedirectResponse("/segments", status_code=303)


@router.post("/cadences", include_in_schema=False)
def cadences_form(
    request: Request,
    user: CadenceEditor,
    db: DbSession,
    _csrf: CsrfChecked,
    name: Annotated[str, Form(max_length=120)],
    offset: Annotated[list[str], Form()],
    channel: Annotated[list[str], Form()],
    template: Annotated[list[str], Form()],
    tone: Annotated[list[str], Form()],
    mode: Annotated[list[str], Form()],
) -> Response:
    """Rows of the step table; rows with an empty offset are ignored."""
    steps = [
        {"offset": o, "channel": c, "template": t, "tone": n, "mode": m}
        for o, c, t, n, m in zip(offset, channel, template, tone, mode, strict=False)
        if o.strip()
    ]
    try:
        _save_cadence(db, user, CadenceIn(name=name, steps=steps), None)
        _flash(request, f"Cadence {name} saved.")
    except (HTTPException, PlixoError) as exc:
        _flash(request, _refusal(exc), "bad")
    return RedirectResponse("/segments", status_code=303)


# --- policies -------------------------------------------------------------------------------

PolicyEditor = Annotated[User, Depends(require("edit_policy"))]


def _policy_context(db: DbSession, user: User) -> dict[str, Any]:

    active = active_policy_set(db, user.org_id)
    cur = active.currency
    rows = [
        (
            "Controller approves plans above",
            format_amount(active.plans.controller_above_minor, cur),
        ),
        ("Largest plan discount", format_percent(active.plans.max_discount_bps)),
        ("Largest credit or discount", format_percent(active.credits.max_discount_bps)),
        ("Quiet hours (contact's time)", f"{active.quiet_hours.start}-{active.quiet_hours.end}"),
        (
            "Touches per contact",
            f"{active.cadence.max_touches} in {active.cadence.window_days} days",
        ),
        ("Autopilot needs Data-Ready", f"{active.autopilot.data_ready_threshold} or more"),
    ]
    rows += [
        (f"{role} approval limit", format_amount(v, cur))
        for role, v in sorted(active.approval_limits.items())
    ]
    versions = [
        {"version": v.version, "at": v.created_at, "diff": v.diff, "comment": v.comment}
        for v in history(db, user.org_id)[:20]
    ]
    return {"rows": rows, "versions": versions}


@router.get("/policies", response_class=HTMLResponse, include_in_schema=False)
def policies_page(request: Request, user: Viewer, db: DbSession) -> HTMLResponse:
    return _render(
        request, "policies.html", user, **_policy_context(db, user), preview=None, text=""
    )


def _proposal(db: DbSession, user: User, text: str) -> Any:
    import yaml

    try:
        human = yaml.safe_load(text) or {}
        return pa.propose(db, user.org_id, human)
    except yaml.YAMLError as exc:
        raise HTTPException(422, f"The proposal is not valid YAML: {exc}") from None
    except PolicyError as exc:
        raise HTTPException(422, f"{exc}. Nothing was saved.") from None


@router.post("/policies/preview", response_class=HTMLResponse, include_in_schema=False)
def policies_preview(
    request: Request,
    user: PolicyEditor,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    text: Annotated[str, Form(max_length=20_000)],
) -> HTMLResponse:
    """The diff and the 90-day dry run of a proposal; nothing is saved here."""

    ctx = _policy_context(db, user)
    try:
        proposal = _proposal(db, user, text)
    except HTTPException as exc:
        flash = {"message": exc.detail, "kind": "bad", "reasons": []}
        return _render(
            request, "policies.html", user, 422, **ctx, preview=None, text=text, flash=flash
        )
    run = pa.dry_run(db, user.org_id, proposal, clock())
    rows = pa.change_rows(proposal.changes, proposal.active.currency)
    preview = {"changes": rows, "run": run.as_dict()}
    return _render(request, "policies.html", user, **ctx, preview=preview, text=text)


@router.post("/policies", include_in_schema=False)
def policies_apply(
    request: Request,
    user: PolicyEditor,
    db: DbSession,
    _csrf: CsrfChecked,
    text: Annotated[str, Form(max_length=20_000)],
) -> Response:

    try:
        proposal = _proposal(db, user, text)
        row = pa.apply(db, user.org_id, user, proposal, comment="policy page")
        db.commit()
        _flash(request, f"Saved as policy version {row.version}.")
    except HTTPException as exc:
        db.rollback()
        _flash(request, str(exc.detail), "bad")
    except (PolicyChangeRefused, PolicyError) as exc:
        db.rollback()
        _flash(request, f"{exc}. Nothing was saved.", "bad")
    return RedirectResponse("/policies", status_code=303)


# --- sending domain -------------------------------------------------------------------------

ModeSwitcher = Annotated[User, Depends(require("set_sending_mode"))]


class DomainIn(BaseModel):
    domain: str = Field(max_length=200)
    spf_include: str = Field(max_length=200)


def _domain_state(db: DbSession, org_id: int) -> dict[str, Any]:

    row = db.get(SendingDomain, org_id)
    if row is None:
        return {"domain": None, "records": [], "verified": False, "reasons": [], "checked_at": None}
    return {
        "domain": row.domain,
        "selector": row.selector,
        "records": [vars(r) for r in sd.records(row)],
        "verified": row.check_ok,
        "reasons": list(row.check_reasons or []),
        "checked_at": row.checked_at.isoformat() if row.checked_at else None,
    }


@router.get("/api/admin/sending-domain", tags=["admin"])
def sending_domain(user: Viewer, db: DbSession) -> dict[str, Any]:
    """The DNS records to publish and the last check's result."""
    return _domain_state(db, user.org_id)


def _set_up_domain(db: DbSession, user: User, body: DomainIn, now: Any) -> dict[str, Any]:

    sd.set_up(db, user.org_id, user, domain=body.domain, spf_include=body.spf_include, now=now)
    db.commit()
    return _domain_state(db, user.org_id)


@router.put("/api/admin/sending-domain", tags=["admin"])
def set_up_domain(
    body: DomainIn, user: ModeSwitcher, db: DbSession, clock: Clock
) -> dict[str, Any]:
    """Choose the sending domain: a new DKIM key pair; the domain is unverified until checked."""
    return _set_up_domain(db, user, body, clock())


def _check_domain(db: DbSession, user: User, settings: Any, now: Any) -> dict[str, Any]:

    result = sd.check(db, user.org_id, nameserver=settings.dns_nameserver, now=now, actor=user)
    db.commit()
    forget_keys()
    return {**_domain_state(db, user.org_id), "paused_segments": result.paused_segments}


@router.post("/api/admin/sending-domain/check", tags=["admin"])
def check_domain(
    user: ModeSwitcher, db: DbSession, settings: AppSettings, clock: Clock
) -> dict[str, Any]:
    """Check SPF, DKIM and DMARC now; a failure names each record to fix and pauses Autopilot."""
    return _check_domain(db, user, settings, clock())


@router.get("/sending-domain", response_class=HTMLResponse, include_in_schema=False)
def sending_domain_page(request: Request, user: Viewer, db: DbSession) -> HTMLResponse:
    return _render(request, "sending_domain.html", user, state=_domain_state(db, user.org_id))


@router.post("/sending-domain", include_in_schema=False)
def sending_domain_form(
    request: Request,
    user: ModeSwitcher,
    db: DbSession,
    clock: Clock,
    _csrf: CsrfChecked,
    domain: Annotated[str, Form(max_length=200)],
    spf_include: Annotated[str, Form(max_length=200)],
) -> Response:
    try:
        _set_up_domain(db, user, DomainIn(domain=domain, spf_include=spf_include), clock())
        _flash(request, "Publish these three records at your DNS provider, then check them.")
    except (HTTPException, PlixoError) as exc:
        _flash(request, _refusal(exc), "bad")
    return RedirectResponse("/sending-domain", status_code=303)


@router.post("/sending-domain/check", include_in_schema=False)
def sending_domain_check_form(
    request: Request,
    user: ModeSwitcher,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
    _csrf: CsrfChecked,
) -> Response:
    try:
        state = _check_domain(db, user, settings, clock())
        if state["verified"]:
            _flash(request, "The sending domain is verified; outgoing mail is DKIM-signed.")
        else:
            paused = state["paused_segments"]
            note = f" Autopilot paused for {', '.join(paused)}." if paused else ""
            request.session["flash"] = {
                "message": "The sending domain is not verified." + note,
                "kind": "bad",
                "reasons": state["reasons"],
            }
    except (HTTPException, PlixoError) as exc:
        _flash(request, _refusal(exc), "bad")
    return RedirectResponse("/sending-domain", status_code=303)


# --- readiness and operations ---------------------------------------------------------------

Importer = Annotated[User, Depends(require("import_data"))]


def _readiness(db: DbSession, user: User, now: Any) -> dict[str, Any]:

    found = readiness_ops.detail(db, user.org_id, now)
    return {
        "score": found.readiness.score,
        "components": [
            {"name": k, "value": v, "weight": round(found.weights[k] * 100)}
            for k, v in found.readiness.components.items()
        ],
        "issues": found.readiness.issues,
        "unreachable": found.unreachable,
        "incomplete": found.incomplete,
        "state": sending_state(db, user.org_id),
    }


@router.get("/api/admin/readiness", tags=["admin"])
def readiness(user: Viewer, db: DbSession, clock: Clock) -> dict[str, Any]:
    """The Data-Ready score, each component, and the customers and invoices pulling it down."""
    data = _readiness(db, user, clock())
    data.pop("state")
    return data


@router.get("/readiness", response_class=HTMLResponse, include_in_schema=False)
def readiness_page(request: Request, user: Viewer, db: DbSession, clock: Clock) -> HTMLResponse:
    return _render(request, "readiness.html", user, **_readiness(db, user, clock()), report=None)


@router.post("/readiness/upload", response_class=HTMLResponse, include_in_schema=False)
async def readiness_upload(
    request: Request,
    user: Importer,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
) -> HTMLResponse:
    """Upload a CSV from the page; the per-row report is shown, nothing is saved on any error."""
    from starlette.datastructures import UploadFile

    form = await request.form()
    await check_csrf(request, str(form.get("csrf", "")))
    file, kind = form.get("file"), str(form.get("kind", ""))
    data = await file.read() if isinstance(file, UploadFile) else b""
    name = file.filename or "upload.csv" if isinstance(file, UploadFile) else "upload.csv"

    def work() -> tuple[Any, str | None, int]:
        try:
            report = readiness_ops.upload(
                db,
                user.org_id,
                user,
                kind=kind,
                filename=name,
                data=data,
                data_dir=settings.data_dir,
            )  # noqa: E501
        except readiness_ops.UploadError as exc:
            db.rollback()
            return None, str(exc), exc.status_code
        if report.committed:
            db.commit()
        else:
            db.rollback()
        return report, None, 200 if report.committed else 422

    from starlette.concurrency import run_in_threadpool

    report, problem, status_code = await run_in_threadpool(work)
    ctx = await run_in_threadpool(_readiness, db, user, clock())
    flash = {"message": problem, "kind": "bad", "reasons": []} if problem else None
    return _render(request, "readiness.html", user, status_code, **ctx, report=report, flash=flash)
