"""Fuzz the API from its own OpenAPI document (schemathesis): no input may produce a 5xx.

Every operation gets a bounded number of generated requests (``MAX_EXAMPLES``), authenticated as an
Admin (so the guards let the fuzzer through to the handlers) against a seeded ledger; the run stays
well under two minutes. Hypothesis is derandomized so a failure reproduces.
"""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures by name

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from sqlalchemy.orm import Session

from api.app import create_app
from api.routes.auth.endpoints import limiter
from memory import migrate
from memory.db import make_engine, session_factory
from memory.models import Organisation, Persona
from tests.api.factories import NOW, seed_review, settings_for

MAX_EXAMPLES = 25
# Revoking the fuzzer's own token would turn every later request into a 401 (and test nothing).
EXCLUDED = {("DELETE", "/api/auth/token")}


@pytest.fixture(scope="module")
def fuzz_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    engine = make_engine(f"sqlite:///{tmp / 'fuzz.db'}")
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    settings_ = settings_for(str(tmp))
    with sessions() as session:
        org = Organisation(name="Fuzz Org", slug=f"fuzz-{uuid.uuid4().hex[:6]}")
        session.add(org)
        session.commit()
        seeded = seed_review(session, org, settings_, drafts=4)
        headers = seeded.auth(Persona.ADMIN)
    app = create_app(engine, settings_)
    app.state.clock = lambda: NOW
    yield {"app": app, "headers": headers, "sessions": sessions}
    limiter.clear()
    engine.dispose()


def _operations(app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI document has an invalid operation: {result}"
        op = result.ok()
        if (op.method.upper(), op.path) not in EXCLUDED:
            ops.append(op)
    return ops


def test_no_server_errors(fuzz_state: dict[str, Any]) -> None:
    """Every operation, MAX_EXAMPLES generated requests each (schemathesis' own strategies)."""
    failures: list[str] = []
    operations = _operations(fuzz_state["app"])
    assert len(operations) > 30
    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            headers = {**fuzz_state["headers"], **(case.headers or {})}
            try:
                response = case.call(headers=headers)
            except Exception as exc:  # the in-process transport re-raises what would be a 500
                failures.append(
                    f"{case.method} {case.formatted_path} query={case.query} -> raised "
                    f"{type(exc).__name__}: {str(exc)[:200]}"
                )
                return
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )

        run()
    assert failures == [], "\n".join(failures[:20])


def test_the_document_describes_the_review_api(fuzz_state: dict[str, Any]) -> None:
    doc = fuzz_state["app"].openapi()
    paths = doc["paths"]
    for path in (
        "/api/queue",
        "/api/drafts/{draft_id}",
        "/api/drafts/{draft_id}/approve",
        "/api/drafts/{draft_id}/revisions",
        "/api/batches",
        "/api/customers/{customer_id}/account360",
        "/api/customers/{customer_id}/notes",
        "/api/customers/{customer_id}/nudges",
        "/api/outbox",
        "/api/sending-modes",
        "/api/auth/token",
        "/api/slack/interactivity",
    ):
        assert path in paths, path
    approve = paths["/api/drafts/{draft_id}/approve"]["post"]
    assert {"404", "409", "422"} <= set(approve["responses"])
    with fuzz_state["sessions"]() as session:
        assert isinstance(session, Session)
