"""The commitments JSON API and the Radar page: permissions, guardrail messages inline, bad input
as clear 4xx with nothing changed, organisation scoping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from memory.models import (
    Dispute,
    DisputeEvidence,
    InvoiceStatus,
    Organisation,
    PaymentPlan,
    Persona,
    PlanStatus,
    PromiseToPay,
)
from tests.tools.commit_factories import Factory, app_settings, bearer, client_for

TODAY = datetime.now(UTC).date()
PDF = b"%PDF-1.4\n%%EOF\n"


@pytest.fixture
def cf(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


@pytest.fixture
def api(engine: Engine, tmp_path: Path) -> Iterator[TestClient]:
    with client_for(engine, app_settings(tmp_path / "data")) as client:
        yield client


def _count(session: Session, model: type) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_promise_roundtrip_and_past_date_refused(
    api: TestClient, session: Session, cf: Factory
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 50_000)
    h = bearer(session, cf.user(Persona.COLLECTOR))
    bad = api.post(
        "/api/promises",
        headers=h,
        json={
            "customer_id": c.id,
            "amount_minor": 50_000,
            "promised_date": (TODAY - timedelta(days=1)).isoformat(),
            "invoice_ids": [inv.id],
        },
    )
    assert bad.status_code == 400 and "in the past" in bad.json()["detail"]
    assert _count(session, PromiseToPay) == 0
    ok = api.post(
        "/api/promises",
        headers=h,
        json={
            "customer_id": c.id,
            "amount_minor": 50_000,
            "promised_date": (TODAY + timedelta(days=2)).isoformat(),
            "invoice_ids": [inv.id],
        },
    )
    assert ok.status_code == 201, ok.text
    body = ok.json()
    assert body["status"] == "open" and body["invoice_numbers"] == [inv.number]
    missed = api.post(f"/api/promises/{body['id']}/missed", headers=h, json={"reason": "called"})
    assert missed.json()["status"] == "missed"
    again = api.post(f"/api/promises/{body['id']}/kept", headers=h)
    assert again.status_code == 409
    stats = api.get("/api/promises/adherence", headers=h).json()
    assert stats == {"kept": 0, "missed": 1, "open": 0, "rate": 0.0}


def test_viewer_reads_but_cannot_write(api: TestClient, session: Session, cf: Factory) -> None:
    c = cf.customer()
    h = bearer(session, cf.user(Persona.VIEWER))
    assert api.get("/api/radar", headers=h).status_code == 200
    assert api.get("/api/disputes/sla", headers=h).status_code == 200
    r = api.post(
        "/api/promises",
        headers=h,
        json={"customer_id": c.id, "amount_minor": 1, "promised_date": TODAY.isoformat()},
    )
    assert r.status_code == 403 and "Viewer may not record promises" in r.json()["detail"]
    assert api.get("/api/radar").status_code == 401


def test_plan_guardrail_message_is_inline(api: TestClient, session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 5_000_001)
    collector = cf.user(Persona.COLLECTOR)
    h = bearer(session, collector)
    first = TODAY + timedelta(days=7)
    body = {
        "customer_id": c.id,
        "invoice_ids": [inv.id],
        "installments": [
            {"due_date": first.isoformat(), "amount_minor": 2_500_001},
            {"due_date": (first + timedelta(days=30)).isoformat(), "amount_minor": 2_500_000},
        ],
    }
    r = api.post("/api/plans", headers=h, json=body)
    assert r.status_code == 201, r.text
    plan = r.json()
    assert plan["status"] == "pending_approval" and plan["visible_to_customer"] is False
    assert plan["awaiting_roles"] == ["Controller"]
    assert "Plan exceeds $50,000: Controller approval required" in plan["guardrail_message"]
    rule_ids = {x["rule_id"] for x in plan["decision"]["reasons"]}
    assert {"plan.above_controller_threshold", "plan.above_role_limit"} <= rule_ids
    # The Collector cannot approve it: 403 with the engine's reasons.
    refused = api.post(f"/api/plans/{plan['id']}/approve", headers=h)
    assert refused.status_code == 403
    assert refused.json()["approver_roles"] == ["Controller"]
    assert any("Controller approval required" in x["message"] for x in refused.json()["reasons"])
    ctrl = bearer(session, cf.user(Persona.CONTROLLER))
    done = api.post(f"/api/plans/{plan['id']}/approve", headers=ctrl)
    assert done.status_code == 200 and done.json()["status"] == "active"
    assert done.json()["next_due_date"] == first.isoformat()


def test_blocked_plan_is_422_and_nothing_saved(
    api: TestClient, session: Session, cf: Factory
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 130_000)
    h = bearer(session, cf.user(Persona.CONTROLLER))
    sched = [
        {"due_date": (TODAY + timedelta(days=7 * (i + 1))).isoformat(), "amount_minor": 10_000}
        for i in range(13)
    ]
    r = api.post(
        "/api/plans",
        headers=h,
        json={"customer_id": c.id, "invoice_ids": [inv.id], "installments": sched},
    )
    assert r.status_code == 422 and r.json()["outcome"] == "block"
    assert "at most 12" in r.json()["detail"]
    uneven = api.post(
        "/api/plans",
        headers=h,
        json={
            "customer_id": c.id,
            "invoice_ids": [inv.id],
            "installments": [
                {"due_date": (TODAY + timedelta(days=3)).isoformat(), "amount_minor": 1}
            ],
        },
    )
    assert uneven.status_code == 400 and "add up exactly" in uneven.json()["detail"]
    assert _count(session, PaymentPlan) == 0


def test_prefill_mark_paid_and_complete(api: TestClient, session: Session, cf: Factory) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 30_000)
    h = bearer(session, cf.user(Persona.COLLECTIONS_MANAGER))
    p = api.post(
        "/api/promises",
        headers=h,
        json={
            "customer_id": c.id,
            "amount_minor": 30_000,
            "promised_date": (TODAY + timedelta(days=5)).isoformat(),
            "invoice_ids": [inv.id],
        },
    ).json()
    pre = api.get(
        "/api/plans/prefill", headers=h, params={"promise_id": p["id"], "installments": 2}
    ).json()
    assert [i["amount_minor"] for i in pre["installments"]] == [15_000, 15_000]
    plan = api.post(
        "/api/plans",
        headers=h,
        json={
            "customer_id": c.id,
            "invoice_ids": pre["invoice_ids"],
            "installments": pre["installments"],
            "from_promise_id": p["id"],
        },
    ).json()
    assert plan["status"] == "active"
    for seq in (1, 2):
        paid = api.post(f"/api/plans/{plan['id']}/installments/{seq}/paid", headers=h)
        assert paid.status_code == 200, paid.text
    final = api.get(f"/api/plans/{plan['id']}", headers=h).json()
    assert final["status"] == "completed" and final["remaining_minor"] == 0
    assert (
        api.post(f"/api/plans/{plan['id']}/cancel", headers=h, json={"reason": "x"}).status_code
        == 409
    )
    promise = api.get(f"/api/promises/{p['id']}", headers=h).json()
    assert promise["status"] == "kept"


def test_dispute_workflow_sla_and_evidence_limits(
    api: TestClient, session: Session, cf: Factory, tmp_path: Path
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 20_000)
    paid = cf.invoice(c, 1_000, balance_minor=0, status=InvoiceStatus.PAID)
    h = bearer(session, cf.user(Persona.COLLECTOR))
    refused = api.post(
        "/api/disputes", headers=h, json={"invoice_id": paid.id, "reason": "pricing"}
    )
    assert refused.status_code == 400 and "open invoice" in refused.json()["detail"]
    d = api.post("/api/disputes", headers=h, json={"invoice_id": inv.id, "reason": "quantity"})
    assert d.status_code == 201
    dispute = d.json()
    assert dispute["sla"]["hours_allowed"] == 48 and not dispute["sla"]["breached"]
    big = api.post(
        f"/api/disputes/{dispute['id']}/evidence",
        headers=h,
        files={"file": ("big.pdf", b"%PDF-" + b"0" * (5 * 1024 * 1024), "application/pdf")},
    )
    assert big.status_code == 400 and "limit is 5,242,880 bytes" in big.json()["detail"]
    exe = api.post(
        f"/api/disputes/{dispute['id']}/evidence",
        headers=h,
        files={"file": ("x.pdf", b"MZ\x00\x00binary", "application/pdf")},
    )
    assert exe.status_code == 400 and "not accepted" in exe.json()["detail"]
    assert _count(session, DisputeEvidence) == 0
    ok = api.post(
        f"/api/disputes/{dispute['id']}/evidence",
        headers=h,
        data={"slot": "proof_of_delivery"},
        files={"file": ("pod.pdf", PDF, "application/pdf")},
    )
    assert ok.status_code == 201, ok.text
    got = api.get(f"/api/disputes/{dispute['id']}/evidence/{ok.json()['id']}", headers=h)
    assert got.content == PDF and got.headers["content-type"] == "application/pdf"
    moved = api.post(
        f"/api/disputes/{dispute['id']}/status",
        headers=h,
        json={"status": "escalated_legal", "note": "contract question"},
    )
    assert moved.status_code == 200 and moved.json()["sla"]["hours_allowed"] == 240
    snap = api.get("/api/disputes/sla", headers=h).json()
    assert snap["open"] == 1 and snap["breaching"] == 0 and snap["sla_hours"]["open"] == 48
    credit = api.post(
        f"/api/disputes/{dispute['id']}/credit", headers=h, json={"amount_minor": 20_000}
    )
    assert credit.status_code == 200 and credit.json()["status"] == "resolved_credit"


def test_other_organisations_ids_are_404(api: TestClient, session: Session, cf: Factory) -> None:
    other = Organisation(name="Other", slug="other-commit")
    session.add(other)
    session.flush()
    foreign = Factory(session, other)
    fc = foreign.customer()
    finv = foreign.invoice(fc)
    fdispute = Dispute(org_id=other.id, customer_id=fc.id, invoice_id=finv.id, reason="tax")
    session.add(fdispute)
    h = bearer(session, cf.user(Persona.ADMIN))
    assert api.get(f"/api/disputes/{fdispute.id}", headers=h).status_code == 404
    assert (
        api.post(
            "/api/disputes", headers=h, json={"invoice_id": finv.id, "reason": "tax"}
        ).status_code
        == 404
    )
    assert api.post("/api/portal-tokens", headers=h, json={"customer_id": fc.id}).status_code == 404
    r = api.post(
        "/api/payments",
        headers=h,
        json={
            "amount_minor": 100,
            "currency": "USD",
            "received_on": TODAY.isoformat(),
            "invoice_id": finv.id,
        },
    )
    assert r.status_code == 404


def test_payment_api_partial_over_and_duplicate(
    api: TestClient, session: Session, cf: Factory
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 10_000)
    h = bearer(session, cf.user(Persona.BILLING_ADMIN))
    body = {
        "amount_minor": 4_000,
        "currency": "USD",
        "received_on": TODAY.isoformat(),
        "invoice_id": inv.id,
        "reference": "BANK-1",
    }
    # Posting cash is Billing's, not a Collector's (segregation of duties).
    collector = bearer(session, cf.user(Persona.COLLECTOR))
    assert api.post("/api/payments", headers=collector, json=body).status_code == 403
    first = api.post("/api/payments", headers=h, json=body).json()
    assert (first["applied_minor"], first["unapplied_minor"]) == (4_000, 0)
    assert first["allocations"][0]["balance_after_minor"] == 6_000
    dup = api.post("/api/payments", headers=h, json=body).json()
    assert dup["duplicate"] is True and dup["id"] == first["id"]
    over = api.post(
        "/api/payments", headers=h, json={**body, "amount_minor": 7_500, "reference": "BANK-2"}
    ).json()
    assert (over["applied_minor"], over["unapplied_minor"]) == (6_000, 1_500)
    listed = api.get("/api/payments", headers=h, params={"customer_id": c.id}).json()
    assert len(listed) == 2


def test_radar_api_and_page(api: TestClient, session: Session, cf: Factory) -> None:
    c = cf.customer("Initech")
    inv = cf.invoice(c, 2_000_000)
    h = bearer(session, cf.user(Persona.COLLECTOR))
    api.post(
        "/api/promises",
        headers=h,
        json={
            "customer_id": c.id,
            "amount_minor": 1_500_000,
            "promised_date": TODAY.isoformat(),
            "invoice_ids": [inv.id],
        },
    )
    api.post(
        "/api/promises",
        headers=h,
        json={"customer_id": c.id, "amount_minor": 100, "promised_date": TODAY.isoformat()},
    )
    r = api.get("/api/radar", headers=h).json()
    assert r["counts"]["due_today"] == 2
    badges = sorted(tuple(i["badges"]) for i in r["due_today"])
    assert badges == [("Due today", "High exposure"), ("Due today", "No invoice link")]
    assert r["promise_exposure"] == {"USD": 1_500_100}
    page = api.get("/radar", headers=h)
    assert page.status_code == 200
    assert "Commitment Radar" in page.text and "Initech" in page.text
    assert "No invoice link" in page.text and "$15,001" in page.text


def test_plan_status_filter_and_listing(api: TestClient, session: Session, cf: Factory) -> None:
    h = bearer(session, cf.user(Persona.VIEWER))
    assert api.get("/api/plans", headers=h, params={"status": PlanStatus.ACTIVE.value}).json() == []
    assert api.get("/api/plans", headers=h, params={"status": "bogus"}).status_code == 422
