"""Stripe payouts over HTTP and from the shell: the signed ``payout.*`` webhooks (the payout read
through the official SDK from a loopback server shaped like Stripe's API), ``plixo cash
stripe-payout``, and end to end with localstripe: a PaymentIntent paid in the mini-portal flow and
posted by the webhook, then the payout's itemized export with that charge and Stripe's fees, then
the bank statement's payout line: nothing posted twice, the fees recorded, the bank line cleared.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.cli.main import app as cli_app
from memory.config import Settings, get_settings
from memory.models import (
    AuditEvent,
    CashLine,
    CashLineStatus,
    InvoiceStatus,
    Organisation,
    Payment,
    Persona,
    StripeEvent,
)
from tests.stripe_server import LOCALSTRIPE_KEY, LocalStripe, free_port, run_localstripe
from tests.tools.cashapp_files import Entry, camt053
from tests.tools.commit_factories import Factory, app_settings, bearer, client_for
from tests.tools.stripe_payout_fixtures import (
    PayoutApi,
    charge_txn,
    fee_txn,
    itemized_csv,
    payout,
    run_payout_api,
)
from tools.payments import stripe_pay

WEBHOOK_SECRET = "whsec_plixo_payout_secret"
TODAY = datetime.now(UTC).date()
PAID = TODAY - timedelta(days=3)
ARRIVAL = TODAY - timedelta(days=1)


def sign(payload: str) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET)


def event(kind: str, obj: dict[str, Any], **extra: Any) -> str:
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "livemode": False,
            "type": kind,
            "data": {"object": obj},
            **extra,
        }
    )


def post(api: TestClient, payload: str, header: str | None = None) -> Any:
    headers = {"Content-Type": "application/json", "Stripe-Signature": header or sign(payload)}
    return api.post("/webhooks/stripe", content=payload.encode(), headers=headers)


def count(session: Session, model: type, *where: Any) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@pytest.fixture
def cf(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


@pytest.fixture
def payout_api() -> Iterator[PayoutApi]:
    with run_payout_api() as server:
        yield server


def _client(engine: Engine, tmp_path: Path, **overrides: Any) -> TestClient:
    settings = app_settings(
        tmp_path / "data",
        stripe_webhook_secret=WEBHOOK_SECRET,
        **overrides,
    )
    return client_for(engine, settings)


# --- payout webhooks -----------------------------------------------------------------------------


def test_payout_webhook_imports_once_and_waits_for_reconciliation(
    engine: Engine, tmp_path: Path, session: Session, cf: Factory, payout_api: PayoutApi
) -> None:
    inv = cf.invoice(cf.customer("Hooli Inc"), 20_000, due=PAID)
    session.commit()
    txns = [charge_txn(20_000, 610, PAID, intent_id=None, description=inv.number)]
    po = payout("po_1PlxWebhook", 19_390, ARRIVAL)
    payout_api.add(po, txns)
    with _client(
        engine, tmp_path, stripe_api_key="sk_test_plixo_payouts", stripe_api_base=payout_api.url
    ) as api:
        early = post(api, event("payout.paid", {**po, "reconciliation_status": "in_progress"}))
        assert early.status_code == 200 and early.json()["outcome"] == "awaiting_reconciliation"
        assert count(session, CashLine) == 0 and payout_api.requests == []

        payload = event("payout.reconciliation_completed", po)
        done = post(api, payload)
        assert done.status_code == 200, done.text
        body = done.json()
        assert (body["outcome"], body["payout_id"]) == ("processed", po["id"])
        assert count(session, CashLine) == 2  # the charge and the fees withheld
        waiting = session.scalars(
            select(CashLine).where(CashLine.status == CashLineStatus.EXCEPTION)
        ).one()
        assert waiting.suggestions[0]["allocations"][0]["invoice_id"] == inv.id

        replay = post(api, payload)
        assert replay.json()["outcome"] == "duplicate" and count(session, CashLine) == 2
        # Stripe also sends payout.paid once reconciled: a new event, nothing new stored.
        paid = post(api, event("payout.paid", po))
        assert paid.json()["outcome"] == "processed" and count(session, CashLine) == 2

        missing = post(api, event("payout.reconciliation_completed", {**po, "id": "po_1PlxGone"}))
        assert missing.json()["outcome"] == "payout_not_found"
        manual = post(api, event("payout.paid", {**po, "id": "po_1PlxMan", "automatic": False}))
        assert manual.json()["outcome"] == "not_itemized"
        other = post(api, event("payout.paid", po, account="acct_1PlxSomeoneElse"))
        assert other.json()["outcome"] == "unknown_account"
        assert post(api, payload, header="t=1,v1=00").status_code == 400
    assert count(session, Payment) == 0 and count(session, StripeEvent) == 6


def test_payout_webhook_without_key_or_stripe_answers_so_stripe_retries(
    engine: Engine, tmp_path: Path, session: Session, org: Organisation
) -> None:
    po = payout("po_1PlxNoKey", 1_000, ARRIVAL)
    with _client(engine, tmp_path) as api:
        r = post(api, event("payout.reconciliation_completed", po))
    assert r.status_code == 503 and "PLIXO_STRIPE_API_KEY" in r.json()["detail"]
    closed = f"http://127.0.0.1:{free_port()}"
    with _client(engine, tmp_path, stripe_api_key="sk_test_x", stripe_api_base=closed) as api:
        r2 = post(api, event("payout.reconciliation_completed", po))
    assert r2.status_code == 502 and "try again" in r2.json()["detail"]
    assert count(session, StripeEvent) == 0 and count(session, CashLine) == 0


# --- plixo cash stripe-payout --------------------------------------------------------------------


def test_cli_stripe_payout(
    data_dir: Path, tmp_path: Path, payout_api: PayoutApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLIXO_STRIPE_API_KEY", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    invoices = tmp_path / "inv.csv"
    invoices.write_text(
        "invoice_number,customer_ref,issue_date,due_date,amount,currency\n"
        f"INV-7700101,C1,2026-01-01,{PAID.isoformat()},250.00,USD\n"
    )
    assert runner.invoke(cli_app, ["import", "invoices", str(invoices)]).exit_code == 0
    no_key = runner.invoke(cli_app, ["cash", "stripe-payout", "po_1PlxCli"])
    assert no_key.exit_code != 0 and "PLIXO_STRIPE_API_KEY" in no_key.output

    po = payout("po_1PlxCli", 25_000 - 755, ARRIVAL)
    payout_api.add(po, [charge_txn(25_000, 755, PAID, intent_id=None, description="INV-7700101")])
    monkeypatch.setenv("PLIXO_STRIPE_API_KEY", "sk_test_plixo_cli")
    monkeypatch.setenv("PLIXO_STRIPE_API_BASE", payout_api.url)
    get_settings.cache_clear()
    out = runner.invoke(cli_app, ["cash", "stripe-payout", "po_1PlxCli", "--json"])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.stdout)
    assert (rep["kind"], rep["lines_new"], rep["exceptions"]) == ("stripe_payout", 2, 1)
    assert rep["payouts"][0]["fees_minor"] == 755
    text = runner.invoke(cli_app, ["cash", "stripe-payout", "po_1PlxCli"])
    assert "0 new" in text.output and "Stripe fees $7.55" in text.output
    gone = runner.invoke(cli_app, ["cash", "stripe-payout", "po_1PlxUnknown"])
    assert gone.exit_code != 0 and "no payout po_1PlxUnknown" in gone.output


# --- end to end with localstripe -----------------------------------------------------------------


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    with run_localstripe() as server:
        yield server


def test_portal_payment_then_payout_then_bank_line_end_to_end(
    engine: Engine, tmp_path: Path, session: Session, cf: Factory, localstripe: LocalStripe
) -> None:
    settings: Settings = app_settings(
        tmp_path / "data",
        stripe_api_key=LOCALSTRIPE_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=localstripe.url,
    )
    customer = cf.customer("Hooli Inc")
    invoice = cf.invoice(customer, 120_000)
    collector = cf.user(Persona.COLLECTOR)
    session.commit()
    h = bearer(session, collector)

    # 1. The payer pays the invoice on Stripe (localstripe) and the webhook posts it.
    link = stripe_pay.create_intent(session, cf.org.id, settings=settings, invoice_id=invoice.id)
    session.commit()
    sc = stripe_pay.client(settings)
    pm = sc.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    stripe_pay.confirm_intent(
        session, cf.org.id, link, payment_method=str(pm.id), settings=settings
    )
    session.commit()
    pi = sc.v1.payment_intents.retrieve(link.intent_id)
    assert pi.status == "succeeded"
    with client_for(engine, settings) as api:
        r = post(api, event("payment_intent.succeeded", pi.to_dict()))
        assert r.json()["outcome"] == "processed", r.text
        assert count(session, Payment) == 1

        # 2. Stripe pays it out with its fee and a Radar fee: the itemized export is uploaded.
        charge = charge_txn(
            120_000, 3_510, PAID, intent_id=pi.id, metadata=pi.to_dict()["metadata"]
        )
        radar = fee_txn(500, PAID)
        po_id = "po_1PlxEndToEnd"
        export = itemized_csv([(po_id, ARRIVAL, charge), (po_id, ARRIVAL, radar)])
        up = api.post(
            "/api/cash/imports", headers=h, files={"file": ("payouts.csv", export, "text/csv")}
        )
        assert up.status_code == 200, up.text
        rep = up.json()
        assert (rep["kind"], rep["lines_new"], rep["auto_applied"], rep["exceptions"]) == (
            "stripe_payout",
            3,
            0,
            0,
        )
        figures = rep["payouts"][0]
        assert (figures["charges_linked"], figures["fees_minor"], figures["amount_minor"]) == (
            1,
            4_010,
            115_990,
        )

        # 3. The bank statement's one credit for the payout is matched to it and cleared.
        stmt = camt053(
            [Entry(ARRIVAL, "1159.90", "USD", f"STRIPE PAYOUT {po_id}", "STRIPE", bank_ref="S1")],
            msg_id="STMT-E2E",
        )
        bank = api.post(
            "/api/cash/imports", headers=h, files={"file": ("stmt.xml", stmt, "application/xml")}
        )
        assert bank.status_code == 200, bank.text
        assert (bank.json()["cleared"], bank.json()["exceptions"]) == (1, 0)
        assert api.get("/api/cash/lines", headers=h).json() == []  # nothing waits

        # 4. Both files again: nothing new, nothing applied.
        for name, data in (("payouts.csv", export), ("stmt.xml", stmt)):
            again = api.post("/api/cash/imports", headers=h, files={"file": (name, data)}).json()
            assert (again["lines_new"], again["auto_applied"], again["cleared"]) == (0, 0, 0)

    session.expire_all()
    assert count(session, Payment) == 1
    assert invoice.balance_minor == 0 and invoice.status == InvoiceStatus.PAID
    fees = session.scalars(
        select(CashLine.amount_minor).where(CashLine.reference.contains("Stripe fees withheld"))
    ).all()
    assert fees == [-3_510]
    bank_line = session.scalars(
        select(CashLine).where(CashLine.reference == f"STRIPE PAYOUT {po_id}")
    ).one()
    assert bank_line.status == CashLineStatus.IGNORED
    assert bank_line.suggestions[0]["kind"] == "stripe_payout"
    assert count(session, AuditEvent, AuditEvent.action == "cash.stripe_payout_matched") == 1
