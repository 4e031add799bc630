"""The workspace pages through the app (TestClient): who sees which page and button, and the
server's own checks behind the forms (a rationale is required even when the browser is bypassed;
a CSM proposes but never starts a plan; bad input comes back with a sentence, nothing written)."""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures by name

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import PaymentPlan, Persona, PlanStatus, PromiseToPay
from tests.api.factories import NOW, Seeded, make_customer, make_invoice
from tests.api.review_fixtures import app, client, csrf_of, login, seeded, settings  # noqa: F401
from tools import plans


def _eur_customer(session: Session, seeded: Seeded, amount: int = 1_850_000):  # type: ignore[no-untyped-def]
    customer = make_customer(session, seeded.org, seeded.segment, name="Lyon Outillage SA")
    inv = make_invoice(
        session,
        seeded.org,
        customer,
        number="F-2026-118",
        amount_minor=amount,
        due=NOW.date() - timedelta(days=20),
        currency="EUR",
    )
    session.commit()
    return customer, inv


def _count(session: Session, model: type) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_each_persona_sees_only_the_workspace_it_may_use(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    customer, inv = _eur_customer(session, seeded)
    login(client, seeded, Persona.CSM)
    account = client.get(f"/accounts/{customer.id}").text
    assert 'id="propose-plan-link"' in account and 'id="add-promise-link"' not in account
    assert client.get(f"/promises/new?invoice_id={inv.id}").status_code == 403
    assert client.get("/approvals").status_code == 403
    assert client.get(f"/plans/new?customer_id={customer.id}").status_code == 200
    client.cookies.clear()
    login(client, seeded, Persona.VIEWER)
    assert client.get(f"/plans/new?customer_id={customer.id}").status_code == 403
    assert ">Approvals<" not in client.get("/").text
    client.cookies.clear()
    login(client, seeded, Persona.CONTROLLER)
    assert ">Approvals<" in client.get("/").text


def test_a_blank_rationale_is_refused_by_the_server_and_nothing_changes(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    customer, inv = _eur_customer(session, seeded)
    plan = plans.propose_plan(
        session,
        seeded.org.id,
        customer_id=customer.id,
        invoice_ids=[inv.id],
        installments=plans.split_evenly(1_850_000, 3, NOW.date() + timedelta(days=7)),
        proposer=seeded.users[Persona.CSM],
        for_approval=True,
        now=NOW,
    ).plan
    session.commit()
    login(client, seeded, Persona.CONTROLLER)
    page = client.get("/approvals")
    assert "Payment plan for Lyon Outillage SA · €18,500.00" in page.text
    r = client.post(
        f"/approvals/plan/{plan.id}",
        data={"csrf": csrf_of(page.text), "verdict": "approve", "rationale": "   "},
        follow_redirects=True,
    )
    assert "Write why you approve or reject it" in r.text
    session.expire_all()
    assert session.get(PaymentPlan, plan.id).status == PlanStatus.PENDING_APPROVAL  # type: ignore[union-attr]


def test_a_promise_above_the_balance_comes_back_with_the_reason(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    customer, inv = _eur_customer(session, seeded, amount=100_000)
    login(client, seeded, Persona.COLLECTOR)
    form = client.get(f"/promises/new?invoice_id={inv.id}")
    r = client.post(
        "/promises/new",
        data={
            "csrf": csrf_of(form.text),
            "customer_id": str(customer.id),
            "invoice_ids": [str(inv.id)],
            "amount": "1000.01",
            "promised_date": (NOW.date() + timedelta(days=3)).isoformat(),
        },
        follow_redirects=True,
    )
    assert "is more than the linked invoices" in r.text and "open balance" in r.text
    assert _count(session, PromiseToPay) == 0


def test_a_plan_in_a_currency_without_limits_is_refused_on_the_card(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    customer = make_customer(session, seeded.org, seeded.segment, name="Osaka Parts KK")
    inv = make_invoice(
        session,
        seeded.org,
        customer,
        number="JP-1",
        amount_minor=500_000,
        due=NOW.date() - timedelta(days=5),
        currency="JPY",
    )
    session.commit()
    login(client, seeded, Persona.COLLECTOR)
    card = client.get(f"/plans/new?invoice_id={inv.id}")
    assert "The guardrails will not allow this plan as it stands." in card.text
    assert "The policy sets no plan limits in JPY" in card.text
    r = client.post(
        "/plans/new",
        data={
            "csrf": csrf_of(card.text),
            "customer_id": str(customer.id),
            "invoice_ids": [str(inv.id)],
            "template": "3x1",
            "first_due": (NOW.date() + timedelta(days=7)).isoformat(),
            "action": "submit",
        },
    )
    assert r.status_code == 200 and "The plan is not allowed" in r.text
    assert _count(session, PaymentPlan) == 0


def test_send_reminder_drafts_through_the_guardrails_and_waits_for_review(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    from memory.models import Draft, DraftStatus
    from tools import promises

    customer = make_customer(session, seeded.org, seeded.segment, name="Harbour Foods Ltd")
    inv = make_invoice(
        session,
        seeded.org,
        customer,
        number="INV-7001",
        amount_minor=120_000,
        due=NOW.date() - timedelta(days=20),
    )
    promise = promises.add_promise(
        session,
        seeded.org.id,
        customer_id=customer.id,
        amount_minor=120_000,
        promised_date=NOW.date() + timedelta(days=2),
        actor=seeded.users[Persona.COLLECTOR],
        invoice_ids=[inv.id],
        contact_id=customer.contacts[0].id,
        now=NOW,
    )
    session.commit()
    login(client, seeded, Persona.COLLECTOR)
    page = client.get(f"/promises/{promise.id}")
    r = client.post(
        f"/promises/{promise.id}/reminder",
        data={"csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/drafts/")
    session.expire_all()
    draft = session.scalars(
        select(Draft).where(Draft.run_key == f"promise-reminder:{promise.id}")
    ).one()
    assert draft.status == DraftStatus.PENDING_REVIEW  # Shadow Mode: a person approves it
    rules = {r["rule_id"] for r in draft.decision["reasons"]}
    assert "promise.open" not in rules and "promise.reminder_not_open" not in rules
    assert "shadow.review_required" in rules
    assert "INV-7001" in draft.body
