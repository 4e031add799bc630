"""The browser tests' one kit: Debian's Chromium through Playwright, kept on loopback.

Every ``tests/api/*_browser.py`` drives the same real headless Chromium (``/usr/bin/chromium``,
never a browser Playwright downloads), refuses every request that would leave the test server's
origin, logs in through the form, and screenshots pages while checking that what a person reads
holds words, not identifiers. Those four things live here once, so a change to how the browser
is launched or guarded is made in one place. The ``browser`` and ``shots`` fixtures are imported
by name by the test modules (not a conftest, so other areas' tests in tests/api are unaffected).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from memory.models import Persona
from tests.api.factories import Seeded, password_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# A browser test's marks: it drives Chromium, and is skipped (with the fix) where there is none.
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing: apt-get install -y chromium (CI installs it)",
    ),
]

# What must never reach a person: rule ids, status codes and internal names, bad plurals.
IDENTIFIERS = [
    re.compile(
        r"\b(plan|credit|promise|shadow|access|content|cadence|quiet_hours|dispute|review)"
        r"\.[a-z_]+\b"
    ),
    re.compile(r"\b[a-z]+_[a-z_]+\b"),  # pending_approval, manage_plans, follow_up ...
    re.compile(r"\b1 (installments|days|items|drafts|promises|invoices)\b"),
    re.compile(r"\[\s*['\"]INV-"),  # a Python list of invoice numbers
    re.compile(r"\bNone\b"),
]


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless: the only browser the tests may use (none is downloaded)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)


@pytest.fixture
def browser() -> Iterator[Any]:
    # Playwright is an optional test dependency: without it the browser tests are skipped.
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: ``PLIXO_SCREENSHOT_DIR`` keeps them, else the test's own folder."""
    keep = os.environ.get("PLIXO_SCREENSHOT_DIR")
    target = Path(keep) if keep else tmp_path / "shots"
    target.mkdir(parents=True, exist_ok=True)
    return target


def new_context(
    browser: Any,
    origin: str,
    offsite: list[str],
    *,
    viewport: tuple[int, int] = (1440, 900),
    timeout_ms: int = 20_000,
    seen: list[str] | None = None,
) -> Any:
    """A context (own cookies) whose requests may only go to ``origin``: any other is aborted
    and recorded in ``offsite``, so a test asserts ``offsite == []``. ``seen`` collects every
    request URL, for tests that also check that the browser did ask for something. 1440x900 is
    the size the screenshots are reviewed at; 20 s per step leaves room on a loaded machine."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.set_default_timeout(timeout_ms)

    def guard(route: Any) -> None:
        url = route.request.url
        if seen is not None:
            seen.append(url)
        if url.startswith(origin):
            route.continue_()
        else:
            offsite.append(url)
            route.abort()

    context.route("**/*", guard)
    return context


def new_page(browser: Any, origin: str, offsite: list[str], **options: Any) -> Any:
    """A page in a fresh loopback-only context (see ``new_context`` for the options)."""
    return new_context(browser, origin, offsite, **options).new_page()


def login(page: Any, origin: str, email: str, password: str) -> None:
    """Log in through the form, as a person would, and land on the home page."""
    page.goto(f"{origin}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{origin}/")


def login_as(page: Any, origin: str, seeded: Seeded, role: Persona) -> None:
    """Log in as the seeded user of ``role``; the header then names the persona."""
    login(page, origin, seeded.email(role), password_for(role))
    assert role.value in page.inner_text(".who")


def screenshot(page: Any, shots: Path, name: str, *, full_page: bool = False) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=full_page)


def words(page: Any, selector: str) -> str:
    """The element's text with whitespace collapsed (layout puts line breaks inside rows)."""
    return " ".join(page.inner_text(selector).split())


def check(
    page: Any,
    shots: Path,
    name: str,
    *,
    raw: Sequence[re.Pattern[str]] = IDENTIFIERS,
    selector: str = "main",
) -> str:
    """Screenshot the page and assert that what a person reads in ``selector`` matches none of
    ``raw`` (identifiers, not words); returns that text for the test's own assertions."""
    screenshot(page, shots, name)
    text = words(page, selector)
    for pattern in raw:
        found = pattern.findall(text)
        assert not found, f"raw identifiers on {name}: {found}"
    return text
