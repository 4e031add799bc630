"""Replies from a real mailbox: Debian's Dovecot on loopback, filled through IMAP APPEND.

The whole way round: a reminder goes out through the outbox to a local aiosmtpd server (with its
thread's Reply-To), the payer's answer is appended to the Dovecot mailbox, ``plixo mailbox sync``
reads it, threads it to that message and proposes the promise it states; a second sync changes
nothing. Bounces and opt-outs change the contact through the audited path, and the guardrails
then block e-mail to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from api.cli.main import app
from memory import durable
from memory.config import Settings, get_settings
from memory.models import (
    Activity,
    AuditEvent,
    Contact,
    Draft,
    InboundAttachment,
    InboundMessage,
    MailboxCursor,
    MailThread,
    Organisation,
    Persona,
)
from tests.api.factories import NOW, Seeded, seed_review, settings_for
from tests.api.smtp_server import SmtpSink, start_smtp
from tests.dovecot_server import Dovecot, available, start_dovecot
from tests.tools import mail_samples as samples
from tools.delivery import flow as delivery_flow
from tools.delivery import outbox
from tools.drafts import service as drafts
from tools.drafts.service import approver_roles, make_recheck
from tools.replies import conversations

runner = CliRunner()
SECRET = "test-secret-key-for-sessions-0123456789"  # settings_for's, so threads match


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    reason = available()
    if reason:
        pytest.skip(reason)
    server = start_dovecot()
    yield server
    server.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[int, SmtpSink]]:
    controller, sink = start_smtp()
    yield controller.port, sink
    controller.stop()


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    tmp_path: Path,
    dovecot: Dovecot,
    smtp: tuple[int, SmtpSink],
) -> Dovecot:
    values = {
        "PLIXO_DATABASE_URL": db_url,
        "PLIXO_DATA_DIR": str(tmp_path / "data"),
        "PLIXO_SECRET_KEY": SECRET,
        "PLIXO_SMTP_HOST": "127.0.0.1",
        "PLIXO_SMTP_PORT": str(smtp[0]),
        "PLIXO_SMTP_FROM": "Acme Receivables <ar@acme.test>",
        "PLIXO_IMAP_HOST": "127.0.0.1",
        "PLIXO_IMAP_PORT": str(dovecot.port),
        "PLIXO_IMAP_SSL": "false",
        "PLIXO_IMAP_USERNAME": dovecot.username,
        "PLIXO_IMAP_PASSWORD": dovecot.password,
        "PLIXO_MODEL": "offline",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield dovecot  # type: ignore[misc]
    get_settings.cache_clear()


@pytest.fixture
def seeded(session: Session, org: Organisation, tmp_path: Path) -> Seeded:
    return seed_review(session, org, settings_for(str(tmp_path)), drafts=3)


@pytest.fixture(autouse=True)
def _durable_delivery(
    worker_id: str, durable_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """DBOS runs in this test process (a worker) against this test's ledger: approved reminders
    are delivered by the durable delivery workflow, as in production."""
    durable.set_ledger(sessions, durable_settings)


def _append(server: Dovecot, *messages: bytes, folder: str = "INBOX") -> None:
    client = IMAPClient("127.0.0.1", port=server.port, ssl=False)
    client.login(server.username, server.password)
    try:
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for raw in messages:
            client.append(folder, raw)
    finally:
        client.logout()


def _send_reminder(
    sessions: sessionmaker[Session], seeded: Seeded, sink: SmtpSink, tmp_path: Path, i: int = 0
) -> Message:
    """Approve draft ``i`` and let the outbox worker deliver it to the local SMTP server."""
    with sessions() as s:
        draft = s.get(Draft, seeded.drafts[i].id)
        assert draft is not None
        drafts.approve_draft(
            s,
            seeded.org.id,
            draft.id,
            user=seeded.users[Persona.COLLECTOR],
            expected_version=draft.version,
            settings=settings_for(str(tmp_path)),
            now=NOW,
        )
        s.commit()
    before = len(sink.received)
    with delivery_flow.use_sender(lambda _s: outbox.smtp_sender(get_settings())):
        delivery_flow.drain(sessions, timeout_s=60)
    assert len(sink.received) == before + 1
    return sink.received[-1].message


def _sync() -> dict[str, Any]:
    result = runner.invoke(app, ["mailbox", "sync", "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def _state(session: Session, org_id: int) -> tuple[Any, ...]:
    session.expire_all()
    count = lambda model: session.scalar(select(func.count()).select_from(model))  # noqa: E731
    contacts = session.execute(
        select(Contact.id, Contact.bounced, Contact.opted_out_email)
        .where(Contact.org_id == org_id)
        .order_by(Contact.id)
    ).all()
    triages = session.scalars(select(InboundMessage.triage).order_by(InboundMessage.id)).all()
    return (
        count(InboundMessage),
        count(InboundAttachment),
        count(Activity),
        count(AuditEvent),
        tuple(contacts),
        json.dumps(triages, sort_keys=True, default=str),
    )


def test_reply_is_threaded_to_the_reminder_and_proposes_the_promise(
    env: Dovecot,
    seeded: Seeded,
    sessions: sessionmaker[Session],
    session: Session,
    smtp: tuple[int, SmtpSink],
    tmp_path: Path,
) -> None:
    sent = _send_reminder(sessions, seeded, smtp[1], tmp_path)
    reply_to = str(sent["Reply-To"])
    token = conversations.thread_token(get_settings(), str(sent["Message-ID"]))
    assert reply_to == f"ar+{token}@acme.test"
    contact_email = seeded.customers[0].contacts[0].email
    pay_on = date.today() + timedelta(days=12)
    _append(
        env,
        samples.outlook_reply(
            sender=f"Maria Keller <{contact_email}>",
            to=reply_to,
            in_reply_to=str(sent["Message-ID"]),
            body=f"Hello,\n\nThanks for the reminder. We will pay $1,200.00 on "
            f"{pay_on.strftime('%d %B %Y')}.",
        ),
    )
    first = _sync()
    assert first["stored"] == 1 and first["kinds"] == {"reply": 1}
    stored = session.scalars(select(InboundMessage)).one()
    thread = session.scalars(select(MailThread)).one()
    assert stored.thread_id == thread.id and stored.draft_id == seeded.drafts[0].id
    assert stored.customer_id == seeded.customers[0].id
    assert stored.body.startswith("Hello,") and "Best regards" not in stored.body
    assert "Sent: Tuesday" not in stored.body  # the quoted reminder is cut off
    assert stored.triage is not None and stored.triage["classification"] == "promise"
    [proposal] = stored.triage["acceptable"]
    assert proposal["kind"] == "log_promise"
    assert proposal["amount"] == {"amount_minor": 120_000, "currency": "USD"}
    assert proposal["on_date"] == pay_on.isoformat()
    assert proposal["invoice_numbers"] == [seeded.invoices[0].number]
    # The draft's view and Account 360 show the conversation: the reminder, then the reply.
    items = conversations.conversation(session, seeded.org.id, draft_id=seeded.drafts[0].id)
    assert [i.direction for i in items] == ["out", "in"]
    before = _state(session, seeded.org.id)
    second = _sync()
    assert second["stored"] == 0 and second["fetched"] == 0
    assert _state(session, seeded.org.id) == before


def test_a_reply_without_in_reply_to_is_threaded_by_its_token(
    env: Dovecot,
    seeded: Seeded,
    sessions: sessionmaker[Session],
    session: Session,
    smtp: tuple[int, SmtpSink],
    tmp_path: Path,
) -> None:
    sent = _send_reminder(sessions, seeded, smtp[1], tmp_path, i=1)
    contact_email = seeded.customers[1].contacts[0].email
    html = (
        "Hi,<br>we will transfer <b>$1,201.00</b> on "
        + (date.today() + timedelta(days=9)).strftime("%B %d, %Y")
        + ".<br>Please don't open a dispute."
    )
    _append(
        env,
        samples.gmail_html_reply(
            sender=str(contact_email),
            to=str(sent["Reply-To"]),
            in_reply_to=None,
            body_html=html,
        ),
    )
    assert _sync()["kinds"] == {"reply": 1}
    stored = session.scalars(select(InboundMessage)).one()
    assert stored.draft_id == seeded.drafts[1].id
    assert "$9,999.00" not in stored.body  # Gmail's quoted reminder is not the payer's words
    assert stored.triage and stored.triage["classification"] == "promise"


def test_auto_reply_bounce_opt_out_and_attachments(
    env: Dovecot,
    seeded: Seeded,
    sessions: sessionmaker[Session],
    session: Session,
    smtp: tuple[int, SmtpSink],
    tmp_path: Path,
) -> None:
    sent = [_send_reminder(sessions, seeded, smtp[1], tmp_path, i=i) for i in range(3)]
    emails = [str(c.contacts[0].email) for c in seeded.customers]
    back = date.today() + timedelta(days=6)
    _append(
        env,
        samples.out_of_office(
            sender=emails[0],
            to=str(sent[0]["Reply-To"]),
            in_reply_to=str(sent[0]["Message-ID"]),
            text=f"I am out of the office until {back.strftime('%B %d, %Y')} with limited "
            "access to e-mail. For urgent matters contact ap@payer.test.",
        ),
        samples.dsn_bounce(
            failed=emails[1], original_id=str(sent[1]["Message-ID"]), to="ar@acme.test"
        ),
        samples.german_reply(
            sender=emails[2],
            to=str(sent[2]["Reply-To"]),
            in_reply_to=str(sent[2]["Message-ID"]),
            body="Guten Tag,\n\nbitte tragen Sie mich aus Ihrem Verteiler aus. Keine E-Mails mehr.",
        ),
        samples.with_pdf(
            sender=emails[0],
            to="ar@acme.test",
            in_reply_to=str(sent[0]["Message-ID"]),
            body="Payment was sent yesterday, remittance attached.",
            pdf=samples.MINIMAL_PDF,
            extra=("setup.exe", "application/octet-stream", b"MZ\x90\x00" * 64),
        ),
    )
    result = _sync()
    assert result["kinds"] == {"auto_reply": 1, "bounce": 1, "opt_out": 1, "reply": 1}
    session.expire_all()
    by_kind = {m.kind: m for m in session.scalars(select(InboundMessage))}
    assert by_kind["auto_reply"].return_date == back
    assert by_kind["auto_reply"].triage is None  # labelled, pauses nothing
    assert by_kind["bounce"].draft_id == seeded.drafts[1].id
    contacts = [session.get(Contact, c.contacts[0].id) for c in seeded.customers]
    assert contacts[0] is not None and not (contacts[0].bounced or contacts[0].opted_out_email)
    assert contacts[1] is not None and contacts[1].bounced and not contacts[1].opted_out_email
    assert contacts[2] is not None and contacts[2].opted_out_email and not contacts[2].bounced
    audits = {
        e.action: e
        for e in session.scalars(select(AuditEvent).where(AuditEvent.action.like("contact.%")))
    }
    assert set(audits) == {"contact.bounced", "contact.opted_out"}
    assert audits["contact.bounced"].detail["status"] == "5.1.1"
    assert audits["contact.opted_out"].subject_id == contacts[2].id
    remit = by_kind["reply"]
    assert remit.triage and remit.triage["classification"] == "paid_claim"
    [kept] = remit.attachments
    assert kept.content_type == "application/pdf" and kept.filename == "Remittance_0042.pdf"
    assert (get_settings().evidence_dir / kept.storage_path).read_bytes() == samples.MINIMAL_PDF
    assert remit.detail["refused_attachments"][0]["filename"] == "setup.exe"
    # The guardrails now block e-mail to the bounced and the opted-out contact.
    for i, rule in ((1, "contact.bounced"), (2, "contact.opted_out")):
        other = _pending_draft_for(session, seeded, i, tmp_path)
        recheck = make_recheck(
            settings_for(str(tmp_path)), approved_by=approver_roles(session, other)
        )
        decision = recheck(session, other, NOW).decision
        assert decision["outcome"] == "block"
        assert rule in {r["rule_id"] for r in decision["reasons"]}, decision["reasons"]


def _pending_draft_for(session: Session, seeded: Seeded, i: int, tmp_path: Path) -> Draft:
    from tests.api.factories import make_draft

    customer = seeded.customers[i]
    draft = make_draft(
        session,
        settings_for(str(tmp_path)),
        seeded.org,
        customer,
        seeded.invoices[i],
        segment=seeded.segment,
        step=None,
        now=NOW,
    )
    session.commit()
    return draft


def test_uidvalidity_change_rereads_without_doubles(
    env: Dovecot, seeded: Seeded, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLIXO_IMAP_FOLDER", "Replies")
    get_settings.cache_clear()
    email = str(seeded.customers[0].contacts[0].email)
    one = samples.outlook_reply(
        sender=email,
        to="ar@acme.test",
        in_reply_to=None,
        body="Could you send a copy of the invoice?",
    )
    two = samples.german_reply(
        sender=email,
        to="ar@acme.test",
        in_reply_to=None,
        body="Können Sie uns bitte die Rechnung noch einmal senden?",
    )
    _append(env, one, folder="Replies")
    assert _sync()["stored"] == 1
    first_validity = session.scalars(select(MailboxCursor)).one().uidvalidity
    client = IMAPClient("127.0.0.1", port=env.port, ssl=False)
    client.login(env.username, env.password)
    client.delete_folder("Replies")  # a rebuilt mailbox: same messages, new numbering
    client.logout()
    _append(env, two, one, folder="Replies")
    result = _sync()
    assert result["uidvalidity_changed"] is True and result["uidvalidity"] != first_validity
    assert result["fetched"] == 2 and result["stored"] == 1 and result["duplicates"] == 1
    assert session.scalar(select(func.count()).select_from(InboundMessage)) == 2


def test_wrong_password_says_what_to_check(
    env: Dovecot, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLIXO_IMAP_PASSWORD", "not-it")
    get_settings.cache_clear()
    result = runner.invoke(app, ["mailbox", "sync"])
    assert result.exit_code != 0
    assert "PLIXO_IMAP_PASSWORD" in result.output and "not-it" not in result.output


def test_consolidated_reminder_reply_round_trip(
    env: Dovecot,
    sessions: sessionmaker[Session],
    session: Session,
    smtp: tuple[int, SmtpSink],
) -> None:
    """The issue's whole way round with a consolidated reminder: Autopilot writes one message for
    the customer's six due invoices (two currencies), it goes out through aiosmtpd with the PDF
    statement, the payer's reply promising the USD total lands in Dovecot, ``plixo mailbox sync``
    threads it to that message with a promise proposal of that amount and date, and a second
    sync changes nothing."""
    import time_machine

    from agent.autopilot import run_autopilot
    from tests.agent.factories import AS_OF, NOW, Builder
    from tests.tools.outreach.test_consolidation import _book

    b, customer_id, _ = _book(session)
    approver = Builder(session, b.org).user(Persona.COLLECTOR)
    session.commit()
    settings = get_settings()
    usd_total = 990_000 + 12_345 + 500_000
    pay_on = AS_OF + timedelta(days=12)
    with time_machine.travel(NOW, tick=True):
        summary = run_autopilot(
            sessions, b.org.id, as_of=AS_OF, shadow=True, settings=settings, now=NOW
        )
        assert summary.drafted == 2
        draft = session.scalars(select(Draft).where(Draft.run_key.like("group:%"))).one()
        with sessions() as s:
            row, user = s.get(Draft, draft.id), s.get(type(approver), approver.id)
            assert row is not None and user is not None
            drafts.approve_draft(
                s, b.org.id, row.id, user=user, expected_version=row.version,
                settings=settings, now=NOW,
            )  # fmt: skip
            s.commit()
        with delivery_flow.use_sender(lambda _s: outbox.smtp_sender(get_settings())):
            delivery_flow.drain(sessions, timeout_s=60)
        [received] = smtp[1].received
        sent = received.message
        assert [p.get_content_type() for p in sent.walk()].count("application/pdf") == 1
        _append(
            env,
            samples.outlook_reply(
                sender="Ana Payables <ap@contoso.example>",
                to=str(sent["Reply-To"]),
                in_reply_to=str(sent["Message-ID"]),
                body="Hello,\n\nthanks for the statement. We will pay $15,023.45 on "
                f"{pay_on.strftime('%d %B %Y')} for the USD invoices.",
            ),
        )
        first = _sync()
        assert first["stored"] == 1 and first["kinds"] == {"reply": 1}
        stored = session.scalars(select(InboundMessage)).one()
        assert stored.draft_id == draft.id and stored.customer_id == customer_id
        assert stored.thread_id is not None
        assert stored.triage is not None and stored.triage["classification"] == "promise"
        [proposal] = stored.triage["acceptable"]
        assert proposal["kind"] == "log_promise"
        assert proposal["amount"] == {"amount_minor": usd_total, "currency": "USD"}
        assert proposal["on_date"] == pay_on.isoformat()
        # No invoice named: the USD invoices the amount covers, oldest first (payments apply so).
        assert proposal["invoice_numbers"] == ["C-201", "C-202", "C-203"]
        items = conversations.conversation(session, b.org.id, draft_id=draft.id)
        assert [i.direction for i in items] == ["out", "in"]
        before = _state(session, b.org.id)
        second = _sync()
        assert second["stored"] == 0 and second["fetched"] == 0
        assert _state(session, b.org.id) == before
