"""The review panel in real headless Chromium (Debian's /usr/bin/chromium through Playwright).

A Collector logs in, opens a draft, asks the co-pilot for a revision, sees the new turn, approves,
and the outbox holds one message; a Collections Manager batch-approves ten drafts; a Sales user sees
no approve button and the API refuses the call. Nothing leaves loopback: every request the browser
makes is checked against the test server's origin.
"""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures by name

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import Draft, DraftStatus, Organisation, OutboxMessage, Persona
from tests.api.factories import Seeded, password_for, seed_review
from tests.api.review_fixtures import LiveServer, app, live, settings  # noqa: F401 - fixtures

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing: apt-get install -y chromium (CI installs it)",
    ),
]


@pytest.fixture
def seeded(session: Session, org: Organisation, settings: Settings) -> Seeded:  # noqa: F811
    return seed_review(session, org, settings, drafts=11)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def _page(browser: Any, live: LiveServer, offsite: list[str]) -> Any:  # noqa: F811
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)

    def guard(route: Any) -> None:
        if route.request.url.startswith(live.url):
            route.continue_()
        else:
            offsite.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    return context.new_page()


def _login(page: Any, live: LiveServer, seeded: Seeded, role: Persona) -> None:  # noqa: F811
    page.goto(f"{live.url}/login")
    page.fill("input[name=email]", seeded.email(role))
    page.fill("input[name=password]", password_for(role))
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/")
    assert role.value in page.inner_text(".who")


def _shot(page: Any, name: str) -> None:
    target = os.environ.get("PLIXO_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


def _outbox(session: Session) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


def test_collector_revises_and_approves_manager_batches_sales_cannot(
    browser: Any,
    live: LiveServer,  # noqa: F811
    seeded: Seeded,
    session: Session,
) -> None:
    offsite: list[str] = []

    # --- a Collector: open, revise, see the new turn, approve --------------------------------
    page = _page(browser, live, offsite)
    _login(page, live, seeded, Persona.COLLECTOR)
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
    _shot(page, "collector-revised")
    page.click("[data-testid=approve]")
    page.wait_for_selector(".flash")
    assert "queued for delivery" in page.inner_text(".flash")
    assert page.inner_text("[data-testid=draft-status]") == "Queued for delivery"
    assert page.locator("[data-testid=approve]").count() == 0
    assert _outbox(session) == 1
    row = session.scalars(select(OutboxMessage)).one()
    assert row.draft_id == first.id
    _shot(page, "collector-approved")

    # --- a Collections Manager: batch-approve the ten others --------------------------------
    manager = _page(browser, live, offsite)
    _login(manager, live, seeded, Persona.COLLECTIONS_MANAGER)
    manager.click("text=Batch approval")
    manager.wait_for_url(f"{live.url}/batch")
    assert manager.locator("[data-testid=batch-item]").count() == 10
    manager.check("[data-testid=select-group]")
    assert manager.locator("[data-testid=batch-item]:checked").count() == 10
    manager.click("[data-testid=batch-approve]")
    manager.wait_for_selector("[data-testid=batch-result]")
    assert "10 done, 0 refused" in manager.inner_text("[data-testid=batch-result]")
    _shot(manager, "manager-batch")
    assert _outbox(session) == 11
    queued = session.scalar(
        select(func.count()).select_from(Draft).where(Draft.status == DraftStatus.QUEUED)
    )
    assert queued == 11

    # --- a Sales user: no approve button, and the API refuses --------------------------------
    sales = _page(browser, live, offsite)
    _login(sales, live, seeded, Persona.SALES)
    fresh = seed_more(session, seeded, live)
    sales.goto(f"{live.url}/drafts/{fresh.id}")
    assert sales.inner_text("[data-testid=draft-status]") == "Waiting for review"
    assert sales.locator("[data-testid=approve]").count() == 0
    assert sales.locator("[data-testid=revise]").count() == 0
    assert sales.locator("[data-testid=actions]").count() == 0
    _shot(sales, "sales-draft")
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
