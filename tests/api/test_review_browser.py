"""The review panel in real headless Chromium (Debian's /usr/bin/chromium through Playwright).

A Collector logs in, opens a draft, asks the co-pilot for a revision, sees the new turn, approves,
and the outbox holds one message; a Collections Manager batch-approves ten drafts; a Sales user sees
no approve button and the API refuses the call. Nothing leaves loopback: every request the browser
makes is checked against the test server's origin.
"""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures and .browser by name

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import Draft, DraftStatus, Organisation, OutboxMessage, Persona
from tests.api.browser import MARKS, browser, login_as, new_page, screenshot, shots  # noqa: F401
from tests.api.factories import Seeded, seed_review
from tests.api.review_fixtures import LiveServer, app, live, settings  # noqa: F401 - fixtures

pytestmark = MARKS


@pytest.fixture
def seeded(session: Session, org: Organisation, settings: Settings) -> Seeded:  # noqa: F811
    return seed_review(session, org, settings, drafts=11)


def _outbox(session: Session) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


def test_collector_revises_and_approves_manager_batches_sales_cannot(
    browser: Any,
    live: LiveServer,  # noqa: F811
    seeded: Seeded,
    session: Session,
    shots: Path,
) -> None:
    offsite: list[str] = []

    # --- a Collector: open, revise, see the new turn, approve --------------------------------
    page = new_page(browser, live.url, offsite)
    login_as(page, live.url, seeded, Persona.COLLECTOR)
    assert page.locator(".focus-card").count() >= 4  # Today's Focus cards
    first = seeded.drafts[0]
    page.click(f"tr[data-draft-id='{first.id}'] a.draft-link")
    page.wait_for_url(f"{live.url}/drafts/{first.id}")
    decision = page.locator("[data-testid=decision]")
    assert decision.inner_text().count("Shadow Mode: a person reviews") == 1
    assert "shadow.review_required" not in decision.inner_text()  # words, not the rule id
    assert decision.locator("[data-rule='shadow.review_required']").count() == 1
    assert page.locator("[data-testid=inspector]").inner_text().strip() != "Inspector"
    turns_before = page.locator("[data-testid=turn]").count()
    page.fill("[data-testid=revise-input]", "shorter")
    page.click("[data-testid=revise]")
    page.wait_for_selector("[data-testid=turn][data-author=copilot]")
    turns = page.locator("[data-testid=turn]")
    # the first draft is kept as turn 1, then the instruction and the rewrite follow
    assert turns_before == 0 and turns.count() == 3
    assert first.body.splitlines()[0] in turns.first.inner_text()
    assert (
        page.locator("[data-testid=turn][data-author=operator]")
        .last.inner_text()
        .endswith("shorter")
    )
    screenshot(page, shots, "collector-revised", full_page=True)
    page.click("[data-testid=approve]")
    page.wait_for_selector(".flash")
    assert "queued for delivery" in page.inner_text(".flash")
    assert page.inner_text("[data-testid=draft-status]") == "Queued for delivery"
    assert page.locator("[data-testid=approve]").count() == 0
    assert _outbox(session) == 1
    row = session.scalars(select(OutboxMessage)).one()
    assert row.draft_id == first.id
    screenshot(page, shots, "collector-approved", full_page=True)

    # --- a Collections Manager: batch-approve the ten others --------------------------------
    manager = new_page(browser, live.url, offsite)
    login_as(manager, live.url, seeded, Persona.COLLECTIONS_MANAGER)
    manager.click("text=Batch approval")
    manager.wait_for_url(f"{live.url}/batch")
    assert manager.locator("[data-testid=batch-item]").count() == 10
    manager.check("[data-testid=select-group]")
    assert manager.locator("[data-testid=batch-item]:checked").count() == 10
    manager.click("[data-testid=batch-approve]")
    manager.wait_for_selector("[data-testid=batch-result]")
    assert "10 done, 0 refused" in manager.inner_text("[data-testid=batch-result]")
    screenshot(manager, shots, "manager-batch", full_page=True)
    assert _outbox(session) == 11
    queued = session.scalar(
        select(func.count()).select_from(Draft).where(Draft.status == DraftStatus.QUEUED)
    )
    assert queued == 11

    # --- a Sales user: no approve button, and the API refuses --------------------------------
    sales = new_page(browser, live.url, offsite)
    login_as(sales, live.url, seeded, Persona.SALES)
    fresh = seed_more(session, seeded, live)
    sales.goto(f"{live.url}/drafts/{fresh.id}")
    assert sales.inner_text("[data-testid=draft-status]") == "Waiting for review"
    assert sales.locator("[data-testid=approve]").count() == 0
    assert sales.locator("[data-testid=revise]").count() == 0
    assert sales.locator("[data-testid=actions]").count() == 0
    screenshot(sales, shots, "sales-draft", full_page=True)
    refused = sales.request.post(
        f"{live.url}/api/drafts/{fresh.id}/approve", data={"version": fresh.version}
    )
    assert refused.status == 403
    assert "Sales may not approve" in refused.json()["detail"]
    assert _outbox(session) == 11

    assert offsite == [], f"the browser tried to leave loopback: {offsite}"


def seed_more(session: Session, seeded: Seeded, live: LiveServer) -> Draft:  # noqa: F811
    """One more pending draft for the Sales check (the others were approved above)."""
    from tests.api.factories import make_draft, settings_for

    draft = make_draft(
        session,
        settings_for(),
        seeded.org,
        seeded.customers[0],
        seeded.invoices[0],
        segment=seeded.segment,
    )
    session.commit()
    return draft
