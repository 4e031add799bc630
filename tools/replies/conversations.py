"""Conversations with payers: the replies an outbound message's thread gathers, as people see them.

Every approved draft that goes to the outbox opens a *thread* (``tools.delivery.threads``: its
Message-ID, a per-thread Reply-To token, and finding the thread a reply answers);
``tools.replies.mailbox`` reads the replies back and this module shows the conversation. The
threading names are re-exported here for the replies domain's callers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import InboundMessage, MailThread, OutboxMessage
from tools.delivery.threads import TOKEN_CHARS as TOKEN_CHARS
from tools.delivery.threads import find_thread as find_thread
from tools.delivery.threads import open_thread as open_thread
from tools.delivery.threads import reply_address as reply_address
from tools.delivery.threads import thread_token as thread_token
from tools.delivery.threads import tokens_in as tokens_in

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
