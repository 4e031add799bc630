"""The HTML report: self-contained, a chart per evaluator, the worst cases inline, and it opens in
headless Chromium (no network, no script)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from evals.loader import load_datasets
from evals.outputs import DraftView
from evals.report import render_html, write_html
from evals.runner import CaseContext, FunctionAgent, RunSummary, run_suite
from memory.config import Settings
from tests.evals.reference import broken

CHROMIUM = Path("/usr/bin/chromium")


def _shout(d: DraftView, ctx: CaseContext) -> DraftView:
    body = d.body + "\n\nPAY THIS NOW OR ELSE <script>alert(1)</script>"
    return d.model_copy(update={"body": body})


@pytest.fixture(scope="module")
def summary() -> RunSummary:
    datasets = load_datasets(["reminders", "disputes"])
    agent = FunctionAgent(broken(_shout), model="shouting")
    return asyncio.run(run_suite(datasets, agent, Settings())).summary


def test_report_is_self_contained_and_escapes_draft_text(summary: RunSummary) -> None:
    html = render_html(summary)
    assert "<script>" not in html  # the draft's text is escaped, and the report has no script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"(src|href)=\"https?://", html)  # no external resource
    charts = re.findall(r'<svg class="chart" data-evaluator="([a-z_]+)"', html)
    assert set(charts) == {e.name for e in summary.evaluators}
    assert "Gate failed" in html
    assert "LLM judge skipped" in html  # no judge model configured in the tests
    assert 'id="case-' in html and "OR ELSE" in html  # worst cases shown with their text


@pytest.mark.browser
def test_report_opens_in_headless_chromium_and_shows_the_charts(
    summary: RunSummary, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is not installed (the CI image installs it); the report test needs it"
        )
    playwright = pytest.importorskip("playwright.sync_api")
    path = write_html(summary, tmp_path / "report.html")
    requests: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            assert page.title().startswith("plixo eval report")
            charts = page.locator("svg.chart")
            assert charts.count() == len(summary.evaluators)
            for name in ("fact_accuracy", "tone_safety", "call_to_action", "hallucination"):
                chart = page.locator(f'svg.chart[data-evaluator="{name}"]')
                assert chart.is_visible()
                box = chart.bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 60
            # Tone safety failed on every case: its bars are drawn, in the failing colour.
            bars = page.locator('svg.chart[data-evaluator="tone_safety"] rect.bar')
            assert bars.count() >= 2
            assert page.locator("#verdict").inner_text() == "Gate failed"
            assert page.locator("#judge-note").is_visible()
            worst = page.locator("div.case")
            assert worst.count() >= 5
            assert "OR ELSE" in worst.first.inner_text()
        finally:
            browser.close()
    assert requests and all(u.startswith("file://") for u in requests), requests
