"""Reply threads: the thread an outbound message opens, its Reply-To token, and finding the thread
a reply answers.

Every approved draft that goes to the outbox opens a *thread*: its Message-ID and a per-thread
token. When a mailbox is configured (``PLIXO_IMAP_HOST``), the message carries a Reply-To with the
token (``ar+t4k3n@example.com``), so a reply is threaded even when the payer's client dropped
In-Reply-To; ``tools.replies.mailbox`` reads the replies back. The token is an HMAC of the
Message-ID with the organisation's secret: unguessable, so nobody can drop a message into another
payer's thread by writing to a made-up address.

Why here, in delivery: the outbox opens the thread and stamps the Reply-To as it sends, and the
replies domain (above) finds threads again; the piece both need lives in the lower one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import Draft, MailThread, OutboxMessage

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
