"""The collector's workspace in real headless Chromium (Debian's /usr/bin/chromium, Playwright).

One test per flow, as the personas of the access matrix: a Collector logs a promise and marks it
missed; a Collector creates a plan prefilled from a promise in EUR over their limit and the
Controller approves it from the approvals inbox with a rationale; a CSM proposes a plan from
Account 360. Every new page is saved as a 1440x900 screenshot (``PLIXO_SCREENSHOT_DIR``, else the
test's own directory) and its text is checked for raw identifiers (rule ids, status codes,
snake_case names, "1 installments"). Nothing leaves loopback.
"""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures and .browser by name

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import (
    Approval,
    Organisation,
    PaymentPlan,
    Persona,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
)
from tests.api.browser import (  # noqa: F401 - browser and shots are fixtures
    MARKS,
    browser,
    check,
    login_as,
    new_page,
    shots,
    words,
)
from tests.api.factories import NOW, Seeded, make_customer, make_invoice, seed_review
from tests.api.review_fixtures import LiveServer, app, live, settings  # noqa: F401 - fixtures

pytestmark = MARKS


@pytest.fixture
def seeded(session: Session, org: Organisation, settings: Settings) -> Seeded:  # noqa: F811
    return seed_review(session, org, settings, drafts=0)


def _customer(session: Session, seeded: Seeded, name: str, *invoices: tuple[str, int, str]):  # type: ignore[no-untyped-def]
    customer = make_customer(
        session,
        seeded.org,
        seeded.segment,
        name=name,
        collector=seeded.users[Persona.COLLECTOR],
    )
    rows = [
        make_invoice(
            session,
            seeded.org,
            customer,
            number=number,
            amount_minor=amount,
            due=NOW.date() - timedelta(days=30 - 10 * i),  # the first is the oldest
            currency=currency,
        )
        for i, (number, amount, currency) in enumerate(invoices)
    ]
    session.commit()
    return customer, rows


def test_collector_logs_a_promise_and_marks_it_missed(
    browser: Any,
    live: LiveServer,  # noqa: F811
    seeded: Seeded,
    session: Session,
    shots: Path,
) -> None:
    customer, (older, newer) = _customer(
        session,
        seeded,
        "Harbour Foods Ltd",
        ("INV-7001", 120_000, "USD"),
        ("INV-7002", 80_000, "USD"),
    )
    offsite: list[str] = []
    page = new_page(browser, live.url, offsite)
    login_as(page, live.url, seeded, Persona.COLLECTOR)
    page.goto(f"{live.url}/accounts/{customer.id}")
    page.click("#add-promise-link")
    page.wait_for_url(re.compile(r".*/promises/new\?customer_id=\d+"))
    text = check(page, shots, "promise-new")
    assert "INV-7001 · due Sun, Sep 7, 2025 · $1,200.00 open" in text
    # a partial promise: $1,200.00 of $2,000.00 covers the older invoice only
    page.check(f"input[data-invoice={newer.number}]")
    page.fill("#amount", "1200.00")
    page.click("#add-promise")
    page.wait_for_url(re.compile(r".*/promises/\d+$"))
    text = check(page, shots, "promise-inspector")
    assert "Promise of $1,200.00 logged." in text
    assert words(page, "#promise-status") == "Open"
    assert "Chasing paused for: INV-7001 ($1,200.00)" in words(page, "#paused")
    assert "INV-7002" in words(page, "#still-chased")
    promise = session.scalars(
        select(PromiseToPay).where(PromiseToPay.customer_id == customer.id)
    ).one()
    assert (promise.amount_minor, promise.currency, promise.status) == (
        120_000,
        "USD",
        PromiseStatus.OPEN,
    )
    assert sorted(i.number for i in promise.invoices) == ["INV-7001", "INV-7002"]

    page.click("#mark-missed")
    page.wait_for_url(re.compile(r".*/promises/\d+$"))
    text = check(page, shots, "promise-missed")
    assert words(page, "#promise-status") == "Missed"
    assert "back in the cadence" in text
    session.expire_all()
    assert session.get(PromiseToPay, promise.id).status == PromiseStatus.MISSED  # type: ignore[union-attr]
    assert offsite == []


def test_collector_plans_in_euros_over_their_limit_and_the_controller_approves(
    browser: Any,
    live: LiveServer,  # noqa: F811
    seeded: Seeded,
    session: Session,
    shots: Path,
) -> None:
    collector, controller = seeded.users[Persona.COLLECTOR], seeded.users[Persona.CONTROLLER]
    collector.approval_limits = {"USD": 500_000, "EUR": 500_000}
    controller.approval_limits = {"USD": 25_000_000, "EUR": 25_000_000}
    customer, (inv,) = _customer(
        session, seeded, "Lyon Outillage SA", ("F-2026-118", 1_850_000, "EUR")
    )
    offsite: list[str] = []
    page = new_page(browser, live.url, offsite)
    login_as(page, live.url, seeded, Persona.COLLECTOR)
    # the promise first: €18,500.00 by next week
    page.goto(f"{live.url}/promises/new?invoice_id={inv.id}")
    page.fill("#amount", "18500")
    page.click("#add-promise")
    page.wait_for_url(re.compile(r".*/promises/\d+$"))
    # the plan card, prefilled from the selected promise
    page.goto(f"{live.url}/plans/new?customer_id={customer.id}")
    page.click("#prefill")
    page.wait_for_url(re.compile(r".*/plans/new\?promise_id=\d+"))
    text = check(page, shots, "plan-new")
    assert "Prefilled from the promise of €18,500.00" in text
    assert page.is_checked(f"input[data-invoice={inv.number}]")
    # the guardrails' answer, inline, before anything is submitted
    assert "wait for Controller approval" in words(page, "#guardrail-headline")
    assert (
        "Plan of €18,500 exceeds the Collector limit of €10,000: Controller approval required"
        in words(page, "#guardrail-reasons")
    )
    assert "€6,166.67" in words(page, "#schedule-preview")  # 3 monthly, odd cent first
    assert "$" not in words(page, "#guardrails")
    page.select_option("#template", "4x1")
    page.click("#check")
    page.wait_for_load_state()
    assert "€4,625.00" in words(page, "#schedule-preview")
    page.click("#submit-plan")
    page.wait_for_url(re.compile(r".*/plans/\d+$"))
    text = check(page, shots, "plan-panel-waiting")
    assert words(page, "#plan-status") == "Waiting for approval"
    assert "waiting for Controller" in words(page, "#plan-panel")
    plan = session.scalars(select(PaymentPlan).where(PaymentPlan.customer_id == customer.id)).one()
    assert (plan.currency, plan.total_minor, len(plan.installments)) == ("EUR", 1_850_000, 4)
    assert plan.status == PlanStatus.PENDING_APPROVAL and plan.from_promise_id is not None

    # the Controller's inbox
    boss = new_page(browser, live.url, offsite)
    login_as(boss, live.url, seeded, Persona.CONTROLLER)
    boss.click("nav >> text=Approvals")
    boss.wait_for_url(f"{live.url}/approvals")
    text = check(boss, shots, "approvals-inbox")
    item = boss.locator("[data-testid=approval-item][data-kind=plan]")
    card = " ".join(item.inner_text().split())
    assert "Payment plan for Lyon Outillage SA · €18,500.00" in card
    assert "New plan of 4 installments" in card and "F-2026-118" in card
    assert "exceeds the Collector limit of €10,000" in card
    assert "raised by Collector User (Collector)" in card
    assert "decide by" in card and "waiting less than a minute" in card
    # the rationale is required: an empty one is refused by the form and by the server
    item.locator("button[value=approve]").click()
    assert boss.url == f"{live.url}/approvals"
    session.expire_all()
    assert session.get(PaymentPlan, plan.id).status == PlanStatus.PENDING_APPROVAL  # type: ignore[union-attr]
    item.locator("textarea[name=rationale]").fill(
        "Ten-year customer; the schedule fits their cycle."
    )
    item.locator("button[value=approve]").click()
    boss.wait_for_load_state()
    text = check(boss, shots, "approvals-after")
    assert "Plan approved: it is active and the payer can see it." in text
    assert "Nothing waits for your decision." in text
    session.expire_all()
    assert session.get(PaymentPlan, plan.id).status == PlanStatus.ACTIVE  # type: ignore[union-attr]
    row = session.scalars(select(Approval).where(Approval.subject_id == plan.id)).one()
    assert row.reason == "Ten-year customer; the schedule fits their cycle."
    assert row.approver_user_id == controller.id
    boss.goto(f"{live.url}/plans/{plan.id}")
    check(boss, shots, "plan-panel-active")
    assert words(boss, "#plan-status") == "Active"
    assert (
        "Approved by Controller User (Controller): Ten-year customer; the schedule fits their "
        "cycle." in words(boss, "#decisions")
    )
    assert offsite == []


def test_a_csm_proposes_a_plan_from_account_360(
    browser: Any,
    live: LiveServer,  # noqa: F811
    seeded: Seeded,
    session: Session,
    shots: Path,
) -> None:
    customer, (inv,) = _customer(session, seeded, "Northwind Traders", ("INV-8801", 90_000, "USD"))
    offsite: list[str] = []
    page = new_page(browser, live.url, offsite)
    login_as(page, live.url, seeded, Persona.CSM)
    page.goto(f"{live.url}/accounts/{customer.id}")
    assert page.locator("#add-promise-link").count() == 0  # CSMs do not record promises
    page.click("#propose-plan-link")
    page.wait_for_url(re.compile(r".*/plans/new\?customer_id=\d+"))
    text = check(page, shots, "plan-propose-csm")
    assert "Propose a payment plan" in text
    assert "every plan you propose waits for an approver" in text
    assert "exceeds the CSM limit of $0" in words(page, "#guardrail-reasons")
    page.click("#submit-plan")
    page.wait_for_url(re.compile(r".*/plans/\d+$"))
    check(page, shots, "plan-panel-csm")
    assert words(page, "#plan-status") == "Waiting for approval"
    assert page.locator("#cancel-plan").count() == 0  # proposing is not administering
    plan = session.scalars(select(PaymentPlan).where(PaymentPlan.customer_id == customer.id)).one()
    assert plan.status == PlanStatus.PENDING_APPROVAL
    assert plan.proposed_by_user_id == seeded.users[Persona.CSM].id
    assert (plan.decision or {}).get("approver_roles") == ["Controller"]
    assert offsite == []
