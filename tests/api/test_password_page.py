"""The panel's password page: a form for the same change as ``/api/auth/password`` (CSRF-checked,
the current password required, this session kept, every other one ended), with clear refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from memory.config import Settings
from memory.models import Organisation, Persona
from tests.api.factories import Seeded, password_for, seed_review, settings_for
from tests.api.review_fixtures import csrf_of, login
from tools.admin.sessions import LoginLimiter
from tools.ledger.users import authenticate

NEW = "a-long-new-password"


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


def _submit(client: TestClient, current: str, new: str, confirm: str | None = None) -> str:
    page = client.get("/account/password")
    assert page.status_code == 200 and 'data-testid="password-form"' in page.text
    r = client.post(
        "/account/password",
        data={
            "csrf": csrf_of(page.text),
            "current_password": current,
            "new_password": new,
            "confirm_password": new if confirm is None else confirm,
        },
    )
    return f"{r.status_code} {r.text}"


def test_the_form_changes_the_password_and_ends_other_sessions(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    login(client, seeded, Persona.COLLECTOR)
    assert 'href="/account/password"' in client.get("/queue").text  # reachable from every page
    old = password_for(Persona.COLLECTOR)
    with TestClient(client.app) as other:
        login(other, seeded, Persona.COLLECTOR)

        wrong = _submit(client, "not-my-password", NEW)
        assert wrong.startswith("422") and "The current password is not right" in wrong
        differ = _submit(client, old, NEW, confirm=NEW + "!")
        assert differ.startswith("422") and "The two new passwords differ" in differ
        short = _submit(client, old, "short")
        assert short.startswith("422") and "at least" in short
        session.expire_all()
        assert authenticate(session, seeded.email(Persona.COLLECTOR), old) is not None

        done = _submit(client, old, NEW)
        assert done.startswith("200") and "Password changed." in done
        assert client.get("/api/me").status_code == 200  # the session it was changed from
        assert other.get("/api/me").status_code == 401
    session.expire_all()
    assert authenticate(session, seeded.email(Persona.COLLECTOR), old) is None
    assert authenticate(session, seeded.email(Persona.COLLECTOR), NEW) is not None


def test_the_form_needs_the_csrf_token_and_a_login(client: TestClient, seeded: Seeded) -> None:
    assert client.get("/account/password", follow_redirects=False).status_code in (303, 401)
    login(client, seeded, Persona.VIEWER)
    r = client.post(
        "/account/password",
        data={"current_password": "x", "new_password": NEW, "confirm_password": NEW},
    )
    assert r.status_code == 403
