"""End to end against localstripe with the official SDK and a real SMTP server:

portal token → PaymentIntent → payer confirms → signed ``payment_intent.succeeded`` webhook →
payment posted → promise kept → receipt delivered by the outbox worker to aiosmtpd; the same event
replayed changes nothing; tampered, stale and unsigned requests are refused.
"""

from __future__ import annotations

import json
import re
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
from sqlalchemy.orm import Session, sessionmaker

from memory.config import Settings
from memory.models import (
    AuditEvent,
    InstallmentStatus,
    InvoiceStatus,
    Organisation,
    OutboxMessage,
    OutboxStatus,
    Payment,
    PaymentIntentLink,
    Persona,
    PlanStatus,
    PromiseStatus,
    StripeEvent,
)
from tests.stripe_server import (
    LOCALSTRIPE_KEY,
    LocalStripe,
    SmtpSink,
    run_localstripe,
    run_smtp_sink,
)
from tests.tools.commit_factories import Factory, app_settings, bearer, client_for
from tools.commitments import plans, promises
from tools.payments import stripe_pay

WEBHOOK_SECRET = "whsec_plixo_test_secret"
TODAY = datetime.now(UTC).date()


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    """One localstripe process for the test session (its objects have unique ids)."""
    with run_localstripe() as server:
        yield server


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with run_smtp_sink() as sink:
        yield sink


@pytest.fixture
def cf(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


@pytest.fixture
def settings(tmp_path: Path, localstripe: LocalStripe, smtp_sink: SmtpSink) -> Settings:
    return app_settings(
        tmp_path / "data",
        stripe_api_key=LOCALSTRIPE_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=localstripe.url,
        stripe_publishable_key="pk_test_plixo_localstripe",
        smtp_host=smtp_sink.host,
        smtp_port=smtp_sink.port,
        smtp_from="ar@seller.example",
    )


@pytest.fixture
def api(engine: Engine, settings: Settings) -> Iterator[TestClient]:
    with client_for(engine, settings) as client:
        yield client


def sign(payload: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The Stripe-Signature header exactly as Stripe computes it (stripe's own helper)."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)


def succeeded_event(settings: Settings, intent_id: str, **extra: Any) -> str:
    """A ``payment_intent.succeeded`` event carrying the intent as localstripe holds it now."""
    sc = stripe_pay.client(settings)
    pi = sc.v1.payment_intents.retrieve(intent_id)
    assert pi.status == "succeeded"
    event = {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "type": "payment_intent.succeeded",
        "data": {"object": pi.to_dict()},
        **extra,
    }
    return json.dumps(event)


def payer_card(settings: Settings) -> str:
    """What Stripe.js does in the payer's browser: a PaymentMethod from the card form."""
    pm = stripe_pay.client(settings).v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    return str(pm.id)


def post_event(api: TestClient, payload: str, header: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return api.post("/webhooks/stripe", content=payload.encode(), headers=headers)


def _deliver(
    sessions: sessionmaker[Session], settings: Settings, durable_settings: Settings
) -> dict[str, int]:
    """The delivery workflows, run in this process (a worker), with this test's SMTP server."""
    from memory import durable
    from tools.delivery import flow as delivery_flow

    smtp = {k: getattr(settings, k) for k in ("smtp_host", "smtp_port", "smtp_from")}
    durable.set_ledger(sessions, durable_settings.model_copy(update=smtp))
    return dict(delivery_flow.drain(sessions, timeout_s=60))


def _n(session: Session, model: type) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_portal_to_receipt_end_to_end(
    api: TestClient,
    session: Session,
    sessions: sessionmaker[Session],
    cf: Factory,
    settings: Settings,
    smtp_sink: SmtpSink,
    worker_id: str,
    durable_settings: Settings,
) -> None:
    customer = cf.customer("Hooli Inc", email="ap@hooli.example")
    invoice = cf.invoice(customer, 120_000)
    promise = promises.add_promise(
        session,
        cf.org.id,
        customer_id=customer.id,
        amount_minor=120_000,
        promised_date=TODAY + timedelta(days=3),
        invoice_ids=[invoice.id],
        actor="collector",
    )
    session.commit()

    # 1. Staff issue a portal link; only the URL carries the token.
    h = bearer(session, cf.user(Persona.COLLECTOR))
    link = api.post("/api/portal-tokens", headers=h, json={"customer_id": customer.id}).json()
    token = link["url"].rsplit("/", 1)[1]
    home = api.get(f"/portal/{token}")
    assert home.status_code == 200 and invoice.number in home.text
    assert 'href="/queue"' not in home.text  # no staff navigation in the portal
    assert home.headers["referrer-policy"] == "no-referrer"

    # 2. The payer starts paying: a PaymentIntent in localstripe for the open balance.
    start = api.post(f"/portal/{token}/invoices/{invoice.id}/pay", follow_redirects=False)
    assert start.status_code == 303
    intent_id = start.headers["location"].rsplit("/", 1)[1]
    assert re.fullmatch(r"pi_\w+", intent_id)
    pi = stripe_pay.client(settings).v1.payment_intents.retrieve(intent_id)
    assert (pi.amount, pi.currency, pi.metadata["plixo_invoice_id"]) == (
        120_000,
        "usd",
        str(invoice.id),
    )
    pay_page = api.get(start.headers["location"])
    assert pay_page.status_code == 200 and "$1,200" in pay_page.text
    assert f"{settings.stripe_api_base}/js.stripe.com/v3/" in pay_page.text  # Stripe.js (local)
    assert "pk_test_plixo_localstripe" in pay_page.text and "4242" not in pay_page.text
    # Reloading the pay flow reuses the unfinished intent.
    again = api.post(f"/portal/{token}/invoices/{invoice.id}/pay", follow_redirects=False)
    assert again.headers["location"] == start.headers["location"]

    # 3. The payer confirms with the PaymentMethod Stripe.js created.
    paid_page = api.post(
        f"/portal/{token}/pay/{intent_id}/confirm", data={"payment_method": payer_card(settings)}
    )
    assert paid_page.status_code == 200 and 'data-status="succeeded"' in paid_page.text
    session.expire_all()
    assert invoice.balance_minor == 120_000  # the ledger waits for the webhook

    # 4. Stripe's signed webhook posts the payment, keeps the promise, queues the receipt.
    payload = succeeded_event(settings, intent_id)
    header = sign(payload)
    r = post_event(api, payload, header)
    assert r.status_code == 200 and r.json()["outcome"] == "processed", r.text
    session.expire_all()
    payment = session.scalars(select(Payment)).one()
    assert (payment.amount_minor, payment.applied_minor, payment.external_ref, payment.method) == (
        120_000,
        120_000,
        intent_id,
        "stripe",
    )
    assert invoice.balance_minor == 0 and invoice.status == InvoiceStatus.PAID
    assert session.get(type(promise), promise.id).status == PromiseStatus.KEPT  # type: ignore[union-attr]
    receipt = session.scalars(select(OutboxMessage)).one()
    assert receipt.draft_id is None and receipt.recipient == "ap@hooli.example"

    # 5. The outbox worker delivers the receipt to the local SMTP server.
    work = _deliver(sessions, settings, durable_settings)
    assert work == {"sent": 1}
    (mail,) = smtp_sink.wait_for(1)
    assert mail["To"] == "ap@hooli.example" and mail["Subject"] == "Payment received: $1,200"
    body = mail.get_payload()
    assert isinstance(body, str)
    assert invoice.number in body and intent_id in body and "remaining balance $0" in body
    assert mail["Message-ID"] == receipt.message_id

    # 6. The same event replayed: 200, nothing changes, no second receipt.
    replay = post_event(api, payload, header)
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    assert (_n(session, Payment), _n(session, OutboxMessage), _n(session, StripeEvent)) == (1, 1, 1)
    assert _deliver(sessions, settings, durable_settings) == {}
    assert len(smtp_sink.wait_for(2, timeout=0.3)) == 1

    # 7. A new event id for the same intent (Stripe resends) posts nothing either.
    resent = succeeded_event(settings, intent_id)
    r2 = post_event(api, resent, sign(resent))
    assert r2.json()["outcome"] == "processed" and _n(session, Payment) == 1
    session.expire_all()
    assert invoice.balance_minor == 0
    assert session.scalars(select(OutboxMessage)).one().status == OutboxStatus.SENT


def test_tampered_stale_and_unsigned_webhooks_are_refused(
    api: TestClient, session: Session, cf: Factory, settings: Settings
) -> None:
    customer = cf.customer()
    invoice = cf.invoice(customer, 5_000)
    session.commit()
    link = stripe_pay.create_intent(session, cf.org.id, settings=settings, invoice_id=invoice.id)
    session.commit()
    sc = stripe_pay.client(settings)
    sc.v1.payment_intents.update(link.intent_id, params={"payment_method": payer_card(settings)})
    sc.v1.payment_intents.confirm(link.intent_id)
    payload = succeeded_event(settings, link.intent_id)

    tampered = payload.replace('"amount": 5000', '"amount": 500000')
    assert tampered != payload
    r = post_event(api, tampered, sign(payload))
    assert r.status_code == 400 and "signature" in r.json()["detail"]
    wrong_secret = post_event(api, payload, sign(payload, secret="whsec_someone_else"))
    assert wrong_secret.status_code == 400
    stale = post_event(api, payload, sign(payload, timestamp=int(time.time()) - 301))
    assert stale.status_code == 400 and "tolerance" in stale.json()["detail"].lower()
    assert post_event(api, payload, None).status_code == 400
    assert post_event(api, "not json", sign("not json")).status_code == 400
    assert (_n(session, StripeEvent), _n(session, Payment)) == (0, 0)
    # Just inside the tolerance is accepted.
    fresh = post_event(api, payload, sign(payload, timestamp=int(time.time()) - 290))
    assert fresh.status_code == 200 and fresh.json()["outcome"] == "processed"


def test_unknown_invoice_is_logged_and_answered_200(
    api: TestClient, session: Session, cf: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    cf.customer()
    session.commit()
    event = json.dumps(
        {
            "id": "evt_unknown_1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": "pi_nobody_knows",
                    "object": "payment_intent",
                    "amount": 999,
                    "currency": "usd",
                    "metadata": {"plixo_invoice_id": "424242"},
                }
            },
        }
    )
    with caplog.at_level("WARNING", logger="plixo.stripe"):
        r = post_event(api, event, sign(event))
    assert r.status_code == 200 and r.json()["outcome"] == "unknown_invoice"
    assert "pi_nobody_knows" in caplog.text
    session.expire_all()
    row = session.scalars(select(StripeEvent)).one()
    assert (row.event_id, row.outcome, row.org_id) == ("evt_unknown_1", "unknown_invoice", None)
    assert _n(session, Payment) == 0
    assert post_event(api, event, sign(event)).json()["outcome"] == "duplicate"


def test_overpayment_through_stripe_is_kept_as_credit(
    api: TestClient, session: Session, cf: Factory, settings: Settings
) -> None:
    customer = cf.customer()
    invoice = cf.invoice(customer, 8_000)
    session.commit()
    link = stripe_pay.create_intent(session, cf.org.id, settings=settings, invoice_id=invoice.id)
    session.commit()
    # Meanwhile the payer also paid half by bank transfer (posted by Billing).
    h = bearer(session, cf.user(Persona.BILLING_ADMIN))
    api.post(
        "/api/payments",
        headers=h,
        json={
            "amount_minor": 4_000,
            "currency": "USD",
            "received_on": TODAY.isoformat(),
            "invoice_id": invoice.id,
            "reference": "BANK-77",
        },
    )
    sc = stripe_pay.client(settings)
    sc.v1.payment_intents.update(link.intent_id, params={"payment_method": payer_card(settings)})
    sc.v1.payment_intents.confirm(link.intent_id)
    payload = succeeded_event(settings, link.intent_id)
    assert post_event(api, payload, sign(payload)).json()["outcome"] == "processed"
    session.expire_all()
    stripe_payment = session.scalars(
        select(Payment).where(Payment.external_ref == link.intent_id)
    ).one()
    assert (stripe_payment.applied_minor, stripe_payment.unapplied_minor) == (4_000, 4_000)
    receipt = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc())).first()
    assert receipt is not None and "$40 is held as a credit" in receipt.body


def test_installment_paid_in_the_portal(
    api: TestClient, session: Session, cf: Factory, settings: Settings
) -> None:
    customer = cf.customer()
    invoice = cf.invoice(customer, 60_000)
    out = plans.propose_plan(
        session,
        cf.org.id,
        customer_id=customer.id,
        invoice_ids=[invoice.id],
        installments=plans.split_evenly(60_000, 3, TODAY + timedelta(days=5)),
        proposer=cf.user(Persona.CONTROLLER),
    )
    assert out.plan.status == PlanStatus.ACTIVE
    first = out.plan.installments[0]
    h = bearer(session, cf.user(Persona.COLLECTOR))
    token = (
        api.post("/api/portal-tokens", headers=h, json={"customer_id": customer.id})
        .json()["url"]
        .rsplit("/", 1)[1]
    )
    home = api.get(f"/portal/{token}")
    assert "Pay $200" in home.text and "in your payment plan" in home.text
    start = api.post(f"/portal/{token}/installments/{first.id}/pay", follow_redirects=False)
    intent_id = start.headers["location"].rsplit("/", 1)[1]
    api.post(
        f"/portal/{token}/pay/{intent_id}/confirm", data={"payment_method": payer_card(settings)}
    )
    payload = succeeded_event(settings, intent_id)
    assert post_event(api, payload, sign(payload)).json()["outcome"] == "processed"
    session.expire_all()
    assert first.status == InstallmentStatus.PAID and first.paid_minor == 20_000
    assert invoice.balance_minor == 40_000
    link = session.scalars(select(PaymentIntentLink)).one()
    assert link.installment_id == first.id and link.status == "succeeded"


def test_connected_account_header_and_event_account_check(
    api: TestClient, session: Session, cf: Factory, settings: Settings
) -> None:
    """Intents are created in the organisation's own account (Stripe-Account header), and an
    event from another account is recorded and ignored."""
    cf.org.stripe_account = "acct_1PlixoOwnAcct"
    customer = cf.customer()
    invoice = cf.invoice(customer, 9_900)
    session.commit()
    seen: list[dict[str, str]] = []

    class Recording(stripe.RequestsClient):  # the SDK's real transport, recording headers
        def request(
            self, method: str, url: str, headers: Any, post_data: Any = None, **kw: Any
        ) -> Any:
            seen.append(dict(headers or {}))
            return super().request(method, url, headers, post_data, **kw)

    sc = stripe.StripeClient(
        LOCALSTRIPE_KEY, base_addresses={"api": settings.stripe_api_base}, http_client=Recording()
    )
    link = stripe_pay.create_intent(
        session, cf.org.id, settings=settings, invoice_id=invoice.id, stripe_client=sc
    )
    session.commit()
    assert seen and all(h.get("Stripe-Account") == "acct_1PlixoOwnAcct" for h in seen)
    plain = stripe_pay.client(settings)
    plain.v1.payment_intents.update(link.intent_id, params={"payment_method": payer_card(settings)})
    plain.v1.payment_intents.confirm(link.intent_id)
    foreign = succeeded_event(settings, link.intent_id, account="acct_someone_else")
    r = post_event(api, foreign, sign(foreign))
    assert r.status_code == 200 and r.json()["outcome"] == "account_mismatch"
    assert _n(session, Payment) == 0
    own = succeeded_event(settings, link.intent_id, account="acct_1PlixoOwnAcct")
    assert post_event(api, own, sign(own)).json()["outcome"] == "processed"
    session.expire_all()
    assert invoice.status == InvoiceStatus.PAID
    assert session.scalars(
        select(AuditEvent).where(AuditEvent.action == "stripe.intent_created")
    ).one()


@pytest.fixture
def live_app(engine: Engine, settings: Settings) -> Iterator[str]:
    """The app on a real loopback port (uvicorn in a thread), for localstripe to call."""
    import threading

    import uvicorn

    from api.app import create_app
    from tests.stripe_server import free_port

    port = free_port()
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


def test_localstripe_delivers_its_own_signed_webhook(
    live_app: str,
    session: Session,
    cf: Factory,
    settings: Settings,
    localstripe: LocalStripe,
) -> None:
    """No hand-built event here: localstripe signs and posts ``payment_intent.succeeded`` itself
    to the running app, the way Stripe would."""
    customer = cf.customer()
    invoice = cf.invoice(customer, 4_321)
    session.commit()
    link = stripe_pay.create_intent(session, cf.org.id, settings=settings, invoice_id=invoice.id)
    session.commit()
    localstripe.register_webhook(
        f"plixo-{uuid.uuid4().hex[:8]}", f"{live_app}/webhooks/stripe", WEBHOOK_SECRET
    )
    sc = stripe_pay.client(settings)
    sc.v1.payment_intents.update(link.intent_id, params={"payment_method": payer_card(settings)})
    sc.v1.payment_intents.confirm(link.intent_id)
    deadline = time.monotonic() + 15  # localstripe waits 1 s before delivering
    payment = None
    while time.monotonic() < deadline and payment is None:
        session.expire_all()
        payment = session.scalars(
            select(Payment).where(Payment.external_ref == link.intent_id)
        ).first()
        time.sleep(0.1)
    assert payment is not None, "localstripe's webhook never posted the payment"
    assert payment.amount_minor == 4_321
    session.expire_all()
    assert invoice.status == InvoiceStatus.PAID
    processed = session.scalars(select(StripeEvent).where(StripeEvent.outcome == "processed")).all()
    assert len(processed) == 1 and processed[0].event_type == "payment_intent.succeeded"


def test_concurrent_deliveries_of_one_event_post_one_payment(
    live_app: str, session: Session, cf: Factory, settings: Settings
) -> None:
    """Stripe may deliver the same event twice at once: exactly one payment and one receipt."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    customer = cf.customer()
    invoice = cf.invoice(customer, 2_500)
    session.commit()
    link = stripe_pay.create_intent(session, cf.org.id, settings=settings, invoice_id=invoice.id)
    session.commit()
    sc = stripe_pay.client(settings)
    sc.v1.payment_intents.update(link.intent_id, params={"payment_method": payer_card(settings)})
    sc.v1.payment_intents.confirm(link.intent_id)
    payload = succeeded_event(settings, link.intent_id)
    headers = {"Stripe-Signature": sign(payload), "Content-Type": "application/json"}

    def deliver(_: int) -> tuple[int, str]:
        r = httpx.post(f"{live_app}/webhooks/stripe", content=payload, headers=headers, timeout=30)
        return r.status_code, r.json().get("outcome", r.json().get("detail", ""))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(deliver, range(8)))
    # 200 processed once; the rest 200 duplicate, or 409 "busy" on SQLite (Stripe retries later).
    assert [a for a in answers if a == (200, "processed")] == [(200, "processed")], answers
    assert all(a[0] == 409 or a == (200, "duplicate") for a in answers if a[1] != "processed")
    assert (_n(session, Payment), _n(session, StripeEvent), _n(session, OutboxMessage)) == (1, 1, 1)
    assert post_event_live(live_app, payload, headers) == (200, "duplicate")


def post_event_live(base: str, payload: str, headers: dict[str, str]) -> tuple[int, str]:
    import httpx

    r = httpx.post(f"{base}/webhooks/stripe", content=payload, headers=headers, timeout=30)
    return r.status_code, str(r.json().get("outcome"))
