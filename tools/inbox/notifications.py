"""Notifications people receive: an in-app inbox (its unread count in the panel's header), and,
as each person chooses, the same item by e-mail and/or Slack.

Sources call :func:`notify` (idempotent per person and ``key``, so a retried request, a repeated
sweep or two sweeps racing never notify twice): @mentions in notes, approvals waiting (a credit
above someone's limit, a person's message waiting for review), Sales/CSM nudges the A/R team must
know about, disputes escalated to Legal. :func:`sweep` adds breached dispute SLAs and missed
promises; the worker runs it for every organisation on a schedule
(``tools.inbox.notification_schedule``), so nobody has to open the inbox for them to arrive.

E-mail and Slack both go through the outbox in the caller's transaction
(:func:`tools.delivery.outbox.enqueue_email`, :func:`tools.delivery.outbox.enqueue_slack`), so they
leave only if
the event they report is committed, and the delivery workflow (``tools.delivery.flow``) hands
them over with the same retries, failures and records as every other message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, cast, exists, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from memory.config import Settings, get_settings
from memory.models import (
    OPEN_DISPUTE_STATUSES,
    Customer,
    Dispute,
    Notification,
    NotificationPreference,
    Persona,
    PromiseStatus,
    PromiseToPay,
    User,
    utcnow,
)
from policies.access import allowed
from tools.delivery import outbox
from tools.kit import labels

log = logging.getLogger("plixo.notifications")

KINDS = ("mention", "approval", "nudge", "sla_breach", "promise_missed", "escalation")
MAX_TITLE = 300
_MENTION = re.compile(r"@([A-Za-z0-9._-]{2,64})")


@dataclass(frozen=True)
class Preferences:
    email: bool
    slack: bool


def preferences(session: Session, user_id: int) -> Preferences:
    row = session.get(NotificationPreference, user_id)
    return Preferences(email=bool(row and row.email), slack=bool(row and row.slack))


def set_preferences(
    session: Session, user: User, *, email: bool, slack: bool, now: datetime | None = None
) -> Preferences:
    """A person's own choice (nobody sets another's). Slack needs their Slack user id."""
    if slack and not user.slack_user_id:
        raise ValueError(
            "Slack needs your Slack user id in plixo; ask an Admin to add it on People, "
            "or choose e-mail."
        )
    row = session.get(NotificationPreference, user.id)
    if row is None:
        row = NotificationPreference(user_id=user.id)
        session.add(row)
    row.email, row.slack, row.updated_at = email, slack, now or utcnow()
    session.flush()
    return Preferences(email=email, slack=slack)


def notify(
    session: Session,
    org_id: int,
    user_ids: Iterable[int],
    kind: str,
    title: str,
    *,
    key: str,
    body: str = "",
    link: str | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> list[Notification]:
    """Put one item in each named person's inbox (active people of ``org_id`` only), then send it
    by e-mail and/or Slack as each chose. Returns the new items (none for a repeated ``key``)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown notification kind {kind!r}; use one of {', '.join(KINDS)}.")
    ids = sorted({int(i) for i in user_ids})
    if not ids:
        return []
    now = now or utcnow()
    people = session.scalars(
        select(User).where(User.id.in_(ids), User.org_id == org_id, User.active.is_(True))
    ).all()
    done = set(
        session.scalars(
            select(Notification.user_id).where(
                Notification.user_id.in_(ids), Notification.key == key[:200]
            )
        )
    )
    created: list[Notification] = []
    for person in people:
        if person.id in done:
            continue
        item = Notification(
            org_id=org_id,
            user_id=person.id,
            kind=kind,
            title=title.strip()[:MAX_TITLE],
            body=body.strip(),
            link=link,
            key=key[:200],
            created_at=now,
        )
        try:
            with session.begin_nested():  # another sweep may have inserted it since we looked
                session.add(item)
                session.flush()
        except IntegrityError:
            continue  # UNIQUE(user_id, key): that person is notified already
        _deliver(session, person, item, settings)
        created.append(item)
    return created


def _deliver(session: Session, person: User, item: Notification, settings: Settings | None) -> None:
    """Queue the item by e-mail and/or Slack as the person chose (Slack also needs their Slack
    user id and a configured Slack bot). ``emailed`` and ``slacked`` record what was queued."""
    prefs = preferences(session, person.id)
    if not (prefs.email or prefs.slack):
        return
    settings = settings or get_settings()
    url = f"{settings.public_base_url.rstrip('/')}{item.link}" if item.link else ""
    if prefs.email:
        text = "\n\n".join(p for p in (item.title, item.body, url) if p)
        outbox.enqueue_email(
            session,
            item.org_id,
            to=person.email,
            subject=f"plixo: {item.title}"[:300],
            body=text + "\n\n(You chose e-mail notifications in your plixo inbox.)",
            idempotency_key=f"notification:{item.id}",
        )
        item.emailed = True
    if prefs.slack and person.slack_user_id and settings.slack_bot_token is not None:
        try:
            outbox.enqueue_slack(
                session,
                item.org_id,
                slack_user_id=person.slack_user_id,
                subject=item.title[:300],
                text=slack_text(item, url),
                idempotency_key=f"notification:{item.id}:slack",
            )
        except outbox.OutboxError as exc:  # a malformed Slack id must not undo the event itself
            log.warning("slack notification %s not queued: %s", item.id, exc)
            return
        item.slacked = True


def slack_text(item: Notification, url: str) -> str:
    """The Slack message in words: the title in bold, the body, and the page as a named link
    ("Open in plixo") rather than a bare address. Slack's control characters are escaped."""

    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    parts = [f"*{esc(item.title)}*", esc(item.body)]
    if url:
        parts.append(f"<{url}|Open in plixo>")
    return "\n".join(p for p in parts if p)


# --- reading the inbox --------------------------------------------------------------------------


def unread_count(session: Session, user_id: int) -> int:
    return int(
        session.scalar(
            select(func.count(Notification.id)).where(
                Notification.user_id == user_id, Notification.read_at.is_(None)
            )
        )
        or 0
    )


def inbox(
    session: Session, user: User, *, unread_only: bool = False, limit: int = 100
) -> list[Notification]:
    q = select(Notification).where(Notification.user_id == user.id)
    if unread_only:
        q = q.where(Notification.read_at.is_(None))
    return list(session.scalars(q.order_by(Notification.id.desc()).limit(limit)))


def mark_read(
    session: Session, user: User, ids: Sequence[int] | None = None, *, now: datetime | None = None
) -> int:
    """Mark the reader's own items read (all when ``ids`` is None); others' stay untouched."""
    q = update(Notification).where(Notification.user_id == user.id, Notification.read_at.is_(None))
    if ids is not None:
        q = q.where(Notification.id.in_(list(ids)))
    result = session.execute(q.values(read_at=now or utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)


# --- who hears about what -----------------------------------------------------------------------


def mentioned_users(session: Session, org_id: int, text: str) -> list[User]:
    """Active people of the organisation named ``@handle`` (their e-mail's local part)."""
    handles = {h.lower().rstrip(".") for h in _MENTION.findall(text or "")}
    if not handles:
        return []
    return [
        u
        for u in session.scalars(
            select(User).where(User.org_id == org_id, User.active.is_(True)).order_by(User.id)
        )
        if u.email.split("@", 1)[0].lower() in handles
    ]


def ar_team(session: Session, customer: Customer) -> list[User]:
    """The account's collector if active, else the organisation's Collections Managers."""
    if customer.collector_user_id:
        collector = session.get(User, customer.collector_user_id)
        if collector is not None and collector.active:
            return [collector]
    return list(
        session.scalars(
            select(User).where(
                User.org_id == customer.org_id,
                User.role == Persona.COLLECTIONS_MANAGER,
                User.active.is_(True),
            )
        )
    )


def people_who(
    session: Session, org_id: int, permission: str, *, roles: Iterable[Persona] = ()
) -> list[User]:
    """Active people holding ``permission`` (and, when given, one of ``roles``)."""
    wanted = set(roles)
    return [
        u
        for u in session.scalars(
            select(User).where(User.org_id == org_id, User.active.is_(True)).order_by(User.id)
        )
        if allowed(u.role.value, permission) and (not wanted or u.role in wanted)
    ]


def notify_roles(
    session: Session,
    org_id: int,
    *,
    permission: str,
    roles: Sequence[Persona],
    exclude: int,
    kind: str,
    title: str,
    key: str,
    body: str,
    link: str,
    now: datetime,
) -> None:
    """Notify the active people of ``roles`` holding ``permission``, except ``exclude`` (who acted),
    once per ``key``. Disputes call this through their ``notify_roles`` hook (``tools.wiring``):
    the inbox is above them."""
    people = people_who(session, org_id, permission, roles=roles)
    notify(
        session,
        org_id,
        [u.id for u in people if u.id != exclude],
        kind,
        title,
        key=key,
        body=body,
        link=link,
        now=now,
    )


def sweep(
    session: Session,
    org_id: int,
    *,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> int:
    """Notify breached dispute SLAs and missed promises not yet notified; returns how many items
    were created. Idempotent by key (a dispute's breach once per status it breaches in, a missed
    promise once), so the schedule, a retried step or two workers may all run it. Reads only
    active disputes past their SLA and missed promises nobody was told about, so it stays cheap
    however many promises were missed over the years."""
    now = now or utcnow()
    return _sweep_disputes(session, org_id, now, settings) + _sweep_promises(
        session, org_id, now, settings
    )


def _sweep_disputes(session: Session, org_id: int, now: datetime, settings: Settings | None) -> int:

    count = 0
    breached = session.scalars(
        select(Dispute)
        .where(
            Dispute.org_id == org_id,
            Dispute.status.in_(OPEN_DISPUTE_STATUSES),
            Dispute.sla_due_at.is_not(None),
            Dispute.sla_due_at < now,
        )
        .order_by(Dispute.id)
    ).all()
    for d in breached:
        customer = session.get(Customer, d.customer_id)
        if customer is None:
            continue
        to = {u.id for u in ar_team(session, customer)}
        if d.opened_by_user_id:
            to.add(d.opened_by_user_id)
        if d.status.value == "escalated_legal":
            to |= {
                u.id for u in people_who(session, org_id, "manage_disputes", roles=[Persona.LEGAL])
            }
        stamp = d.status_changed_at.strftime("%Y%m%d%H%M%S")
        count += len(
            notify(
                session,
                org_id,
                to,
                "sla_breach",
                f"Dispute SLA breached: {customer.name} ({labels.label(d.status)})",
                key=f"sla_breach:{d.id}:{d.status.value}:{stamp}",
                link=f"/disputes/{d.id}",
                settings=settings,
                now=now,
            )
        )
    return count


def _sweep_promises(session: Session, org_id: int, now: datetime, settings: Settings | None) -> int:
    count = 0
    told = exists().where(
        Notification.org_id == org_id,
        Notification.key == literal("promise_missed:", String) + cast(PromiseToPay.id, String),
    )
    missed = session.scalars(
        select(PromiseToPay)
        .where(
            PromiseToPay.org_id == org_id,
            PromiseToPay.status == PromiseStatus.MISSED,
            ~told,
        )
        .order_by(PromiseToPay.id)
    ).all()
    for p in missed:
        customer = session.get(Customer, p.customer_id)
        if customer is None:
            continue
        to = {u.id for u in ar_team(session, customer)}
        if p.created_by_user_id:
            to.add(p.created_by_user_id)
        count += len(
            notify(
                session,
                org_id,
                to,
                "promise_missed",
                f"Promise missed: {customer.name}, {labels.money(p.amount_minor, p.currency)} "
                f"promised for {labels.day(p.promised_date)}",
                key=f"promise_missed:{p.id}",
                link=f"/accounts/{customer.id}",
                settings=settings,
                now=now,
            )
        )
    return count
