"""A person's own messages and the account timeline: what a Collector writes to a payer, the calls
and outside e-mails they log, and the approved messages waiting for their send time.

A message a person writes is a draft like any other (``kind=manual``, ``persona=collector``): its
text is grounded against the ledger and the guardrails decide it (``tools.grounding.recheck``), it
waits
for review in Shadow Mode, an approval may be deferred by quiet hours, and the outbox delivers it
(``tools.delivery.flow``). Nothing here sends anything itself, so no person's text reaches a payer
by a path the guardrails do not see.

A call or an e-mail sent outside plixo is an :class:`~memory.models.Activity` (``call`` /
``email``) with who logged it; it counts as a touch for the cadence rules like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.config import Settings, get_settings
from memory.errors import PlixoError
from memory.models import (
    Activity,
    ActivityKind,
    Approval,
    Channel,
    Contact,
    Customer,
    Dispute,
    Draft,
    DraftKind,
    DraftPersona,
    DraftStatus,
    InboundMessage,
    Invoice,
    Organisation,
    Persona,
    User,
    utcnow,
)
from tools.drafts.service import (
    DRAFT_GUARD,
    MAX_BODY_CHARS,
    MAX_SUBJECT_CHARS,
    InvalidDraftInput,
    approval_problem,
    deferred_until,
    store_new_draft,
)
from tools.grounding.recheck import recheck_draft
from tools.inbox import notifications
from tools.insights.account360 import pay_link
from tools.kit import audit
from tools.kit.authz import guarded
from tools.kit.labels import rule_label

MAX_SUMMARY_CHARS = 500
#: How far back a logged call or e-mail may be dated (older touches belong in an import).
MAX_BACKDATE = timedelta(days=90)


class MessageError(ValueError):
    """Bad input for a message or a logged touch: the sentence says what to fix (422)."""


class MessageNotFound(PlixoError, LookupError):
    """A customer, contact, invoice or message the caller named is not theirs (404); still a
    ``LookupError`` for the callers that catch it as one."""

    http_status = 404


def _customer(session: Session, org_id: int, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None or customer.org_id != org_id:
        raise MessageNotFound(f"Customer {customer_id} does not exist in this organisation.")
    return customer


def _contact(session: Session, customer: Customer, contact_id: int | None) -> Contact | None:
    if contact_id is not None:
        contact = session.get(Contact, contact_id)
        if contact is None or contact.customer_id != customer.id:
            raise MessageNotFound(f"Contact {contact_id} is not a contact of {customer.name}.")
        return contact
    return session.scalars(
        select(Contact)
        .where(Contact.customer_id == customer.id)
        .order_by(Contact.is_primary.desc(), Contact.email.is_(None), Contact.id)
    ).first()


def _invoice(session: Session, customer: Customer, invoice_id: int | None) -> Invoice | None:
    if invoice_id is None:
        return None
    invoice = session.get(Invoice, invoice_id)
    if invoice is None or invoice.customer_id != customer.id:
        raise MessageNotFound(f"Invoice {invoice_id} is not an invoice of {customer.name}.")
    return invoice


def reply_target(session: Session, org_id: int, inbound_id: int) -> InboundMessage:
    """The payer's message being answered (this organisation's, filed to a customer)."""
    message = session.get(InboundMessage, inbound_id)
    if message is None or message.org_id != org_id or message.customer_id is None:
        raise MessageNotFound(f"Message {inbound_id} is not a filed message of this organisation.")
    return message


@guarded("edit_draft", **DRAFT_GUARD)
def compose(
    session: Session,
    org_id: int,
    *,
    user: User,
    customer_id: int,
    subject: str,
    body: str,
    invoice_id: int | None = None,
    contact_id: int | None = None,
    reply_to_id: int | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> Draft:
    """Write a person's own message to a payer (or a reply in a thread) as a draft the guardrails
    decide. Returns it ``pending_review`` (Shadow Mode), ``blocked`` with the reasons, or as the
    decision says; an approval then queues it. Refused whole: no subject or body, no e-mail
    address for the contact, another organisation's customer, contact or invoice."""
    return write_message(
        session,
        org_id,
        user=user,
        customer_id=customer_id,
        subject=subject,
        body=body,
        invoice_id=invoice_id,
        contact_id=contact_id,
        reply_to_id=reply_to_id,
        settings=settings,
        now=now,
    )


def write_message(
    session: Session,
    org_id: int,
    *,
    user: User,
    customer_id: int,
    subject: str,
    body: str,
    invoice_id: int | None = None,
    contact_id: int | None = None,
    reply_to_id: int | None = None,
    dispute: Dispute | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> Draft:
    """The one home of a person's message: the draft, its grounding, the guardrails' decision and
    the approvers told. The caller has checked the permission (``compose``: edit_draft; a dispute
    reply, ``tools.replies.dispute_replies.send_reply``: manage_disputes). ``dispute`` marks
    the draft as
    dispute correspondence about that dispute's invoice (its own guardrails, no pay link)."""

    now = now or utcnow()
    settings = settings or get_settings()
    subject, body = _checked_text(subject, body)
    customer = _customer(session, org_id, customer_id)
    reply = reply_target(session, org_id, reply_to_id) if reply_to_id is not None else None
    if reply is not None and reply.customer_id != customer.id:
        raise MessageNotFound(f"Message {reply_to_id} is not from {customer.name}.")
    invoice = _invoice(session, customer, invoice_id)
    if dispute is not None and (invoice is None or dispute.invoice_id != invoice.id):
        raise LookupError(f"Dispute {dispute.id} is not about this customer's invoice.")
    contact = _contact(session, customer, contact_id)
    if contact is None or not contact.email:
        raise InvalidDraftInput(
            f"{customer.name} has no contact with an e-mail address; add one to the contact first."
        )
    draft = Draft(
        org_id=org_id,
        customer_id=customer.id,
        invoice_id=invoice.id if invoice else None,
        contact_id=contact.id,
        kind=DraftKind.MANUAL,
        persona=DraftPersona.COLLECTOR,
        channel=Channel.EMAIL,
        recipient=contact.email,
        subject=subject,
        body=body,
        language=(contact.language or customer.language or "en")[:8],
        stated_facts={
            "written_by": user.id,
            "invoice_numbers": [invoice.number] if invoice else [],
            "in_reply_to": reply.id if reply else None,
            # the link this message may state, fixed now as Autopilot's drafts fix theirs (a
            # dispute reply states none: the guardrails block one while the invoice is disputed)
            "pay_link": None if dispute else _pay_link(session, settings, org_id, invoice),
            # dispute correspondence (tools.grounding.guardrail_facts.is_dispute_correspondence):
            # set here only
            **({"dispute_id": dispute.id} if dispute else {}),
        },
        created_by_user_id=user.id,
        created_at=now,
    )
    with session.no_autoflush:
        check = recheck_draft(session, draft, now, settings=settings)
    draft.grounding = check.grounding
    store_new_draft(
        session,
        draft,
        decision=check.decision,
        actor=user,
        grounding_blocked=check.grounding_blocked,
        supersede=not check.grounding_blocked and check.decision.get("outcome") != "block",
    )
    if draft.status == DraftStatus.PENDING_REVIEW and approval_problem(session, draft, user):
        _tell_approvers(session, org_id, draft, user, customer.name, now)
    return draft


def _checked_text(subject: str, body: str) -> tuple[str, str]:
    """The trimmed subject and message, refused when empty or over the length limits."""
    subject, body = (subject or "").strip(), (body or "").strip()
    if not subject or not body:
        raise InvalidDraftInput("Write a subject and a message.")
    if len(subject) > MAX_SUBJECT_CHARS or len(body) > MAX_BODY_CHARS:
        raise InvalidDraftInput(
            f"Keep the subject under {MAX_SUBJECT_CHARS} and the message under "
            f"{MAX_BODY_CHARS:,} characters."
        )
    return subject, body


def _tell_approvers(
    session: Session, org_id: int, draft: Draft, user: User, customer_name: str, now: datetime
) -> None:
    """A message that needs someone else's approval: tell the people who can give it (never the
    writer)."""
    approvers = notifications.people_who(
        session,
        org_id,
        "approve_draft",
        roles=[Persona.COLLECTIONS_MANAGER, Persona.CONTROLLER, Persona.ADMIN],
    )
    notifications.notify(
        session,
        org_id,
        [u.id for u in approvers if u.id != user.id],
        "approval",
        f"{user.name}'s message to {customer_name} waits for your approval",
        key=f"draft:{draft.id}:approval",
        link=f"/drafts/{draft.id}",
        now=now,
    )


def _pay_link(
    session: Session, settings: Settings, org_id: int, invoice: Invoice | None
) -> str | None:

    org = session.get(Organisation, org_id)
    if invoice is None or org is None:
        return None
    return pay_link(settings, org.slug, invoice.number)


# --- the account timeline: calls and outside e-mails --------------------------------------------


@guarded("add_note")
def log_touch(
    session: Session,
    org_id: int,
    *,
    actor: User,
    customer_id: int,
    kind: ActivityKind,
    summary: str,
    body: str | None = None,
    direction: str = "out",
    contact_id: int | None = None,
    invoice_id: int | None = None,
    occurred_at: datetime | None = None,
    now: datetime | None = None,
) -> Activity:
    """Log a call or an e-mail that happened outside plixo on the account's timeline.

    Refused: another kind, an empty or over-long summary, a time in the future or more than
    :data:`MAX_BACKDATE` ago, a contact or invoice of another customer."""
    now = now or utcnow()
    if kind not in (ActivityKind.CALL, ActivityKind.EMAIL):
        raise MessageError("Only a call or an outside e-mail can be logged here.")
    if direction not in ("in", "out"):
        raise MessageError("Say whether the payer or we started it (in or out).")
    summary = (summary or "").strip()
    if not summary:
        raise MessageError("Say in a line what was said or agreed.")
    if len(summary) > MAX_SUMMARY_CHARS:
        raise MessageError(f"Keep the summary under {MAX_SUMMARY_CHARS} characters.")
    when = occurred_at or now
    if when > now + timedelta(minutes=5):
        raise MessageError("The time is in the future; log a touch once it has happened.")
    if when < now - MAX_BACKDATE:
        raise MessageError("That is more than 90 days ago; import older history instead.")
    customer = _customer(session, org_id, customer_id)
    contact = _contact(session, customer, contact_id) if contact_id is not None else None
    invoice = _invoice(session, customer, invoice_id)
    activity = Activity(
        org_id=org_id,
        customer_id=customer.id,
        invoice_id=invoice.id if invoice else None,
        contact_id=contact.id if contact else None,
        user_id=actor.id,
        kind=kind,
        direction=direction,
        summary=summary,
        body=(body or "").strip() or None,
        occurred_at=when,
    )
    session.add(activity)
    session.flush()
    audit.record(
        session,
        org_id,
        actor=actor,
        action=f"activity.{kind.value}_logged",
        subject_type="customer",
        subject_id=customer.id,
        detail={"activity_id": activity.id, "direction": direction},
    )
    return activity


def timeline(
    session: Session, org_id: int, customer_id: int, *, limit: int = 100
) -> list[Activity]:
    """The account's touches, newest first."""
    _customer(session, org_id, customer_id)
    return list(
        session.scalars(
            select(Activity)
            .where(Activity.org_id == org_id, Activity.customer_id == customer_id)
            .order_by(Activity.occurred_at.desc(), Activity.id.desc())
            .limit(limit)
        )
    )


# --- approved messages waiting for their send time ----------------------------------------------


@dataclass(frozen=True)
class Scheduled:
    draft: Draft
    customer: str
    send_at: datetime | None
    approvers: list[str]
    reason: str


def scheduled(session: Session, org_id: int, *, limit: int = 500) -> list[Scheduled]:
    """Approved messages not yet handed to the outbox (deferred by quiet hours or spacing), by
    send time, with who approved each ("what goes out on Monday?")."""
    waiting = session.scalars(
        select(Draft)
        .where(Draft.org_id == org_id, Draft.status == DraftStatus.APPROVED)
        .order_by(Draft.id)
        .limit(limit)
    ).all()
    if not waiting:
        return []
    ids = [d.id for d in waiting]
    names: dict[int, list[str]] = {}
    for draft_id, name in session.execute(
        select(Approval.subject_id, User.name)
        .join(User, User.id == Approval.approver_user_id)
        .where(
            Approval.org_id == org_id,
            Approval.subject_type == "draft",
            Approval.subject_id.in_(ids),
            Approval.outcome == "approved",
        )
        .order_by(Approval.id)
    ):
        names.setdefault(draft_id, []).append(name)
    customers = dict(
        session.execute(
            select(Customer.id, Customer.name).where(
                Customer.id.in_({d.customer_id for d in waiting})
            )
        ).all()
    )

    rows = []
    for d in waiting:
        reasons = [
            rule_label(r.get("rule_id"))
            for r in (d.decision or {}).get("reasons", [])
            if r.get("outcome") == "defer"
        ]
        rows.append(
            Scheduled(
                draft=d,
                customer=customers.get(d.customer_id, ""),
                send_at=_send_at(d),
                approvers=names.get(d.id, []),
                reason=", ".join(dict.fromkeys(reasons)),
            )
        )
    rows.sort(key=lambda s: (s.send_at is None, s.send_at or _EARLIEST, s.draft.id))
    return rows


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _send_at(draft: Draft) -> datetime | None:
    """When it may leave; None when no time was set (it leaves with the next delivery pass)."""
    until = deferred_until(draft)
    return None if until is None or until == _EARLIEST else until
