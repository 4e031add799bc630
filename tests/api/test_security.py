"""Trust (issue 13): no forged session, no write past the access matrix, credentials the server can
take back, and the smaller holes (CSV formulas, tokens in logs, webhook amounts, uploads)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import stat
import threading
import time
from base64 import b64encode
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import itsdangerous
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from api.app import create_app
from api.logredact import RedactTokens, redact
from memory import migrate
from memory.config import Settings, load_or_create_secret
from memory.db import make_engine
from memory.models import (
    ApiToken,
    Customer,
    Organisation,
    Payment,
    PaymentIntentLink,
    Persona,
    PortalAccessLog,
    UserSession,
)
from tests.api.factories import Seeded, password_for, seed_review, settings_for
from tests.api.review_fixtures import csrf_of, login
from tests.tools.commit_factories import Factory, app_settings, bearer, client_for
from tools.admin.sessions import MAX_PER_ACCOUNT_AND_SOURCE, LoginLimiter
from tools.commitments import plans
from tools.kit.csvsafe import neutralise
from tools.ledger.users import _SCRYPT, PASSWORDS, authenticate, hash_password, issue_api_token
from tools.payments import stripe_pay
from tools.portal import access as portal

WEAK = ["plixo-dev-secret-change-me", "", "secret", "changeme", "change-me", "password"]
TODAY = datetime.now(UTC).date()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(str(tmp_path))


@pytest.fixture
def seeded(session: Session, org: Organisation, settings: Settings) -> Seeded:
    return seed_review(session, org, settings, drafts=1)


@pytest.fixture
def app(engine: Engine, settings: Settings) -> FastAPI:
    return create_app(engine, settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c
    LoginLimiter(app.state.engine).clear()


def _cookie(secret: str, data: dict[str, Any]) -> str:
    """A session cookie exactly as Starlette's SessionMiddleware signs one."""
    payload = b64encode(json.dumps(data).encode())
    return itsdangerous.TimestampSigner(secret).sign(payload).decode()


# --- 1. secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("weak", WEAK)
def test_a_cookie_forged_with_a_development_secret_gets_401(
    engine: Engine, tmp_path: Path, seeded: Seeded, session: Session, weak: str
) -> None:
    """No PLIXO_SECRET_KEY: plixo signs with its own generated key, so a cookie signed with any
    well-known value (the old built-in default included) is not a session."""
    settings = Settings(data_dir=tmp_path / "data", public_base_url="http://testserver")
    app = create_app(engine, settings)
    admin = seeded.users[Persona.ADMIN]
    with TestClient(app) as c:
        login(c, seeded, Persona.ADMIN)
        genuine = c.cookies.get("plixo_session")
        assert c.get("/api/me").status_code == 200
        sid = json.loads(
            __import__("base64").b64decode(
                itsdangerous.TimestampSigner(settings.signing_key()).unsign(genuine)
            )
        )["sid"]
        # Everything a forger could put in the cookie, the live session id included.
        for data in (
            {"user_id": admin.id, "org_id": admin.org_id, "csrf": "t"},
            {"sid": sid, "user_id": admin.id, "org_id": admin.org_id, "csrf": "t"},
        ):
            c.cookies.clear()
            c.cookies.set("plixo_session", _cookie(weak, data))
            assert c.get("/api/me").status_code == 401


def test_the_generated_key_is_kept_owner_only_and_reused(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "d")
    first = s.signing_key()
    mode = stat.S_IMODE(s.secret_key_path.stat().st_mode)
    assert mode == 0o600 and len(first) >= 32
    assert Settings(data_dir=tmp_path / "d").signing_key() == first  # the same key next start
    s.secret_key_path.chmod(0o644)
    assert load_or_create_secret(s.secret_key_path) == first
    assert stat.S_IMODE(s.secret_key_path.stat().st_mode) == 0o600  # tightened
    assert Settings(data_dir=tmp_path / "other").signing_key() != first


@pytest.mark.parametrize("weak", [*WEAK, "short-but-random-Zx81"])
def test_a_well_known_or_short_configured_secret_is_refused(
    weak: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLIXO_SECRET_KEY", weak)
    with pytest.raises(ValidationError, match="PLIXO_SECRET_KEY"):
        Settings()


def test_serve_on_a_public_host_says_where_the_key_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import api.cli.main as cli
    from memory.config import get_settings

    monkeypatch.setenv("PLIXO_DATA_DIR", str(tmp_path / "srv"))
    monkeypatch.delenv("PLIXO_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: calls.append(k))
    try:
        out = CliRunner().invoke(cli.app, ["serve", "--host", "0.0.0.0", "--port", "1"])
        assert out.exit_code == 0, out.output
        assert "secret_key" in out.output and "owner-only" in out.output
        assert calls and calls[0]["log_config"]["filters"]["redact_tokens"]
        local = CliRunner().invoke(cli.app, ["serve", "--host", "127.0.0.1", "--port", "1"])
        assert "owner-only" not in local.output
    finally:
        get_settings.cache_clear()


# --- 2. authorization where the write happens -----------------------------------------------------


def test_a_collector_cannot_post_a_payment_through_any_route(
    engine: Engine, session: Session, org: Organisation, tmp_path: Path
) -> None:
    cf = Factory(session, org)
    c = cf.customer()
    inv = cf.invoice(c, 30_000)
    manager = cf.user(Persona.COLLECTIONS_MANAGER)
    session.commit()
    out = plans.propose_plan(
        session,
        org.id,
        customer_id=c.id,
        invoice_ids=[inv.id],
        installments=plans.split_evenly(30_000, 2, TODAY + timedelta(days=7)),
        proposer=manager,
    )
    session.commit()
    assert out.plan.status.value == "active"
    collector = bearer(session, cf.user(Persona.COLLECTOR))
    with client_for(engine, app_settings(tmp_path / "data")) as api:
        for method, url, body in [
            ("POST", f"/api/plans/{out.plan.id}/installments/1/paid", None),
            (
                "POST",
                "/api/payments",
                {
                    "amount_minor": 100,
                    "currency": "USD",
                    "received_on": TODAY.isoformat(),
                    "invoice_id": inv.id,
                },
            ),
        ]:
            r = api.request(method, url, headers=collector, json=body)
            assert r.status_code == 403, (url, r.status_code, r.text)
            assert "Collector may not post a payment" in r.json()["detail"]
        session.expire_all()
        assert session.scalar(select(func.count()).select_from(Payment)) == 0
        assert session.get(type(inv), inv.id).balance_minor == 30_000  # type: ignore[union-attr]
        # Marking an installment paid posts a payment: whoever may post payments may do it.
        billing = bearer(session, cf.user(Persona.BILLING_ADMIN))
        r = api.post(f"/api/plans/{out.plan.id}/installments/1/paid", headers=billing)
        assert r.status_code == 200, r.text
        ok = api.post(
            f"/api/plans/{out.plan.id}/installments/2/paid", headers=bearer(session, manager)
        )
        assert ok.status_code == 200, ok.text


# --- 3. sessions and log-in -----------------------------------------------------------------------


def test_cookie_state_changes_on_the_api_need_the_same_origin_or_the_csrf_token(
    client: TestClient, seeded: Seeded
) -> None:
    login(client, seeded, Persona.COLLECTOR)
    cid = seeded.customers[0].id
    note = {"body": "called, left a message"}
    cross = client.post(
        f"/api/customers/{cid}/notes", json=note, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403 and "X-CSRF-Token" in cross.json()["detail"]
    bare = client.post(f"/api/customers/{cid}/notes", json=note)
    assert bare.status_code == 403
    same = client.post(
        f"/api/customers/{cid}/notes", json=note, headers={"Origin": "http://testserver"}
    )
    assert same.status_code in (200, 201), same.text
    token = csrf_of(client.get("/queue").text)
    with_token = client.post(
        f"/api/customers/{cid}/notes", json=note, headers={"X-CSRF-Token": token}
    )
    assert with_token.status_code in (200, 201), with_token.text
    # Reading needs nothing more; bearer calls are exempt.
    assert client.get("/api/me").status_code == 200
    client.cookies.clear()
    by_token = client.post(
        f"/api/customers/{cid}/notes", json=note, headers=seeded.auth(Persona.COLLECTOR)
    )
    assert by_token.status_code in (200, 201)


def test_logout_and_password_change_end_the_session_on_the_server(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    login(client, seeded, Persona.VIEWER)
    copied = client.cookies.get("plixo_session")
    assert client.get("/api/me").status_code == 200
    page = client.get("/queue")
    client.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    client.cookies.clear()
    client.cookies.set("plixo_session", copied)  # the cookie an attacker copied earlier
    assert client.get("/api/me").status_code == 401

    # A password change ends every other session and every bearer token of the user.
    with TestClient(client.app) as other:
        login(other, seeded, Persona.VIEWER)
        login(client, seeded, Persona.VIEWER)
        token_headers = seeded.auth(Persona.VIEWER)
        assert client.get("/api/me", headers=token_headers).status_code == 200
        r = client.post(
            "/api/auth/password",
            json={"current_password": "wrong", "new_password": "a-long-new-password"},
            headers={"Origin": "http://testserver"},
        )
        assert r.status_code == 422
        r = client.post(
            "/api/auth/password",
            json={"current_password": password_for(Persona.VIEWER), "new_password": "x"},
            headers={"Origin": "http://testserver"},
        )
        assert r.status_code == 422 and "at least" in r.json()["detail"]
        r = client.post(
            "/api/auth/password",
            json={
                "current_password": password_for(Persona.VIEWER),
                "new_password": "a-long-new-password",
            },
            headers={"Origin": "http://testserver"},
        )
        assert r.status_code == 204, r.text
        assert client.get("/api/me").status_code == 200  # the session it was changed from
        assert other.get("/api/me").status_code == 401
        bare = TestClient(client.app)
        assert bare.get("/api/me", headers=token_headers).status_code == 401
    session.expire_all()
    live = session.scalars(
        select(UserSession).where(
            UserSession.user_id == seeded.users[Persona.VIEWER].id,
            UserSession.revoked_at.is_(None),
        )
    ).all()
    assert len(live) == 1


def test_bearer_tokens_expire_and_can_be_listed_and_revoked(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    user = seeded.users[Persona.COLLECTOR]
    old = issue_api_token(
        session, user, ttl=timedelta(hours=1), now=datetime.now(UTC) - timedelta(hours=2),
        replace=False,
    )  # fmt: skip
    session.commit()
    assert client.get("/api/me", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    h = seeded.auth(Persona.COLLECTOR)
    made = client.post(
        "/api/auth/tokens", headers=h, json={"name": "nightly export", "ttl_days": 2}
    )
    assert made.status_code == 201
    new = made.json()
    expires = datetime.fromisoformat(new["info"]["expires_at"])
    assert timedelta(days=1, hours=23) < expires - datetime.now(UTC) <= timedelta(days=2)
    nh = {"Authorization": f"Bearer {new['token']}"}
    assert client.get("/api/me", headers=nh).status_code == 200
    listed = client.get("/api/auth/tokens", headers=h).json()
    assert {t["name"] for t in listed} >= {"nightly export"}
    assert all("token" not in t for t in listed)
    expired = [t for t in listed if not t["live"]]
    assert expired and expired[0]["revoked_at"] is None  # the expired one, listed as not live
    r = client.delete(f"/api/auth/tokens/{new['info']['id']}", headers=h)
    assert r.status_code == 200 and r.json()["live"] is False
    assert client.get("/api/me", headers=nh).status_code == 401
    assert client.get("/api/me", headers=h).status_code == 200  # the others keep working
    other = seeded.users[Persona.ADMIN]
    theirs = session.scalars(select(ApiToken).where(ApiToken.user_id == other.id)).first()
    assert theirs is not None
    assert client.delete(f"/api/auth/tokens/{theirs.id}", headers=h).status_code == 404
    # POST /api/auth/token gives a token with the configured lifetime.
    got = client.post(
        "/api/auth/token",
        json={"email": seeded.email(Persona.CSM), "password": password_for(Persona.CSM)},
    ).json()
    left = datetime.fromisoformat(got["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=29) < left <= timedelta(days=30)


def test_guessing_from_elsewhere_does_not_lock_the_real_user_out(
    app: FastAPI, seeded: Seeded
) -> None:
    email = seeded.email(Persona.VIEWER)
    with (
        TestClient(app, client=("203.0.113.9", 5000)) as attacker,
        TestClient(app, client=("198.51.100.7", 5000)) as office,
    ):
        codes = [
            attacker.post("/api/auth/token", json={"email": email, "password": f"g{i}"}).status_code
            for i in range(MAX_PER_ACCOUNT_AND_SOURCE + 2)
        ]
        assert codes.count(401) == MAX_PER_ACCOUNT_AND_SOURCE and codes[-1] == 429
        mine = office.post(
            "/api/auth/token", json={"email": email, "password": password_for(Persona.VIEWER)}
        )
        assert mine.status_code == 200
    LoginLimiter(app.state.engine).clear()


def test_the_limiter_is_atomic_and_shared_by_every_worker(tmp_path: Path) -> None:
    """Two engines on one ledger (two workers), 8 threads bursting 200 attempts at one account
    from one source: exactly the limit gets through."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = make_engine(url)
    migrate.upgrade(first)
    second = make_engine(url)
    workers = [LoginLimiter(first), LoginLimiter(second)]
    through: list[bool] = []
    lock = threading.Lock()

    def burst(n: int) -> None:
        for i in range(25):
            ok = workers[(n + i) % 2].attempt("dana@example.com", "203.0.113.9").allowed
            with lock:
                through.append(ok)

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(through) == 200 and through.count(True) == MAX_PER_ACCOUNT_AND_SOURCE
    verdict = workers[1].attempt("dana@example.com", "203.0.113.9")
    assert not verdict.allowed and 0 < verdict.retry_after_s <= 15 * 60
    assert workers[0].attempt("dana@example.com", "198.51.100.7").allowed
    first.dispose()
    second.dispose()


def test_an_unknown_email_costs_the_same_hash_check_as_a_wrong_password(
    session: Session, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    real = PASSWORDS.verify

    def counting(password: str | bytes, hash: str | bytes) -> bool:
        checked.append(str(hash)[:9])
        return real(password, hash)

    monkeypatch.setattr(PASSWORDS, "verify", counting)
    real_update = PASSWORDS.verify_and_update

    def counting_update(password: str | bytes, hash: str | bytes) -> tuple[bool, str | None]:
        checked.append(str(hash)[:9])
        return real_update(password, hash)

    monkeypatch.setattr(PASSWORDS, "verify_and_update", counting_update)
    assert authenticate(session, "nobody@nowhere.example", "x") is None
    assert authenticate(session, seeded.email(Persona.VIEWER), "wrong") is None
    assert len(checked) == 2 and all(h.startswith("$argon2") for h in checked)


def test_an_old_scrypt_hash_logs_in_and_is_replaced_by_argon2(
    session: Session, seeded: Seeded
) -> None:
    import hashlib
    import secrets as _s

    user = seeded.users[Persona.CSM]
    salt = _s.token_bytes(16)
    digest = hashlib.scrypt(b"legacy-password", salt=salt, dklen=32, **_SCRYPT)  # type: ignore[arg-type]
    user.password_hash = f"scrypt${salt.hex()}${digest.hex()}"
    session.commit()
    assert authenticate(session, user.email, "not it") is None
    assert user.password_hash.startswith("scrypt$")
    assert authenticate(session, user.email, "legacy-password") is user
    assert user.password_hash.startswith("$argon2")
    assert authenticate(session, user.email, "legacy-password") is user
    assert hash_password("p").startswith("$argon2")


def test_pages_carry_the_security_headers(client: TestClient, seeded: Seeded) -> None:
    for url in ("/login", "/api/me"):
        r = client.get(url)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["referrer-policy"]
    csp = client.get("/login").headers["content-security-policy"]
    assert "script-src 'self' 'nonce-" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    login(client, seeded, Persona.COLLECTIONS_MANAGER)
    batch = client.get("/batch")
    nonce = batch.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in batch.text


# --- 4. smaller holes -----------------------------------------------------------------------------


def test_csv_exports_write_formulas_as_text(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    customer = session.get(Customer, seeded.drafts[0].customer_id)
    assert customer is not None
    customer.name = '=HYPERLINK("http://evil.example","Click")'
    session.commit()
    login(client, seeded, Persona.CONTROLLER)
    r = client.get("/focus.csv")
    assert r.status_code == 200
    cells = [c for row in csv.reader(io.StringIO(r.text)) for c in row]
    assert '\'=HYPERLINK("http://evil.example","Click")' in cells
    assert not any(c.startswith(("=", "+", "@")) for c in cells)
    for bad in ("=1+1", "+A1", "-1+1", "@SUM(A1)", "\tx", "\rx", "-cmd|' /C calc'!A0"):
        assert neutralise(bad) == "'" + bad
    for data in ("-12.50", "+1", "a=b", 3, None):  # signed numbers are data, not formulas
        assert neutralise(data) == data


def test_tokens_never_reach_a_log_line() -> None:
    raw = "Zq9x" * 10
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", f"/portal/{raw}/disputes?token={raw}&page=2", "1.1", 200), None,
    )  # fmt: skip
    RedactTokens().filter(record)
    line = record.getMessage()
    assert raw not in line and "/portal/[redacted]/disputes" in line and "page=2" in line
    text = redact(f"Authorization: Bearer plx_{raw} and plx_{raw}")
    assert raw not in text


def test_the_uvicorn_access_log_of_a_real_portal_request_is_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from api.logredact import install

    logger = logging.getLogger("uvicorn.access")
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        install()
        raw = "A" * 43
        logger.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/portal/{raw}", "1.1", 200)
        written = handler.stream.getvalue()  # type: ignore[attr-defined]
        assert raw not in written and "[redacted]" in written
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_portal_uploads_are_refused_before_the_body_is_read(
    app: FastAPI, session: Session, org: Organisation
) -> None:
    cf = Factory(session, org)
    c = cf.customer()
    staff = cf.user(Persona.COLLECTOR)
    session.commit()
    issued = portal.issue_token(session, org.id, c.id, actor=staff, base_url="http://testserver")
    session.commit()
    good = issued.url.rsplit("/", 1)[1]

    def call(path: str, length: int) -> tuple[int, bool]:
        read = False
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal read
            read = True
            return {"type": "http.request", "body": b"x" * 10, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "client": ("203.0.113.5", 1), "server": ("testserver", 80),
            "headers": [
                (b"host", b"testserver"),
                (b"content-type", b"multipart/form-data; boundary=x"),
                (b"content-length", str(length).encode()),
            ],
        }  # fmt: skip
        asyncio.run(app(scope, receive, send))
        return sent[0]["status"], read

    status, read = call(f"/portal/{'B' * 43}/disputes/1/evidence", 24 * 1024 * 1024)
    assert status == 404 and read is False
    status, read = call(f"/portal/{good}/disputes/1/evidence", 24 * 1024 * 1024)
    assert status == 413 and read is False
    status, read = call(f"/portal/{good}/disputes", 6 * 1024 * 1024)
    assert status == 413 and read is False
    session.expire_all()
    refused = session.scalars(
        select(PortalAccessLog.outcome).where(PortalAccessLog.action == "upload")
    ).all()
    assert refused == ["unknown"]


def test_the_webhook_refuses_a_different_amount_and_a_future_signature(
    session: Session, org: Organisation
) -> None:
    import stripe

    cf = Factory(session, org)
    c = cf.customer()
    inv = cf.invoice(c, 5_000)
    session.add(
        PaymentIntentLink(
            org_id=org.id, customer_id=c.id, invoice_id=inv.id, intent_id="pi_test_1",
            amount_minor=5_000, currency="USD", status="processing",
        )
    )  # fmt: skip
    session.commit()

    def event(amount: int, received: int) -> dict[str, Any]:
        return {
            "id": f"evt_{amount}_{received}",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": "pi_test_1", "amount": amount, "amount_received": received,
                    "currency": "usd", "metadata": {"plixo_org_id": str(org.id)},
                }
            },
        }  # fmt: skip

    triple = stripe_pay.handle_event(session, event(5_000, 15_000))
    assert triple.outcome == "amount_mismatch"
    part = stripe_pay.handle_event(session, event(5_000, 2_000))
    assert part.outcome == "amount_mismatch"
    bigger_intent = stripe_pay.handle_event(session, event(15_000, 15_000))
    assert bigger_intent.outcome == "amount_mismatch"
    assert session.scalar(select(func.count()).select_from(Payment)) == 0
    exact = stripe_pay.handle_event(session, event(5_000, 5_000))
    assert exact.outcome == "processed"

    settings = Settings(stripe_webhook_secret="whsec_x" * 4)  # type: ignore[arg-type]
    payload = json.dumps(event(5_000, 5_000))
    ahead = stripe.WebhookSignature.generate_signature_header(
        payload, "whsec_x" * 4, int(time.time()) + 3600
    )
    with pytest.raises(stripe_pay.WebhookRejected, match="future"):
        stripe_pay.verify_webhook(payload.encode(), ahead, settings)
    near = stripe.WebhookSignature.generate_signature_header(
        payload, "whsec_x" * 4, int(time.time()) + 60
    )
    assert stripe_pay.verify_webhook(payload.encode(), near, settings)["id"]


def test_the_duplicate_column_check_is_linear() -> None:
    """Counted, not timed: every comparison and hash the check makes on the column names."""
    from tools.imports.importer import duplicate_columns

    ops = 0

    class Name(str):
        __slots__ = ()

        def __eq__(self, other: object) -> bool:
            nonlocal ops
            ops += 1
            return str.__eq__(self, other)

        def __hash__(self) -> int:
            nonlocal ops
            ops += 1
            return str.__hash__(self)

    n = 4_000
    header = [Name(f"c{i % (n // 2)}") for i in range(n)]
    dupes = duplicate_columns(header)
    assert len(dupes) == n // 2 and dupes[0] == "c0"
    assert ops <= 4 * n, f"{ops} comparisons for {n} columns: not linear"
