"""Cash App Assist in real headless Chromium (Debian's /usr/bin/chromium through Playwright).

A Collector uploads a CAMT.053 statement, accepts the suggested one-to-many match, splits a
short-pay with the difference as a discount, and parks a line nobody recognises; the ledger and
the audit show each step. Uploading the same statement again applies nothing. Nothing leaves
loopback: every request the browser makes is checked against the test server's origin.
"""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures and .browser by name

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import (
    AuditEvent,
    CashLine,
    CashLineStatus,
    InvoiceStatus,
    Organisation,
    Payment,
    Persona,
)
from tests.api.browser import MARKS, browser, login_as, new_page, screenshot, shots  # noqa: F401
from tests.api.factories import Seeded, seed_review
from tests.api.review_fixtures import LiveServer, app, live, settings  # noqa: F401 - fixtures
from tests.api.test_cashapp_api import seed_cash

pytestmark = MARKS


@pytest.fixture
def seeded(session: Session, org: Organisation, settings: Settings) -> Seeded:  # noqa: F811
    return seed_review(session, org, settings, drafts=0)


def _count(session: Session, model: Any) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _card(page: Any, reference: str) -> Any:
    return page.locator(f"[data-testid=cash-line][data-reference*='{reference}']")


def test_collector_clears_a_camt053_statement_in_the_browser(
    browser: Any,
    live: LiveServer,  # noqa: F811
    seeded: Seeded,
    session: Session,
    tmp_path: Path,
    shots: Path,
) -> None:
    world = seed_cash(session, seeded.org)
    statement = tmp_path / "statement-camt053.xml"
    statement.write_bytes(world.statement)
    offsite: list[str] = []
    page = new_page(browser, live.url, offsite)
    login_as(page, live.url, seeded, Persona.COLLECTOR)
    page.click("nav >> text=Cash App Assist")
    page.wait_for_url(f"{live.url}/cash")

    # upload: three lines wait (auto-apply is off by default), nothing is posted yet
    page.set_input_files("[data-testid=upload-file]", str(statement))
    page.click("[data-testid=upload]")
    page.wait_for_url(f"{live.url}/cash")
    assert "3 new lines" in page.inner_text(".flash")
    assert page.inner_text("[data-testid=waiting-count]") == "3"
    assert "Auto-apply is off" in _card(page, world.a.number).inner_text()
    screenshot(page, shots, "cash-queue", full_page=True)
    assert _count(session, Payment) == 0

    # accept the suggested one-to-many match
    bundle = _card(page, world.a.number)
    row = bundle.locator("[data-testid=suggestion][data-kind=one_to_many]").first
    assert "amount equals the open balance" in row.inner_text()
    row.locator("[data-testid=accept]").click()
    page.wait_for_url(f"{live.url}/cash")
    assert "Applied $1,000.00" in page.inner_text(".flash")

    # split the short-pay: 1,960.00 paid, 40.00 written off as a discount
    short = _card(page, world.c.number)
    assert "early-payment discount" in short.inner_text()
    short.locator("summary").click()
    form = short.locator("[data-testid=split-form]")
    form.locator("[data-testid=split-invoice]").first.fill(world.c.number)
    form.locator("[data-testid=split-amount]").first.fill("1960.00")
    form.locator("[data-testid=split-kind]").first.select_option("discount")
    form.locator("[data-testid=split-adjustment]").first.fill("40.00")
    form.locator("[data-testid=split]").click()
    page.wait_for_url(f"{live.url}/cash")
    assert "as you split it" in page.inner_text(".flash")

    # park the line nobody recognises
    unknown = _card(page, "Gift")
    unknown.locator("[data-testid=park-note]").fill("Unknown payer; asked the bank for details")
    unknown.locator("[data-testid=park]").click()
    page.wait_for_url(f"{live.url}/cash")
    assert "Parked $77.77 as unapplied cash" in page.inner_text(".flash")
    assert page.inner_text("[data-testid=waiting-count]") == "0"
    statuses = sorted(
        page.locator("[data-testid=done-line]").evaluate_all(
            "rows => rows.map(r => r.dataset.status)"
        )
    )
    assert statuses == ["applied", "applied", "parked"]

    # the ledger: three payments, the invoices paid, the discount on the short-paid one
    session.expire_all()
    for inv in (world.a, world.b, world.c):
        session.refresh(inv)
        assert inv.status == InvoiceStatus.PAID and inv.balance_minor == 0
    assert _count(session, Payment) == 3
    paid = session.scalar(select(func.sum(Payment.amount_minor)))
    assert paid == 100_000 + 196_000
    parked = session.scalars(select(CashLine).where(CashLine.status == CashLineStatus.PARKED)).one()
    assert parked.amount_minor == 7_777 and "Unknown payer" in (parked.note or "")
    # the audit: who did each step
    events = session.execute(select(AuditEvent.action, AuditEvent.actor)).all()
    by_action: dict[str, set[str]] = {}
    for action, actor in events:
        by_action.setdefault(action, set()).add(actor)
    collector = f"{seeded.users[Persona.COLLECTOR].name} (Collector)"
    assert by_action["cash.applied"] == {collector}
    assert by_action["cash.discount_written_off"] == {collector}
    assert by_action["cash.parked"] == {collector}
    assert len([a for a, _ in events if a == "payment.posted"]) == 3

    # the same statement again: every line is skipped, nothing is applied twice
    page.set_input_files("[data-testid=upload-file]", str(statement))
    page.click("[data-testid=upload]")
    page.wait_for_url(f"{live.url}/cash")
    flash = page.inner_text(".flash")
    assert "0 new lines" in flash and "3 already imported" in flash
    assert _count(session, Payment) == 3
    assert offsite == []
