"""The outbox: every outbound message is a row first, and is delivered at most once per lease.

Why a table and not a direct send: an approval and the send cannot share one transaction (SMTP is
not transactional), so the approval only *enqueues* (one row per draft, enforced by a unique key),
and a worker delivers. Exactly-once rests on three things:

1. **One row per draft** (``UNIQUE(draft_id)``) and a unique ``message_id``: racing approvals cannot
   enqueue twice; the loser's transaction fails and changes nothing.
2. **Claim with a lease**: a worker claims rows atomically (``SELECT … FOR UPDATE SKIP LOCKED`` on
   PostgreSQL; one conditional ``UPDATE … RETURNING`` on SQLite, whose writer lock makes it atomic),
   stamping a unique lease token. Only the holder of the token may mark the row sent or failed.
3. **Lease expiry recovers crashed workers**: a row left ``claimed`` by a worker that died is
   claimable again once ``claimed_at + lease`` has passed, so nothing is lost; the resend carries
   the *same* Message-ID, which mail systems use to recognise a duplicate should the dead worker
   have handed the message over in the instant between the relay's acceptance and its own
   ``mark_sent``.

Organisations in maintenance or with the cron pause on are skipped: nothing leaves while either
is on.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from memory import clock
from memory.config import Settings, get_settings
from memory.models import (
    Activity,
    ActivityKind,
    Channel,
    Draft,
    DraftKind,
    DraftStatus,
    Organisation,
    OutboxMessage,
    OutboxStatus,
    User,
)
from tools import audit, conversations
from tools.delivery import DeliveryError, send_email
from tools.send_check import vet_before_delivery

log = logging.getLogger("plixo.outbox")

DEFAULT_LEASE_S = 300.0  # far longer than one SMTP conversation (timeout 30 s)
DEFAULT_MAX_ATTEMPTS = 5
_BACKOFF_S = (30.0, 120.0, 600.0, 1800.0)


class OutboxError(Exception):
    """A message could not be enqueued (e.g. no recipient); the message says what to fix."""


class AlreadyQueued(OutboxError):
    """The draft already has its outbox row: a second approval must not send it again."""


@dataclass(frozen=True)
class ClaimedMessage:
    """A snapshot of a claimed row; ``lease`` is the token that proves this worker holds it."""

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
    from_state = draft.status.value
    draft.status = DraftStatus.QUEUED
    session.flush()
    conversations.open_thread(session, get_settings(), msg, draft)
    audit.record(
        session,
        draft.org_id,
        actor=actor,
        action="draft.queued",
        subject_type="draft",
        subject_id=draft.id,
        from_state=from_state,
        to_state=DraftStatus.QUEUED.value,
        detail={"outbox_id": msg.id, "message_id": msg.message_id},
    )
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
    message_id = new_message_id(session, org_id, key=idempotency_key)
    existing = session.scalars(
        select(OutboxMessage).where(OutboxMessage.message_id == message_id)
    ).first()
    if existing is not None:
        return existing
    msg = OutboxMessage(
        org_id=org_id,
        draft_id=None,
        channel=Channel.EMAIL,
        recipient=to,
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


def _claimable(now: datetime, lease_s: float) -> Any:
    expired = now - timedelta(seconds=lease_s)
    return or_(
        OutboxMessage.status == OutboxStatus.QUEUED,
        and_(OutboxMessage.status == OutboxStatus.CLAIMED, OutboxMessage.claimed_at < expired),
    )


def _sendable_orgs() -> Any:
    return select(Organisation.id).where(
        Organisation.maintenance.is_(False), Organisation.cron_paused.is_(False)
    )


def claim(
    session: Session,
    *,
    worker: str,
    limit: int = 10,
    lease_s: float = DEFAULT_LEASE_S,
    now: datetime | None = None,
) -> list[ClaimedMessage]:
    """Atomically claim up to ``limit`` deliverable rows for ``worker`` and commit the claim.

    A row is deliverable when it is queued, or claimed by someone whose lease has expired. The
    claim must be the first statement of the session's transaction (it commits at the end).
    """
    now = now or _now()
    lease = f"{worker[:80]}:{secrets.token_hex(8)}"
    cols = (
        OutboxMessage.id,
        OutboxMessage.org_id,
        OutboxMessage.draft_id,
        OutboxMessage.channel,
        OutboxMessage.recipient,
        OutboxMessage.subject,
        OutboxMessage.body,
        OutboxMessage.message_id,
        OutboxMessage.attempts,
    )
    where = and_(_claimable(now, lease_s), OutboxMessage.org_id.in_(_sendable_orgs()))
    values = {
        "status": OutboxStatus.CLAIMED,
        "claimed_by": lease,
        "claimed_at": now,
        "attempts": OutboxMessage.attempts + 1,
    }
    if session.get_bind().dialect.name == "postgresql":
        ids = list(
            session.scalars(
                select(OutboxMessage.id)
                .where(where)
                .order_by(OutboxMessage.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if not ids:
            session.commit()
            return []
        stmt = update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(**values)
    else:
        # One statement: SQLite takes the writer lock before evaluating it, so the sub-select and
        # the update see the same rows and no other writer can interleave.
        inner = select(OutboxMessage.id).where(where).order_by(OutboxMessage.id).limit(limit)
        stmt = update(OutboxMessage).where(OutboxMessage.id.in_(inner), where).values(**values)
    rows = session.execute(stmt.returning(*cols).execution_options(synchronize_session=False)).all()
    session.commit()
    claimed = [
        ClaimedMessage(
            id=r.id,
            org_id=r.org_id,
            draft_id=r.draft_id,
            channel=Channel(r.channel),
            recipient=r.recipient,
            subject=r.subject,
            body=r.body,
            message_id=r.message_id,
            attempts=r.attempts,
            lease=lease,
        )
        for r in rows
    ]
    return sorted(claimed, key=lambda m: m.id)


def _holding(msg: ClaimedMessage) -> Any:
    return and_(
        OutboxMessage.id == msg.id,
        OutboxMessage.status == OutboxStatus.CLAIMED,
        OutboxMessage.claimed_by == msg.lease,
    )


def mark_sent(
    session: Session, msg: ClaimedMessage, *, worker: str, now: datetime | None = None
) -> bool:
    """Record delivery if this worker still holds the lease; also move the draft to ``sent``.

    Returns False (and changes nothing) when the lease was lost to another worker.
    """
    now = now or _now()
    result = session.execute(
        update(OutboxMessage)
        .where(_holding(msg))
        .values(status=OutboxStatus.SENT, sent_at=now, last_error=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        log.warning("outbox %s: lease %s lost before mark_sent", msg.id, msg.lease)
        return False
    actor = f"outbox worker {worker}"
    if msg.draft_id is not None:
        draft = session.get(Draft, msg.draft_id)
        if draft is not None:
            from_state = draft.status.value
            draft.status = DraftStatus.SENT
            session.add(
                Activity(
                    org_id=draft.org_id,
                    customer_id=draft.customer_id,
                    invoice_id=draft.invoice_id,
                    contact_id=draft.contact_id,
                    draft_id=draft.id,
                    kind=ActivityKind.NUDGE
                    if draft.kind == DraftKind.NUDGE
                    else ActivityKind.EMAIL,
                    direction="out",
                    summary=draft.subject,
                    body=draft.body,
                    occurred_at=now,
                )
            )
            audit.record(
                session,
                draft.org_id,
                actor=actor,
                action="draft.sent",
                subject_type="draft",
                subject_id=draft.id,
                from_state=from_state,
                to_state=DraftStatus.SENT.value,
                detail={"outbox_id": msg.id, "message_id": msg.message_id},
            )
    else:
        audit.record(
            session,
            msg.org_id,
            actor=actor,
            action="outbox.sent",
            subject_type="outbox",
            subject_id=msg.id,
            from_state=OutboxStatus.CLAIMED.value,
            to_state=OutboxStatus.SENT.value,
            detail={"message_id": msg.message_id},
        )
    session.commit()
    return True


def mark_failed(
    session: Session,
    msg: ClaimedMessage,
    *,
    worker: str,
    error: str,
    permanent: bool,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    lease_s: float = DEFAULT_LEASE_S,
    now: datetime | None = None,
) -> OutboxStatus | None:
    """Record a failed attempt: retry later (transient, attempts left) or fail for good.

    A retry keeps the row ``claimed`` with a back-dated ``claimed_at`` so the lease itself expires
    after the back-off; no extra column or scheduler is needed. Returns the new status, or None if
    the lease was lost.
    """
    now = now or _now()
    final = permanent or msg.attempts >= max_attempts
    if final:
        values: dict[str, Any] = {"status": OutboxStatus.FAILED, "last_error": error[:2000]}
    else:
        backoff = _BACKOFF_S[min(msg.attempts - 1, len(_BACKOFF_S) - 1)]
        values = {
            "claimed_by": f"retry:{msg.lease}"[:120],
            "claimed_at": now - timedelta(seconds=max(0.0, lease_s - backoff)),
            "last_error": error[:2000],
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
    if final and msg.draft_id is not None:
        draft = session.get(Draft, msg.draft_id)
        if draft is not None:
            from_state = draft.status.value
            draft.status = DraftStatus.FAILED
            draft.hold_reason = error[:2000]
            audit.record(
                session,
                draft.org_id,
                actor=f"outbox worker {worker}",
                action="draft.failed",
                subject_type="draft",
                subject_id=draft.id,
                from_state=from_state,
                to_state=DraftStatus.FAILED.value,
                detail={"outbox_id": msg.id, "error": error[:500], "attempts": msg.attempts},
            )
    session.commit()
    return OutboxStatus.FAILED if final else OutboxStatus.CLAIMED


Sender = Callable[[ClaimedMessage], None]


def smtp_sender(settings: Settings) -> Sender:
    """The production sender: e-mail over SMTP; other channels have no automatic transport."""

    def send(msg: ClaimedMessage) -> None:
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
            reply_to=conversations.reply_address(settings, msg.message_id)
            if msg.draft_id is not None
            else None,
            org_id=msg.org_id,
        )

    return send


@dataclass
class WorkResult:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0


def deliver_batch(
    sessions: sessionmaker[Session],
    sender: Sender,
    *,
    worker: str,
    limit: int = 10,
    lease_s: float = DEFAULT_LEASE_S,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> WorkResult:
    """Claim one batch and deliver it: the unit both the worker loop and tests drive."""
    result = WorkResult()
    with sessions() as session:
        batch = claim(session, worker=worker, limit=limit, lease_s=lease_s)
    result.claimed = len(batch)
    for msg in batch:
        if not vet_before_delivery(sessions, msg, worker=worker):  # still true at send time?
            continue
        try:
            sender(msg)
        except DeliveryError as exc:
            with sessions() as session:
                status = mark_failed(
                    session,
                    msg,
                    worker=worker,
                    error=str(exc),
                    permanent=exc.permanent,
                    max_attempts=max_attempts,
                    lease_s=lease_s,
                )
            log.warning("outbox %s attempt %s failed: %s", msg.id, msg.attempts, exc)
            if status is None:
                result.lost += 1
            elif status == OutboxStatus.FAILED:
                result.failed += 1
            else:
                result.retried += 1
            continue
        with sessions() as session:
            if mark_sent(session, msg, worker=worker):
                result.sent += 1
            else:
                result.lost += 1
    return result


def run_worker(
    sessions: sessionmaker[Session],
    sender: Sender,
    *,
    worker: str | None = None,
    poll_s: float = 1.0,
    limit: int = 10,
    lease_s: float = DEFAULT_LEASE_S,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    once: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    settings: Settings | None = None,
) -> WorkResult:
    """Deliver until stopped (or until the outbox is drained, with ``once``)."""
    worker = worker or f"worker-{uuid.uuid4().hex[:8]}"
    total = WorkResult()
    while not should_stop():
        release_due(sessions, settings)
        r = deliver_batch(
            sessions, sender, worker=worker, limit=limit, lease_s=lease_s, max_attempts=max_attempts
        )
        for field in ("claimed", "sent", "retried", "failed", "lost"):
            setattr(total, field, getattr(total, field) + getattr(r, field))
        if r.claimed == 0:
            if once:
                break
            time.sleep(poll_s)
    return total


def release_due(sessions: sessionmaker[Session], settings: Settings | None = None) -> list[int]:
    """Queue approved drafts whose deferral (quiet hours, Autopilot spacing) has passed."""
    from tools.drafts import release_deferred

    with sessions() as session:
        released = release_deferred(session, settings=settings)
        session.commit()
    return released


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
