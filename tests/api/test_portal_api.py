"""The mini-portal over HTTP: token checks (expired, revoked, guessed, foreign, brute force) refused
and logged; plan proposals invisible until approved; disputes with evidence limits."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from memory.models import (
    Customer,
    Dispute,
    DisputeEvidence,
    DisputeStatus,
    InvoiceStatus,
    Organisation,
    OutboxMessage,
    PaymentPlan,
    Persona,
    PlanStatus,
    PortalAccessLog,
)
from tests.tools.commit_factories import Factory, app_settings, bearer, client_for
from tools.commitments import plans
from tools.portal import access as portal

TODAY = datetime.now(UTC).date()
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def cf(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def api(engine: Engine, data: Path) -> Iterator[TestClient]:
    with client_for(engine, app_settings(data)) as client:
        yield client


def _token(
    session: Session,
    cf: Factory,
    customer: Customer,
    ttl: timedelta = portal.DEFAULT_TTL,
    now: datetime | None = None,
) -> str:
    issued = portal.issue_token(
        session, cf.org.id, customer.id, actor="t", base_url="http://testserver", ttl=ttl, now=now
    )
    session.commit()
    return issued.raw


def _logs(session: Session) -> list[tuple[str, str]]:
    session.expire_all()
    rows = session.scalars(select(PortalAccessLog).order_by(PortalAccessLog.id))
    return [(r.action, r.outcome) for r in rows]


def _n(session: Session, model: type) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_portal_page_is_scoped_and_has_no_staff_navigation(
    api: TestClient, session: Session, cf: Factory
) -> None:
    mine, other = cf.customer("Mine Co"), cf.customer("Other Co", email="o@o.example")
    inv = cf.invoice(mine, 12_345)
    theirs = cf.invoice(other, 777)
    raw = _token(session, cf, mine)
    r = api.get(f"/portal/{raw}")
    assert r.status_code == 200
    assert "Mine Co" in r.text and inv.number in r.text and "$123.45" in r.text
    assert theirs.number not in r.text and "Other Co" not in r.text
    for staff_link in ('href="/queue"', 'href="/radar"', "Log out"):
        assert staff_link not in r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert _logs(session) == [("view", "ok")]
    # dates as the payer reads them: their browser's locale, or their account's language
    assert f"<td>{inv.due_date:%b} {inv.due_date.day}, {inv.due_date.year}</td>" in r.text
    assert inv.due_date.isoformat() not in r.text.replace(f'value="{inv.due_date}"', "")
    mine.language = "de"
    session.commit()
    german = api.get(f"/portal/{raw}", headers={"Accept-Language": "en-US"}).text
    assert f"<td>{inv.due_date:%d.%m.%Y}</td>" in german
    assert re.search(r"valid until \d{2}\.\d{2}\.\d{4}\.", german)


def test_expired_token(api: TestClient, session: Session, cf: Factory) -> None:
    c = cf.customer()
    raw = _token(session, cf, c, ttl=timedelta(days=1), now=datetime.now(UTC) - timedelta(days=2))
    r = api.get(f"/portal/{raw}")
    assert r.status_code == 410 and "not valid or has expired" in r.text
    assert c.name not in r.text
    assert _logs(session) == [("view", "expired")]


def test_revoked_token(api: TestClient, session: Session, cf: Factory) -> None:
    c = cf.customer()
    h = bearer(session, cf.user(Persona.COLLECTOR))
    issued = api.post("/api/portal-tokens", headers=h, json={"customer_id": c.id}).json()
    raw = issued["url"].rsplit("/", 1)[1]
    assert api.get(f"/portal/{raw}").status_code == 200
    revoked = api.post(f"/api/portal-tokens/{issued['id']}/revoke", headers=h)
    assert revoked.json()["revoked_at"] is not None
    assert api.get(f"/portal/{raw}").status_code == 410
    assert _logs(session) == [("view", "ok"), ("view", "revoked")]


def test_guessed_token(api: TestClient, session: Session, cf: Factory) -> None:
    cf.customer()
    session.commit()
    r = api.get(f"/portal/{secrets.token_urlsafe(32)}")
    assert r.status_code == 404 and "not valid" in r.text
    assert _logs(session) == [("view", "unknown")]


def test_foreign_invoice_and_dispute_are_refused_and_logged(
    api: TestClient, session: Session, cf: Factory
) -> None:
    mine, other = cf.customer(), cf.customer(email="o@o.example")
    cf.invoice(mine)
    theirs = cf.invoice(other)
    their_dispute = Dispute(
        org_id=cf.org.id, customer_id=other.id, invoice_id=theirs.id, reason="tax"
    )
    session.add(their_dispute)
    raw = _token(session, cf, mine)
    assert api.post(f"/portal/{raw}/invoices/{theirs.id}/pay").status_code == 404
    r = api.post(f"/portal/{raw}/disputes", data={"invoice_id": theirs.id, "reason": "pricing"})
    assert r.status_code == 404
    ev = api.post(
        f"/portal/{raw}/disputes/{their_dispute.id}/evidence",
        files={"file": ("a.png", PNG, "image/png")},
    )
    assert ev.status_code == 404
    plan = api.post(
        f"/portal/{raw}/plans",
        data={"invoice_ids": [theirs.id], "installments": 2, "first_due": TODAY.isoformat()},
    )
    assert plan.status_code == 404
    assert [o for _, o in _logs(session)].count("foreign") == 4
    assert _n(session, Dispute) == 1 and _n(session, DisputeEvidence) == 0
    assert _n(session, PaymentPlan) == 0


def test_brute_force_is_refused_and_logged(api: TestClient, session: Session, cf: Factory) -> None:
    c = cf.customer()
    raw = _token(session, cf, c)
    for _ in range(portal.RATE_MAX_FAILURES):
        assert api.get(f"/portal/{secrets.token_urlsafe(32)}").status_code == 404
    locked = api.get(f"/portal/{raw}")  # even the right token, from this client, for now
    assert locked.status_code == 429 and "Too many attempts" in locked.text
    outcomes = [o for _, o in _logs(session)]
    assert outcomes == ["unknown"] * portal.RATE_MAX_FAILURES + ["rate_limited"]
    session.expire_all()
    clients = set(session.scalars(select(PortalAccessLog.client)))
    assert clients == {"testclient"}


def test_payer_plan_proposal_is_invisible_until_approved(
    api: TestClient, session: Session, cf: Factory
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 90_000)
    raw = _token(session, cf, c)
    first = TODAY + timedelta(days=10)
    r = api.post(
        f"/portal/{raw}/plans",
        data={"invoice_ids": [inv.id], "installments": 3, "first_due": first.isoformat()},
    )
    assert r.status_code == 201 and "under review" in r.text
    assert "Your payment plans" not in r.text and "$300" not in r.text
    session.expire_all()
    plan = session.scalars(select(PaymentPlan)).one()
    assert plan.status == PlanStatus.PENDING_APPROVAL and plan.source == "portal"
    assert [i.amount_minor for i in plan.installments] == [30_000, 30_000, 30_000]
    assert "Your payment plans" not in api.get(f"/portal/{raw}").text
    h = bearer(session, cf.user(Persona.COLLECTOR))
    approved = api.post(f"/api/plans/{plan.id}/approve", headers=h)
    assert approved.json()["status"] == "active"
    after = api.get(f"/portal/{raw}").text
    assert "Your payment plans" in after  # the first installment's date, as the payer reads it
    assert f"<td>{first:%b} {first.day}, {first.year}</td>" in after


def test_payer_plan_over_the_caps_is_refused_with_the_reason(
    api: TestClient, session: Session, cf: Factory
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 120_000)
    raw = _token(session, cf, c)
    late_start = plans.add_months(TODAY, 2)
    r = api.post(
        f"/portal/{raw}/plans",
        data={"invoice_ids": [inv.id], "installments": 12, "first_due": late_start.isoformat()},
    )
    assert r.status_code == 422
    assert "cannot accept that schedule" in r.text and "at most 12" in r.text
    past = api.post(
        f"/portal/{raw}/plans",
        data={
            "invoice_ids": [inv.id],
            "installments": 2,
            "first_due": (TODAY - timedelta(days=1)).isoformat(),
        },
    )
    assert past.status_code == 400 and "in the past" in past.text
    assert _n(session, PaymentPlan) == 0


def test_dispute_with_evidence_from_the_portal(
    api: TestClient, session: Session, cf: Factory, data: Path
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 10_000)
    raw = _token(session, cf, c)
    r = api.post(
        f"/portal/{raw}/disputes",
        data={
            "invoice_id": inv.id,
            "reason": "not_received",
            "description": "Never arrived",
            "slot": "proof_of_delivery",
        },
        files={"file": ("tracking.png", PNG, "image/png")},
    )
    assert r.status_code == 201 and "Reminders for this invoice are paused" in r.text
    session.expire_all()
    dispute = session.scalars(select(Dispute)).one()
    assert dispute.source == "portal" and dispute.customer_id == c.id
    assert inv.disputed is True
    (item,) = dispute.evidence
    assert item.content_type == "image/png" and item.slot == "proof_of_delivery"
    assert (data / "evidence" / item.storage_path).read_bytes() == PNG
    more = api.post(
        f"/portal/{raw}/disputes/{dispute.id}/evidence",
        files={"file": ("note.txt", b"PO 4471 attached", "text/plain")},
    )
    assert more.status_code == 201
    assert _n(session, DisputeEvidence) == 2
    # the payer reads the status in words, never an internal name or "Legal"
    dispute.status = DisputeStatus.ESCALATED_LEGAL
    session.commit()
    page = api.get(f"/portal/{raw}").text
    assert "Under senior review" in page
    assert "escalated" not in page.lower() and "legal" not in page.lower()


@pytest.mark.parametrize(
    ("name", "content", "ctype", "match"),
    [
        ("virus.pdf", b"MZ\x90\x00" + b"\x00" * 100, "application/pdf", "not accepted"),
        ("huge.pdf", b"%PDF-" + b"1" * (5 * 1024 * 1024), "application/pdf", "the limit is"),
    ],
)
def test_bad_upload_opens_no_dispute(
    api: TestClient,
    session: Session,
    cf: Factory,
    data: Path,
    name: str,
    content: bytes,
    ctype: str,
    match: str,
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 10_000)
    raw = _token(session, cf, c)
    r = api.post(
        f"/portal/{raw}/disputes",
        data={"invoice_id": inv.id, "reason": "quality"},
        files={"file": (name, content, ctype)},
    )
    assert r.status_code == 400 and match in r.text
    assert _n(session, Dispute) == 0
    session.expire_all()
    assert inv.disputed is False
    assert not (data / "evidence").exists() or not any(
        p.is_file() for p in (data / "evidence").rglob("*")
    )


def test_dispute_on_a_paid_invoice_is_refused(
    api: TestClient, session: Session, cf: Factory
) -> None:
    c = cf.customer()
    paid = cf.invoice(c, 1_000, balance_minor=0, status=InvoiceStatus.PAID)
    raw = _token(session, cf, c)
    r = api.post(f"/portal/{raw}/disputes", data={"invoice_id": paid.id, "reason": "pricing"})
    assert r.status_code == 400 and "nothing left to pay" in r.text
    assert _n(session, Dispute) == 0


def test_without_stripe_there_is_no_pay_button_and_a_clear_error(
    api: TestClient, session: Session, cf: Factory
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 1_000)
    raw = _token(session, cf, c)
    assert "Pay $10" not in api.get(f"/portal/{raw}").text
    r = api.post(f"/portal/{raw}/invoices/{inv.id}/pay")
    assert r.status_code == 503 and "PLIXO_STRIPE_API_KEY" in r.text
    assert ("pay", "ok") in _logs(session)


def test_stable_pay_link_emails_a_fresh_link_to_the_contact_on_file(
    api: TestClient, session: Session, cf: Factory
) -> None:
    c = cf.customer(email="billing@payer.example")
    inv = cf.invoice(c, 5_000)
    paid = cf.invoice(c, 5_000, balance_minor=0, status=InvoiceStatus.PAID)
    session.commit()
    url = f"/pay/{cf.org.slug}/{inv.number}"
    page = api.get(url)
    assert page.status_code == 200 and "E-mail me a secure link" in page.text
    assert _n(session, OutboxMessage) == 0  # a GET (or a mail scanner) sends nothing
    sent = api.post(url)
    assert sent.status_code == 200 and "we have e-mailed a secure payment link" in sent.text
    session.expire_all()
    msg = session.scalars(select(OutboxMessage)).one()
    assert msg.recipient == "billing@payer.example" and msg.draft_id is None
    link = re.search(r"http://testserver/portal/(\S+)", msg.body)
    assert link is not None
    assert link.group(1) not in sent.text  # the link goes to the contact, never to the asker
    assert api.get(f"/portal/{link.group(1)}").status_code == 200
    # Again at once: same answer, no second e-mail; unknown and paid invoices: same answer too.
    for other in (
        url,
        f"/pay/{cf.org.slug}/NOPE-1",
        f"/pay/no-such-org/{inv.number}",
        f"/pay/{cf.org.slug}/{paid.number}",
    ):
        r = api.post(other)
        assert r.status_code == 200 and "If invoice" in r.text
    assert _n(session, OutboxMessage) == 1
    outcomes = [o for a, o in _logs(session) if a == "link_request"]
    assert outcomes == ["sent", "throttled", "unknown", "unknown", "closed"]


def test_probing_invoice_numbers_is_rate_limited(
    api: TestClient, session: Session, cf: Factory
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 5_000)
    session.commit()
    for i in range(portal.RATE_MAX_FAILURES):
        assert api.post(f"/pay/{cf.org.slug}/GUESS-{i}").status_code == 200
    blocked = api.post(f"/pay/{cf.org.slug}/{inv.number}")
    assert blocked.status_code == 429
    assert _n(session, OutboxMessage) == 0
