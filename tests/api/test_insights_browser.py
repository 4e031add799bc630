"""The insight pages in real headless Chromium: the CFO console with its charts, Renewal Risk as a
CSM, Account 360 as Sales (with a Nudge sent), Today's Focus as a Collector. Each page is
screenshotted (``PLIXO_SCREENSHOT_DIR`` keeps them) and no request leaves loopback."""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.browser by name

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import Contact, Organisation
from tests.api.browser import MARKS, browser, login, new_page, shots  # noqa: F401 - fixtures
from tests.tools.insights.test_focus import Book, build_book

PASSWORDS = {
    "collector1": "pw-collector-1",
    "sales": "pw-sales-1",
    "csm": "pw-csm-1",
    "controller": "pw-controller-1",
}

pytestmark = MARKS


@pytest.fixture
def book(session: Session, org: Organisation) -> Book:
    now = datetime.now(UTC)
    book = build_book(session, org, today=now.date(), now=now, passwords=PASSWORDS)
    session.add(
        Contact(
            org_id=org.id,
            customer_id=book.customers[0].id,
            name="Pat Payer",
            email="pat@acme-00.example",
            is_primary=True,
        )
    )
    session.commit()
    return book


@pytest.fixture
def live_app(engine: Engine, tmp_path: Path) -> Iterator[str]:
    import socket

    import uvicorn

    from api.app import create_app

    settings = Settings(
        data_dir=tmp_path / "data",
        public_base_url="http://127.0.0.1",
        secret_key="insights-browser-secret-key-0123456789",  # type: ignore[arg-type]
        smtp_host="127.0.0.1",
        smtp_port=1,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(engine, settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _login(browser: Any, base: str, book: Book, key: str, requests: list[str]) -> Any:
    """A page of its own, logged in as the book's user ``key``; every request it makes is
    recorded in ``requests`` and only loopback ones are let through."""
    page = new_page(browser, base, [], seen=requests)
    login(page, base, book.users[key].email, PASSWORDS[key])
    page.wait_for_load_state("networkidle")
    return page


def test_insight_pages_render_in_chromium(
    live_app: str, browser: Any, book: Book, shots: Path
) -> None:
    requests: list[str] = []

    # The CFO console, as a Controller: KPI cards, SVG charts with bars and lines, tables.
    page = _login(browser, live_app, book, "controller", requests)
    page.goto(f"{live_app}/console")
    assert page.locator("h1").inner_text() == "CFO console"
    charts = page.locator("svg.chart")
    assert charts.count() >= 6
    for i in range(charts.count()):
        box = charts.nth(i).bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 80
    assert page.locator("#chart-cash-1 rect.bar").count() == 12
    assert page.locator("#chart-dso polyline.series").count() >= 2
    assert page.locator("#chart-aging-1 rect.segment").count() >= 2
    dso = page.locator('.kpi[data-metric="dso_countback"] .value').inner_text()
    assert dso.endswith("days"), dso
    assert page.locator("#table-aging tbody tr").count() == 5
    page.screenshot(path=str(shots / "console.png"), full_page=True)
    page.locator(".charts").screenshot(path=str(shots / "console-charts.png"))
    page.close()

    # Renewal Risk, as a CSM: their renewals, ranked, with the freshness stamp.
    page = _login(browser, live_app, book, "csm", requests)
    page.goto(f"{live_app}/renewal-risk")
    rows = page.locator("#renewals tbody tr[data-customer]")
    assert rows.count() == 3
    assert "Computed" in page.locator("#freshness").inner_text()
    assert page.locator("#renewals .badge").first.inner_text() in {"High", "Medium", "Low"}
    page.screenshot(path=str(shots / "renewal-risk.png"), full_page=True)
    page.close()

    # Account 360, as Sales: risk with reasons, read-only cadence, and a Nudge that goes out
    # through the nudge rules.
    page = _login(browser, live_app, book, "sales", requests)
    customer = book.customers[0]
    page.goto(f"{live_app}/accounts/{customer.id}")
    assert page.locator("h1").inner_text().startswith(customer.name)
    assert page.locator("#open-invoices tbody tr").count() == 2
    assert page.locator("#open-invoices .reason").count() >= 2
    assert page.locator("#readonly-note").is_visible()
    assert page.locator("svg.chart").count() == 1
    page.screenshot(path=str(shots / "account360-sales.png"), full_page=True)
    page.click("#nudge-button")
    page.wait_for_load_state("networkidle")
    assert page.url.endswith(f"/accounts/{customer.id}")
    flash = page.locator(".flash").inner_text()
    assert "Nudge" in flash or "nudge" in flash, flash
    page.close()

    # Today's Focus, as a Collector: their invoices, ranked, with badges and reasons.
    page = _login(browser, live_app, book, "collector1", requests)
    page.goto(f"{live_app}/focus")
    rows = page.locator("#focus-list tbody tr")
    assert rows.count() == 12  # six accounts, two open invoices each
    assert rows.first.get_attribute("data-rank") == "1"
    badges = page.locator("#focus-list .badge").all_inner_texts()
    assert {"Promise due today", "Broken promise", "Plan near default", "SLA breach in 4 h"} <= set(
        badges
    )
    assert "High exposure" in badges
    assert "Fallback score" in page.locator(".model-note").inner_text()
    page.screenshot(path=str(shots / "focus-collector.png"), full_page=True)
    page.close()

    assert requests and all(u.startswith(live_app) for u in requests), [
        u for u in requests if not u.startswith(live_app)
    ][:3]
