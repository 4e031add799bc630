"""Sales and CSM nudges: pre-approved reminders that respect quiet hours and Autopilot.

A nudge is a personal reminder from the account's Sales or CSM owner, written only from templates
the A/R team approved in advance (``TEMPLATES``), so no free text reaches a payer without review.
The guardrails' ``send_nudge`` rules decide when it may leave: quiet hours and cadence caps like any
outreach, and never within a day of a scheduled Autopilot touch (the nudge is deferred instead).
The A/R team is told of every nudge through a note on the account that mentions its collector.

Two entry points: ``request_nudge`` (the owner presses Nudge) and ``suggest_nudge`` (the A/R team
suggests one; the owner approves or dismisses it in Slack, see ``tools.outreach.slack_nudges``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from memory import business_day, clock
from memory.config import Settings
from memory.errors import PlixoError
from memory.models import (
    Approval,
    Channel,
    Contact,
    Customer,
    Draft,
    DraftKind,
    DraftPersona,
    DraftStatus,
    Invoice,
    InvoiceStatus,
    Note,
    Organisation,
    Persona,
    Segment,
    User,
)
from policies.access import allowed
from policies.engine import decide
from policies.facts import SendNudgeFacts
from tools.delivery import outbox
from tools.drafts import lifecycle
from tools.drafts.service import (
    DraftNotFound,
    InvalidTransition,
    StaleDraft,
    check_version,
    contact_for,
)
from tools.grounding.guardrail_facts import outreach_context
from tools.inbox import notifications
from tools.insights.account360 import pay_link
from tools.kit import audit, labels
from tools.kit.authz import denial, guarded
from tools.kit.formatting import format_amount, format_day, locale_for
from tools.ledger.policy_overrides import policy_set_for
from tools.outreach.slack_nudges import SlackError, post_suggestion

AUTOPILOT_SEND_HOUR = 9  # cadence steps go out in the contact's morning


@dataclass(frozen=True)
class NudgeTemplate:
    """A pre-approved nudge. Placeholders are filled from the ledger, never by a model."""

    id: str
    label: str
    subject: str
    body: str
    personas: tuple[str, ...]


TEMPLATES: dict[str, NudgeTemplate] = {
    t.id: t
    for t in (
        NudgeTemplate(
            id="friendly_check_in",
            label="Friendly check-in from your account manager",
            subject="Invoice {invoice_number}: a quick check-in",
            body=(
                "Hi {contact_name},\n\n"
                "I'm {sender_name}, your contact at {org_name}. Our records show invoice "
                "{invoice_number} for {balance} was due on {due_date}. If it is already on its "
                "way, thank you! If anything is holding it up, reply to this e-mail and I will "
                "help sort it out.\n\n"
                "You can pay securely here: {pay_link}\n\n"
                "Best regards,\n{sender_name}"
            ),
            personas=("Sales", "CSM"),
        ),
        NudgeTemplate(
            id="pay_link_resend",
            label="Resend the pay link",
            subject="Your pay link for invoice {invoice_number}",
            body=(
                "Hi {contact_name},\n\n"
                "As promised, here is the secure link to pay invoice {invoice_number} "
                "({balance}, due {due_date}): {pay_link}\n\n"
                "Thanks,\n{sender_name}, {org_name}"
            ),
            personas=("Sales", "CSM"),
        ),
        NudgeTemplate(
            id="renewal_ahead",
            label="Before your renewal (CSM)",
            subject="Ahead of your renewal: invoice {invoice_number}",
            body=(
                "Hi {contact_name},\n\n"
                "As we get ready for your renewal, I noticed invoice {invoice_number} for "
                "{balance} (due {due_date}) is still open. Settling it keeps everything "
                "running smoothly: {pay_link}\n\n"
                "If there is a question on the invoice, just reply and I will connect you with "
                "the right person.\n\n"
                "Kind regards,\n{sender_name}, {org_name}"
            ),
            personas=("CSM",),
        ),
    )
}

_ELEVATED = {
    Persona.ADMIN.value,
    Persona.CONTROLLER.value,
    Persona.COLLECTIONS_MANAGER.value,
}


class NudgeError(PlixoError, ValueError):
    """The nudge cannot be made as asked; the message says what to change (422)."""

    http_status = 422


class NudgeNotFound(NudgeError):
    """An id that is not in the caller's organisation (or not on this customer): 404."""

    http_status = 404


def _refused(role: str, permission: str) -> NudgeError:
    if permission == "send_nudge":
        return NudgeError(f"{role} may not send nudges.")
    return NudgeError(denial(role, permission))


def _foreign() -> NudgeNotFound:
    return NudgeNotFound("Unknown organisation.")


NUDGE_GUARD: dict[str, Any] = {"actor": "user", "refuse": _refused, "foreign": _foreign}


@dataclass
class NudgeResult:
    draft: Draft
    notified: list[str] = field(default_factory=list)
    slack_ts: str | None = None


def template_for(template_id: str, role: str) -> NudgeTemplate:
    template = TEMPLATES.get(template_id)
    if template is None:
        raise NudgeError(
            f"Unknown nudge template {template_id!r}; use one of {', '.join(sorted(TEMPLATES))}."
        )
    if role not in template.personas and role not in _ELEVATED:
        raise NudgeError(f"Template {template_id!r} is for {', '.join(template.personas)} only.")
    return template


def _customer(session: Session, org_id: int, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None or customer.org_id != org_id:
        raise NudgeNotFound(f"No customer {customer_id} in your organisation.")
    return customer


def _invoice(session: Session, customer: Customer, invoice_id: int | None) -> Invoice:
    if invoice_id is not None:
        invoice = session.get(Invoice, invoice_id)
        if (
            invoice is None
            or invoice.customer_id != customer.id
            or invoice.org_id != customer.org_id
        ):
            raise NudgeNotFound(f"No invoice {invoice_id} on this customer.")
        if invoice.status != InvoiceStatus.OPEN or invoice.balance_minor <= 0:
            raise NudgeError(f"Invoice {invoice.number} is not open; there is nothing to nudge.")
        return invoice
    invoice = session.scalars(
        select(Invoice)
        .where(
            Invoice.org_id == customer.org_id,
            Invoice.customer_id == customer.id,
            Invoice.status == InvoiceStatus.OPEN,
            Invoice.balance_minor > 0,
            Invoice.disputed.is_(False),
        )
        .order_by(Invoice.due_date, Invoice.id)
    ).first()
    if invoice is None:
        raise NudgeError(f"{customer.name} has no open, undisputed invoice to nudge about.")
    return invoice


def _contact(session: Session, customer: Customer, contact_id: int | None) -> Contact:
    if contact_id is not None:
        contact = session.get(Contact, contact_id)
        if contact is None or contact.customer_id != customer.id:
            raise NudgeNotFound(f"No contact {contact_id} on this customer.")
    else:
        contact = session.scalars(
            select(Contact)
            .where(
                Contact.org_id == customer.org_id,
                Contact.customer_id == customer.id,
                Contact.email.is_not(None),
            )
            .order_by(Contact.is_primary.desc(), Contact.id)
        ).first()
        if contact is None:
            raise NudgeError(f"{customer.name} has no contact with an e-mail address.")
    if not contact.email:
        raise NudgeError(f"Contact {contact.name} has no e-mail address.")
    return contact


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def scheduled_autopilot_touches(
    session: Session, customer: Customer, contact: Contact | None, now: datetime
) -> list[datetime]:
    """When the customer's cadence will next touch them: future steps of each open invoice, plus
    cadence drafts already approved or queued (they go out as soon as the worker runs)."""
    times: list[datetime] = []
    tz = _zone((contact.timezone if contact else None) or customer.timezone)
    segment = session.get(Segment, customer.segment_id) if customer.segment_id else None
    steps = list(segment.cadence.steps) if segment is not None and segment.cadence else []
    today = business_day.org_business_date(
        session, customer.org_id, now
    )  # cadence days are the org's
    if steps:
        invoices = session.scalars(
            select(Invoice).where(
                Invoice.org_id == customer.org_id,
                Invoice.customer_id == customer.id,
                Invoice.status == InvoiceStatus.OPEN,
                Invoice.disputed.is_(False),
            )
        ).all()
        for inv in invoices:
            for step in steps:
                if step.channel not in (Channel.EMAIL, Channel.SMS):
                    continue
                day: date = inv.due_date + timedelta(days=step.day_offset)
                if day >= today:
                    local = datetime.combine(day, time(AUTOPILOT_SEND_HOUR), tzinfo=tz)
                    times.append(local.astimezone(UTC))
    pending = session.scalars(
        select(Draft.updated_at).where(
            Draft.org_id == customer.org_id,
            Draft.customer_id == customer.id,
            Draft.kind == DraftKind.CADENCE,
            Draft.status.in_((DraftStatus.APPROVED, DraftStatus.QUEUED)),
        )
    ).all()
    times.extend(max(now, t) for t in pending)
    return sorted(set(times))[:200]


def _render(
    session: Session,
    template: NudgeTemplate,
    *,
    org: Organisation,
    customer: Customer,
    contact: Contact,
    invoice: Invoice,
    sender: User,
    settings: Settings,
) -> tuple[str, str, str]:

    locale = locale_for(contact.language or customer.language, customer.country_code)
    link = pay_link(settings, org.slug, invoice.number)
    values = {
        "contact_name": contact.name.split(" ")[0] if contact.name else "there",
        "sender_name": sender.name,
        "org_name": org.name,
        "invoice_number": invoice.number,
        "balance": format_amount(invoice.balance_minor, invoice.currency, locale),
        "due_date": format_day(invoice.due_date, locale),
        "pay_link": link,
    }
    return template.subject.format(**values), template.body.format(**values), link


def _persona_for(role: str) -> DraftPersona:
    return DraftPersona.CSM_NUDGE if role == Persona.CSM.value else DraftPersona.SALES_NUDGE


def _nudge_facts(
    session: Session,
    *,
    org: Organisation,
    customer: Customer,
    contact: Contact | None,
    invoice_ids: list[int],
    actor_role: str,
    template_approved: bool,
    now: datetime,
) -> SendNudgeFacts:
    """``send_nudge`` facts: the outreach context Autopilot uses, plus the nudge's own facts."""
    ctx = outreach_context(
        session,
        org.id,
        customer_id=customer.id,
        contact_id=contact.id if contact is not None else None,
        invoice_ids=invoice_ids,
        channel=Channel.EMAIL.value,
        now=now,
    )
    return SendNudgeFacts(
        now=now,
        business_date=clock.business_date(org.timezone, now),
        channel="email",
        maintenance=ctx.switches.maintenance,
        cron_paused=ctx.switches.cron_paused,
        contact=ctx.contact,
        invoices=list(ctx.invoices),
        promises=list(ctx.promises),
        touches=list(ctx.touches),
        actor_role=actor_role,
        template_approved=template_approved,
        scheduled_autopilot_touches=scheduled_autopilot_touches(session, customer, contact, now),
    )


def _notify_ar_team(
    session: Session, draft: Draft, customer: Customer, user: User, template: NudgeTemplate
) -> list[str]:
    """Tell the A/R team: a note on the account mentioning its collector (or the managers)."""
    mentioned: list[User] = []
    if customer.collector_user_id:
        collector = session.get(User, customer.collector_user_id)
        if collector is not None and collector.active:
            mentioned.append(collector)
    if not mentioned:
        mentioned = list(
            session.scalars(
                select(User).where(
                    User.org_id == customer.org_id,
                    User.role == Persona.COLLECTIONS_MANAGER,
                    User.active.is_(True),
                )
            )
        )
    outcome = draft.decision_outcome or "pending"
    when = ""
    not_before = (draft.decision or {}).get("not_before")
    if outcome == "defer" and not_before:
        when = f" (deferred until {not_before})"
    body = (
        f"Nudge by {user.name} ({user.role.value}) with template '{template.label}' about "
        f"{labels.listing(draft.stated_facts.get('invoice_numbers', []))}: "
        f"{labels.label(draft.status).lower()}"
        f"{when}. " + " ".join(f"@{u.email.split('@', 1)[0]}" for u in mentioned)
    ).strip()
    session.add(
        Note(
            org_id=customer.org_id,
            customer_id=customer.id,
            invoice_id=draft.invoice_id,
            author_user_id=user.id,
            source="system",
            body=body,
            mentions=[u.id for u in mentioned],
        )
    )
    notifications.notify(
        session,
        customer.org_id,
        [u.id for u in mentioned],
        "nudge",
        f"{user.name} ({user.role.value}) nudged {customer.name}",
        key=f"nudge:{draft.id}",
        body=body,
        link=f"/drafts/{draft.id}",
    )
    return [f"ar_team: {u.name}" for u in mentioned] or ["ar_team"]


def _apply_decision(
    session: Session,
    draft: Draft,
    decision: dict[str, object],
    *,
    user: User,
    now: datetime,
) -> None:
    """Move a nudge after its decision: allow → queued, defer → approved (held), else as decided.

    The sender's press of the button is the approval of a pre-approved text; the guardrails only
    say when (or whether) it may leave.
    """
    outcome = str(decision.get("outcome"))
    draft.decision = dict(decision)
    draft.decision_outcome = outcome
    if outcome in ("allow", "defer"):
        session.add(
            Approval(
                org_id=draft.org_id,
                subject_type="draft",
                subject_id=draft.id,
                approver_user_id=user.id,
                outcome="approved",
                reason=f"nudge sent by {user.role.value}",
            )
        )
        to = DraftStatus.APPROVED
        not_before = decision.get("not_before")
        if outcome == "defer" and not_before:
            draft.hold_reason = f"Nudge deferred until {not_before} by the guardrails."
    else:
        to = DraftStatus.PENDING_REVIEW if outcome == "needs_approval" else DraftStatus.BLOCKED
    lifecycle.move(
        session,
        draft,
        to,
        actor=user,
        action="nudge.decided",
        detail={"outcome": outcome, "not_before": decision.get("not_before")},
    )
    session.flush()
    if outcome == "allow":
        outbox.enqueue_draft(session, draft, actor=user)
        session.flush()


def _nudge_draft(
    org_id: int,
    writer: User,
    creator: User,
    rendered: tuple[Customer, Invoice, Contact, NudgeTemplate, str, str, str],
    **more_facts: Any,
) -> Draft:
    """A nudge as a draft (not yet added), in the persona of the one it is written for
    (``writer``: the owner who sends it), made by ``creator`` (the owner, or who suggested it)."""
    customer, invoice, contact, template, subject, body, link = rendered
    return Draft(
        org_id=org_id,
        customer_id=customer.id,
        invoice_id=invoice.id,
        contact_id=contact.id,
        segment_id=customer.segment_id,
        kind=DraftKind.NUDGE,
        persona=_persona_for(writer.role.value),
        channel=Channel.EMAIL,
        recipient=contact.email,
        subject=subject,
        body=body,
        language=contact.language or customer.language,
        tone="friendly",
        stated_facts={
            "template_id": template.id,
            "invoice_numbers": [invoice.number],
            "pay_link": link,
            **more_facts,
        },
        model_name="template",
        prompt_version=f"nudge:{template.id}",
        created_by_user_id=creator.id,
    )


@guarded("send_nudge", **NUDGE_GUARD)
def request_nudge(
    session: Session,
    org_id: int,
    *,
    user: User,
    customer_id: int,
    template_id: str,
    settings: Settings,
    invoice_id: int | None = None,
    contact_id: int | None = None,
    now: datetime | None = None,
) -> NudgeResult:
    """The owner nudges now: render the template, ask the guardrails, queue or defer, notify A/R."""
    now = now or clock.now()
    if not allowed(user.role.value, "send_nudge"):
        raise NudgeError(f"{user.role.value} may not send nudges.")
    template = template_for(template_id, user.role.value)
    org = session.get(Organisation, org_id)
    if org is None:
        raise NudgeNotFound("Unknown organisation.")
    customer = _customer(session, org_id, customer_id)
    invoice = _invoice(session, customer, invoice_id)
    contact = _contact(session, customer, contact_id)
    subject, body, link = _render(
        session,
        template,
        org=org,
        customer=customer,
        contact=contact,
        invoice=invoice,
        sender=user,
        settings=settings,
    )
    rendered = (customer, invoice, contact, template, subject, body, link)
    draft = _nudge_draft(org_id, user, user, rendered)
    facts = _nudge_facts(
        session,
        org=org,
        customer=customer,
        contact=contact,
        invoice_ids=[invoice.id],
        actor_role=user.role.value,
        template_approved=True,
        now=now,
    )
    decision = decide("send_nudge", facts, policy_set_for(session, org_id)).as_dict()
    lifecycle.begin(draft, DraftStatus.DRAFTED)
    session.add(draft)
    session.flush()
    audit.record(
        session,
        org_id,
        actor=user,
        action="nudge.requested",
        subject_type="draft",
        subject_id=draft.id,
        to_state=DraftStatus.DRAFTED.value,
        detail={"template_id": template.id, "invoice": invoice.number},
    )
    _apply_decision(session, draft, decision, user=user, now=now)
    notified = _notify_ar_team(session, draft, customer, user, template)
    session.flush()
    return NudgeResult(draft=draft, notified=notified)


@guarded("edit_draft", **NUDGE_GUARD)
def suggest_nudge(
    session: Session,
    org_id: int,
    *,
    user: User,
    customer_id: int,
    template_id: str,
    settings: Settings,
    invoice_id: int | None = None,
    contact_id: int | None = None,
    notify_slack: bool = True,
    now: datetime | None = None,
) -> NudgeResult:
    """Suggest a nudge to the account owner (Sales, else CSM); it waits as ``drafted`` for them."""
    org = session.get(Organisation, org_id)
    if org is None:
        raise NudgeNotFound("Unknown organisation.")
    customer = _customer(session, org_id, customer_id)
    owner_id = customer.sales_user_id or customer.csm_user_id
    owner = session.get(User, owner_id) if owner_id else None
    if owner is None or not owner.active or owner.org_id != org_id:
        raise NudgeError(f"{customer.name} has no active Sales or CSM owner to suggest a nudge to.")
    template = template_for(template_id, owner.role.value)
    invoice = _invoice(session, customer, invoice_id)
    contact = _contact(session, customer, contact_id)
    subject, body, link = _render(
        session,
        template,
        org=org,
        customer=customer,
        contact=contact,
        invoice=invoice,
        sender=owner,
        settings=settings,
    )
    rendered = (customer, invoice, contact, template, subject, body, link)
    draft = _nudge_draft(
        org_id, owner, user, rendered, suggested_by=user.id, owner_user_id=owner.id
    )
    session.add(draft)
    session.flush()
    audit.record(
        session,
        org_id,
        actor=user,
        action="nudge.suggested",
        subject_type="draft",
        subject_id=draft.id,
        to_state=DraftStatus.DRAFTED.value,
        detail={"owner_user_id": owner.id, "template_id": template.id},
    )
    result = NudgeResult(draft=draft, notified=[f"owner: {owner.name}"])
    if notify_slack and owner.slack_user_id and settings.slack_bot_token:
        _post_suggestion_to_slack(session, settings, result, owner, customer, invoice, user)
    return result


def _post_suggestion_to_slack(
    session: Session,
    settings: Settings,
    result: NudgeResult,
    owner: User,
    customer: Customer,
    invoice: Invoice,
    user: User,
) -> None:
    """Tell the owner in Slack too; a Slack failure is audited, never raised (the suggestion
    stands)."""

    draft = result.draft
    try:
        result.slack_ts = post_suggestion(
            settings, owner=owner, draft=draft, customer=customer, invoice=invoice
        )
        result.notified.append(f"slack: {owner.slack_user_id}")
    except SlackError as exc:
        audit.record(
            session,
            draft.org_id,
            actor=user,
            action="nudge.slack_failed",
            subject_type="draft",
            subject_id=draft.id,
            detail={"error": str(exc)[:500]},
        )


def _suggestion(session: Session, org_id: int, draft_id: int) -> Draft:
    draft = session.get(Draft, draft_id)
    if draft is None or draft.org_id != org_id or draft.kind != DraftKind.NUDGE:
        raise DraftNotFound(f"No nudge suggestion {draft_id} in your organisation.")
    if draft.status != DraftStatus.DRAFTED:
        raise InvalidTransition(
            f"The nudge suggestion was already handled (it is {draft.status.value})."
        )
    return draft


def _check_owner(draft: Draft, user: User) -> None:
    owner_id = (draft.stated_facts or {}).get("owner_user_id")
    if user.id != owner_id and user.role.value not in _ELEVATED:
        raise NudgeError("Only the account's owner may act on this nudge suggestion.")
    if not allowed(user.role.value, "send_nudge"):
        raise NudgeError(f"{user.role.value} may not send nudges.")


@guarded("send_nudge", **NUDGE_GUARD)
def confirm_suggestion(
    session: Session,
    org_id: int,
    draft_id: int,
    *,
    user: User,
    expected_version: int | None = None,
    now: datetime | None = None,
) -> NudgeResult:
    """The owner approves a suggested nudge: the guardrails decide when it leaves."""
    now = now or clock.now()
    draft = _suggestion(session, org_id, draft_id)
    if expected_version is not None:
        check_version(draft, expected_version)
    _check_owner(draft, user)
    org = session.get(Organisation, org_id)
    customer = session.get(Customer, draft.customer_id)
    if org is None or customer is None:
        raise DraftNotFound(f"No nudge suggestion {draft_id} in your organisation.")
    template = TEMPLATES.get(str(draft.stated_facts.get("template_id")))
    facts = _nudge_facts(
        session,
        org=org,
        customer=customer,
        contact=contact_for(session, draft),
        invoice_ids=[draft.invoice_id] if draft.invoice_id else [],
        actor_role=user.role.value,
        template_approved=template is not None,
        now=now,
    )
    decision = decide("send_nudge", facts, policy_set_for(session, org_id)).as_dict()
    _apply_decision(session, draft, decision, user=user, now=now)
    notified = (
        _notify_ar_team(session, draft, customer, user, template) if template is not None else []
    )
    session.flush()
    return NudgeResult(draft=draft, notified=notified)


def decide_nudge_again(session: Session, draft: Draft, now: datetime) -> dict[str, object]:
    """The ``send_nudge`` decision for a held nudge at release time, as its sender's role."""
    facts = nudge_facts_for(session, draft, now)
    return decide("send_nudge", facts, policy_set_for(session, draft.org_id)).as_dict()


def nudge_facts_for(
    session: Session, draft: Draft, now: datetime, *, as_creator: bool = False
) -> SendNudgeFacts:
    """The ``send_nudge`` facts of a nudge draft at ``now``: as its approving sender, or (for the
    policy dry run, ``as_creator``) as the person who wrote it when nobody approved it yet."""
    org = session.get(Organisation, draft.org_id)
    customer = session.get(Customer, draft.customer_id)
    if org is None or customer is None:
        raise DraftNotFound(f"No nudge {draft.id} in this organisation.")
    sender = session.scalars(
        select(User)
        .join(Approval, Approval.approver_user_id == User.id)
        .where(Approval.subject_type == "draft", Approval.subject_id == draft.id)
        .order_by(Approval.id.desc())
    ).first()
    if sender is None and as_creator and draft.created_by_user_id is not None:
        sender = session.get(User, draft.created_by_user_id)
    template = TEMPLATES.get(str((draft.stated_facts or {}).get("template_id")))
    return _nudge_facts(
        session,
        org=org,
        customer=customer,
        contact=contact_for(session, draft),
        invoice_ids=[draft.invoice_id] if draft.invoice_id else [],
        actor_role=sender.role.value if sender is not None else "",
        template_approved=template is not None,
        now=now,
    )


@guarded("send_nudge", **NUDGE_GUARD)
def dismiss_suggestion(
    session: Session,
    org_id: int,
    draft_id: int,
    *,
    user: User,
    reason: str = "Dismissed by the account owner",
    expected_version: int | None = None,
) -> Draft:
    """The owner dismisses a suggested nudge; the reason is kept like any rejection."""
    draft = _suggestion(session, org_id, draft_id)
    if expected_version is not None:
        check_version(draft, expected_version)
    _check_owner(draft, user)
    draft.rejection_reason = reason
    session.add(
        Approval(
            org_id=org_id,
            subject_type="draft",
            subject_id=draft.id,
            approver_user_id=user.id,
            outcome="rejected",
            reason=reason,
        )
    )
    lifecycle.move(
        session,
        draft,
        DraftStatus.REJECTED,
        actor=user,
        action="nudge.dismissed",
        detail={"reason": reason},
    )
    try:
        session.flush()
    except StaleDataError as exc:  # the optimistic lock: someone acted on it at the same moment
        raise StaleDraft("The nudge suggestion changed meanwhile; reload it.") from exc
    return draft
