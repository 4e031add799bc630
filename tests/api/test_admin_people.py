"""People from zero: ``plixo init``, invitations by e-mail (aiosmtpd), personas, deactivation."""

# ruff: noqa: F811 - pytest fixtures are imported by name

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.app import create_app
from api.cli.main import app as cli_app
from memory.config import Settings
from memory.models import AuditEvent, Invitation, Organisation, Persona, User
from tests.api.factories import NOW, Seeded, seed_review, settings_for
from tests.api.review_fixtures import csrf_of
from tests.api.smtp_server import SmtpSink, start_smtp
from tools.admin import people

runner = CliRunner()


@pytest.fixture
def smtp() -> Iterator[tuple[int, SmtpSink]]:
    controller, sink = start_smtp()
    yield controller.port, sink
    controller.stop()


@pytest.fixture
def env(
    engine, session: Session, org: Organisation, tmp_path: Path, smtp
) -> Iterator[tuple[TestClient, Seeded, SmtpSink, list]]:  # type: ignore[no-untyped-def]
    port, sink = smtp
    settings: Settings = settings_for(str(tmp_path)).model_copy(update={"smtp_port": port})
    seeded = seed_review(session, org, settings, drafts=1)
    session.commit()
    application: FastAPI = create_app(engine, settings)
    now = [NOW]
    application.state.clock = lambda: now[0]
    with TestClient(application) as client:
        yield client, seeded, sink, now


def _link(sink: SmtpSink) -> str:
    body = sink.received[-1].message.get_payload(decode=True).decode()
    match = re.search(r"http://testserver(/invitations/[\w-]+)", body)
    assert match, body
    return match.group(1)


def _invite(client: TestClient, seeded: Seeded, email: str = "new.collector@example.test"):  # type: ignore[no-untyped-def]
    return client.post(
        "/api/admin/people",
        json={
            "email": email,
            "name": "Nia Collector",
            "role": "Collector",
            "approval_limits": {"USD": "12,500.00", "EUR": "10,000.00 EUR"},
        },
        headers=seeded.auth(Persona.ADMIN),
    )


def test_invite_by_email_then_set_password_once(env, session: Session) -> None:  # type: ignore[no-untyped-def]
    client, seeded, sink, _ = env
    r = _invite(client, seeded)
    assert r.status_code == 201, r.text
    assert r.json()["pending"] is True
    assert r.json()["approval_limits"] == ["10,000.00 EUR", "12,500.00 USD"]
    assert sink.received[-1].rcpt_tos == ["new.collector@example.test"]
    link = _link(sink)
    page = client.get(link)
    assert page.status_code == 200 and "Nia Collector" in page.text
    done = client.post(
        link,
        data={
            "csrf": csrf_of(page.text),
            "password": "a-long-password-1",
            "confirm": "a-long-password-1",
        },
        follow_redirects=False,
    )
    assert done.status_code == 303
    token = client.post(
        "/api/auth/token",
        json={"email": "new.collector@example.test", "password": "a-long-password-1"},
    )
    assert token.status_code == 200, token.text
    again = client.get(link)
    assert again.status_code == 410 and "already used" in again.text
    user = session.scalars(select(User).where(User.email == "new.collector@example.test")).one()
    assert user.approval_limits == {"USD": 1_250_000, "EUR": 1_000_000}


def test_duplicate_invitation_is_refused_and_nothing_saved(env, session: Session) -> None:  # type: ignore[no-untyped-def]
    client, seeded, sink, _ = env
    assert _invite(client, seeded).status_code == 201
    before = session.scalar(select(func.count()).select_from(Invitation))
    dup = _invite(client, seeded, "New.Collector@example.test ")
    assert dup.status_code == 409
    assert "already has a pending invitation" in dup.json()["detail"]
    assert session.scalar(select(func.count()).select_from(Invitation)) == before
    assert len(sink.received) == 1
    member = _invite(client, seeded, seeded.email(Persona.CONTROLLER))
    assert member.status_code == 409 and "already has an account" in member.json()["detail"]


def test_expired_link_is_refused_with_the_date(env, session: Session) -> None:  # type: ignore[no-untyped-def]
    client, seeded, sink, now = env
    assert _invite(client, seeded).status_code == 201
    link = _link(sink)
    csrf = csrf_of(client.get("/login").text)
    now[0] = NOW + timedelta(hours=73)
    page = client.get(link)
    assert page.status_code == 410 and "expired on" in page.text and "resend" in page.text
    post = client.post(
        link, data={"csrf": csrf, "password": "a-long-password-1", "confirm": "a-long-password-1"}
    )
    assert post.status_code == 410
    session.expire_all()
    user = session.scalars(select(User).where(User.email == "new.collector@example.test")).one()
    assert user.password_hash is None


def test_bad_limits_and_unreachable_smtp_save_nothing(
    env, session: Session, tmp_path: Path, engine
) -> None:  # type: ignore[no-untyped-def]
    client, seeded, sink, _ = env
    bad = client.post(
        "/api/admin/people",
        json={
            "email": "x@example.test",
            "name": "X",
            "role": "Collector",
            "approval_limits": {"USD": "-5 USD"},
        },
        headers=seeded.auth(Persona.ADMIN),
    )
    assert bad.status_code == 422 and "negative" in bad.json()["detail"]
    client.app.state.settings = settings_for(str(tmp_path))  # port 1: nothing listens
    down = client.post(
        "/api/admin/people",
        json={"email": "y@example.test", "name": "Y", "role": "Viewer"},
        headers=seeded.auth(Persona.ADMIN),
    )
    assert down.status_code == 502 and "nothing was saved" in down.json()["detail"]
    assert (
        session.scalars(
            select(User).where(User.email.in_(["x@example.test", "y@example.test"]))
        ).all()
        == []
    )


def test_persona_limits_accounts_and_deactivation(env, session: Session) -> None:  # type: ignore[no-untyped-def]
    client, seeded, _, _ = env
    target = seeded.users[Persona.COLLECTOR]
    url = f"/api/admin/people/{target.id}"
    admin = seeded.auth(Persona.ADMIN)
    r = client.patch(
        url,
        json={
            "role": "Collections Manager",
            "approval_limits": {"GBP": "7,500 GBP"},
            "owned_customer_ids": [seeded.customers[0].id],
        },
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "Collections Manager" and r.json()["approval_limits"] == [
        "7,500.00 GBP"
    ]
    session.expire_all()
    assert (
        session.get(type(seeded.customers[0]), seeded.customers[0].id).collector_user_id
        == target.id
    )
    # one refusal in the patch: nothing of it is kept
    r = client.patch(url, json={"role": "Collector", "owned_customer_ids": [999999]}, headers=admin)
    assert r.status_code == 404
    session.expire_all()
    assert session.get(User, target.id).role is Persona.COLLECTIONS_MANAGER
    assert client.get("/api/me", headers=seeded.auth(Persona.COLLECTOR)).status_code == 200
    assert client.patch(url, json={"active": False}, headers=admin).status_code == 200
    assert client.get("/api/me", headers=seeded.auth(Persona.COLLECTOR)).status_code == 401
    me = seeded.users[Persona.ADMIN]
    self_off = client.patch(f"/api/admin/people/{me.id}", json={"active": False}, headers=admin)
    assert self_off.status_code == 409
    actions = set(
        session.scalars(select(AuditEvent.action).where(AuditEvent.subject_id == target.id))
    )
    assert {"user.persona_changed", "user.limits_changed", "user.deactivated"} <= actions


def test_only_manage_users_may_invite_even_below_the_route(env, session: Session) -> None:  # type: ignore[no-untyped-def]
    client, seeded, _, _ = env
    assert _invite(client, seeded, "z@example.test").status_code == 201
    for role in (Persona.CONTROLLER, Persona.COLLECTOR, Persona.SALES, Persona.VIEWER):
        r = client.post(
            "/api/admin/people",
            json={"email": "q@example.test", "name": "Q", "role": "Viewer"},
            headers=seeded.auth(role),
        )
        assert r.status_code == 403
        with pytest.raises(people.PeopleError, match="may not invite"):
            people.invite(
                session,
                seeded.org.id,
                seeded.users[role],
                email="q@example.test",
                name="Q",
                role="Viewer",
                now=NOW,
            )


def test_navigation_shows_each_persona_what_it_may_use(env) -> None:  # type: ignore[no-untyped-def]
    client, seeded, _, _ = env
    from tests.api.review_fixtures import login

    login(client, seeded, Persona.VIEWER)
    home = client.get("/segments")
    assert home.status_code == 200
    assert 'href="/segments"' in home.text and 'href="/people"' not in home.text
    assert "New segment" not in home.text and "New cadence" not in home.text
    assert client.get("/people").status_code == 403
    client.cookies.clear()
    login(client, seeded, Persona.ADMIN)
    page = client.get("/segments")
    assert 'href="/people"' in page.text and "New segment" in page.text


def test_plixo_init_creates_org_and_admin_with_one_time_link(data_dir: Path, sessions) -> None:  # type: ignore[no-untyped-def]
    args = [
        "init",
        "--org",
        "Acme Corp",
        "--admin-email",
        "Ann@Acme.example",
        "--currency",
        "CHF",
        "--timezone",
        "Europe/Zurich",
        "--country",
        "CH",
        "--subdivision",
        "ZH",
        "--fiscal-year-start",
        "4",
    ]
    r = runner.invoke(cli_app, args)
    assert r.exit_code == 0, r.output
    assert (
        "/invitations/" in r.output
        and "Next steps" in r.output
        and "plixo import invoices" in r.output
    )
    token = re.search(r"/invitations/([\w-]+)", r.output).group(1)  # type: ignore[union-attr]
    with sessions() as s:
        org = s.scalars(select(Organisation).where(Organisation.slug == "acme-corp")).one()
        assert (
            org.default_currency,
            org.timezone,
            org.shadow_mode,
            org.sending_domain_verified,
        ) == ("CHF", "Europe/Zurich", True, False)
        admin = s.scalars(select(User).where(User.org_id == org.id)).one()
        assert (
            admin.role is Persona.ADMIN
            and admin.email == "ann@acme.example"
            and admin.password_hash is None
        )
        people.accept(s, token, "correct horse battery", NOW)
        s.commit()
        with pytest.raises(people.PeopleError, match="already used"):
            people.accept(s, token, "correct horse battery", NOW)
    again = runner.invoke(cli_app, args)
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(
        cli_app, ["init", "--org", "B", "--admin-email", "b@b.example", "--country", "XX"]
    )
    assert bad.exit_code == 2 and "Nothing was created" in bad.output
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Organisation)) == 1


def test_policy_page_previews_then_saves_and_refuses_bad_values(env, session: Session) -> None:  # type: ignore[no-untyped-def]
    from tests.api.review_fixtures import login

    client, seeded, _, _ = env
    login(client, seeded, Persona.VIEWER)
    page = client.get("/policies")
    assert page.status_code == 200 and "Active guardrails" in page.text
    assert "Propose a change" not in page.text
    client.cookies.clear()
    login(client, seeded, Persona.CONTROLLER)
    page = client.get("/policies")
    csrf = csrf_of(page.text)
    bad = client.post(
        "/policies/preview", data={"csrf": csrf, "text": "plans:\n  max_discount: 150%\n"}
    )
    assert bad.status_code == 422 and "outside 0% to 100%" in bad.text
    good = client.post(
        "/policies/preview",
        data={"csrf": csrf, "text": "plans:\n  controller_above: 20,000.00 USD\n"},
    )
    assert good.status_code == 200 and 'data-testid="dry-run-summary"' in good.text
    # the change in the units it was written in, never the stored path or minor units
    assert "Plans: controller above" in good.text
    assert "50,000.00 USD → 20,000.00 USD" in good.text
    assert "controller_above_minor" not in good.text and "5000000" not in good.text
    from memory.models import PolicySetVersion

    assert session.scalars(select(PolicySetVersion)).all() == []
    saved = client.post(
        "/policies",
        data={"csrf": csrf, "text": "plans:\n  controller_above: 20,000.00 USD\n"},
        follow_redirects=True,
    )
    assert "Saved as policy version 1" in saved.text
    assert "$20,000.00" in saved.text or "20,000.00 USD" in saved.text
    german = client.get("/policies", headers={"Accept-Language": "de-DE"}).text
    assert " UTC</td>" not in german and "1 changes" not in german  # the reader's locale
    assert re.search(r"<td>\d{2}\.\d{2}\.\d{4}, \d{2}:\d{2}:\d{2}</td><td>1 change</td>", german)


def test_cadence_api_refuses_a_repeated_offset(env, session: Session) -> None:  # type: ignore[no-untyped-def]
    client, seeded, _, _ = env
    steps = [
        {"offset": 3, "template": "friendly_reminder"},
        {"offset": 3, "template": "second_reminder"},
    ]
    r = client.post(
        "/api/admin/cadences",
        json={"name": "Dup", "steps": steps},
        headers=seeded.auth(Persona.COLLECTIONS_MANAGER),
    )
    assert r.status_code == 422 and "already used by step 1" in r.json()["detail"]
    ok = client.post(
        "/api/admin/cadences",
        json={"name": "Dup", "steps": steps[:1]},
        headers=seeded.auth(Persona.COLLECTIONS_MANAGER),
    )
    assert ok.status_code == 201
    seg = client.post(
        "/api/admin/segments",
        json={"name": "US", "rule": {"regions": ["US"]}, "cadence_id": ok.json()["id"]},
        headers=seeded.auth(Persona.ADMIN),
    )
    assert seg.status_code == 201 and seg.json()["rule_text"] == "in US"
    assert len(seg.json()["moved"]) == len(seeded.customers)
    listed = client.get("/api/admin/segments", headers=seeded.auth(Persona.SALES))
    assert listed.status_code == 200 and any(c["name"] == "Dup" for c in listed.json()["cadences"])
    assert (
        client.post(
            "/api/admin/segments", json={"name": "X"}, headers=seeded.auth(Persona.SALES)
        ).status_code
        == 403
    )


def test_readiness_page_names_the_rows_and_upload_reports_each_bad_row(
    env, session: Session
) -> None:  # type: ignore[no-untyped-def]
    from tests.api.review_fixtures import login

    client, seeded, _, _ = env
    api = client.get("/api/admin/readiness", headers=seeded.auth(Persona.VIEWER))
    assert api.status_code == 200
    assert {c["name"] for c in api.json()["components"]} == {
        "freshness",
        "contact_coverage",
        "invoice_completeness",
    }
    login(client, seeded, Persona.BILLING_ADMIN)
    page = client.get("/readiness")
    assert page.status_code == 200 and 'data-testid="data-ready-score"' in page.text
    csrf = csrf_of(page.text)
    bad = (
        "invoice_number,customer_ref,issue_date,due_date,amount,currency\n"
        "N-1,C-NEW,2026-01-01,2026-01-31,10.00,USD\n"
        "N-2,C-NEW,2026-02-30,2026-03-01,10.00,USD\n"
    )
    r = client.post(
        "/readiness/upload",
        data={"csrf": csrf, "kind": "invoices"},
        files={"file": ("x.csv", bad.encode(), "text/csv")},
    )
    assert r.status_code == 422 and "nothing imported" in r.text and "<td>3</td>" in r.text
    from memory.models import Invoice

    assert session.scalars(select(Invoice).where(Invoice.number.in_(["N-1", "N-2"]))).all() == []
    good = bad.splitlines()[0] + "\n" + bad.splitlines()[1] + "\n"
    ok = client.post(
        "/readiness/upload",
        data={"csrf": csrf, "kind": "invoices"},
        files={"file": ("x.csv", good.encode(), "text/csv")},
    )
    assert ok.status_code == 200 and "1 created" in ok.text
    client.cookies.clear()
    login(client, seeded, Persona.SALES)
    sales = client.post(
        "/readiness/upload",
        data={"csrf": csrf_of(client.get("/readiness").text), "kind": "invoices"},
        files={"file": ("x.csv", good.encode(), "text/csv")},
    )
    assert sales.status_code == 403


def test_cron_pause_and_maintenance_pause_autopilot_passes(
    engine, session: Session, org: Organisation, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from agent.autopilot import run_autopilot
    from memory.db import session_factory

    org.cron_paused = True
    session.commit()
    summary = run_autopilot(
        session_factory(engine),
        org.id,
        as_of=NOW.date(),
        shadow=True,
        settings=settings_for(str(tmp_path)),
        now=NOW,
    )
    assert summary.paused == "cron pause" and summary.run_id is None and summary.drafted == 0
    org.cron_paused, org.maintenance = False, True
    session.commit()
    summary = run_autopilot(
        session_factory(engine),
        org.id,
        as_of=NOW.date(),
        shadow=True,
        settings=settings_for(str(tmp_path)),
        now=NOW,
    )
    assert summary.paused == "maintenance"
    org.maintenance = False
    session.commit()
    assert (
        run_autopilot(
            session_factory(engine),
            org.id,
            as_of=NOW.date(),
            shadow=True,
            settings=settings_for(str(tmp_path)),
            now=NOW,
        ).paused
        is None
    )


def test_shadow_mode_off_needs_a_confirmation_where_autopilot_is_on(env, session: Session) -> None:  # type: ignore[no-untyped-def]
    from tests.api.review_fixtures import login

    client, seeded, _, _ = env
    seeded.segment.autopilot_enabled, seeded.segment.shadow_mode = True, True
    session.commit()
    login(client, seeded, Persona.COLLECTIONS_MANAGER)
    csrf = csrf_of(client.get("/sending-modes").text)
    form = {
        "csrf": csrf,
        "switch": "shadow_mode",
        "value": "false",
        "segment_id": str(seeded.segment.id),
    }
    asked = client.post("/sending-modes", data=form, follow_redirects=True)
    assert 'data-testid="confirm-shadow-off"' in asked.text and seeded.segment.name in asked.text
    session.expire_all()
    assert session.get(type(seeded.segment), seeded.segment.id).shadow_mode is True
    done = client.post("/sending-modes", data={**form, "confirmed": "true"}, follow_redirects=True)
    assert 'data-testid="confirm-shadow-off"' not in done.text
    session.expire_all()
    assert session.get(type(seeded.segment), seeded.segment.id).shadow_mode is False


def test_sending_domain_page_writes_the_last_check_in_the_readers_locale(
    env, session: Session
) -> None:  # type: ignore[no-untyped-def]
    """The last DNS check on the organisation's clock (New York), as the reader's locale writes
    it, not "2025-10-07 18:00 UTC"."""
    from memory.models import SendingDomain
    from tests.api.review_fixtures import login

    client, seeded, _, _ = env
    row = session.get(SendingDomain, seeded.org.id)
    if row is None:
        row = SendingDomain(
            org_id=seeded.org.id, domain="mail.acme.test", selector="plixo1",
            spf_include="spf.relay.test", private_key_pem="-", public_key_b64="-",
        )  # fmt: skip
        session.add(row)
    row.checked_at = NOW
    session.commit()
    login(client, seeded, Persona.VIEWER)
    german = client.get("/sending-domain", headers={"Accept-Language": "de-DE"}).text
    assert "last checked 07.10.2025, 14:00" in german and " UTC" not in german
    english = client.get("/sending-domain", headers={"Accept-Language": "en-US"}).text
    assert "last checked Oct 7, 2025, 2:00" in english
