"""Reading one inbound e-mail: what it says, what kind of message it is, and what it carries.

Pure functions over the raw bytes (no ledger, no network), so each rule can be tested on a
message alone. ``tools.replies.mailbox`` calls them for every message it fetches.

- The text: the text/plain part, or the HTML part turned into text when that is all there is;
  then the quoted history and the signature are cut off by ``mail-parser-reply`` (Outlook's
  "From: … Sent: …" block, Gmail's "On … wrote:", their German, French and Spanish forms).
- The kind: a delivery-status notification (RFC 3464 ``multipart/report``) is a *bounce* when a
  recipient failed permanently (status 5.x.x); an RFC 3834 ``Auto-Submitted`` message (or the
  vendor headers that mean the same) is an *auto reply*; a reply asking to stop e-mails is an
  *opt out*; anything else is a *reply* for triage.
- The attachments: each one's bytes, declared type and name, for the caller to keep or refuse.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from html.parser import HTMLParser

from mailparser_reply import EmailReplyParser

from tools.grounding.extraction import extract_facts

#: Languages whose quote headers and signatures the reply parser knows, and the triage reads.
LANGUAGES = ("en", "de", "fr", "es")

_MSGID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class DeliveryFailure:
    """One recipient a DSN reports as failed for good."""

    recipient: str
    status: str
    diagnostic: str


@dataclass
class ReadMail:
    """Everything plixo takes from one message."""

    message_id: str
    sender: str
    subject: str
    sent_at: datetime | None
    to: list[str]
    in_reply_to: list[str]
    references: list[str]
    text: str
    reply: str
    auto_submitted: bool
    failures: list[DeliveryFailure] = field(default_factory=list)
    dsn_original_ids: list[str] = field(default_factory=list)
    is_dsn: bool = False
    attachments: list[Attachment] = field(default_factory=list)

    @property
    def thread_ids(self) -> list[str]:
        """Message-IDs this one answers, most direct first (In-Reply-To, References newest
        first, and for a DSN the bounced message's own ID)."""
        ids = self.in_reply_to + list(reversed(self.references)) + self.dsn_original_ids
        return list(dict.fromkeys(ids))


# --- HTML to text ------------------------------------------------------------------------------


class _HtmlText(HTMLParser):
    """HTML to plain text the way a mail client shows it: blocks on their own lines, quoted
    blocks prefixed with "> " (so the reply parser recognises them), no scripts or styles."""

    _BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "table", "hr"}
    _SKIP = {"script", "style", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = [""]
        self.quote = 0
        self.skip = 0

    def _newline(self) -> None:
        if self.lines[-1].strip():
            self.lines.append("")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = " ".join(v or "" for k, v in attrs if k == "class")
        if tag in self._SKIP:
            self.skip += 1
        elif tag == "blockquote" or "gmail_quote" in classes:
            self._newline()
            self.quote += 1
        elif tag in self._BLOCK:
            self._newline()

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self._newline()
            self.quote = max(0, self.quote - 1)
        elif tag in self._BLOCK:
            self._newline()

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        text = re.sub(r"\s+", " ", data)
        if not text.strip():
            return
        if not self.lines[-1]:
            self.lines[-1] = "> " * self.quote + text.lstrip()
        else:
            self.lines[-1] += text


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return "\n".join(line.rstrip() for line in parser.lines).strip()


# --- the parts of a message --------------------------------------------------------------------


def _body_text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    if part is not None:
        return str(part.get_content())
    part = msg.get_body(preferencelist=("html",))
    if part is not None:
        return html_to_text(str(part.get_content()))
    return ""


def strip_reply(text: str) -> str:
    """The payer's own words: quoted history, client quote headers and signature removed."""
    if not text.strip():
        return ""
    parsed = EmailReplyParser(languages=list(LANGUAGES)).read(text)
    first = parsed.replies[0] if parsed.replies else None
    # ``body`` is the newest reply without its quote header, signature and disclaimers.
    return (first.body if first is not None else "").strip() or text.strip()


def _attachments(msg: EmailMessage) -> list[Attachment]:
    found: list[Attachment] = []
    for part in msg.iter_attachments():
        if part.get_content_maintype() in ("multipart", "message"):
            continue
        if part.get_content_type() in ("text/rfc822-headers", "message/delivery-status"):
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes) or not data:
            continue
        found.append(
            Attachment(
                filename=part.get_filename() or "attachment",
                content_type=part.get_content_type(),
                data=data,
            )
        )
    return found


def _ids(value: str | None) -> list[str]:
    return _MSGID.findall(str(value or ""))


def _dsn(msg: EmailMessage) -> tuple[bool, list[DeliveryFailure], list[str]]:
    """A delivery-status notification's permanent failures and the bounced message's IDs."""
    if msg.get_content_type() != "multipart/report":
        return False, [], []
    if str(msg.get_param("report-type", "")).lower() != "delivery-status":
        return False, [], []
    failures: list[DeliveryFailure] = []
    original: list[str] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            failures += _failed_recipients(part)
        elif ctype == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            raw = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
            headers = HeaderParser().parsestr(raw)
            original += _ids(headers.get("Message-ID"))
        elif ctype == "message/rfc822":
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(first, Message):
                original += _ids(first.get("Message-ID"))
    return True, failures, original


def _failed_recipients(part: Message) -> list[DeliveryFailure]:
    blocks = part.get_payload()
    out: list[DeliveryFailure] = []
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, Message):
            continue
        action = str(block.get("Action", "")).strip().lower()
        status = str(block.get("Status", "")).strip()
        recipient = str(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
        address = recipient.split(";", 1)[-1].strip()
        # Only a permanent failure (5.x.x) bounces the address; 4.x.x is "delayed, still trying".
        if action == "failed" and status.startswith("5") and "@" in address:
            out.append(
                DeliveryFailure(
                    recipient=address.lower(),
                    status=status,
                    diagnostic=str(block.get("Diagnostic-Code", ""))[:300],
                )
            )
    return out


def _auto_submitted(msg: EmailMessage) -> bool:
    """RFC 3834 ``Auto-Submitted`` other than "no", or the vendor headers that mean the same
    (Exchange's ``X-Auto-Response-Suppress`` is set on what it generates itself, ``X-Autoreply``
    / ``X-Autorespond`` by vacation programs, ``Precedence: auto_reply``)."""
    value = str(msg.get("Auto-Submitted", "")).strip().lower()
    if value and value != "no":
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond"):
        return True
    return str(msg.get("Precedence", "")).strip().lower() == "auto_reply"


def read_mail(raw: bytes) -> ReadMail:
    """Parse one message. A message without a Message-ID gets one from its bytes (stable, so a
    second sync still recognises it)."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    found = _ids(msg.get("Message-ID"))
    message_id = found[0] if found else None
    if message_id is None:
        message_id = f"<sha256.{hashlib.sha256(raw).hexdigest()[:40]}@plixo.invalid>"
    try:
        sent_at = parsedate_to_datetime(str(msg["Date"])) if msg["Date"] else None
    except (TypeError, ValueError):
        sent_at = None
    if sent_at is not None and sent_at.tzinfo is None:
        sent_at = None
    to = [
        addr
        for header in ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")
        for _, addr in getaddresses([str(v) for v in msg.get_all(header, [])])
        if addr
    ]
    is_dsn, failures, original = _dsn(msg)
    text = _body_text(msg)
    return ReadMail(
        message_id=message_id[:300],
        sender=parseaddr(str(msg.get("From", "")))[1].lower()[:254],
        subject=str(msg.get("Subject", ""))[:300],
        sent_at=sent_at,
        to=to,
        in_reply_to=_ids(msg.get("In-Reply-To")),
        references=_ids(msg.get("References")),
        text=text,
        reply="" if is_dsn else strip_reply(text),
        auto_submitted=_auto_submitted(msg),
        failures=failures,
        dsn_original_ids=original,
        is_dsn=is_dsn,
        attachments=[] if is_dsn else _attachments(msg),
    )


# --- opt-out and the return date ---------------------------------------------------------------


def fold(text: str) -> str:
    """Lower case without accents ("désabonner" -> "desabonner", "ß" -> "ss")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower().replace("ß", "ss")


#: A reply that is only the word (SMS-style "STOP", "Unsubscribe", "Abmelden", "Baja").
_OPT_OUT_WORD = re.compile(
    r"^\W*(stop|unsubscribe|opt[ -]?out|remove|abmelden|austragen|abbestellen|stopp"
    r"|desabonner|desinscrire|desinscription|arret|baja|darme de baja|cancelar)\W*$"
)
#: Asking, in a sentence, not to be e-mailed any more (en, de, fr, es).
_OPT_OUT_ASK = re.compile(
    r"\bunsubscribe\b|\bopt (me |us )?out\b"
    r"|\bremove (me|us|my (e-?mail )?address|this (e-?mail )?address) from (your|the|this|all)"
    r"|\bstop (sending|e-?mailing|contacting|writing to) (me|us)\b"
    r"|\b(do not|don't|never) (e-?mail|contact|write to) (me|us)\b"
    r"|\b(abmelden|abbestellen)\b|\b(tragen sie|bitte) (mich|uns) .{0,30}\baus\b"
    r"|\bkeine (weiteren )?(e-?mails|nachrichten|mails) mehr\b"
    r"|\bnicht mehr (kontaktieren|anschreiben|per e-?mail)"
    r"|\bdesabonn|\bdesinscri|\bne (plus|pas) (me |nous )?(contacter|ecrire|envoyer)"
    r"|\bplus d'?e-?mails?\b|\bretirez(-| )(moi|nous)\b"
    r"|\bdar(me|nos) de baja\b|\bno (me |nos )?(envien|manden|escriban|contacten) mas\b"
    r"|\bdejen de (enviar|escribir|contactar)"
)


def asks_to_opt_out(reply: str) -> bool:
    """The payer's own words (history stripped) ask to stop e-mails, in any supported language."""
    folded = fold(reply).strip()
    if not folded:
        return False
    return bool(_OPT_OUT_WORD.match(folded) or _OPT_OUT_ASK.search(folded))


def return_date(text: str, today: date) -> date | None:
    """The date an out-of-office says its writer is back: the first date from today on, read in
    every supported language ("back on 14 October", "ab dem 14.10.", "de retour le 14 octobre")."""
    dates: set[date] = set()
    for language in LANGUAGES:
        dates.update(d for d in extract_facts(text, language=language, as_of=today).dates)
    future = sorted(d for d in dates if d >= today)
    return future[0] if future else None


def sender_address(value: str) -> str:
    """A bare, lower-case address from a header value ("Dana <dana@x.com>" -> "dana@x.com")."""
    try:
        return Address(addr_spec=parseaddr(value)[1]).addr_spec.lower()
    except (ValueError, IndexError):
        return ""
