"""The workspace pages through the app (TestClient): who sees which page and button, and the
server's own checks behind the forms (a rationale is required even when the browser is bypassed;
a CSM proposes but never starts a plan; bad input comes back with a sentence, nothing written)."""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures by name

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import PaymentPlan, Persona, PlanStatus, PromiseToPay
from tests.api.factories import NOW, Seeded, make_customer, make_invoice
from tests.api.review_fixtures import app, client, csrf_of, login, seeded, settings  # noqa: F401
from tools.commitments import plans


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
    from tools.commitments import promises

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


# What must never reach a person on these pages: rule ids, snake_case statuses and step names,
# bare ISO dates, lower-case status codes in badges, bad plurals, Python or JSON lists.
RAW = [
    re.compile(
        r"\b(plan|credit|promise|shadow|access|content|cadence|quiet_hours|dispute|review)"
        r"\.[a-z_]+\b"
    ),
    re.compile(r"\b[a-z]+_[a-z_]+\b"),
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),
    re.compile(r">\s*(open|kept|missed|broken|active|defaulted|proposed|pricing)\s*<"),
    re.compile(r"\b1 (installments|days|items|drafts|promises|invoices|messages)\b"),
    re.compile(r"\[\s*(&#34;|&#39;|\"|')"),
    re.compile(r"\bNone\b"),
]


def _visible(html: str) -> str:
    html = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", html, flags=re.S)
    html = re.sub(r"<(input|textarea|select|option)\b[^>]*>", " ", html)
    return re.sub(r"<[^>]+>", "><", html)  # keeps each text run between its own > and <


def _assert_words(html: str, page: str) -> None:
    text = _visible(html)
    for pattern in RAW:
        found = pattern.search(text)
        assert found is None, f"{page} shows {found.group(0)!r}"


def _commitments(session: Session, seeded: Seeded) -> dict[str, int]:
    """A promise due today, a missed one, a running plan one installment behind, a plan waiting
    for the Controller and a dispute, all on one account (the seeded drafts' first customer)."""
    from tools.commitments import disputes, promises

    org, c = seeded.org, seeded.customers[0]
    collector = seeded.users[Persona.COLLECTOR]
    late = make_invoice(session, seeded.org, c, number="INV-L-2", amount_minor=300_050,
                        due=NOW.date() - timedelta(days=45))  # fmt: skip
    older = make_invoice(session, seeded.org, c, number="INV-L-3", amount_minor=90_000,
                         due=NOW.date() - timedelta(days=100))  # fmt: skip
    session.commit()
    today = promises.add_promise(
        session, org.id, customer_id=c.id, amount_minor=50_000, promised_date=NOW.date(),
        actor=collector, invoice_ids=[seeded.invoices[0].id], now=NOW,
    )  # fmt: skip
    broken = promises.add_promise(
        session, org.id, customer_id=c.id, amount_minor=20_000,
        promised_date=NOW.date() + timedelta(days=1), actor=collector, invoice_ids=[late.id],
        now=NOW,
    )  # fmt: skip
    session.commit()
    promises.mark_missed(session, org.id, broken.id, actor=collector, now=NOW)
    running = plans.propose_plan(
        session, org.id, customer_id=c.id, invoice_ids=[older.id],
        installments=plans.split_evenly(90_000, 3, NOW.date() + timedelta(days=3)),
        proposer=collector, now=NOW,
    ).plan  # fmt: skip
    running.installments[0].due_date = NOW.date() - timedelta(days=3)
    waiting = plans.propose_plan(
        session, org.id, customer_id=c.id, invoice_ids=[late.id],
        installments=plans.split_evenly(300_050, 1, NOW.date() + timedelta(days=3)),
        proposer=seeded.users[Persona.CSM], for_approval=True, now=NOW,
    ).plan  # fmt: skip
    disputes.open_dispute(
        session, org.id, invoice_id=seeded.invoices[0].id, reason="pricing", actor=collector,
        description="Price differs from the quote", now=NOW - timedelta(days=1),
    )  # fmt: skip
    session.commit()
    return {"customer": c.id, "today": today.id, "broken": broken.id,
            "running": running.id, "waiting": waiting.id}  # fmt: skip


def test_commitment_pages_show_words_and_dates_in_the_readers_locale(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    """Account 360's promise and plan rows, the Commitment Radar, the draft page's aging buckets,
    the promise and plan pages and the approvals inbox: labels instead of identifiers, and dates
    as the reader's locale writes them (German here: "Di., 7. Okt. 2025", "07.10.2025")."""
    ids = _commitments(session, seeded)
    de = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
    login(client, seeded, Persona.COLLECTOR)
    pages = {
        "account": f"/accounts/{ids['customer']}",
        "radar": "/radar",
        "promise": f"/promises/{ids['today']}",
        "broken promise": f"/promises/{ids['broken']}",
        "plan": f"/plans/{ids['running']}",
        "waiting plan": f"/plans/{ids['waiting']}",
    }
    html = {}
    for name, path in pages.items():
        r = client.get(path, headers=de)
        assert r.status_code == 200, (name, r.text[:300])
        _assert_words(r.text, name)
        html[name] = r.text

    account = html["account"]
    assert "Di., 7. Okt. 2025" in account and "Mi., 8. Okt. 2025" in account  # promised dates
    assert "grace to 10.10.2025" in account and "Price or rate differs" in account
    assert ">Broken<" not in account  # promise due today is within its grace: open
    assert 'data-promise-status="missed">Missed<' in account
    assert 'data-plan-status="pending_approval">Waiting for approval<' in account
    assert 'data-plan-status="active">Active<' in account
    assert "over 1 installment<" in account and "over 3 installments<" in account
    assert '<td>31-60 days <span class="muted small">45 days late</span>' in account
    assert '<td>90+ days <span class="muted small">100 days late</span>' in account
    assert "$3,000.50" in account and "as of 07.10.2025" in account  # the app's clock
    radar = html["radar"]
    assert "Di., 7. Okt. 2025" in radar or "Sa., 4. Okt. 2025" in radar
    assert "Sa., 4. Okt. 2025" in radar and "3 days ago" in radar and "$300.00" in radar
    assert "Promise of $500.00 by Di., 7. Okt. 2025" in html["promise"]
    assert "Fr., 10. Okt. 2025 (3 days of grace)" in html["promise"]
    assert "07.10.2025, 14:00" in html["promise"]  # logged, on the organisation's clock
    assert 'id="promise-status">Missed<' in html["broken promise"]
    assert "on Sa., 4. Okt. 2025" in html["plan"] and "Mo., 10. Nov. 2025" in html["plan"]
    assert 'id="plan-status">Waiting for approval<' in html["waiting plan"]

    draft = client.get(f"/drafts/{seeded.drafts[0].id}", headers=de).text
    context = draft.split('aria-label="Context"', 1)[1].split("</aside>", 1)[0]
    _assert_words(context, "draft context")
    assert "1-30 days: $1,200.00" in context and "31-60 days: $3,000.50" in context
    assert "27.09.2025" in context and "by Di., 7. Okt. 2025" in context
    assert "Waiting for approval" in context and "Price or rate differs" in context
    inspector = draft.split('data-testid="inspector"', 1)[1]
    assert "[&#34;" not in inspector and '["' not in inspector  # lists in words

    client.cookies.clear()
    login(client, seeded, Persona.CONTROLLER)
    approvals = client.get("/approvals", headers=de).text
    _assert_words(approvals, "approvals")
    assert "from 10.10.2025 to 10.10.2025, settling INV-L-2" in approvals
    assert "decide by 08.10.2025, 14:00" in approvals and "Fr., 10. Okt. 2025" in approvals
    english = client.get("/approvals", headers={"Accept-Language": "en-US"}).text
    assert "decide by Oct 8, 2025, 2:00" in english and "Fri, Oct 10, 2025" in english
