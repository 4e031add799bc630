"""Conversations with payers: the thread an outbound message opens and the replies it gathers.

Every approved draft that goes to the outbox opens a *thread*: its Message-ID and a per-thread
token. When a mailbox is configured (``PLIXO_IMAP_HOST``), the message carries a Reply-To with the
token (``ar+t4k3n@example.com``), so a reply is threaded even when the payer's client dropped
In-Reply-To; ``tools.replies.mailbox`` reads the replies back. The token is an HMAC of the
Message-ID with
the organisation's secret: unguessable, so nobody can drop a message into another payer's thread
by writing to a made-up address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import Draft, InboundMessage, MailThread, OutboxMessage

TOKEN_CHARS = 20
#: ``local+<token>@domain``: the token is lower-case base32 (letters a-z and digits 2-7).
_TOKEN_IN_ADDRESS = re.compile(r"\+([a-z2-7]{" + str(TOKEN_CHARS) + r"})@", re.IGNORECASE)


def thread_token(settings: Settings, message_id: str) -> str:
    """The reply token of an outbound Message-ID (deterministic, so a resend reuses it)."""
    key = settings.signing_key().encode()
    digest = hmac.new(key, b"plixo-thread:" + message_id.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:TOKEN_CHARS]


def reply_address(settings: Settings, message_id: str) -> str | None:
    """The Reply-To for an outbound message, or None when no mailbox is read (then the payer's
    reply goes to the From address as before)."""
    if not settings.imap_host:
        return None
    token = thread_token(settings, message_id)
    if settings.imap_reply_address:
        if "{token}" not in settings.imap_reply_address:
            raise ValueError(
                "PLIXO_IMAP_REPLY_ADDRESS must contain {token}, e.g. ar+{token}@example.com."
            )
        return settings.imap_reply_address.replace("{token}", token)
    local, _, domain = settings.smtp_from.rpartition("<")[-1].rstrip(">").partition("@")
    return f"{local.split('+')[0]}+{token}@{domain}"


def tokens_in(addresses: Iterable[str]) -> list[str]:
    """The thread tokens in these addresses (To, Cc, Delivered-To...), lower case, in order."""
    found: list[str] = []
    for address in addresses:
        for m in _TOKEN_IN_ADDRESS.finditer(address or ""):
            token = m.group(1).lower()
            if token not in found:
                found.append(token)
    return found


def open_thread(session: Session, settings: Settings, msg: OutboxMessage, draft: Draft) -> None:
    """Record the thread of a queued draft (once per Message-ID; called by the outbox)."""
    exists = session.scalar(select(MailThread.id).where(MailThread.message_id == msg.message_id))
    if exists is not None:
        return
    session.add(
        MailThread(
            org_id=draft.org_id,
            token=thread_token(settings, msg.message_id),
            message_id=msg.message_id,
            outbox_message_id=msg.id,
            draft_id=draft.id,
            customer_id=draft.customer_id,
            contact_id=draft.contact_id,
        )
    )
    session.flush()


def find_thread(
    session: Session, org_id: int, *, tokens: Iterable[str], message_ids: Iterable[str]
) -> MailThread | None:
    """The thread a message answers: by its reply token first, then by the Message-IDs it
    names (In-Reply-To, then References newest first). Only this organisation's threads."""
    tokens = list(tokens)
    if tokens:
        thread = session.scalars(
            select(MailThread).where(MailThread.org_id == org_id, MailThread.token.in_(tokens))
        ).first()
        if thread is not None:
            return thread
    for message_id in message_ids:
        thread = session.scalars(
            select(MailThread).where(
                MailThread.org_id == org_id, MailThread.message_id == message_id
            )
        ).first()
        if thread is not None:
            return thread
    return None


# --- what people see: the conversation on Account 360 and beside a draft -----------------------


@dataclass(frozen=True)
class ConversationItem:
    """One message of a conversation, outbound or inbound, as the panel shows it."""

    direction: str  # "out" | "in"
    at: datetime | None
    subject: str
    body: str
    kind: str  # "sent" for outbound; the inbound kind otherwise
    label: str
    draft_id: int | None = None
    inbound_id: int | None = None
    return_date: date | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    triage: dict[str, Any] | None = None


_LABELS = {
    "reply": "Reply",
    "auto_reply": "Automatic reply",
    "bounce": "Delivery failure",
    "opt_out": "Opt-out",
    "unmatched": "Unfiled message",
}


def _inbound_item(m: InboundMessage) -> ConversationItem:
    label = _LABELS.get(m.kind, m.kind)
    if m.kind == "auto_reply" and m.return_date:
        label = f"Automatic reply: back on {m.return_date.isoformat()}"
    elif m.kind == "auto_reply":
        label = "Automatic reply: no return date given"
    return ConversationItem(
        direction="in",
        at=m.sent_at or m.received_at,
        subject=m.subject,
        body=m.body,
        kind=m.kind,
        label=label,
        draft_id=m.draft_id,
        inbound_id=m.id,
        return_date=m.return_date,
        attachments=[
            {"filename": a.filename, "content_type": a.content_type, "size_bytes": a.size_bytes}
            for a in m.attachments
        ],
        triage=m.triage,
    )


def conversation(
    session: Session,
    org_id: int,
    *,
    customer_id: int | None = None,
    draft_id: int | None = None,
    limit: int = 50,
) -> list[ConversationItem]:
    """The messages exchanged with one customer (or in one draft's thread), oldest first."""
    if customer_id is None and draft_id is None:
        raise ValueError("Say whose conversation: a customer or a draft.")
    threads = select(MailThread).where(MailThread.org_id == org_id)
    inbound = select(InboundMessage).where(InboundMessage.org_id == org_id)
    if draft_id is not None:
        threads = threads.where(MailThread.draft_id == draft_id)
        inbound = inbound.where(InboundMessage.draft_id == draft_id)
    if customer_id is not None:
        threads = threads.where(MailThread.customer_id == customer_id)
        inbound = inbound.where(InboundMessage.customer_id == customer_id)
    items: list[ConversationItem] = []
    for thread in session.scalars(threads.order_by(MailThread.id.desc()).limit(limit)):
        out = session.get(OutboxMessage, thread.outbox_message_id or 0)
        if out is None:
            continue
        items.append(
            ConversationItem(
                direction="out",
                at=out.sent_at or out.created_at,
                subject=out.subject,
                body=out.body,
                kind="sent",
                label=f"Sent ({out.status.value})",
                draft_id=thread.draft_id,
            )
        )
    for m in session.scalars(inbound.order_by(InboundMessage.id.desc()).limit(limit)):
        items.append(_inbound_item(m))
    items.sort(key=lambda i: (i.at is None, i.at or datetime.min))
    return items[-limit:]
