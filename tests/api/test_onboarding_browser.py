"""Done when: from an empty database to the first approved, delivered, DKIM-signed e-mail, without
`plixo demo`, in real headless Chromium.

`plixo init`; the Admin sets a password through the one-time link; invites a Collector (the link
arrives at a local aiosmtpd server); the IBM file and an open invoice with its payer contact are
imported; the Admin creates a cadence and a segment on the page, sets up the sending domain and
checks it against a DNS server on loopback; Autopilot runs in Shadow Mode; the Collector approves;
the outbox delivers to aiosmtpd and the message's DKIM signature verifies against the loopback DNS.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dkim
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from api.app import create_app
from api.cli.main import app as cli_app
from memory import durable
from memory.models import Draft, Organisation, SendingDomain
from tests.api.browser import MARKS, launch, login, new_page
from tests.api.factories import settings_for
from tests.api.review_fixtures import LiveServer
from tests.api.smtp_server import SmtpSink, start_smtp
from tests.dns_server import ZoneResolver, dns_server
from tools.delivery import flow as delivery_flow
from tools.delivery import sending_domain as sd
from tools.delivery.outbox import smtp_sender

IBM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ibm-accounts-receivable.csv"
NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # a Tuesday afternoon in New York
runner = CliRunner()

pytestmark = [
    *MARKS,
    pytest.mark.skipif(not IBM.exists(), reason="../shared/data is not beside the repository"),
]


@pytest.fixture
def mail() -> Iterator[tuple[int, SmtpSink]]:
    controller, sink = start_smtp()
    yield controller.port, sink
    controller.stop()


@pytest.fixture
def zone() -> Iterator[tuple[str, ZoneResolver]]:
    with dns_server() as server:
        yield server


def _link(sink: SmtpSink, to: str) -> str:
    for received in reversed(sink.received):
        if to in received.rcpt_tos:
            body = received.message.get_payload(decode=True).decode()
            return re.search(r"https?://[^/\s]+(/invitations/[\w-]+)", body).group(1)  # type: ignore[union-attr]
    raise AssertionError(f"no invitation for {to}")


def _set_password(page: Any, url: str, password: str) -> None:
    page.goto(url)
    page.fill("input[name=password]", password)
    page.fill("input[name=confirm]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/login"))


def _write_open_invoice(tmp: Path) -> tuple[Path, Path]:
    invoices = tmp / "open.csv"
    invoices.write_text(
        "invoice_number,customer_ref,issue_date,due_date,amount,currency\n"
        "INV-9001,0379-NEVHP,2026-10-28,2026-11-28,1840.00,USD\n"
    )
    contacts = tmp / "contacts.csv"
    contacts.write_text(
        "customer_ref,name,email,timezone,is_primary,consent_email\n"
        "0379-NEVHP,Dana Payables,dana@payer.test,America/New_York,true,true\n"
    )
    return invoices, contacts


def test_empty_database_to_first_signed_email(
    data_dir: Path,
    engine: Any,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    mail,
    zone,
    db_url: str,  # type: ignore[no-untyped-def]
    worker_id: str,
    durable_settings: Any,
) -> None:
    from playwright.sync_api import sync_playwright

    smtp_port, sink = mail
    nameserver, resolver = zone
    settings = settings_for(str(data_dir)).model_copy(
        update={"smtp_port": smtp_port, "dns_nameserver": nameserver, "database_url": db_url}
    )
    # 1. init
    r = runner.invoke(
        cli_app,
        [
            "init",
            "--org",
            "Acme Corp",
            "--admin-email",
            "ann@acme.test",
            "--timezone",
            "America/New_York",
            "--country",
            "US",
        ],
    )
    assert r.exit_code == 0, r.output
    admin_link = re.search(r"(/invitations/[\w-]+)", r.output).group(1)  # type: ignore[union-attr]
    # 2. imports: the IBM file, then an open invoice and its payer contact
    ibm = runner.invoke(cli_app, ["import", "invoices", str(IBM), "--org", "acme-corp"])
    assert ibm.exit_code == 0, ibm.output
    invoices, contacts = _write_open_invoice(tmp_path)
    for kind, file in (("invoices", invoices), ("contacts", contacts)):
        res = runner.invoke(cli_app, ["import", kind, str(file), "--org", "acme-corp"])
        assert res.exit_code == 0, res.output

    application: FastAPI = create_app(engine, settings)
    application.state.clock = lambda: NOW
    offsite: list[str] = []
    with LiveServer(application) as live, sync_playwright() as p:
        browser = launch(p)
        page = new_page(browser, live.url, offsite)
        _set_password(page, live.url + admin_link, "admin-password-123")
        login(page, live.url, "ann@acme.test", "admin-password-123")
        # 3. invite a Collector
        page.click("text=People")
        page.fill("[data-testid=invite-form] input[name=name]", "Sam Collector")
        page.fill("[data-testid=invite-form] input[name=email]", "sam@acme.test")
        page.select_option("[data-testid=invite-form] select[name=role]", "Collector")
        page.fill("[data-testid=invite-form] input[name=limit_amount]", "10,000.00")
        page.fill("[data-testid=invite-form] input[name=limit_currency]", "USD")
        page.click("[data-testid=invite-form] button[type=submit]")
        assert "Invitation sent to sam@acme.test" in page.inner_text(".flash")
        # 4. a cadence, then a segment using it
        page.click("text=Segments")
        page.fill("[data-testid=cadence-form] input[name=name]", "Standard")
        page.fill("[aria-label='Offset 1']", "3")
        page.select_option(
            "[data-testid=cadence-form] tr:nth-child(1) select[name=template]", "friendly_reminder"
        )
        page.click("[data-testid=cadence-form] button[type=submit]")
        assert "Cadence Standard saved" in page.inner_text(".flash")
        page.fill("[data-testid=segment-form] input[name=name]", "Active accounts")
        page.fill("[data-testid=segment-form] input[name=min_size]", "100.00 USD")
        page.select_option("[data-testid=segment-form] select[name=cadence_id]", label="Standard")
        page.click("[data-testid=segment-form] button[type=submit]")
        assert "1 customers moved" in page.inner_text(".flash")
        # 5. the sending domain, checked against the loopback DNS server
        page.click("text=Sending domain")
        page.fill("[data-testid=domain-form] input[name=domain]", "mail.acme.test")
        page.fill("[data-testid=domain-form] input[name=spf_include]", "spf.relay.test")
        page.click("[data-testid=domain-form] button[type=submit]")
        page.click("text=Check DNS now")
        assert "No SPF record at mail.acme.test" in page.inner_text("[data-testid=domain-reasons]")
        with sessions() as s:
            row = s.scalars(select(SendingDomain)).one()
            for rec in sd.records(row):
                resolver.txt[rec.name] = [rec.value]
        page.click("text=Check DNS now")
        assert page.inner_text("[data-testid=domain-status]") == "verified"
        # 6. Autopilot in Shadow Mode
        from agent.autopilot import run_autopilot

        with sessions() as s:
            org_id = s.scalars(select(Organisation.id)).one()
        summary = run_autopilot(
            sessions, org_id, as_of=NOW.date(), shadow=True, settings=settings, now=NOW
        )
        with sessions() as s:
            draft = s.scalars(select(Draft).where(Draft.org_id == org_id)).one()
            assert draft.recipient == "dana@payer.test" and "INV-9001" in draft.body
        assert (summary.drafted, summary.by_outcome) == (1, {"needs_approval": 1})
        # 7. the Collector sets a password and approves
        collector = new_page(browser, live.url, offsite)  # a context of its own: own cookies
        _set_password(collector, live.url + _link(sink, "sam@acme.test"), "collector-pass-123")
        login(collector, live.url, "sam@acme.test", "collector-pass-123")
        assert collector.locator("a[href='/people']").count() == 0
        collector.goto(f"{live.url}/drafts/{draft.id}")
        collector.click("[data-testid=approve]")
        collector.wait_for_selector(".flash")
        assert "queued for delivery" in collector.inner_text(".flash")
        browser.close()
    assert offsite == []
    # 8. the outbox delivers to aiosmtpd, DKIM-signed and verifiable through the loopback DNS
    durable.set_ledger(sessions, durable_settings)
    with delivery_flow.use_sender(lambda _s: smtp_sender(settings)):
        outcomes = delivery_flow.drain(sessions, timeout_s=60)
    assert outcomes["sent"] == 1, outcomes
    deadline = time.monotonic() + 5
    while not any("dana@payer.test" in m.rcpt_tos for m in sink.received):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    message = next(m.message for m in sink.received if "dana@payer.test" in m.rcpt_tos)
    assert "INV-9001" in message.get_payload(decode=True).decode()
    assert "d=mail.acme.test" in str(message["DKIM-Signature"])

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        answer = sd.resolver_for(nameserver).resolve(name.decode().rstrip("."), "TXT")
        return b"".join(answer[0].strings)

    assert dkim.verify(message.as_bytes(), dnsfunc=lookup)
