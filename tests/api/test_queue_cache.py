"""The review queue's page cache: served while the queue is unchanged, never staler than the ledger,
never shared across organisations or personal filters, and never a way around authentication."""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures by name

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.queue_cache import QueuePageCache
from memory.config import Settings
from memory.models import Draft, DraftStatus, Invoice, Organisation, Persona, User
from tests.api.factories import Seeded, seed_review
from tests.api.review_fixtures import (  # noqa: F401 - fixtures
    app,
    client,
    login,
    seeded,
    settings,
)
from tools.ledger.users import issue_api_token


def _cache(app: FastAPI) -> QueuePageCache:
    cache: QueuePageCache = app.state.queue_cache
    return cache


def test_a_page_is_served_from_the_cache_until_the_queue_changes(
    app: FastAPI, client: TestClient, seeded: Seeded
) -> None:
    auth = seeded.auth(Persona.COLLECTOR)
    cache = _cache(app)
    first = client.get("/api/queue", headers=auth)
    assert first.status_code == 200 and first.json()["total"] == 3
    assert (cache.hits, cache.builds) == (0, 1)
    again = client.get("/api/queue", headers=auth)
    assert again.content == first.content
    assert again.headers["content-type"] == "application/json"
    assert (cache.hits, cache.builds) == (1, 1)

    draft = first.json()["items"][0]
    r = client.post(
        f"/api/drafts/{draft['id']}/approve", json={"version": draft["version"]}, headers=auth
    )
    assert r.status_code == 200, r.text
    after = client.get("/api/queue", headers=auth).json()
    assert after["total"] == 2
    assert draft["id"] not in [i["id"] for i in after["items"]]


def test_changes_made_elsewhere_are_seen_at_once(
    client: TestClient, seeded: Seeded, sessions: sessionmaker[Session]
) -> None:
    """Another worker, Autopilot or a payment webhook writes through its own session."""
    auth = seeded.auth(Persona.COLLECTOR)
    page = client.get("/api/queue", headers=auth).json()
    client.get("/api/queue", headers=auth)  # now cached
    first = page["items"][0]
    with sessions() as other:
        invoice = other.scalars(
            select(Invoice).where(Invoice.number == first["invoice_number"])
        ).one()
        invoice.balance_minor = 45_600
        other.commit()
    fresh = client.get("/api/queue", headers=auth).json()
    assert fresh["items"][0]["balance_minor"] == 45_600
    with sessions() as other:
        draft = other.get(Draft, first["id"])
        assert draft is not None
        draft.status = DraftStatus.REJECTED
        other.commit()
    assert client.get("/api/queue", headers=auth).json()["total"] == 2


def test_a_cached_page_never_outlives_the_token_or_the_user(
    client: TestClient, seeded: Seeded, sessions: sessionmaker[Session]
) -> None:
    auth = seeded.auth(Persona.COLLECTOR)
    assert client.get("/api/queue", headers=auth).status_code == 200
    assert client.get("/api/queue", headers=auth).status_code == 200  # cached
    with sessions() as s:
        user = s.get(User, seeded.users[Persona.COLLECTOR].id)
        assert user is not None
        new_token = issue_api_token(s, user)  # the old token stops working
        s.commit()
    r = client.get("/api/queue", headers=auth)
    assert r.status_code == 401 and "unknown or revoked" in r.json()["detail"]
    fresh = {"Authorization": f"Bearer {new_token}"}
    assert client.get("/api/queue", headers=fresh).status_code == 200
    with sessions() as s:
        user = s.get(User, seeded.users[Persona.COLLECTOR].id)
        assert user is not None
        user.active = False
        s.commit()
    assert client.get("/api/queue", headers=fresh).status_code == 401
    for bad in ("Bearer", "Basic abc", "Bearer  "):
        r = client.get("/api/queue", headers={"Authorization": bad})
        assert r.status_code == 401, bad


def test_personal_pages_are_never_shared(client: TestClient, seeded: Seeded) -> None:
    """``mine`` depends on who asks: Sales owns the three customers, the CSM none."""
    for _ in range(2):  # the second round is served from the cache
        for query in ("mine=true", "%6Dine=true", "limit=50&mine=1"):
            sales = client.get(f"/api/queue?{query}", headers=seeded.auth(Persona.SALES))
            csm = client.get(f"/api/queue?{query}", headers=seeded.auth(Persona.CSM))
            assert sales.json()["total"] == 3, query
            assert csm.json()["total"] == 0, query


def test_organisations_never_share_pages(
    client: TestClient, seeded: Seeded, session: Session, settings: Settings
) -> None:
    other_org = Organisation(name="Globex Ltd", slug="globex-ltd")
    session.add(other_org)
    session.commit()
    other = seed_review(session, other_org, settings, drafts=2)
    for _ in range(2):
        ours = client.get("/api/queue", headers=seeded.auth(Persona.COLLECTOR)).json()
        theirs = client.get("/api/queue", headers=other.auth(Persona.COLLECTOR)).json()
        assert ours["total"] == 3 and theirs["total"] == 2
        assert {i["customer_id"] for i in ours["items"]}.isdisjoint(
            {i["customer_id"] for i in theirs["items"]}
        )


def test_invalid_queries_are_refused_every_time_and_never_cached(
    app: FastAPI, client: TestClient, seeded: Seeded
) -> None:
    auth = seeded.auth(Persona.COLLECTOR)
    for query in ("limit=0", "status=nonsense", "offset=-1", "segment_id=abc"):
        for _ in range(2):
            r = client.get(f"/api/queue?{query}", headers=auth)
            assert r.status_code == 422, (query, r.text)
    assert len(_cache(app)) == 0


def test_browser_sessions_get_the_same_page(client: TestClient, seeded: Seeded) -> None:
    by_token = client.get("/api/queue", headers=seeded.auth(Persona.COLLECTOR))
    login(client, seeded, Persona.COLLECTOR)
    by_cookie = client.get("/api/queue")
    assert by_cookie.status_code == 200
    assert by_cookie.content == by_token.content


def _inbox_badge(html: str) -> str | None:
    """The header's unread count as the person sees it (None: no badge, nothing unread)."""
    match = re.search(
        r'data-testid="inbox-count"[^>]*>Inbox(?: <span class="badge warn">(\d+)<)?', html
    )
    assert match, "no inbox link in the header"
    return match.group(1)


def test_the_header_count_is_fresh_while_the_queue_is_served_from_the_cache(
    app: FastAPI, client: TestClient, seeded: Seeded, sessions: sessionmaker[Session]
) -> None:
    """A notification does not change the queue (no new version), so cached queue pages stay
    cached; the header's unread count is the caller's own and is read per request, never taken
    from a cached page."""
    from tools.inbox import notifications

    collector = seeded.users[Persona.COLLECTOR]
    auth = seeded.auth(Persona.COLLECTOR)
    cache = _cache(app)
    login(client, seeded, Persona.COLLECTOR)
    for path in ("/queue", "/"):
        assert _inbox_badge(client.get(path).text) is None, path
    cached = client.get("/api/queue", headers=auth)
    assert client.get("/api/queue", headers=auth).content == cached.content
    hits, builds = cache.hits, cache.builds
    assert hits >= 1

    with sessions() as other:  # the mention arrives through another worker's session
        made = notifications.notify(
            other, seeded.org.id, [collector.id], "mention", "You were mentioned", key="n-1"
        )
        other.commit()
    assert len(made) == 1
    for path in ("/queue", "/", "/queue?status=pending_review"):
        assert _inbox_badge(client.get(path).text) == "1", path
    # ... and the queue itself is still served from the cache, for tokens and cookies alike
    assert client.get("/api/queue", headers=auth).content == cached.content
    assert client.get("/api/queue").content == cached.content
    assert cache.builds == builds and cache.hits == hits + 2

    with sessions() as other:
        notifications.notify(other, seeded.org.id, [collector.id], "mention", "Again", key="n-2")
        other.commit()
    assert _inbox_badge(client.get("/queue").text) == "2"
    assert client.get("/api/queue", headers=auth).content == cached.content
    assert cache.builds == builds
