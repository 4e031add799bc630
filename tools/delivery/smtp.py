"""SMTP delivery: one e-mail per call, with the outbox's Message-ID so a resend can be recognised.

Host, port, TLS mode and credentials come from ``Settings``. Errors are sorted into *permanent*
(the relay refused the recipient, sender or content: retrying will not help) and *transient*
(connection trouble, 4xx replies: the outbox retries later), because the outbox's retry policy
depends on that difference and nothing else.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from memory.config import Settings
from tools.delivery.dkim import sign_message

_MESSAGE_ID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
_HEADER_BREAK = re.compile(r"[\r\n]")


@dataclass(frozen=True)
class Attachment:
    """A file sent with a message (the statement of account as PDF)."""

    filename: str
    content: bytes
    mime_type: str = "application/pdf"


class DeliveryError(Exception):
    """A message could not be handed to the relay; ``permanent`` says whether a retry can help."""

    def __init__(self, message: str, *, permanent: bool, recipient_refused: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.recipient_refused = recipient_refused


def _check_address(value: str, what: str) -> str:
    if _HEADER_BREAK.search(value):
        raise DeliveryError(
            f"{what} contains a line break; refusing to build headers.", permanent=True
        )
    _, addr = parseaddr(value)
    if not addr or "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise DeliveryError(f"{what} {value!r} is not an e-mail address.", permanent=True)
    return addr


def build_message(
    settings: Settings,
    *,
    to: str,
    subject: str,
    body: str,
    message_id: str,
    reply_to: str | None = None,
    attachments: Sequence[Attachment] = (),
) -> EmailMessage:
    """The MIME message exactly as it will be sent (split out so it can be inspected in tests)."""
    _check_address(to, "Recipient")
    _check_address(settings.smtp_from, "PLIXO_SMTP_FROM")
    if not _MESSAGE_ID.match(message_id):
        raise DeliveryError(
            f"Message-ID {message_id!r} must look like <unique@domain>.", permanent=True
        )
    if _HEADER_BREAK.search(subject):
        raise DeliveryError(
            "Subject contains a line break; refusing to build headers.", permanent=True
        )
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id
    if reply_to:  # the thread's reply address (tools.delivery.threads), so replies find their way
        msg["Reply-To"] = _check_address(reply_to, "Reply-To")
    msg.set_content(body)
    for file in attachments:
        if _HEADER_BREAK.search(file.filename) or "/" not in file.mime_type:
            raise DeliveryError(
                f"Attachment {file.filename!r} ({file.mime_type}) cannot be sent as named.",
                permanent=True,
            )
        maintype, subtype = file.mime_type.split("/", 1)
        msg.add_attachment(file.content, maintype=maintype, subtype=subtype, filename=file.filename)
    return msg


def _connect(settings: Settings, timeout: float) -> smtplib.SMTP:
    context = ssl.create_default_context()
    if settings.smtp_ssl:
        return smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=timeout, context=context
        )
    smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
    if settings.smtp_starttls:
        smtp.starttls(context=context)
    return smtp


def send_email(
    settings: Settings,
    *,
    to: str,
    subject: str,
    body: str,
    message_id: str,
    timeout: float = 30.0,
    reply_to: str | None = None,
    org_id: int | None = None,
    attachments: Sequence[Attachment] = (),
) -> str:
    """Hand one message to the SMTP relay and return its Message-ID.

    Raises ``DeliveryError``; never returns unless the relay accepted the message for ``to``.
    """
    msg = build_message(
        settings, to=to, subject=subject, body=body, message_id=message_id, reply_to=reply_to,
        attachments=attachments,
    )  # fmt: skip
    msg = sign_message(msg, org_id, settings) if org_id is not None else msg  # DKIM
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        with _connect(settings, timeout) as smtp:
            if settings.smtp_username:
                password = (
                    settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                )
                smtp.login(settings.smtp_username, password)
            refused = smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(
            f"SMTP relay {where} refused the credentials (check PLIXO_SMTP_USERNAME and "
            f"PLIXO_SMTP_PASSWORD): {exc.smtp_code}",
            permanent=False,
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        reasons = "; ".join(
            f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
            for code, msg in exc.recipients.values()
        )
        permanent = all(code >= 500 for code in codes)
        raise DeliveryError(
            f"SMTP relay {where} refused the recipient {to}: {reasons}",
            permanent=permanent,
            recipient_refused=permanent,
        ) from exc
    except smtplib.SMTPSenderRefused as exc:
        raise DeliveryError(
            f"SMTP relay {where} refused the sender {settings.smtp_from} ({exc.smtp_code}).",
            permanent=exc.smtp_code >= 500,
        ) from exc
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(
            f"SMTP relay {where} answered {exc.smtp_code}: {exc.smtp_error!r}",
            permanent=exc.smtp_code >= 500,
        ) from exc
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"Cannot deliver through {where}: {exc}", permanent=False) from exc
    if refused:
        raise DeliveryError(
            f"SMTP relay {where} refused {sorted(refused)}.", permanent=True, recipient_refused=True
        )
    return message_id
