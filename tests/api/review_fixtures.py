"""Fixtures for the review API tests, imported explicitly by those modules (not a conftest, so other
areas' tests in tests/api are unaffected)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from memory.config import Settings
from memory.models import Organisation, Persona
from tests.api.factories import NOW, Seeded, password_for, seed_review, settings_for


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(str(tmp_path))


@pytest.fixture
def seeded(session: Session, org: Organisation, settings: Settings) -> Seeded:
    return seed_review(session, org, settings, drafts=3)


@pytest.fixture
def app(engine: Engine, settings: Settings) -> FastAPI:
    application = create_app(engine, settings)
    application.state.clock = lambda: NOW
    return application


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def login(client: TestClient, seeded: Seeded, role: Persona) -> None:
    """Log in through the form, as a browser would."""
    page = client.get("/login")
    r = client.post(
        "/login",
        data={
            "csrf": csrf_of(page.text),
            "email": seeded.email(role),
            "password": password_for(role),
            "next": "/",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


class LiveServer:
    """The app under uvicorn on a free loopback port, in a thread (for browsers and races)."""

    def __init__(self, app: FastAPI) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live(app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server
