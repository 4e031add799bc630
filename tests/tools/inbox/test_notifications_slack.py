"""Slack notifications take the durable delivery path e-mail takes: an outbox row in the event's
transaction, then the DBOS delivery workflow hands it to Slack's Web API (``chat.postMessage``).

Slack is played by a stand-in on loopback that records every JSON body posted and answers what a
test asks for (429 with Retry-After, 500, a refusal), so retries, failures and their records are
the outbox's own. The message must read in words and carry no secret."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from memory import clock, durable
from memory.config import Settings
from memory.models import (
    AuditEvent,
    Channel,
    Notification,
    Organisation,
    OutboxMessage,
    OutboxStatus,
    Persona,
)
from tests.api.factories import Seeded, seed_review, settings_for
from tests.api.smtp_server import SmtpSink, start_smtp
from tools.commitments import disputes
from tools.delivery import flow as delivery_flow
from tools.delivery import outbox
from tools.inbox import notifications

TOKEN = "xoxb-123456789012-secret-bot-token"
SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true, "channel": "D0PERSON", "ts": "1728316800.000100"}'
    headers: dict[str, str] = field(default_factory=dict)


class SlackStandIn:
    """Slack's Web API on 127.0.0.1: keeps (path, headers, JSON) of every call and answers from
    ``answers`` in order (then 200 ok)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer.lock:
                    outer.calls.append((self.path, dict(self.headers), json.loads(raw or b"{}")))
                    answer = outer.answers.pop(0) if outer.answers else Answer()
                self.send_response(answer.status)
                for name, value in {"content-type": "application/json", **answer.headers}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    stand_in = SlackStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture
def smtp() -> Iterator[tuple[int, SmtpSink]]:
    controller, sink = start_smtp()
    yield controller.port, sink
    controller.stop()


@pytest.fixture
def seeded(session: Session, org: Organisation, tmp_path: Path) -> Seeded:
    seeded = seed_review(session, org, settings_for(str(tmp_path)), drafts=1)
    seeded.customers[0].name = "Smith & Sons <EU>"
    session.commit()
    return seeded


@pytest.fixture
def settings(
    durable_settings: Settings, slack: SlackStandIn, smtp: tuple[int, SmtpSink]
) -> Settings:
    return durable_settings.model_copy(
        update={
            "public_base_url": "http://plixo.test",
            "slack_bot_token": SecretStr(TOKEN),
            "slack_signing_secret": SecretStr(SIGNING),
            "slack_base_url": slack.url,
            "smtp_port": smtp[0],
        }
    )


def _breached_dispute(session: Session, seeded: Seeded, settings: Settings) -> int:
    """A dispute opened a week ago, swept: the Collector's notification, committed."""
    collector = seeded.users[Persona.COLLECTOR]
    d = disputes.open_dispute(
        session, seeded.org.id, invoice_id=seeded.invoices[0].id, reason="pricing",
        actor=collector, now=clock.now() - timedelta(days=7),
    )  # fmt: skip
    assert notifications.sweep(session, seeded.org.id, settings=settings) == 1
    session.commit()
    return d.id


def _deliver(sessions: sessionmaker[Session], settings: Settings) -> dict[str, int]:
    """Run every queued delivery in this process (the test process is a worker) and wait."""
    durable.set_ledger(sessions, settings)
    return dict(delivery_flow.drain(sessions, timeout_s=60))


def _no_secret(text: str) -> None:
    assert TOKEN not in text and "xoxb-" not in text and SIGNING not in text


def test_slack_and_email_notifications_leave_through_the_outbox_in_words(
    session: Session,
    sessions: sessionmaker[Session],
    seeded: Seeded,
    settings: Settings,
    slack: SlackStandIn,
    smtp: tuple[int, SmtpSink],
    worker_id: str,
) -> None:
    collector = seeded.users[Persona.COLLECTOR]
    notifications.set_preferences(session, collector, email=True, slack=True)
    dispute_id = _breached_dispute(session, seeded, settings)
    assert slack.calls == []  # queued with the event, not posted from the request

    rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    assert [(r.channel, r.recipient, r.status) for r in rows] == [
        (Channel.EMAIL, collector.email, OutboxStatus.QUEUED),
        (Channel.SLACK, collector.slack_user_id, OutboxStatus.QUEUED),
    ]
    assert _deliver(sessions, settings) == {outbox.SENT: 2}

    [(path, headers, body)] = slack.calls
    assert path == "/api/chat.postMessage"
    assert headers["Authorization"] == f"Bearer {TOKEN}"  # the token travels only as the header
    assert body["channel"] == collector.slack_user_id
    link = f"http://plixo.test/disputes/{dispute_id}"
    assert body["text"] == (
        f"*Dispute SLA breached: Smith &amp; Sons &lt;EU&gt; (Open)*\n<{link}|Open in plixo>"
    )
    shown = body["text"].replace(f"<{link}|Open in plixo>", "Open in plixo")
    assert not re.search(r"[a-z]+_[a-z_]+|\{|\[|\bNone\b", shown)  # no sla_breach, no reprs
    _no_secret(json.dumps(body))

    # the e-mail path is as it was: subject, words, the link and why it came
    port, sink = smtp
    [mail] = sink.received
    assert mail.rcpt_tos == [collector.email]
    assert mail.message["Subject"] == "plixo: Dispute SLA breached: Smith & Sons <EU> (Open)"
    text = mail.message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert text.replace("\r\n", "\n").strip() == (
        f"Dispute SLA breached: Smith & Sons <EU> (Open)\n\n{link}\n\n"
        "(You chose e-mail notifications in your plixo inbox.)"
    )

    with sessions() as s:
        sent = s.scalars(select(OutboxMessage).where(OutboxMessage.channel == Channel.SLACK)).one()
        assert sent.status is OutboxStatus.SENT and sent.attempts == 1
        item = s.scalars(select(Notification)).one()
        assert item.emailed and item.slacked
        # sweeping again (the schedule, another worker) queues and posts nothing more
        assert notifications.sweep(s, seeded.org.id, settings=settings) == 0
        s.commit()
    assert _deliver(sessions, settings) == {}
    assert len(slack.calls) == 1 and len(sink.received) == 1


def test_a_rate_limit_and_an_outage_are_retried_then_it_is_sent_once(
    session: Session,
    sessions: sessionmaker[Session],
    seeded: Seeded,
    settings: Settings,
    slack: SlackStandIn,
    worker_id: str,
) -> None:
    collector = seeded.users[Persona.COLLECTOR]
    notifications.set_preferences(session, collector, email=False, slack=True)
    slack.answers = [
        Answer(429, b'{"ok": false, "error": "ratelimited"}', {"Retry-After": "1"}),
        Answer(500, b"upstream went away"),
    ]
    _breached_dispute(session, seeded, settings)
    assert _deliver(sessions, settings) == {outbox.SENT: 1}
    assert len(slack.calls) == 3
    assert len({json.dumps(b, sort_keys=True) for _p, _h, b in slack.calls}) == 1  # same message
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.channel is Channel.SLACK and row.status is OutboxStatus.SENT
        assert row.attempts == 3 and row.last_error is None


def test_slack_down_fails_after_the_retries_and_is_recorded_without_the_token(
    session: Session,
    sessions: sessionmaker[Session],
    seeded: Seeded,
    settings: Settings,
    slack: SlackStandIn,
    worker_id: str,
) -> None:
    collector = seeded.users[Persona.COLLECTOR]
    notifications.set_preferences(session, collector, email=False, slack=True)
    slack.answers = [Answer(503, b"")] * settings.delivery_max_attempts
    _breached_dispute(session, seeded, settings)
    assert _deliver(sessions, settings) == {outbox.FAILED: 1}
    assert len(slack.calls) == settings.delivery_max_attempts == 3
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.FAILED and row.attempts == 3
        assert (row.last_error or "").startswith("Slack answered 503")
        failed = s.scalars(select(AuditEvent).where(AuditEvent.action == "outbox.failed")).one()
        assert failed.subject_id == row.id and failed.detail["attempts"] == 3
        _no_secret(json.dumps(failed.detail) + (row.last_error or ""))
        # the in-app item is there all the same
        assert notifications.unread_count(s, collector.id) == 1


def test_a_refusal_no_retry_can_fix_fails_at_once_with_slacks_reason(
    session: Session,
    sessions: sessionmaker[Session],
    seeded: Seeded,
    settings: Settings,
    slack: SlackStandIn,
    worker_id: str,
) -> None:
    collector = seeded.users[Persona.COLLECTOR]
    notifications.set_preferences(session, collector, email=False, slack=True)
    slack.answers = [Answer(200, b'{"ok": false, "error": "channel_not_found"}')]
    _breached_dispute(session, seeded, settings)
    assert _deliver(sessions, settings) == {outbox.FAILED: 1}
    assert len(slack.calls) == 1
    with sessions() as s:
        row = s.scalars(select(OutboxMessage)).one()
        assert row.status is OutboxStatus.FAILED and row.attempts == 1
        assert "channel_not_found" in (row.last_error or "")
        assert "Slack user id" in (row.last_error or "")
        _no_secret(row.last_error or "")


def test_without_a_slack_bot_nothing_is_queued_for_slack(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    collector = seeded.users[Persona.COLLECTOR]
    notifications.set_preferences(session, collector, email=False, slack=True)
    _breached_dispute(session, seeded, settings.model_copy(update={"slack_bot_token": None}))
    assert session.scalars(select(OutboxMessage)).all() == []
    assert session.scalars(select(Notification)).one().slacked is False
