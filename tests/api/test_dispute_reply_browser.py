"""A dispute reply template in real headless Chromium: Legal, working a dispute escalated to them,
picks "Acknowledge receipt" in the dispute panel, edits the prefilled text, submits it, approves
it, and the reply (about the disputed invoice, without a pay link) arrives at a local SMTP server.
The panel is screenshotted at 1440x900 and its visible text has no raw identifiers."""

# ruff: noqa: F811 - pytest fixtures are imported by name

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from memory.config import Settings
from memory.models import (
    Dispute,
    DisputeStatus,
    Draft,
    Invoice,
    OutboxMessage,
    OutboxStatus,
    Persona,
)
from tests.api.factories import NOW, Seeded
from tests.api.review_fixtures import LiveServer, app, live, settings  # noqa: F401 - fixtures
from tests.api.smtp_server import SmtpSink
from tests.api.test_workspace_browser import (  # noqa: F401 - fixtures
    Person,
    browser,
    deliver,
    mail,
    pytestmark,
    seeded,
    shots,
)
from tools.commitments import disputes


def test_legal_sends_a_dispute_reply_template_that_arrives_without_a_pay_link(
    worker_id: str,  # DBOS first: its queues register outside Playwright's event loop
    durable_settings: Settings,
    browser: Any,
    live: LiveServer,
    seeded: Seeded,
    session: Session,
    sessions: sessionmaker[Session],
    settings: Settings,
    mail: tuple[int, SmtpSink],
    shots: Path,
) -> None:
    port, sink = mail
    invoice = seeded.invoices[1]
    collector = seeded.users[Persona.COLLECTOR]
    d = disputes.open_dispute(
        session, seeded.org.id, invoice_id=invoice.id, reason="pricing", actor=collector,
        description="We were quoted a lower price.", now=NOW - timedelta(hours=3),
    )  # fmt: skip
    disputes.change_status(
        session, seeded.org.id, d.id, DisputeStatus.ESCALATED_LEGAL, actor=collector,
        note="The contract price needs Legal.", now=NOW - timedelta(hours=2),
    )  # fmt: skip
    session.commit()
    legal = Person(browser, live, seeded, Persona.LEGAL)
    page = legal.go(f"/disputes/{d.id}")
    page.click("[data-testid=reply-template-acknowledge]")
    page.wait_for_url(f"{live.url}/disputes/{d.id}?template=acknowledge*")
    body = page.input_value("[data-testid=reply-body]")
    assert invoice.number in body and "under senior review" in body, body
    assert "/pay/" not in body
    page.fill("[data-testid=reply-body]", body.replace("Thank you", "Thank you very much"))
    legal.shot(shots, "dispute-reply")
    page.click("[data-testid=reply-submit]")
    page.wait_for_url(f"{live.url}/drafts/*")
    assert page.inner_text("[data-testid=draft-status]") == "Waiting for review"
    page.click("[data-testid=approve]")
    page.wait_for_selector(".flash")
    assert "queued for delivery" in page.inner_text(".flash")
    assert legal.offsite == []
    draft = session.scalars(select(Draft).where(Draft.kind == "manual")).one()
    outcomes = deliver(sessions, durable_settings, settings, port)
    session.expire_all()
    assert outcomes["sent"] == 1, (outcomes, session.get(Draft, draft.id).hold_reason)
    deadline = time.monotonic() + 5
    while not sink.received:
        assert time.monotonic() < deadline, "nothing arrived at the SMTP server"
        time.sleep(0.05)
    got = sink.received[0]
    assert got.rcpt_tos == [draft.recipient]
    text = got.message.get_payload(decode=True).decode()
    assert "Thank you very much" in text and invoice.number in text and "/pay/" not in text
    row = session.scalars(select(OutboxMessage).where(OutboxMessage.draft_id == draft.id)).one()
    assert row.status == OutboxStatus.SENT
    assert session.get(Dispute, d.id).status == DisputeStatus.ESCALATED_LEGAL
    assert session.get(Invoice, invoice.id).disputed
