"""Reading one message: the payer's own words, its kind, its attachments (no server needed)."""

from __future__ import annotations

from datetime import date

import pytest

from tests.tools import mail_samples as samples
from tools.replies.mail_reading import asks_to_opt_out, html_to_text, read_mail, return_date


def test_outlook_quote_and_signature_are_cut_off() -> None:
    mail = read_mail(
        samples.outlook_reply(
            sender="Maria <maria@payer.test>",
            to="ar+abc@acme.test",
            in_reply_to="<m1@acme.test>",
            body="We will pay $1,200.00 on 20 October 2025.",
        )
    )
    assert mail.reply == "We will pay $1,200.00 on 20 October 2025."
    assert "INV-1" in mail.text  # the whole text is kept for the record
    assert mail.sender == "maria@payer.test" and mail.thread_ids == ["<m1@acme.test>"]
    assert not mail.auto_submitted and not mail.is_dsn


def test_html_only_gmail_reply_loses_its_quote() -> None:
    mail = read_mail(
        samples.gmail_html_reply(
            sender="sam@payer.test",
            to="ar@acme.test",
            in_reply_to=None,
            body_html="Hi,<br>we will transfer <b>$1,200.00</b> on October 20, 2025.",
        )
    )
    assert mail.reply == "Hi,\nwe will transfer $1,200.00 on October 20, 2025."
    assert "dispute nothing" in mail.text and "dispute nothing" not in mail.reply


def test_html_to_text_marks_quotes_and_drops_styles() -> None:
    text = html_to_text("<style>p{}</style><p>Yes</p><blockquote>old<br>older</blockquote>")
    assert text.splitlines() == ["Yes", "> old", "> older"]


def test_german_reply_without_greeting_and_quote() -> None:
    mail = read_mail(
        samples.german_reply(
            sender="j@payer.test",
            to="ar@acme.test",
            in_reply_to="<m@acme.test>",
            body="Guten Tag,\n\nwir überweisen 1.200,00 € am 20.10.2025.",
        )
    )
    assert mail.reply == "Guten Tag,\n\nwir überweisen 1.200,00 € am 20.10.2025."


def test_out_of_office_is_auto_submitted_with_a_return_date() -> None:
    mail = read_mail(
        samples.out_of_office(
            sender="j@payer.test",
            to="ar@acme.test",
            in_reply_to=None,
            text="Ich bin bis zum 14.10.2025 nicht im Büro. I am back on 14 October 2025.",
        )
    )
    assert mail.auto_submitted
    assert return_date(mail.reply, date(2025, 10, 8)) == date(2025, 10, 14)
    assert return_date(mail.reply, date(2025, 10, 15)) is None  # a past date is no return date


def test_dsn_names_the_failed_recipient_and_the_bounced_message() -> None:
    mail = read_mail(
        samples.dsn_bounce(failed="AP@payer.test", original_id="<o@acme.test>", to="ar@acme.test")
    )
    assert mail.is_dsn and mail.thread_ids == ["<o@acme.test>"]
    [failure] = mail.failures
    assert failure.recipient == "ap@payer.test" and failure.status == "5.1.1"
    delayed = samples.dsn_bounce(failed="x@payer.test", original_id="<o@a>", to="ar@acme.test")
    delayed = delayed.replace(b"Action: failed", b"Action: delayed").replace(
        b"Status: 5", b"Status: 4"
    )
    assert read_mail(delayed).failures == []  # still trying: not a bounce


def test_attachments_are_listed_with_their_bytes() -> None:
    mail = read_mail(
        samples.with_pdf(
            sender="j@payer.test",
            to="ar@acme.test",
            in_reply_to=None,
            body="Remittance attached.",
            pdf=samples.MINIMAL_PDF,
        )
    )
    [pdf] = mail.attachments
    assert pdf.filename == "Remittance_0042.pdf" and pdf.data == samples.MINIMAL_PDF


def test_a_message_without_message_id_gets_a_stable_one() -> None:
    raw = b"From: a@payer.test\r\nSubject: hi\r\n\r\nSTOP\r\n"
    assert read_mail(raw).message_id == read_mail(raw).message_id
    assert read_mail(raw).message_id.endswith("@plixo.invalid>")


@pytest.mark.parametrize(
    "text",
    [
        "STOP",
        "Unsubscribe",
        "Please remove me from your mailing list.",
        "Stop emailing me about this.",
        "Abmelden",
        "Bitte tragen Sie mich aus dem Verteiler aus.",
        "Keine E-Mails mehr bitte.",
        "Merci de me désabonner.",
        "Veuillez ne plus me contacter par e-mail.",
        "Por favor, darme de baja.",
        "No me envíen más correos.",
    ],
)
def test_opt_out_in_the_supported_languages(text: str) -> None:
    assert asks_to_opt_out(text)


@pytest.mark.parametrize(
    "text",
    [
        "We will pay on Friday; no need to stop by.",
        "The payment stopped at our bank, we will resend it.",
        "Bitte senden Sie uns die Rechnung erneut.",
        "Nous payerons le 20 octobre.",
        "Pagaremos la factura el lunes.",
        "",
    ],
)
def test_ordinary_replies_are_not_opt_outs(text: str) -> None:
    assert not asks_to_opt_out(text)
