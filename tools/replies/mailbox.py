"""``plixo mailbox sync``: the payers' replies, read from a real IMAP mailbox into the ledger.

Why it is safe to run as often as you like: every message is stored once per organisation and
Message-ID (a unique key), and the folder's position is a cursor (UIDVALIDITY, last UID) saved in
the same transaction as the message it has just read. A crash between two messages re-reads at
most the one in flight, which the Message-ID then recognises. When the server renumbers the folder
(a new UIDVALIDITY: a restored or rebuilt mailbox), the cursor starts over from the first UID and
the Message-IDs keep the messages already read from being stored twice.

What happens to a message (``tools.replies.mail_reading`` says what kind it is):

- bounce (a DSN with a permanent failure): each failed address's contacts are marked bounced;
- opt out ("stop", "unsubscribe", "abmelden", "me désabonner", "darme de baja"…): the sender's
  contacts at that customer are marked opted out of e-mail;
- auto reply (RFC 3834): labelled with the return date it gives; it pauses nothing;
- reply: handed to reply triage (``triage``, the agent's, injected by the caller since tools may
  not import the agent), whose proposals wait for a person as before.

Contacts change only through ``tools.ledger.contact_status`` (audited), and the guardrails read
those
flags on every send, so nothing more is e-mailed to a bounced or opted-out address. Attachments
(a remittance PDF, a proof of delivery) are kept as evidence under
``PLIXO_DATA_DIR/evidence/inbound/<org>/`` when their type is accepted and their size within
``PLIXO_IMAP_MAX_ATTACHMENT_BYTES``; a refused one is listed with the reason. The mailbox is
opened read-only: plixo never deletes or flags the payers' mail.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from memory import clock
from memory.config import Settings
from memory.models import (
    Activity,
    ActivityKind,
    Contact,
    InboundAttachment,
    InboundMessage,
    MailboxCursor,
    MailThread,
    Organisation,
)
from tools.commitments.disputes import EVIDENCE_TYPES, safe_filename, sniff_type, write_once
from tools.commitments.promises import CommitmentError, org_today
from tools.ledger.contact_status import contacts_by_email, mark_contacts
from tools.replies import conversations
from tools.replies.mail_reading import ReadMail, asks_to_opt_out, read_mail, return_date

log = logging.getLogger("plixo.mailbox")

ACTOR = "mailbox sync"
FETCH_BATCH = 25
MAX_MESSAGE_BYTES = 30 * 1024 * 1024
MAX_ATTACHMENTS = 10

#: Reply triage as the caller provides it: (session, org, customer, the payer's words) -> the
#: triage result as JSON, or None when it could not run. Never writes to the ledger.
Triage = Callable[[Session, int, int, str], dict[str, Any] | None]


class MailboxError(Exception):
    """The mailbox could not be read; the message says what to check. Nothing was half-written."""


class ImapLike(Protocol):
    """The part of ``imapclient.IMAPClient`` the sync uses (a real server in tests too)."""

    def select_folder(self, folder: str, readonly: bool = False) -> dict[bytes, Any]: ...
    def search(self, criteria: Any = "ALL", charset: str | None = None) -> list[int]: ...
    def fetch(self, messages: Any, data: Any, modifiers: Any = None) -> dict[int, Any]: ...


@dataclass
class SyncResult:
    mailbox: str
    uidvalidity: int = 0
    uidvalidity_changed: bool = False
    fetched: int = 0
    stored: int = 0
    duplicates: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    contacts_changed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def configured(settings: Settings) -> bool:
    """Whether a mailbox is set (``PLIXO_IMAP_HOST`` and ``_USERNAME``): without one there is
    nothing to sync, and the worker schedules no sync."""
    return bool(settings.imap_host and settings.imap_username)


def mailbox_org(session: Session, settings: Settings, slug: str | None = None) -> int:
    """The organisation the mailbox's replies are filed in: ``slug`` (``--org``), else
    ``PLIXO_IMAP_ORG``, else the ledger's only organisation. Never a guess among several: the same
    reply filed in two organisations would be threaded (and a contact marked) in the wrong one."""
    slug = slug or settings.imap_org
    orgs = session.scalars(select(Organisation).order_by(Organisation.slug)).all()
    if slug:
        match = [o for o in orgs if o.slug == slug]
        if not match:
            known = ", ".join(o.slug for o in orgs) or "none yet"
            raise MailboxError(f"No organisation {slug!r} (organisations: {known}).")
        return match[0].id
    if not orgs:
        raise MailboxError(
            "The ledger has no organisation yet: run `plixo demo` or import your data first."
        )
    if len(orgs) > 1:
        raise MailboxError(
            f"There are several organisations ({', '.join(o.slug for o in orgs)}): say whose "
            "mailbox it is with --org or PLIXO_IMAP_ORG."
        )
    return orgs[0].id


def sync_configured(
    session: Session,
    settings: Settings,
    *,
    org: str | None = None,
    triage: Triage | None = None,
    now: datetime | None = None,
) -> SyncResult:
    """Sync the configured mailbox (``PLIXO_IMAP_*``) into its organisation: the one way both
    ``plixo mailbox sync`` and the worker's schedule read it. Raises ``MailboxError``."""
    org_id = mailbox_org(session, settings, org)
    with connect(settings) as client:
        return sync_mailbox(session, org_id, settings, client, triage=triage, now=now)


def mailbox_key(settings: Settings) -> str:
    return (
        f"{settings.imap_username}@{settings.imap_host}:{settings.imap_port}/{settings.imap_folder}"
    )


@contextmanager
def connect(settings: Settings) -> Iterator[Any]:
    """A logged-in IMAP connection from ``PLIXO_IMAP_*``; errors say which setting to check."""
    from imapclient import IMAPClient
    from imapclient.exceptions import IMAPClientError, LoginError

    if not settings.imap_host or not settings.imap_username:
        raise MailboxError("No mailbox is configured: set PLIXO_IMAP_HOST and PLIXO_IMAP_USERNAME.")
    where = f"{settings.imap_host}:{settings.imap_port}"
    try:
        client = IMAPClient(
            settings.imap_host,
            port=settings.imap_port,
            ssl=settings.imap_ssl,
            ssl_context=ssl.create_default_context() if settings.imap_ssl else None,
            timeout=30,
        )
    except (OSError, IMAPClientError) as exc:
        raise MailboxError(
            f"Cannot reach the IMAP server {where} (check PLIXO_IMAP_HOST, _PORT, _SSL): {exc}"
        ) from exc
    try:
        if settings.imap_starttls and not settings.imap_ssl:
            client.starttls(ssl.create_default_context())
        password = settings.imap_password.get_secret_value() if settings.imap_password else ""
        client.login(settings.imap_username, password)
    except LoginError as exc:
        client.shutdown()
        raise MailboxError(
            f"The IMAP server {where} refused the login of {settings.imap_username} "
            "(check PLIXO_IMAP_USERNAME and PLIXO_IMAP_PASSWORD)."
        ) from exc
    except (OSError, IMAPClientError) as exc:
        client.shutdown()
        raise MailboxError(f"The IMAP server {where} failed during login: {exc}") from exc
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):  # the server may already have gone
            client.logout()


def _cursor(session: Session, org_id: int, key: str) -> MailboxCursor:
    """This folder's cursor, created once even when two syncs start together (the second one's
    insert meets ``UNIQUE(org_id, mailbox)`` and reads the first one's row)."""
    query = select(MailboxCursor).where(
        MailboxCursor.org_id == org_id, MailboxCursor.mailbox == key
    )
    cursor = session.scalars(query).first()
    if cursor is None:
        try:
            with session.begin_nested():
                session.add(MailboxCursor(org_id=org_id, mailbox=key, uidvalidity=0, last_uid=0))
        except IntegrityError:
            log.info("mailbox: another sync created the cursor of %s first", key)
        cursor = session.scalars(query).one()
    return cursor


def _advance(session: Session, cursor: MailboxCursor, uid: int, now: datetime) -> None:
    """Move the cursor to ``uid``, never back: a sync running beside a faster one must not
    rewind it (that would only re-read, but each re-read costs a fetch and a Message-ID check)."""
    session.execute(
        update(MailboxCursor)
        .where(
            MailboxCursor.id == cursor.id,
            MailboxCursor.uidvalidity == cursor.uidvalidity,
            MailboxCursor.last_uid < uid,
        )
        .values(last_uid=uid, synced_at=now)
        .execution_options(synchronize_session=False)
    )


def sync_mailbox(
    session: Session,
    org_id: int,
    settings: Settings,
    client: ImapLike,
    *,
    triage: Triage | None = None,
    now: datetime | None = None,
) -> SyncResult:
    """Read the new messages of the configured folder into the ledger (committed one by one).

    Safe beside another sync of the same mailbox (two workers, a worker and the command): each
    message is claimed by inserting its row first (``UNIQUE(org_id, message_id)``, in a
    savepoint), so the second sync to reach it counts it as already read. When the ledger is busy
    the sync stops before that message, and the next one reads it again."""
    key = mailbox_key(settings)
    result = SyncResult(mailbox=key)
    info = client.select_folder(settings.imap_folder, readonly=True)
    uidvalidity = int(info.get(b"UIDVALIDITY", 0))
    cursor = _cursor(session, org_id, key)
    if cursor.uidvalidity != uidvalidity:
        # The server renumbered the folder: start over; Message-IDs stop any double.
        result.uidvalidity_changed = cursor.uidvalidity != 0
        cursor.uidvalidity, cursor.last_uid = uidvalidity, 0
    result.uidvalidity = uidvalidity
    session.commit()
    uids = sorted(
        u for u in client.search(["UID", f"{cursor.last_uid + 1}:*"]) if u > cursor.last_uid
    )
    for start in range(0, len(uids), FETCH_BATCH):
        batch = uids[start : start + FETCH_BATCH]
        sizes = client.fetch(batch, ["RFC822.SIZE"])
        small = [
            u for u in batch if int(sizes.get(u, {}).get(b"RFC822.SIZE", 0)) <= MAX_MESSAGE_BYTES
        ]
        bodies = client.fetch(small, ["BODY.PEEK[]"]) if small else {}
        for uid in batch:
            raw = bodies.get(uid, {}).get(b"BODY[]")
            result.fetched += 1
            if raw is None:
                result.errors.append(f"UID {uid}: larger than {MAX_MESSAGE_BYTES} bytes; not read.")
            elif not _store_one(
                session, org_id, settings, cursor, uid, bytes(raw), triage, now, result
            ):
                session.rollback()
                return result
            _advance(session, cursor, uid, now or clock.now())
            session.commit()
    cursor.synced_at = now or clock.now()
    session.commit()
    return result


def _already_stored(session: Session, org_id: int, message_id: str) -> bool:
    return (
        session.scalar(
            select(InboundMessage.id).where(
                InboundMessage.org_id == org_id, InboundMessage.message_id == message_id
            )
        )
        is not None
    )


def _store_one(
    session: Session,
    org_id: int,
    settings: Settings,
    cursor: MailboxCursor,
    uid: int,
    raw: bytes,
    triage: Triage | None,
    now: datetime | None,
    result: SyncResult,
) -> bool:
    """One message: read (and triaged) first, then written in a savepoint whose first statement
    claims its Message-ID, so a message that cannot be filed is reported, never half-kept, and
    one another sync has just filed counts as already read. False: the ledger could not be
    written now (locked, gone); the caller stops and the next sync reads this message again."""
    try:
        mail = read_mail(raw)
    except Exception as exc:  # a malformed message must not stop the others
        result.errors.append(f"UID {uid}: unreadable message ({type(exc).__name__}).")
        return True
    try:
        if _already_stored(session, org_id, mail.message_id):
            result.duplicates += 1
            return True
        filing = prepare_message(
            session, org_id, mail, mailbox=cursor.mailbox, uidvalidity=cursor.uidvalidity,
            uid=uid, triage=triage, now=now,
        )  # fmt: skip
        with session.begin_nested():
            stored = record_message(session, org_id, settings, filing, result=result)
    except IntegrityError as exc:
        if _already_stored(session, org_id, mail.message_id):
            result.duplicates += 1  # another sync filed it while this one read it
            return True
        log.exception("mailbox: UID %s could not be filed", uid)
        result.errors.append(f"UID {uid}: could not be filed ({type(exc).__name__}: {exc}).")
        return True
    except DBAPIError as exc:
        log.warning("mailbox: the ledger refused UID %s (%s); the next sync retries", uid, exc)
        result.errors.append(f"UID {uid}: the ledger is busy; the next sync reads it again.")
        return False
    except Exception as exc:
        log.exception("mailbox: UID %s could not be filed", uid)
        result.errors.append(f"UID {uid}: could not be filed ({type(exc).__name__}: {exc}).")
        return True
    result.stored += 1
    result.kinds[stored.kind] = result.kinds.get(stored.kind, 0) + 1
    return True


@dataclass(frozen=True)
class _Whose:
    thread: MailThread | None
    customer_id: int | None
    contact: Contact | None


def _whose(session: Session, org_id: int, mail: ReadMail) -> _Whose:
    """The thread, customer and contact a message belongs to: by reply token, by the
    Message-IDs it answers, else by a sender address that is one customer's contact."""
    thread = conversations.find_thread(
        session,
        org_id,
        tokens=conversations.tokens_in(mail.to),
        message_ids=mail.thread_ids,
    )
    customer_id = thread.customer_id if thread else None
    contact = session.get(Contact, thread.contact_id) if thread and thread.contact_id else None
    if mail.sender and (contact is None or (contact.email or "").lower() != mail.sender):
        same = contacts_by_email(session, org_id, mail.sender, customer_id=customer_id)
        if same and (customer_id is not None or len({c.customer_id for c in same}) == 1):
            contact = same[0]
            customer_id = contact.customer_id
    return _Whose(thread, customer_id, contact)


@dataclass
class Filing:
    """A message read and judged but not yet written: its row, whose it is, what it said."""

    msg: InboundMessage
    whose: _Whose
    mail: ReadMail
    now: datetime


def prepare_message(
    session: Session,
    org_id: int,
    mail: ReadMail,
    *,
    mailbox: str,
    uidvalidity: int,
    uid: int,
    triage: Triage | None,
    now: datetime | None,
) -> Filing:
    """Everything about a message that only reads the ledger: its thread, kind, return date and
    the reply triage (which may take a model's time, so no write lock is held meanwhile)."""
    now = now or clock.now()
    whose = _whose(session, org_id, mail)
    msg = InboundMessage(
        org_id=org_id, message_id=mail.message_id, mailbox=mailbox, uidvalidity=uidvalidity,
        uid=uid, thread_id=whose.thread.id if whose.thread else None,
        draft_id=whose.thread.draft_id if whose.thread else None,
        customer_id=whose.customer_id, contact_id=whose.contact.id if whose.contact else None,
        sender=mail.sender, subject=mail.subject, sent_at=mail.sent_at, received_at=now,
        body=mail.reply[:20_000], full_text=mail.text[:100_000], detail={},
    )  # fmt: skip
    if mail.is_dsn:
        msg.kind = "bounce"
        msg.body = "; ".join(f"{f.recipient}: {f.status} {f.diagnostic}" for f in mail.failures)
        msg.detail = {"failures": [f.__dict__ for f in mail.failures]}
    elif mail.auto_submitted:
        msg.kind = "auto_reply"
        msg.return_date = return_date(mail.reply or mail.text, org_today(session, org_id, now))
    elif asks_to_opt_out(mail.reply):
        msg.kind = "opt_out"
    elif whose.customer_id is None:
        msg.kind = "unmatched"
    else:
        msg.kind = "reply"
        if triage is not None and mail.reply.strip():
            msg.triage = triage(session, org_id, whose.customer_id, mail.reply)
    return Filing(msg, whose, mail, now)


def record_message(
    session: Session, org_id: int, settings: Settings, filing: Filing, *, result: SyncResult
) -> InboundMessage:
    """Write a prepared message and do what its kind calls for (flushed; the caller commits).
    The message's row goes first: its Message-ID claims it against a concurrent sync."""
    msg, mail, whose = filing.msg, filing.mail, filing.whose
    session.add(msg)
    session.flush()
    evidence = {"message_id": mail.message_id, "inbound_uid": msg.uid}
    if msg.kind == "bounce":
        for failure in mail.failures:
            contacts = contacts_by_email(session, org_id, failure.recipient)
            result.contacts_changed += mark_contacts(
                session, org_id, contacts, "bounced", actor=ACTOR,
                evidence={**evidence, "status": failure.status, "address": failure.recipient},
            )  # fmt: skip
    elif msg.kind == "opt_out" and whose.customer_id is not None and mail.sender:
        contacts = contacts_by_email(session, org_id, mail.sender, customer_id=whose.customer_id)
        result.contacts_changed += mark_contacts(
            session, org_id, contacts, "opted_out", actor=ACTOR,
            evidence={**evidence, "words": mail.reply[:200]},
        )  # fmt: skip
    _keep_attachments(settings, org_id, msg, mail)
    if whose.customer_id is not None:
        session.add(
            Activity(
                org_id=org_id, customer_id=whose.customer_id, contact_id=msg.contact_id,
                draft_id=msg.draft_id, kind=ActivityKind.REPLY, direction="in",
                summary=f"{msg.kind.replace('_', ' ')}: {mail.subject}"[:300],
                body=msg.body, occurred_at=mail.sent_at or filing.now,
            )
        )  # fmt: skip
    session.flush()
    return msg


def file_message(
    session: Session,
    org_id: int,
    settings: Settings,
    mail: ReadMail,
    *,
    mailbox: str,
    uidvalidity: int,
    uid: int,
    triage: Triage | None,
    now: datetime | None,
    result: SyncResult,
) -> InboundMessage:
    """Store one read message and do what its kind calls for (flushed; the caller commits)."""
    filing = prepare_message(
        session, org_id, mail, mailbox=mailbox, uidvalidity=uidvalidity, uid=uid,
        triage=triage, now=now,
    )  # fmt: skip
    return record_message(session, org_id, settings, filing, result=result)


def _keep_attachments(settings: Settings, org_id: int, msg: InboundMessage, mail: ReadMail) -> None:
    """Keep each accepted attachment (content-addressed, written atomically); list refusals."""
    refused: list[dict[str, str]] = []
    limit = settings.imap_max_attachment_bytes
    for i, att in enumerate(mail.attachments):
        name = safe_filename(att.filename)
        if i >= MAX_ATTACHMENTS:
            refused.append({"filename": name, "reason": f"more than {MAX_ATTACHMENTS} files"})
            continue
        if len(att.data) > limit:
            refused.append({"filename": name, "reason": f"{len(att.data):,} bytes > {limit:,}"})
            continue
        try:
            ctype = sniff_type(att.data, att.content_type)
        except CommitmentError:
            refused.append({"filename": name, "reason": f"type {att.content_type} not accepted"})
            continue
        digest = hashlib.sha256(att.data).hexdigest()
        rel = Path("inbound") / str(org_id) / f"{digest}{EVIDENCE_TYPES[ctype]}"
        write_once(settings.evidence_dir / rel, att.data)
        msg.attachments.append(
            InboundAttachment(
                filename=name, content_type=ctype, size_bytes=len(att.data), sha256=digest,
                storage_path=rel.as_posix(),
            )
        )  # fmt: skip
    if refused:
        msg.detail = {**(msg.detail or {}), "refused_attachments": refused}
