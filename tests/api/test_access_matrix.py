"""Every persona × every route, generated from the app's own routes (new routes are covered).

Each route either names its permission through ``api.deps.require`` (read here from the route's
dependency tree), or is listed below as public (its own authentication: a portal token, a webhook
or Slack signature, the log-in itself) or as open to any logged-in user. A route in none of these
fails the test, so nobody can add an unguarded route by accident. Then every persona calls every
guarded route: those the matrix (policies/access.yaml) denies get exactly 403, the others never
get 401 or 403; anonymous callers get 401 (or, for pages, the log-in redirect).
"""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures by name

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from memory.models import Persona
from policies.access import allowed
from tests.api.factories import Seeded
from tests.api.review_fixtures import app, client, seeded, settings  # noqa: F401 - fixtures

# Authenticated by something other than a plixo session: log-in, portal tokens, signatures.
PUBLIC_PREFIXES = ("/portal/", "/pay/", "/invitations/")
PUBLIC = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("POST", "/api/auth/token"),
    ("POST", "/api/slack/interactivity"),
    ("POST", "/webhooks/stripe"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
# Any logged-in user, whatever the persona: about themselves only.
ANY_USER = {
    ("GET", "/api/me"),
    ("DELETE", "/api/auth/token"),
    ("GET", "/api/auth/tokens"),
    ("POST", "/api/auth/tokens"),
    ("DELETE", "/api/auth/tokens/{token_id}"),
    ("POST", "/api/auth/password"),
    ("GET", "/account/password"),
    ("POST", "/account/password"),
}

UNKNOWN_ID = "999999"


def _permissions(dependant: Any) -> set[str]:
    found: set[str] = set()
    for sub in dependant.dependencies:
        perm = getattr(sub.call, "permission", None)
        if perm:
            found.add(perm)
        found |= _permissions(sub)
    return found


def routes(app: FastAPI) -> list[tuple[str, str, str | None]]:
    """(method, path, permission) for every HTTP route of the app."""
    out: list[tuple[str, str, str | None]] = []
    for rc in iter_route_contexts(app.routes):
        path, methods = getattr(rc, "path", None), getattr(rc, "methods", None)
        dependant = getattr(rc, "dependant", None)
        if not path or not methods:
            continue  # mounts (static files)
        perms = _permissions(dependant) if dependant is not None else set()
        assert len(perms) <= 1, f"{path} names several permissions {perms}; use one"
        for method in sorted(methods - {"HEAD"}):
            out.append((method, path, next(iter(perms), None)))
    return out


def _fill(path: str, seeded: Seeded) -> str:
    known = {
        "draft_id": str(seeded.drafts[0].id),
        "customer_id": str(seeded.customers[0].id),
        "segment_id": str(seeded.segment.id),
        "action": "kept",
        "table": "aging",
        "seq": "1",
        "token": "not-a-token",
        "org_slug": seeded.org.slug,
        "invoice_number": seeded.invoices[0].number,
    }
    return re.sub(r"\{(\w+)\}", lambda m: known.get(m.group(1), UNKNOWN_ID), path)


def test_every_route_is_guarded_or_deliberately_public(app: FastAPI) -> None:  # noqa: F811
    table = routes(app)
    assert len(table) > 40
    unguarded = [
        (m, p)
        for m, p, perm in table
        if perm is None
        and (m, p) not in PUBLIC
        and (m, p) not in ANY_USER
        and not p.startswith(PUBLIC_PREFIXES)
    ]
    assert unguarded == [], f"routes without a permission: {unguarded}"
    guarded = {(m, p): perm for m, p, perm in table if perm}
    assert guarded[("POST", "/api/drafts/{draft_id}/approve")] == "approve_draft"
    assert guarded[("POST", "/api/batches")] == "batch_approve"
    assert guarded[("PUT", "/api/sending-modes")] == "set_sending_mode"
    assert guarded[("POST", "/drafts/{draft_id}/approve")] == "approve_draft"


@pytest.mark.parametrize("role", list(Persona), ids=lambda r: r.name.lower())
def test_persona_against_every_route(
    app: FastAPI,  # noqa: F811
    client: TestClient,  # noqa: F811
    seeded: Seeded,  # noqa: F811
    role: Persona,
) -> None:
    headers = seeded.auth(role)
    failures: list[str] = []
    checked = 0
    for method, path, perm in routes(app):
        if perm is None:
            continue
        url = _fill(path, seeded)
        r = client.request(method, url, headers=headers, json={} if method != "GET" else None)
        checked += 1
        if r.status_code >= 500:
            failures.append(f"{method} {url}: {r.status_code} {r.text[:200]}")
        elif not allowed(role.value, perm):
            if r.status_code != 403:
                failures.append(
                    f"{method} {url}: {role.value} lacks {perm} but got {r.status_code}"
                )
        elif r.status_code in (401, 403):
            failures.append(
                f"{method} {url}: {role.value} holds {perm} but got {r.status_code} {r.text[:200]}"
            )
    assert checked > 40
    assert failures == [], "\n".join(failures)


def test_anonymous_callers(app: FastAPI, client: TestClient, seeded: Seeded) -> None:  # noqa: F811
    failures: list[str] = []
    for method, path, perm in routes(app):
        url = _fill(path, seeded)
        r = client.request(
            method, url, json={} if method != "GET" else None, follow_redirects=False
        )
        if r.status_code >= 500:
            failures.append(f"{method} {url}: {r.status_code}")
        elif perm is not None or (method, path) in ANY_USER:
            page_get = method == "GET" and not path.startswith("/api/")
            ok = (
                r.status_code == 303 and r.headers["location"].startswith("/login")
                if page_get
                else r.status_code == 401
            )
            if not ok:
                failures.append(f"{method} {url}: anonymous got {r.status_code}")
    assert failures == [], "\n".join(failures)
