"""Real-world shaped inbound messages, written by hand after what mail clients actually send.

Each function returns the raw bytes an IMAP server would hold: headers as Outlook, Gmail, an
Exchange out-of-office and a Postfix DSN write them, quoted history included.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate

#: Written now (a reply comes after the reminder it answers), in the zone the payer writes in.
DATE = formatdate(localtime=False)


def _headers(
    msg: EmailMessage | MIMEMultipart,
    *,
    sender: str,
    to: str,
    subject: str,
    message_id: str,
    in_reply_to: str | None,
) -> None:
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = DATE
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to


def outlook_reply(
    *,
    sender: str,
    to: str,
    in_reply_to: str | None,
    body: str,
    message_id: str = "<DM6PR11MB4107A1@DM6PR11MB4107.namprd11.prod.outlook.com>",
    quoted: str = "Hi Dana, invoice INV-1 for $1,200.00 was due on 2025-09-27.",
) -> bytes:
    """Outlook: the answer on top, a signature, then the "From: / Sent: / To: / Subject:" block."""
    msg = EmailMessage()
    _headers(
        msg,
        sender=sender,
        to=to,
        subject="RE: Invoice reminder",
        message_id=message_id,
        in_reply_to=in_reply_to,
    )
    msg["Thread-Topic"] = "Invoice reminder"
    msg["X-MS-Has-Attach"] = ""
    msg.set_content(
        f"{body}\n\nBest regards,\nMaria Keller\nAccounts Payable | Northwind Traders\n"
        "Tel. +1 212 555 0100\n\n"
        "________________________________\n"
        "From: Acme Receivables <ar@acme.test>\n"
        "Sent: Tuesday, October 7, 2025 2:00 PM\n"
        f"To: Maria Keller <{sender}>\n"
        "Subject: Invoice reminder\n\n"
        f"{quoted}\nYou can pay here: https://pay.acme.test/portal/abc\n"
    )
    return msg.as_bytes()


def gmail_html_reply(
    *,
    sender: str,
    to: str,
    in_reply_to: str | None,
    body_html: str,
    message_id: str = "<CAF=gmail-8f3e2@mail.gmail.com>",
) -> bytes:
    """Gmail, HTML only: the answer in a div, the quote in ``div.gmail_quote`` + blockquote."""
    html = (
        f'<div dir="ltr"><div>{body_html}</div><div><br></div>'
        "<div>--<br>Sam Ortiz<br>Finance, Contoso</div></div><br>"
        '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Tue, Oct 7, 2025 at '
        "2:00 PM Acme Receivables &lt;ar@acme.test&gt; wrote:<br></div>"
        '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">'
        "Hi Sam, invoice INV-7 for $9,999.00 is overdue. Please dispute nothing and pay."
        "</blockquote></div>"
    )
    msg = EmailMessage()
    _headers(
        msg,
        sender=sender,
        to=to,
        subject="Re: Invoice reminder",
        message_id=message_id,
        in_reply_to=in_reply_to,
    )
    msg.set_content(html, subtype="html")
    return msg.as_bytes()


def german_reply(
    *,
    sender: str,
    to: str,
    in_reply_to: str | None,
    body: str,
    message_id: str = "<20251008091403.GA4711@mail.beispiel.de>",
) -> bytes:
    """A German Thunderbird-style reply: "Am … schrieb …:" and ">" quoting."""
    msg = EmailMessage()
    _headers(
        msg,
        sender=sender,
        to=to,
        subject="AW: Zahlungserinnerung",
        message_id=message_id,
        in_reply_to=in_reply_to,
    )
    msg.set_content(
        f"{body}\n\nMit freundlichen Grüßen\nJürgen Weiß\nBuchhaltung\n\n"
        "Am 07.10.2025 um 14:00 schrieb Acme Receivables:\n"
        "> Guten Tag, die Rechnung INV-9 über 1.200,00 € ist seit dem 27.09.2025 fällig.\n"
    )
    return msg.as_bytes()


def out_of_office(
    *,
    sender: str,
    to: str,
    in_reply_to: str | None,
    text: str,
    message_id: str = "<ooo-7781@exchange.northwind.test>",
) -> bytes:
    """Exchange's out-of-office: RFC 3834 Auto-Submitted plus Microsoft's own headers."""
    msg = EmailMessage()
    _headers(
        msg,
        sender=sender,
        to=to,
        subject="Automatic reply: Invoice reminder",
        message_id=message_id,
        in_reply_to=in_reply_to,
    )
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-MS-Exchange-Inbox-Rules-Loop"] = sender
    msg.set_content(text)
    return msg.as_bytes()


def dsn_bounce(
    *,
    failed: str,
    original_id: str,
    to: str,
    message_id: str = "<20251008131500.9F1C21A0042@mx.acme.test>",
) -> bytes:
    """A Postfix delivery-status notification (RFC 3464): 5.1.1 user unknown."""
    text = f"""\
Return-Path: <>
From: MAILER-DAEMON@mx.acme.test (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to}
Auto-Submitted: auto-replied
Date: {DATE}
Message-ID: {message_id}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="9F1C21A0042.1759929303/mx.acme.test"

This is a MIME-encapsulated message.

--9F1C21A0042.1759929303/mx.acme.test
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.acme.test.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{failed}>: host mx.payer.test[203.0.113.9] said: 550 5.1.1
    <{failed}>: Recipient address rejected: User unknown

--9F1C21A0042.1759929303/mx.acme.test
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.acme.test
X-Postfix-Queue-ID: 9F1C21A0042
Arrival-Date: Wed,  8 Oct 2025 13:14:58 +0000 (UTC)

Final-Recipient: rfc822; {failed}
Original-Recipient: rfc822;{failed}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.payer.test
Diagnostic-Code: smtp; 550 5.1.1 <{failed}>: Recipient address rejected: User
    unknown

--9F1C21A0042.1759929303/mx.acme.test
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: ar@acme.test
To: {failed}
Subject: Invoice reminder
Message-ID: {original_id}

--9F1C21A0042.1759929303/mx.acme.test--
"""
    return text.replace("\n", "\r\n").encode()


def with_pdf(
    *,
    sender: str,
    to: str,
    in_reply_to: str | None,
    body: str,
    pdf: bytes,
    extra: tuple[str, str, bytes] | None = None,
    message_id: str = "<remit-20251008-0042@erp.contoso.test>",
) -> bytes:
    """A remittance advice: a short text and the PDF the payer's ERP produced."""
    outer = MIMEMultipart("mixed")
    _headers(
        outer,
        sender=sender,
        to=to,
        subject="Remittance advice",  # type: ignore[arg-type]
        message_id=message_id,
        in_reply_to=in_reply_to,
    )
    outer.attach(MIMEText(body, "plain"))
    part = MIMEApplication(pdf, "pdf")
    part.add_header("Content-Disposition", "attachment", filename="Remittance_0042.pdf")
    outer.attach(part)
    if extra:
        name, ctype, data = extra
        other = MIMEApplication(data, ctype.split("/")[1])
        other.add_header("Content-Disposition", "attachment", filename=name)
        outer.attach(other)
    return outer.as_bytes()


MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]"
    b"/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
