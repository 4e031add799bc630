"""The collector's workspace in real headless Chromium (Debian's /usr/bin/chromium via Playwright),
as the personas of the access matrix:

* Legal works a dispute escalated to them, with evidence, to a credit (granted through the
  guardrails: above the Collector's limit it waits, and the Controller approves it);
* a Collector writes a message that is approved and arrives at a local SMTP server (aiosmtpd);
* an @mention reaches the mentioned person's inbox and the count in the header;
* the scheduled view lists a message deferred by quiet hours until it is sent.

Every new page is screenshotted at 1440x900 (``PLIXO_SCREENSHOT_DIR`` keeps them) and its visible
text is checked for raw identifiers; no request leaves loopback.
"""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures and .browser by name

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from memory import durable
from memory.config import Settings
from memory.models import (
    Dispute,
    DisputeStatus,
    Draft,
    DraftStatus,
    Invoice,
    Organisation,
    OutboxMessage,
    OutboxStatus,
    Persona,
)
from tests.api.browser import MARKS, browser, check, login_as, new_page, shots  # noqa: F401
from tests.api.factories import NOW, Seeded, seed_review
from tests.api.review_fixtures import LiveServer, app, live, settings  # noqa: F401 - fixtures
from tests.api.smtp_server import SmtpSink, start_smtp
from tests.api.test_workspace_pages import RAW
from tools.commitments import disputes
from tools.delivery import flow as delivery_flow
from tools.delivery.outbox import smtp_sender
from tools.drafts import service as drafts

pytestmark = MARKS


@pytest.fixture
def seeded(session: Session, org: Organisation, settings: Settings) -> Seeded:  # noqa: F811
    return seed_review(session, org, settings, drafts=3)


@pytest.fixture
def mail() -> Iterator[tuple[int, SmtpSink]]:
    controller, sink = start_smtp()
    yield controller.port, sink
    controller.stop()


class Person:
    """One persona's browser context (own cookies), kept on loopback."""

    def __init__(self, browser: Any, live: LiveServer, seeded: Seeded, role: Persona) -> None:  # noqa: F811
        self.live = live
        self.offsite: list[str] = []
        self.page = new_page(browser, live.url, self.offsite)
        login_as(self.page, live.url, seeded, role)

    def go(self, path: str) -> Any:
        self.page.goto(f"{self.live.url}{path}")
        return self.page

    def shot(self, shots: Path, name: str) -> None:
        """A 1440x900 screenshot of the page, and no raw identifier in what a person reads."""
        check(self.page, shots, name, raw=[RAW], selector="body")


def deliver(
    sessions: sessionmaker[Session], durable_settings: Settings, settings: Settings, port: int
) -> Counter[str]:
    """Drain the outbox through DBOS to the SMTP server, on a thread of its own: DBOS's sync
    calls refuse to run beside Playwright's event loop on this one."""

    def run() -> Counter[str]:
        durable.set_ledger(sessions, durable_settings)
        sending = settings.model_copy(update={"smtp_port": port})
        with delivery_flow.use_sender(lambda _s: smtp_sender(sending)):
            return delivery_flow.drain(sessions, timeout_s=60)

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def test_legal_works_an_escalated_dispute_with_evidence_to_a_credit(
    browser: Any,
    live: LiveServer,
    seeded: Seeded,
    session: Session,
    shots: Path,
    tmp_path: Path,  # noqa: F811
) -> None:
    invoice = seeded.invoices[0]
    d = disputes.open_dispute(
        session, seeded.org.id, invoice_id=invoice.id, reason="pricing",
        actor=seeded.users[Persona.COLLECTOR], description="We were quoted a lower price.",
        now=NOW - timedelta(days=4),
    )  # fmt: skip
    session.commit()
    collector = Person(browser, live, seeded, Persona.COLLECTOR)
    page = collector.go("/disputes")
    row = page.locator(f"[data-testid=dispute-row][data-dispute-id='{d.id}']")
    assert row.get_attribute("data-breached") == "yes"  # four days open against two
    assert "SLA breached" in row.inner_text()
    collector.shot(shots, "disputes-queue")
    row.locator("a").click()
    page.wait_for_url(f"{live.url}/disputes/{d.id}")
    page.select_option("[data-testid=status-form] select[name=to]", "escalated_legal")
    page.fill("[data-testid=status-form] textarea[name=note]", "The contract price needs Legal.")
    page.click("[data-testid=status-form] button[type=submit]")
    assert "Escalated to Legal" in page.inner_text("[data-testid=dispute-status]")

    legal = Person(browser, live, seeded, Persona.LEGAL)
    page = legal.page
    assert page.inner_text("[data-testid=inbox-count]").strip() == "Inbox 1"
    legal.go("/inbox")
    assert "Dispute escalated to Legal by Collector User" in page.inner_text(
        "[data-testid=notification]"
    )
    legal.shot(shots, "inbox-legal")
    legal.go("/disputes")
    assert "Disputes with Legal" in page.inner_text("h1")
    legal.shot(shots, "disputes-legal-view")
    page.click(f"[data-dispute-id='{d.id}'] a")
    page.wait_for_url(f"{live.url}/disputes/{d.id}")
    assert page.locator("[data-testid=credit-form]").count() == 0  # Legal grants no credits
    contract = tmp_path / "signed-contract.pdf"
    contract.write_bytes(b"%PDF-1.4\n% unit price 1,000.00 per the signed quote\n")
    page.select_option("[data-testid=evidence-form] select[name=slot]", "contract")
    page.set_input_files("[data-testid=evidence-form] input[type=file]", str(contract))
    page.click("[data-testid=evidence-form] button[type=submit]")
    assert "signed-contract.pdf attached" in page.inner_text(".flash")
    assert page.locator("[data-testid=evidence-item]").inner_text() == "signed-contract.pdf"
    page.select_option("[data-testid=status-form] select[name=to]", "investigating")
    page.fill(
        "[data-testid=status-form] textarea[name=note]",
        "The signed quote supports the customer: credit the difference.",
    )
    page.click("[data-testid=status-form] button[type=submit]")
    assert page.inner_text("[data-testid=dispute-status]") == "Investigating"
    legal.shot(shots, "dispute-panel-legal")

    # the Collector grants the credit: above their limit of $1,000.00 it waits for approval
    page = collector.go(f"/disputes/{d.id}")
    assert "signed-contract.pdf" in page.inner_text("[data-testid=evidence]")
    page.fill("[data-testid=credit-form] input[name=amount]", "1,100.00")
    page.click("[data-testid=credit-form] button[type=submit]")
    assert "waits for an approver" in page.inner_text(".flash")
    collector.shot(shots, "dispute-credit-proposed")
    controller = Person(browser, live, seeded, Persona.CONTROLLER)
    page = controller.go("/inbox")
    item = page.locator("[data-testid=notification][data-kind=approval]")
    assert "Credit waiting for your approval" in item.inner_text()
    item.locator("[data-testid=notification-open]").click()
    page.wait_for_url(f"{live.url}/disputes/{d.id}")
    page.click("[data-testid=approve-credit]")
    assert "Credit approved" in page.inner_text(".flash")
    assert page.inner_text("[data-testid=dispute-status]") == "Resolved with credit"
    assert page.inner_text("[data-testid=credit]") == "$1,100.00"
    controller.shot(shots, "dispute-resolved")
    session.expire_all()
    assert session.get(Dispute, d.id).status == DisputeStatus.RESOLVED_CREDIT
    inv = session.get(Invoice, invoice.id)
    assert inv is not None and inv.balance_minor == 120_000 - 110_000 and not inv.disputed
    assert collector.offsite == legal.offsite == controller.offsite == []


def test_collector_message_is_approved_and_arrives_at_the_smtp_server(
    worker_id: str,  # DBOS first: its queues register outside Playwright's event loop
    durable_settings: Settings,
    browser: Any,
    live: LiveServer,  # noqa: F811
    seeded: Seeded,
    session: Session,
    sessions: sessionmaker[Session],
    settings: Settings,  # noqa: F811
    mail: tuple[int, SmtpSink],
    shots: Path,
) -> None:
    port, sink = mail
    customer, invoice = seeded.customers[1], seeded.invoices[1]
    collector = Person(browser, live, seeded, Persona.COLLECTOR)
    page = collector.go(f"/accounts/{customer.id}/activity")
    page.fill("[data-testid=log-call] input[name=summary]", "Spoke with AP: they need the link")
    page.click("[data-testid=log-call] button[type=submit]")
    assert "Call logged" in page.inner_text(".flash")
    assert "Spoke with AP" in page.inner_text("[data-testid=timeline-item][data-kind=call]")
    collector.shot(shots, "timeline")
    page.click("[data-testid=write-message]")
    page.wait_for_url(f"{live.url}/compose?customer_id={customer.id}")
    body = page.input_value("[data-testid=compose-body]")
    assert invoice.number in body and "/pay/" in body
    page.fill(
        "[data-testid=compose-body]",
        body.replace("\n\n\n\n", "\n\nAs promised on the phone, here is the link to pay.\n\n"),
    )
    collector.shot(shots, "compose")
    page.click("[data-testid=compose-submit]")
    page.wait_for_url(f"{live.url}/drafts/*")
    assert page.inner_text("[data-testid=draft-status]") == "Waiting for review"
    assert "Written by a person" in page.inner_text(".draft-head")
    page.click("[data-testid=approve]")
    page.wait_for_selector(".flash")
    assert "queued for delivery" in page.inner_text(".flash")
    assert collector.offsite == []
    draft = session.scalars(select(Draft).where(Draft.kind == "manual")).one()
    outcomes = deliver(sessions, durable_settings, settings, port)
    session.expire_all()
    assert outcomes["sent"] == 1, (
        outcomes,
        [(d.id, d.hold_reason) for d in session.scalars(select(Draft))],
    )
    deadline = time.monotonic() + 5
    while not sink.received:
        assert time.monotonic() < deadline, "nothing arrived at the SMTP server"
        time.sleep(0.05)
    got = sink.received[0]
    assert got.rcpt_tos == [draft.recipient]
    text = got.message.get_payload(decode=True).decode()
    assert "As promised on the phone" in text and invoice.number in text
    session.expire_all()
    row = session.scalars(select(OutboxMessage).where(OutboxMessage.draft_id == draft.id)).one()
    assert row.status == OutboxStatus.SENT


def test_a_mention_reaches_the_mentioned_persons_inbox(
    browser: Any,
    live: LiveServer,
    seeded: Seeded,
    session: Session,
    shots: Path,  # noqa: F811
) -> None:
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    customer = seeded.customers[0]
    collector = Person(browser, live, seeded, Persona.COLLECTOR)
    page = collector.go(f"/accounts/{customer.id}")
    page.fill("textarea[name=body]", f"@{manager.email.split('@')[0]} can you approve a plan here?")
    page.click("text=Add note")
    other = Person(browser, live, seeded, Persona.COLLECTIONS_MANAGER)
    page = other.page
    assert page.inner_text("[data-testid=inbox-count]").strip() == "Inbox 1"
    page.click("[data-testid=inbox-count]")
    page.wait_for_url(f"{live.url}/inbox")
    assert page.inner_text("[data-testid=inbox-unread]") == "1 unread notification"
    item = page.locator("[data-testid=notification][data-kind=mention]")
    assert "Collector User mentioned you on Customer 001 Ltd" in item.inner_text()
    assert "can you approve a plan here?" in item.inner_text()
    other.shot(shots, "inbox")
    item.locator("[data-testid=notification-open]").click()
    page.wait_for_url(f"{live.url}/accounts/{customer.id}")
    assert page.inner_text("[data-testid=inbox-count]").strip() == "Inbox"
    # the author's own inbox stays empty
    page = collector.go("/inbox")
    assert page.locator("[data-testid=notification]").count() == 0
    assert collector.offsite == other.offsite == []


def test_scheduled_view_lists_a_deferred_message_until_it_is_sent(
    worker_id: str,  # DBOS first: its queues register outside Playwright's event loop
    durable_settings: Settings,
    browser: Any,
    live: LiveServer,  # noqa: F811
    app: Any,  # noqa: F811
    seeded: Seeded,
    session: Session,
    sessions: sessionmaker[Session],
    settings: Settings,  # noqa: F811
    mail: tuple[int, SmtpSink],
    shots: Path,
) -> None:
    port, sink = mail
    night = NOW.replace(hour=3)  # 23:00 in New York: the contact's quiet hours
    app.state.clock = lambda: night
    draft = seeded.drafts[2]
    collector = Person(browser, live, seeded, Persona.COLLECTOR)
    page = collector.go(f"/drafts/{draft.id}")
    page.click("[data-testid=approve]")
    page.wait_for_selector(".flash")
    assert "deferred" in page.inner_text(".flash").lower()
    viewer = Person(browser, live, seeded, Persona.VIEWER)
    page = viewer.go("/scheduled")
    row = page.locator(f"[data-testid=scheduled-row][data-draft-id='{draft.id}']")
    assert row.count() == 1
    assert row.locator("[data-testid=approved-by]").inner_text() == "Collector User"
    assert "Quiet hours" in row.inner_text()
    assert "1 message waiting" in page.inner_text("h1")
    viewer.shot(shots, "scheduled")
    # before its time nothing leaves; at 09:00 in New York it is released and sent
    assert drafts.release_deferred(session, now=night, settings=settings) == []
    session.commit()
    page = viewer.go("/scheduled")
    assert page.locator(f"[data-draft-id='{draft.id}']").count() == 1
    morning = NOW.replace(hour=14)  # 10:00 in New York
    session.expire_all()
    held = session.get(Draft, draft.id)
    assert held is not None and held.status == DraftStatus.APPROVED
    released = drafts.release_deferred(session, now=morning, settings=settings)
    assert released == [draft.id], (held.status, held.decision.get("not_before"), held.hold_reason)
    session.commit()
    outcomes = deliver(sessions, durable_settings, settings, port)
    assert outcomes["sent"] == 1, outcomes
    page = viewer.go("/scheduled")
    assert page.locator(f"[data-draft-id='{draft.id}']").count() == 0
    assert "No approved message is waiting" in page.inner_text("[data-testid=scheduled]")
    viewer.shot(shots, "scheduled-empty")
    session.expire_all()
    assert session.get(Draft, draft.id).status == DraftStatus.SENT
    deadline = time.monotonic() + 5
    while not sink.received:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert collector.offsite == viewer.offsite == []
