"""The outbox: every outbound message is a row first, and is handed to the relay at most once.

Why a table and not a direct send: an approval and the send cannot share one transaction (SMTP is
not transactional), so the approval only *enqueues* (one row per draft, enforced by a unique key),
and a delivery workflow (``tools.delivery.flow``, on DBOS) hands it over. Never-twice rests on:

1. **One row per draft** (``UNIQUE(draft_id)``) and a unique ``message_id``: racing approvals cannot
   enqueue twice; the loser's transaction fails and changes nothing.
2. **The attempt is committed before the hand-off** (``begin_attempt``: ``queued`` -> ``claimed``
   with a holder token, a conditional update only one caller can win). Only the holder records the
   outcome (``mark_sent`` / ``mark_failed``).
3. **A claimed row found again means a crash mid hand-off**: the relay may or may not have the
   message, so it is *not* resent: it becomes ``uncertain`` and waits for a person, who sees its
   Message-ID, checks the relay's log or the mailbox, and confirms it sent or resends it
   (``resolve``, permission-checked and audited). A holder that is still alive (its heartbeat is
   fresh) is left alone: a second worker never sends what a live one holds.

Crashes never use up the retry budget (``attempts`` counts hand-offs that ended in an error);
temporary errors retry with back-off, permanent ones fail with the relay's reason (shown on the
draft; a refused recipient flags the contact as bounced). Organisations in maintenance or with the
cron pause on are held: nothing leaves while either is on.

Slack direct messages (people's notifications, ``enqueue_slack``) are rows too, with channel
``slack``: the same workflow hands them to Slack's Web API under the same rules.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session, sessionmaker

from memory import clock
from memory.config import Settings, get_settings
from memory.errors import PlixoError
from memory.models import (
    Activity,
    ActivityKind,
    Channel,
    Contact,
    Draft,
    DraftKind,
    DraftStatus,
    Organisation,
    OutboxMessage,
    OutboxStatus,
    User,
)
from policies.access import allowed
from tools.delivery import threads
from tools.delivery.sending_domain import warmup_hold
from tools.delivery.slack import send_text
from tools.delivery.smtp import Attachment, DeliveryError, send_email
from tools.drafts import lifecycle
from tools.kit import audit
from tools.ledger import statement

log = logging.getLogger("plixo.outbox")

DEFAULT_MAX_ATTEMPTS = 5


class OutboxError(PlixoError):
    """A message could not be enqueued or resolved; the message says what to fix."""

    http_status = 422


class AlreadyQueued(OutboxError):
    """The draft already has its outbox row: a second approval must not send it again."""


@dataclass(frozen=True)
class ClaimedMessage:
    """A snapshot of a claimed row; ``lease`` is the holder token of this attempt."""

    id: int
    org_id: int
    draft_id: int | None
    channel: Channel
    recipient: str
    subject: str
    body: str
    message_id: str
    attempts: int
    lease: str
    attachments: tuple[Attachment, ...] = ()


def _now() -> datetime:
    return clock.now()


def _domain(session: Session, org_id: int) -> str:
    """The organisation's sending domain (Message-IDs only need to be unique, not resolvable)."""
    org = session.get(Organisation, org_id)
    if org is not None and org.sending_domain:
        return org.sending_domain
    return "plixo.local"


def new_message_id(session: Session, org_id: int, *, key: str | None = None) -> str:
    """An RFC 5322 Message-ID; deterministic when ``key`` is given (idempotent enqueues)."""
    local = (
        hashlib.sha256(f"{org_id}:{key}".encode()).hexdigest()[:32]
        if key is not None
        else uuid.uuid4().hex
    )
    return f"<plixo.{org_id}.{local}@{_domain(session, org_id)}>"


def enqueue_draft(session: Session, draft: Draft, *, actor: User | str) -> OutboxMessage:
    """Queue an approved draft for delivery (in the caller's transaction) and move it to ``queued``.

    Raises ``AlreadyQueued`` if the draft has a row already; the unique key on ``draft_id`` makes
    that hold even between concurrent transactions (the loser's flush fails).
    """
    existing = session.scalars(
        select(OutboxMessage).where(OutboxMessage.draft_id == draft.id)
    ).first()
    if existing is not None:
        raise AlreadyQueued(f"Draft {draft.id} is already in the outbox ({existing.status.value}).")
    if not draft.recipient:
        raise OutboxError(
            f"Draft {draft.id} has no recipient; edit it to add one before approving."
        )
    msg = OutboxMessage(
        org_id=draft.org_id,
        draft_id=draft.id,
        channel=draft.channel,
        recipient=draft.recipient,
        subject=draft.subject,
        body=draft.body,
        message_id=new_message_id(session, draft.org_id),
        status=OutboxStatus.QUEUED,
    )
    session.add(msg)
    session.flush()
    lifecycle.move(
        session,
        draft,
        DraftStatus.QUEUED,
        actor=actor,
        action="draft.queued",
        detail={"outbox_id": msg.id, "message_id": msg.message_id},
    )
    threads.open_thread(session, get_settings(), msg, draft)
    return msg


def enqueue_email(
    session: Session,
    org_id: int,
    *,
    to: str,
    subject: str,
    body: str,
    idempotency_key: str,
    actor: User | str = "system",
) -> OutboxMessage:
    """Queue a non-draft e-mail (a receipt, a notification) once per ``idempotency_key``.

    Other areas call this (e.g. Stripe receipts): the same key twice returns the first row, so a
    replayed webhook cannot send two receipts.
    """
    if not to or "@" not in to:
        raise OutboxError(f"Cannot queue an e-mail to {to!r}: not an e-mail address.")
    return _enqueue_notice(
        session, org_id, Channel.EMAIL, to, subject, body, idempotency_key, actor=actor
    )


_SLACK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def enqueue_slack(
    session: Session,
    org_id: int,
    *,
    slack_user_id: str,
    subject: str,
    text: str,
    idempotency_key: str,
    actor: User | str = "system",
) -> OutboxMessage:
    """Queue a Slack direct message to a person (a notification) once per ``idempotency_key``.

    Slack takes the same durable path as e-mail: a row here, then the delivery workflow hands it
    to Slack's Web API (``smtp_sender``) with the same retries, failures and records. ``subject``
    is what the outbox lists; ``text`` is what Slack shows."""
    if not _SLACK_ID.match(slack_user_id or ""):
        raise OutboxError(f"Cannot queue a Slack message to {slack_user_id!r}: not a Slack id.")
    return _enqueue_notice(
        session, org_id, Channel.SLACK, slack_user_id, subject, text, idempotency_key, actor=actor
    )


def _enqueue_notice(
    session: Session,
    org_id: int,
    channel: Channel,
    recipient: str,
    subject: str,
    body: str,
    idempotency_key: str,
    *,
    actor: User | str,
) -> OutboxMessage:
    """The row for a message that is not a draft; the same key twice returns the first row."""
    message_id = new_message_id(session, org_id, key=idempotency_key)
    existing = session.scalars(
        select(OutboxMessage).where(OutboxMessage.message_id == message_id)
    ).first()
    if existing is not None:
        return existing
    msg = OutboxMessage(
        org_id=org_id,
        draft_id=None,
        channel=channel,
        recipient=recipient,
        subject=subject,
        body=body,
        message_id=message_id,
        status=OutboxStatus.QUEUED,
    )
    session.add(msg)
    session.flush()
    audit.record(
        session,
        org_id,
        actor=actor,
        action="outbox.enqueued",
        subject_type="outbox",
        subject_id=msg.id,
        to_state=OutboxStatus.QUEUED.value,
        detail={"message_id": message_id, "key": idempotency_key},
    )
    return msg


def _sendable(session: Session, org_id: int) -> bool:
    org = session.get(Organisation, org_id)
    return org is not None and not org.maintenance and not org.cron_paused


@dataclass(frozen=True)
class Attempt:
    """A committed attempt: ``holder`` proves which worker may record its outcome."""

    message: ClaimedMessage
    holder: str


#: What ``begin_attempt`` answers instead of an attempt.
SKIP_DONE = "done"  # sent, failed, cancelled or uncertain already: nothing to hand over
SKIP_PAUSED = "paused"  # maintenance or cron pause: try again later
SKIP_WARMUP = "warmup"  # the new sending domain's cap for today is reached: try tomorrow
SKIP_HELD = "held"  # a live worker holds it right now
SKIP_UNCERTAIN = "uncertain"  # a dead worker held it mid hand-off: now waits for a person


def _snapshot(row: OutboxMessage, holder: str) -> ClaimedMessage:
    return ClaimedMessage(
        id=row.id,
        org_id=row.org_id,
        draft_id=row.draft_id,
        channel=Channel(row.channel),
        recipient=row.recipient,
        subject=row.subject,
        body=row.body,
        message_id=row.message_id,
        attempts=row.attempts,
        lease=holder,
    )


def holder_executor(holder: str | None) -> str:
    """The executor id inside a holder token (``<executor>|<nonce>``)."""
    return (holder or "").split("|", 1)[0]


def begin_attempt(
    session: Session,
    outbox_id: int,
    *,
    executor: str,
    is_live: Callable[[str], bool] = lambda _e: False,
    now: datetime | None = None,
) -> Attempt | str:
    """Record (and commit) that ``executor`` is about to hand the message to the relay.

    Returns the ``Attempt``, or why not (``SKIP_*``). A row already ``claimed`` by a holder that
    is not alive means its worker died between this commit and recording the outcome: the row
    becomes ``uncertain`` (audited) instead of being sent again.
    """
    now = now or _now()
    row = session.get(OutboxMessage, outbox_id, populate_existing=True)
    if row is None or row.status in _FINAL:
        session.rollback()
        return SKIP_DONE
    if row.status == OutboxStatus.CLAIMED:
        owner = holder_executor(row.claimed_by)
        if owner != executor and is_live(owner):
            session.rollback()
            return SKIP_HELD
        _mark_uncertain(session, row, now=now)
        return SKIP_UNCERTAIN
    if not _sendable(session, row.org_id):
        session.rollback()
        return SKIP_PAUSED
    # A new sending domain's warm-up caps e-mail; a Slack message never touches the domain.
    capped = warmup_hold(session, row.org_id, now) if row.channel != Channel.SLACK else None
    if capped is not None:
        session.rollback()
        log.info("outbox %s waits: %s", outbox_id, capped)
        return SKIP_WARMUP
    holder = f"{executor[:80]}|{secrets.token_hex(8)}"
    won = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == outbox_id, OutboxMessage.status == OutboxStatus.QUEUED)
        .values(status=OutboxStatus.CLAIMED, claimed_by=holder, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    if won.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return SKIP_HELD
    session.commit()
    session.refresh(row)
    return Attempt(_snapshot(row, holder), holder)


def _mark_uncertain(session: Session, row: OutboxMessage, *, now: datetime) -> None:
    holder = row.claimed_by
    changed = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == row.id,
            OutboxMessage.status == OutboxStatus.CLAIMED,
            OutboxMessage.claimed_by == holder,
        )
        .values(
            status=OutboxStatus.UNCERTAIN,
            last_error=(
                "The worker handing this message to the relay stopped before it recorded the "
                f"outcome (attempt started {row.claimed_at}). It may or may not have been sent: "
                f"look for Message-ID {row.message_id} in the relay's log or the mailbox, then "
                "confirm it sent or resend it."
            ),
        )
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount == 1:  # type: ignore[attr-defined]
        audit.record(
            session,
            row.org_id,
            actor="delivery worker",
            action="outbox.uncertain",
            subject_type="outbox",
            subject_id=row.id,
            from_state=OutboxStatus.CLAIMED.value,
            to_state=OutboxStatus.UNCERTAIN.value,
            detail={"message_id": row.message_id, "holder": holder, "draft_id": row.draft_id},
        )
    session.commit()


_FINAL = (OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.CANCELLED, OutboxStatus.UNCERTAIN)


def _holding(msg: ClaimedMessage) -> Any:
    return and_(
        OutboxMessage.id == msg.id,
        OutboxMessage.status.in_((OutboxStatus.CLAIMED, OutboxStatus.UNCERTAIN)),
        OutboxMessage.claimed_by == msg.lease,
    )


def mark_sent(
    session: Session, msg: ClaimedMessage, *, worker: str, now: datetime | None = None
) -> bool:
    """Record delivery if this worker still holds the attempt; also move the draft to ``sent``.

    An attempt another worker meanwhile judged uncertain is still recorded as sent: this worker
    knows the relay accepted it. Returns False (and changes nothing) when the holder changed.
    """
    now = now or _now()
    result = session.execute(
        update(OutboxMessage)
        .where(_holding(msg))
        .values(
            status=OutboxStatus.SENT,
            sent_at=now,
            last_error=None,
            attempts=OutboxMessage.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        log.warning("outbox %s: attempt %s no longer held at mark_sent", msg.id, msg.lease)
        return False
    _record_touch(session, msg, actor=f"outbox worker {worker}", now=now)
    session.commit()
    return True


def _record_touch(session: Session, msg: ClaimedMessage, *, actor: str, now: datetime) -> None:
    """The draft moves to ``sent`` and the contact gets its touch (or the row is audited)."""
    draft = session.get(Draft, msg.draft_id) if msg.draft_id is not None else None
    if draft is None:
        audit.record(
            session,
            msg.org_id,
            actor=actor,
            action="outbox.sent",
            subject_type="outbox",
            subject_id=msg.id,
            to_state=OutboxStatus.SENT.value,
            detail={"message_id": msg.message_id},
        )
        return
    if draft.status is DraftStatus.SENT:  # recorded already (a replayed step): one touch only
        return
    draft.hold_reason = None
    lifecycle.move(
        session,
        draft,
        DraftStatus.SENT,
        actor=actor,
        action="draft.sent",
        detail={"outbox_id": msg.id, "message_id": msg.message_id},
    )
    session.add(
        Activity(
            org_id=draft.org_id,
            customer_id=draft.customer_id,
            invoice_id=draft.invoice_id,
            contact_id=draft.contact_id,
            draft_id=draft.id,
            kind=ActivityKind.NUDGE if draft.kind == DraftKind.NUDGE else ActivityKind.EMAIL,
            direction="out",
            summary=draft.subject,
            body=draft.body,
            occurred_at=now,
        )
    )


def mark_failed(
    session: Session,
    msg: ClaimedMessage,
    *,
    worker: str,
    error: str,
    permanent: bool,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    recipient_refused: bool = False,
    now: datetime | None = None,
) -> OutboxStatus | None:
    """Record a failed hand-off: back to ``queued`` for a retry (temporary, attempts left), or
    ``failed`` for good with the relay's reason on the draft (a refused recipient also flags the
    contact as bounced). Returns the new status, or None if this worker no longer holds it."""
    attempts = msg.attempts + 1
    final = permanent or attempts >= max_attempts
    values: dict[str, Any] = {
        "status": OutboxStatus.FAILED if final else OutboxStatus.QUEUED,
        "last_error": error[:2000],
        "attempts": attempts,
    }
    result = session.execute(
        update(OutboxMessage)
        .where(_holding(msg))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    if final:
        _fail_draft(session, msg, worker=worker, error=error, attempts=attempts)
        if recipient_refused:
            _flag_contact(session, msg, error=error)
    session.commit()
    return OutboxStatus.FAILED if final else OutboxStatus.QUEUED


def _fail_draft(
    session: Session, msg: ClaimedMessage, *, worker: str, error: str, attempts: int
) -> None:
    draft = session.get(Draft, msg.draft_id) if msg.draft_id is not None else None
    if draft is None:
        audit.record(
            session,
            msg.org_id,
            actor=f"outbox worker {worker}",
            action="outbox.failed",
            subject_type="outbox",
            subject_id=msg.id,
            to_state=OutboxStatus.FAILED.value,
            detail={"error": error[:500], "attempts": attempts},
        )
        return
    draft.hold_reason = error[:2000]
    lifecycle.move(
        session,
        draft,
        DraftStatus.FAILED,
        actor=f"outbox worker {worker}",
        action="draft.failed",
        detail={"outbox_id": msg.id, "error": error[:500], "attempts": attempts},
    )


def _flag_contact(session: Session, msg: ClaimedMessage, *, error: str) -> None:
    """The relay refused this address: mark the contact bounced so nothing else is sent to it."""
    draft = session.get(Draft, msg.draft_id) if msg.draft_id is not None else None
    if draft is None or draft.contact_id is None:
        return
    contact = session.get(Contact, draft.contact_id)
    if contact is None or contact.bounced:
        return
    contact.bounced = True
    audit.record(
        session,
        msg.org_id,
        actor="delivery worker",
        action="contact.bounced",
        subject_type="contact",
        subject_id=contact.id,
        detail={"outbox_id": msg.id, "error": error[:500]},
    )


Sender = Callable[[ClaimedMessage], None]


def smtp_sender(settings: Settings) -> Sender:
    """The production sender: e-mail over SMTP, Slack messages (notifications) through Slack's
    Web API; other channels have no automatic transport."""

    def send(msg: ClaimedMessage) -> None:
        if msg.channel == Channel.SLACK:
            send_text(settings, msg.recipient, msg.body)
            return
        if msg.channel != Channel.EMAIL:
            raise DeliveryError(
                f"No automatic transport for {msg.channel.value} messages; handle it by hand.",
                permanent=True,
            )
        send_email(
            settings,
            to=msg.recipient,
            subject=msg.subject,
            body=msg.body,
            message_id=msg.message_id,
            reply_to=threads.reply_address(settings, msg.message_id)
            if msg.draft_id is not None
            else None,
            org_id=msg.org_id,
            attachments=msg.attachments,
        )

    return send


def statement_files(session: Session, outbox_id: int) -> tuple[Attachment, ...]:
    """The PDF statement of account an outbox row's e-mail carries: for drafts written from a
    statement or final-notice template (``tools.ledger.statement.attaches``), built from the ledger
    on
    the organisation's date with the pay link the draft states; none for other messages.
    Raises ``statement.StatementUnavailable`` when PDFs cannot be made here."""
    row = session.get(OutboxMessage, outbox_id)
    if row is None or row.draft_id is None or row.channel != Channel.EMAIL:
        return ()
    draft = session.get(Draft, row.draft_id)
    facts = (draft.stated_facts or {}) if draft is not None else {}
    if draft is None or not statement.attaches(str(facts.get("template") or "")):
        return ()
    pay_url = facts.get("pay_link") if isinstance(facts.get("pay_link"), str) else None
    st = statement.build_statement(session, draft.org_id, draft.customer_id, pay_url=pay_url)
    return (Attachment(statement.filename(st), statement.render_pdf(st)),)


#: ``hand_off`` outcomes besides the ``SKIP_*`` answers of ``begin_attempt``.
SENT = "sent"
RETRY = "retry"
FAILED = "failed"
LOST = "lost"  # this worker's outcome could not be recorded (someone resolved it meanwhile)


def hand_off(
    sessions: sessionmaker[Session],
    outbox_id: int,
    sender: Sender,
    *,
    executor: str,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    is_live: Callable[[str], bool] = lambda _e: False,
) -> str:
    """Record the attempt, hand the message to the relay, record the outcome: the one step that
    talks to SMTP. Returns ``SENT``, ``RETRY``, ``FAILED``, ``LOST`` or a ``SKIP_*`` answer.

    The statement of account a statement or final notice carries is rendered before the attempt
    is recorded (a slow or failing render never leaves a claimed row behind)."""
    unavailable: str | None = None
    with sessions() as session:
        try:
            files = statement_files(session, outbox_id)
        except statement.StatementUnavailable as exc:
            files, unavailable = (), str(exc)
        session.rollback()
    with sessions() as session:
        attempt = begin_attempt(session, outbox_id, executor=executor, is_live=is_live)
    if isinstance(attempt, str):
        return attempt
    msg = replace(attempt.message, attachments=files)
    try:
        if unavailable:  # promised in the text ("attached"), so never sent without it
            raise DeliveryError(unavailable, permanent=True)
        sender(msg)
    except DeliveryError as exc:
        with sessions() as session:
            status = mark_failed(
                session,
                msg,
                worker=executor,
                error=str(exc),
                permanent=exc.permanent,
                max_attempts=max_attempts,
                recipient_refused=exc.recipient_refused,
            )
        log.warning("outbox %s hand-off failed: %s", msg.id, exc)
        if status is None:
            return LOST
        return FAILED if status == OutboxStatus.FAILED else RETRY
    with sessions() as session:
        return SENT if mark_sent(session, msg, worker=executor) else LOST


# --- a person resolves what the workers could not ------------------------------------------------

RESOLUTIONS = ("confirm_sent", "resend", "cancel")


def resolve(
    session: Session,
    org_id: int,
    outbox_id: int,
    *,
    user: User,
    action: str,
    now: datetime | None = None,
) -> OutboxMessage:
    """Confirm an uncertain message sent, resend an uncertain or failed one, or cancel it.

    Needs the ``manage_delivery`` permission; audited. A resend starts a new delivery round (a
    new workflow) with the *same* Message-ID, so a copy the payer may already have is recognisable.
    Nothing else changes in the caller's transaction on refusal.
    """

    if not allowed(user.role.value, "manage_delivery"):
        raise OutboxPermissionError(f"{user.role.value} may not resolve deliveries.")
    if user.org_id != org_id:
        raise OutboxNotFound(f"No outbox message {outbox_id} in your organisation.")
    row = session.get(OutboxMessage, outbox_id)
    if row is None or row.org_id != org_id:
        raise OutboxNotFound(f"No outbox message {outbox_id} in your organisation.")
    if action not in RESOLUTIONS:
        raise OutboxError(f"Unknown action {action!r}: use {', '.join(RESOLUTIONS)}.")
    allowed_from = {
        "confirm_sent": (OutboxStatus.UNCERTAIN,),
        "resend": (OutboxStatus.UNCERTAIN, OutboxStatus.FAILED),
        "cancel": (OutboxStatus.UNCERTAIN, OutboxStatus.FAILED, OutboxStatus.QUEUED),
    }[action]
    if row.status not in allowed_from:
        raise OutboxConflict(
            f"The message is {row.status.value}; {action.replace('_', ' ')} applies to "
            f"{' or '.join(s.value for s in allowed_from)} messages."
        )
    from_state = row.status.value
    if action == "confirm_sent":
        row.status = OutboxStatus.SENT
        row.sent_at = now or _now()
        _record_touch(
            session, _snapshot(row, row.claimed_by or ""), actor=user.name, now=row.sent_at
        )  # type: ignore[arg-type]
    elif action == "resend":
        row.status = OutboxStatus.QUEUED
        row.delivery_round = (row.delivery_round or 0) + 1
        row.attempts = 0
        row.claimed_by = None
        _requeue_draft(session, row, user)
    else:
        row.status = OutboxStatus.CANCELLED
        _cancel_draft(session, row, user)
    session.flush()
    audit.record(
        session,
        org_id,
        actor=user,
        action=f"outbox.{action}",
        subject_type="outbox",
        subject_id=row.id,
        from_state=from_state,
        to_state=row.status.value,
        detail={"message_id": row.message_id, "round": row.delivery_round},
    )
    return row


def _requeue_draft(session: Session, row: OutboxMessage, user: User) -> None:
    draft = session.get(Draft, row.draft_id) if row.draft_id is not None else None
    if draft is not None and draft.status != DraftStatus.QUEUED:
        draft.hold_reason = None
        lifecycle.move(
            session,
            draft,
            DraftStatus.QUEUED,
            actor=user,
            action="draft.queued",
            detail={"outbox_id": row.id, "resend": True},
        )


def _cancel_draft(session: Session, row: OutboxMessage, user: User) -> None:
    draft = session.get(Draft, row.draft_id) if row.draft_id is not None else None
    if draft is not None and draft.status == DraftStatus.QUEUED:
        draft.hold_reason = f"Delivery cancelled by {user.name}."
        lifecycle.move(
            session,
            draft,
            DraftStatus.FAILED,
            actor=user,
            action="draft.delivery_cancelled",
            detail={"outbox_id": row.id},
        )


class OutboxPermissionError(OutboxError):
    http_status = 403


class OutboxNotFound(OutboxError):
    http_status = 404


class OutboxConflict(OutboxError):
    http_status = 409


def list_messages(
    session: Session,
    org_id: int,
    *,
    status: OutboxStatus | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[OutboxMessage]:
    """The organisation's outbox, newest first."""
    q = select(OutboxMessage).where(OutboxMessage.org_id == org_id)
    if status is not None:
        q = q.where(OutboxMessage.status == status)
    q = q.order_by(OutboxMessage.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(q))
