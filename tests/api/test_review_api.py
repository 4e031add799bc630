"""The review API end to end over HTTP: flows, and bad input answered with a clear 4xx that changes
nothing (malformed JSON, oversized bodies, foreign ids, stale versions, expired sessions, CSRF)."""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures by name

from __future__ import annotations

import html
import json
import threading
import time
from base64 import b64encode
from collections.abc import Iterator

import httpx
import itsdangerous
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import (
    AuditEvent,
    Draft,
    DraftStatus,
    Note,
    Organisation,
    OutboxMessage,
    Persona,
)
from tests.api.factories import Seeded, seed_review
from tests.api.review_fixtures import (  # noqa: F401 - fixtures
    LiveServer,
    app,
    client,
    csrf_of,
    live,
    login,
    seeded,
    settings,
)


def _outbox_count(session: Session) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


# --- flows --------------------------------------------------------------------------------------


def test_queue_lists_pending_drafts_with_their_reasons(client: TestClient, seeded: Seeded) -> None:
    r = client.get("/api/queue", headers=seeded.auth(Persona.COLLECTOR))
    assert r.status_code == 200
    page = r.json()
    assert page["total"] == 3
    item = page["items"][0]
    assert item["status"] == "pending_review" and item["segment"] == "Mid-market"
    assert item["balance_minor"] == 120_000 and item["currency"] == "USD"
    assert any("Shadow Mode" in reason for reason in item["reasons"])
    assert (
        client.get("/api/queue?status=sent", headers=seeded.auth(Persona.COLLECTOR)).json()["total"]
        == 0
    )
    assert client.get("/api/queue?mine=true", headers=seeded.auth(Persona.CSM)).json()["total"] == 0
    assert (
        client.get("/api/queue?mine=true", headers=seeded.auth(Persona.SALES)).json()["total"] == 3
    )


def test_collector_approves_and_one_message_is_queued(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    d = seeded.drafts[0]
    h = seeded.auth(Persona.COLLECTOR)
    view = client.get(f"/api/drafts/{d.id}", headers=h).json()
    assert view["actions"] == {"approve": True, "edit": True, "reject": True, "revise": True}
    assert view["reasons"][0]["rule_id"] == "shadow.review_required"
    r = client.post(f"/api/drafts/{d.id}/approve", headers=h, json={"version": view["version"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued" and r.json()["outcome"] == "allow"
    assert _outbox_count(session) == 1
    out = client.get("/api/outbox", headers=h).json()
    assert [m["draft_id"] for m in out] == [d.id] and out[0]["status"] == "queued"
    # approving again with the version that was loaded: a conflict, still one message
    again = client.post(f"/api/drafts/{d.id}/approve", headers=h, json={"version": view["version"]})
    assert again.status_code == 409 and "changed since you loaded it" in again.json()["detail"]
    assert _outbox_count(session) == 1


def test_sales_sees_no_approve_action_and_the_api_refuses(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    d = seeded.drafts[0]
    h = seeded.auth(Persona.SALES)
    view = client.get(f"/api/drafts/{d.id}", headers=h).json()
    assert view["actions"] == {"approve": False, "edit": False, "reject": False, "revise": False}
    r = client.post(f"/api/drafts/{d.id}/approve", headers=h, json={"version": view["version"]})
    assert r.status_code == 403
    assert r.json()["detail"] == "Sales may not approve a draft in Shadow Mode review."
    assert _outbox_count(session) == 0


def test_revision_adds_turns_and_is_rechecked(client: TestClient, seeded: Seeded) -> None:
    d = seeded.drafts[1]
    h = seeded.auth(Persona.COLLECTOR)
    r = client.post(
        f"/api/drafts/{d.id}/revisions", headers=h, json={"version": 1, "instruction": "shorter"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert [(t["author"], t["instruction"]) for t in body["revisions"]][-2:] == [
        ("operator", "shorter"),
        ("copilot", None),
    ]
    assert body["revisions"][-1]["outcome"] in ("needs_approval", "block")
    assert body["version"] > 1
    stale = client.post(
        f"/api/drafts/{d.id}/revisions", headers=h, json={"version": 1, "instruction": "formal"}
    )
    assert stale.status_code == 409
    listed = client.get(f"/api/drafts/{d.id}/revisions", headers=h).json()
    assert len(listed) == len(body["revisions"])


def test_edit_with_a_wrong_figure_is_blocked_and_kept_as_a_turn(
    client: TestClient, seeded: Seeded
) -> None:
    d = seeded.drafts[0]
    h = seeded.auth(Persona.COLLECTOR)
    r = client.post(
        f"/api/drafts/{d.id}/edit",
        headers=h,
        json={"version": 1, "subject": d.subject, "body": d.body.replace("$1,200.00", "$12.00")},
    )
    assert r.status_code == 200
    assert r.json()["status"] == "blocked"
    assert r.json()["grounding"]["mismatches"]
    assert r.json()["revisions"][-1]["author"] == "editor"


def test_reject_needs_a_reason_and_keeps_it(client: TestClient, seeded: Seeded) -> None:
    d = seeded.drafts[2]
    h = seeded.auth(Persona.COLLECTIONS_MANAGER)
    assert (
        client.post(f"/api/drafts/{d.id}/reject", headers=h, json={"version": 1}).status_code == 422
    )
    blank = client.post(f"/api/drafts/{d.id}/reject", headers=h, json={"version": 1, "reason": " "})
    assert blank.status_code == 422 and "reason" in blank.json()["detail"]
    ok = client.post(
        f"/api/drafts/{d.id}/reject", headers=h, json={"version": 1, "reason": "Wrong contact"}
    )
    assert ok.status_code == 200 and ok.json()["rejection_reason"] == "Wrong contact"


def test_batch_api_for_managers_only(client: TestClient, seeded: Seeded, session: Session) -> None:
    groups = client.get("/api/batches", headers=seeded.auth(Persona.COLLECTIONS_MANAGER)).json()
    items = [
        {"draft_id": i["draft_id"], "version": i["version"]} for g in groups for i in g["items"]
    ]
    assert len(items) == 3
    assert (
        client.post(
            "/api/batches",
            headers=seeded.auth(Persona.COLLECTOR),
            json={"action": "approve", "items": items},
        ).status_code
        == 403
    )
    r = client.post(
        "/api/batches",
        headers=seeded.auth(Persona.COLLECTIONS_MANAGER),
        json={"action": "approve", "items": items},
    )
    assert r.status_code == 200 and r.json()["done"] == 3
    assert _outbox_count(session) == 3
    dup = client.post(
        "/api/batches",
        headers=seeded.auth(Persona.COLLECTIONS_MANAGER),
        json={"action": "approve", "items": [items[0], items[0]]},
    )
    assert dup.status_code == 422


def test_account360_notes_and_nudges(client: TestClient, seeded: Seeded, session: Session) -> None:
    customer = seeded.customers[0]
    h = seeded.auth(Persona.SALES)
    a360 = client.get(f"/api/customers/{customer.id}/account360", headers=h).json()
    assert a360["customer"]["name"] == customer.name
    assert [i["number"] for i in a360["open_invoices"]] == [seeded.invoices[0].number]
    collector_handle = seeded.email(Persona.COLLECTOR).split("@")[0]
    note = client.post(
        f"/api/customers/{customer.id}/notes",
        headers=h,
        json={"body": f"Renewal call next week, @{collector_handle} please hold off"},
    )
    assert note.status_code == 201
    assert note.json()["mentions"] == [seeded.users[Persona.COLLECTOR].id]
    assert (
        client.get(f"/api/customers/{customer.id}/notes", headers=h).json()[0]["id"]
        == note.json()["id"]
    )
    templates = client.get("/api/nudges/templates", headers=h).json()
    assert {"friendly_check_in", "pay_link_resend"} <= {t["id"] for t in templates}
    nudge = client.post(
        f"/api/customers/{customer.id}/nudges", headers=h, json={"template_id": "friendly_check_in"}
    )
    assert nudge.status_code == 201, nudge.text
    assert nudge.json()["status"] == "queued" and nudge.json()["notified"]
    assert (
        client.post(
            f"/api/customers/{customer.id}/nudges",
            headers=seeded.auth(Persona.VIEWER),
            json={"template_id": "friendly_check_in"},
        ).status_code
        == 403
    )
    bad = client.post(
        f"/api/customers/{customer.id}/nudges", headers=h, json={"template_id": "nope"}
    )
    assert bad.status_code == 422 and "Unknown nudge template" in bad.json()["detail"]


def test_sending_modes_api(client: TestClient, seeded: Seeded, session: Session) -> None:
    assert (
        client.get("/api/sending-modes", headers=seeded.auth(Persona.VIEWER)).json()["shadow_mode"]
        is True
    )
    body = {"switch": "maintenance", "value": True}
    assert (
        client.put(
            "/api/sending-modes", headers=seeded.auth(Persona.COLLECTOR), json=body
        ).status_code
        == 403
    )
    r = client.put("/api/sending-modes", headers=seeded.auth(Persona.CONTROLLER), json=body)
    assert r.status_code == 200 and r.json()["maintenance"] is True
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "sending_mode.changed")
    ).one()
    assert (event.from_state, event.to_state) == ("off", "on")
    seg = client.put(
        f"/api/segments/{seeded.segment.id}/sending-modes",
        headers=seeded.auth(Persona.CONTROLLER),
        json={"switch": "autopilot", "value": True},
    )
    assert seg.status_code == 403 and "Data-Ready" in seg.json()["detail"]


def test_tokens_and_me(client: TestClient, seeded: Seeded) -> None:
    email = seeded.email(Persona.COLLECTOR)
    bad = client.post("/api/auth/token", json={"email": email, "password": "wrong"})
    assert bad.status_code == 401
    r = client.post("/api/auth/token", json={"email": email, "password": "pw-collector"})
    assert r.status_code == 200
    token = r.json()["token"]
    me = client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["role"] == "Collector" and "approve_draft" in me["permissions"]
    # the old token of the fixture stopped working when a new one was issued
    old = client.get("/api/me", headers=seeded.auth(Persona.COLLECTOR))
    assert old.status_code == 401
    assert (
        client.delete("/api/auth/token", headers={"Authorization": f"Bearer {token}"}).status_code
        == 204
    )
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/api/me", headers={"Authorization": "Basic abc"}).status_code == 401


def test_password_guessing_is_throttled(client: TestClient, seeded: Seeded) -> None:
    from api.routes.auth.endpoints import limiter

    email = seeded.email(Persona.VIEWER)
    limiter.clear()
    try:
        codes = [
            client.post(
                "/api/auth/token", json={"email": email, "password": f"guess{i}"}
            ).status_code
            for i in range(11)
        ]
        assert codes[:10] == [401] * 10 and codes[10] == 429
        right = client.post("/api/auth/token", json={"email": email, "password": "pw-viewer"})
        assert right.status_code == 429  # even the right password waits out the window
    finally:
        limiter.clear()


# --- bad input ----------------------------------------------------------------------------------


def test_malformed_json_is_a_clear_422_and_changes_nothing(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    d = seeded.drafts[0]
    h = {**seeded.auth(Persona.COLLECTOR), "Content-Type": "application/json"}
    r = client.post(f"/api/drafts/{d.id}/approve", headers=h, content=b'{"version": 1')
    assert r.status_code == 422
    assert "not valid JSON" in r.json()["detail"]
    for body in (b"[]", b'{"version": "one"}', b'{"version": 1, "extra": true}', b"null"):
        assert (
            client.post(f"/api/drafts/{d.id}/approve", headers=h, content=body).status_code == 422
        )
    assert _outbox_count(session) == 0
    assert session.get(Draft, d.id).status is DraftStatus.PENDING_REVIEW  # type: ignore[union-attr]


def test_oversized_bodies_are_refused_declared_or_streamed(
    client: TestClient, seeded: Seeded
) -> None:
    d = seeded.drafts[0]
    h = {**seeded.auth(Persona.COLLECTOR), "Content-Type": "application/json"}
    big = json.dumps({"version": 1, "subject": "x", "body": "y" * (2 * 1024 * 1024)}).encode()
    r = client.post(f"/api/drafts/{d.id}/edit", headers=h, content=big)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as it streams
        yield b'{"version": 1, "subject": "x", "body": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    streamed = client.post(f"/api/drafts/{d.id}/edit", headers=h, content=chunks())
    assert streamed.status_code == 413


def test_unknown_and_foreign_ids_are_404(
    client: TestClient, seeded: Seeded, session: Session, settings: Settings
) -> None:
    other_org = Organisation(name="Other Org", slug="other-org-api")
    session.add(other_org)
    session.commit()
    other = seed_review(session, other_org, settings, drafts=1)
    foreign_draft, foreign_customer = other.drafts[0], other.customers[0]
    h = seeded.auth(Persona.ADMIN)
    for method, url, body in [
        ("GET", f"/api/drafts/{foreign_draft.id}", None),
        ("GET", "/api/drafts/999999", None),
        ("POST", f"/api/drafts/{foreign_draft.id}/approve", {"version": 1}),
        ("POST", f"/api/drafts/{foreign_draft.id}/reject", {"version": 1, "reason": "x"}),
        ("POST", f"/api/drafts/{foreign_draft.id}/revisions", {"version": 1, "instruction": "x"}),
        ("GET", f"/api/customers/{foreign_customer.id}/account360", None),
        ("GET", f"/api/customers/{foreign_customer.id}/notes", None),
        ("POST", f"/api/customers/{foreign_customer.id}/notes", {"body": "hi"}),
        (
            "POST",
            f"/api/customers/{foreign_customer.id}/nudges",
            {"template_id": "pay_link_resend"},
        ),
        (
            "PUT",
            f"/api/segments/{other.segment.id}/sending-modes",
            {"switch": "shadow_mode", "value": False},
        ),
    ]:
        r = client.request(method, url, headers=h, json=body)
        assert r.status_code == 404, (url, r.status_code, r.text)
    assert client.get("/api/drafts/0", headers=h).status_code == 422
    assert client.get("/api/drafts/99999999999999", headers=h).status_code == 422
    session.expire_all()
    assert session.get(Draft, foreign_draft.id).status is DraftStatus.PENDING_REVIEW  # type: ignore[union-attr]
    assert session.scalar(select(func.count()).select_from(Note)) == 0


def _expired_cookie(settings: Settings, data: dict[str, object]) -> str:
    class Past(itsdangerous.TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 9 * 3600

    payload = b64encode(json.dumps(data).encode())
    return Past(settings.secret_key.get_secret_value()).sign(payload).decode()


def test_expired_sessions_get_401_or_the_login_page(
    client: TestClient, seeded: Seeded, settings: Settings, session: Session
) -> None:
    user = seeded.users[Persona.COLLECTOR]
    cookie = _expired_cookie(settings, {"user_id": user.id, "org_id": user.org_id, "csrf": "t"})
    client.cookies.set("plixo_session", cookie)
    api = client.get("/api/queue")
    assert (
        api.status_code == 401 and api.json()["detail"] == "Your session has expired; log in again."
    )
    page = client.get("/queue", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/queue&expired=1"
    post = client.post(
        f"/drafts/{seeded.drafts[0].id}/approve",
        data={"csrf": "t", "version": "1"},
        follow_redirects=False,
    )
    assert post.status_code == 401
    assert _outbox_count(session) == 0
    # a live session works, and logging out ends it
    client.cookies.clear()
    login(client, seeded, Persona.COLLECTOR)
    assert client.get("/api/queue").status_code == 200
    home = client.get("/")
    client.post("/logout", data={"csrf": csrf_of(home.text)})
    assert client.get("/api/queue").status_code == 401


def test_form_posts_need_the_csrf_token(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    login(client, seeded, Persona.COLLECTOR)
    d = seeded.drafts[0]
    r = client.post(f"/drafts/{d.id}/approve", data={"version": "1"}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post(
        f"/drafts/{d.id}/approve", data={"version": "1", "csrf": "forged"}, follow_redirects=False
    )
    assert r.status_code == 403
    assert _outbox_count(session) == 0
    page = client.get(f"/drafts/{d.id}")
    ok = client.post(
        f"/drafts/{d.id}/approve",
        data={"version": "1", "csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    assert _outbox_count(session) == 1


def test_stale_form_post_comes_back_with_the_reason(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    login(client, seeded, Persona.COLLECTOR)
    d = seeded.drafts[0]
    page = client.get(f"/drafts/{d.id}")
    token = csrf_of(page.text)
    client.post(
        f"/drafts/{d.id}/edit",
        data={"csrf": token, "version": "1", "subject": d.subject + "!", "body": d.body},
    )
    r = client.post(f"/drafts/{d.id}/approve", data={"csrf": token, "version": "1"})
    assert r.status_code == 200  # redirected back to the draft
    assert "changed since you loaded it" in r.text
    assert _outbox_count(session) == 0


def test_concurrent_edits_second_gets_a_conflict(
    live: LiveServer, seeded: Seeded, session: Session
) -> None:
    """Eight simultaneous edits of version 1 over real HTTP: exactly one wins, the rest get 409."""
    d = seeded.drafts[0]
    h = seeded.auth(Persona.COLLECTOR)
    barrier = threading.Barrier(8)
    codes: list[int] = []

    def edit(i: int) -> None:
        with httpx.Client(base_url=live.url, timeout=30) as c:
            barrier.wait(timeout=30)
            r = c.post(
                f"/api/drafts/{d.id}/edit",
                headers=h,
                json={"version": 1, "subject": f"Edit {i}: {d.subject}", "body": d.body},
            )
            codes.append(r.status_code)

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(codes) == [200] + [409] * 7, codes
    session.expire_all()
    row = session.get(Draft, d.id)
    assert row is not None and row.subject.startswith("Edit ")
    edits = session.scalar(
        select(func.count()).where(
            AuditEvent.action == "draft.edited", AuditEvent.subject_id == d.id
        )
    )
    assert edits == 1


def test_an_uncertain_delivery_is_shown_and_resolved_by_a_manager_only(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    from tools.delivery import outbox

    d = seeded.drafts[0]
    h = seeded.auth(Persona.COLLECTOR)
    view = client.get(f"/api/drafts/{d.id}", headers=h).json()
    assert client.post(f"/api/drafts/{d.id}/approve", headers=h, json={"version": view["version"]})
    row = session.scalars(select(OutboxMessage)).one()
    # a worker recorded its attempt and died before recording the outcome
    assert isinstance(outbox.begin_attempt(session, row.id, executor="dead"), outbox.Attempt)
    assert outbox.begin_attempt(session, row.id, executor="alive") == outbox.SKIP_UNCERTAIN
    listed = client.get("/api/outbox?status=uncertain", headers=h).json()
    assert [m["message_id"] for m in listed] == [row.message_id]
    refused = client.post(
        f"/api/outbox/{row.id}/resolve", headers=h, json={"action": "confirm_sent"}
    )
    assert refused.status_code == 403
    manager = seeded.auth(Persona.COLLECTIONS_MANAGER)
    bad = client.post(f"/api/outbox/{row.id}/resolve", headers=manager, json={"action": "send"})
    assert bad.status_code == 422
    login(client, seeded, Persona.COLLECTIONS_MANAGER)
    page = client.get("/outbox")
    assert (
        'status-uncertain">Delivery uncertain</span>' in page.text
        and html.escape(row.message_id) in page.text
    )
    assert 'value="confirm_sent"' in page.text
    ok = client.post(
        f"/api/outbox/{row.id}/resolve", headers=manager, json={"action": "confirm_sent"}
    )
    assert ok.status_code == 200 and ok.json()["status"] == "sent"
    again = client.post(f"/api/outbox/{row.id}/resolve", headers=manager, json={"action": "resend"})
    assert again.status_code == 409
    session.expire_all()
    assert session.get(Draft, d.id).status is DraftStatus.SENT  # type: ignore[union-attr]
    audited = session.scalar(select(func.count()).where(AuditEvent.action == "outbox.confirm_sent"))
    assert audited == 1


@pytest.mark.parametrize("path", ["/", "/queue", "/batch", "/outbox", "/sending-modes"])
def test_pages_render_for_a_manager(client: TestClient, seeded: Seeded, path: str) -> None:
    login(client, seeded, Persona.COLLECTIONS_MANAGER)
    r = client.get(path)
    assert r.status_code == 200
    assert "Collections Manager" in r.text


def test_requests_never_hold_more_sessions_than_the_pool_has_connections(db_url: str) -> None:
    """``get_db`` hands out at most as many sessions as the pool has connections; the others wait
    on the event loop (not in a worker thread, where waiting for a connection that only a queued
    request could return is a deadlock)."""
    import asyncio
    from types import SimpleNamespace

    from api.deps import get_db, pool_capacity
    from memory.db import make_engine, session_factory

    engine = make_engine(db_url, pool_size=2, max_overflow=1)
    assert pool_capacity(engine) == 3
    app_ = SimpleNamespace(state=SimpleNamespace(engine=engine, sessions=session_factory(engine)))
    peak = active = 0

    async def request() -> None:
        nonlocal peak, active
        gen = get_db(SimpleNamespace(app=app_))  # type: ignore[arg-type]
        await gen.__anext__()
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        await gen.aclose()

    async def main() -> None:
        await asyncio.gather(*(request() for _ in range(12)))

    asyncio.run(main())
    engine.dispose()
    assert peak == 3


def test_the_reviewer_notes_are_in_the_inspector_and_never_in_the_message(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    """A consolidated draft's notes (what was left out, why it speaks as a final notice) are
    shown to the Shadow Mode reviewer in the inspector, in words; drafts without notes show none."""
    d = seeded.drafts[0]
    notes = [
        "C-204 is left out: in dispute (pricing, open).",
        "Final-notice wording: C-101 has reached the final-notice step of the cadence; the other "
        "invoices are listed without it.",
    ]
    d.stated_facts = {**(d.stated_facts or {}), "reviewer_notes": notes}
    session.commit()
    h = seeded.auth(Persona.COLLECTOR)
    assert client.get(f"/api/drafts/{d.id}", headers=h).json()["reviewer_notes"] == notes
    assert (
        client.get(f"/api/drafts/{seeded.drafts[1].id}", headers=h).json()["reviewer_notes"] == []
    )
    login(client, seeded, Persona.COLLECTOR)
    page = client.get(f"/drafts/{d.id}").text
    inspector = page[page.index('data-testid="inspector"') :]
    section = inspector[inspector.index('data-testid="reviewer-notes"') :]
    section = html.unescape(section[: section.index("</section>")])
    assert "For the reviewer" in section
    for note in notes:
        assert f"<li>{note}</li>" in section
    body_start = page.index('data-testid="draft-body"')
    assert "left out" not in page[body_start : page.index("</pre>", body_start)]
    other = client.get(f"/drafts/{seeded.drafts[1].id}").text
    assert 'data-testid="reviewer-notes"' not in other


def test_outbox_and_draft_page_show_names_and_times_in_the_readers_locale(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    """The outbox names a Slack notification's person (not their Slack user id) and writes its
    sent time in the reader's locale on the organisation's clock (New York: 18:00 UTC is 14:00);
    the draft page's turn times likewise, never a bare UTC "18:00"."""
    from datetime import UTC, datetime

    from memory.models import DraftRevision, OutboxStatus
    from tools.delivery import outbox

    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    manager.slack_user_id = "U07PLIXO42"
    row = outbox.enqueue_slack(
        session, seeded.org.id, slack_user_id="U07PLIXO42", subject="Approval waiting",
        text="*Approval waiting*", idempotency_key="notification:1:slack",
    )  # fmt: skip
    row.status, row.sent_at = OutboxStatus.SENT, datetime(2025, 10, 7, 18, 0, tzinfo=UTC)
    d = seeded.drafts[0]
    session.add(
        DraftRevision(
            draft_id=d.id,
            seq=99,
            author="copilot",
            instruction="Shorter please",
            subject="Shorter",
            body="A shorter reminder.",
            created_at=datetime(2025, 10, 7, 18, 5, tzinfo=UTC),
        )  # fmt: skip
    )
    session.commit()
    login(client, seeded, Persona.COLLECTIONS_MANAGER)
    german = client.get("/outbox", headers={"Accept-Language": "de-DE,de;q=0.9"}).text
    assert "U07PLIXO42" not in german
    assert f"<td>{html.escape(manager.name)} (Slack)</td>" in german
    assert "07.10.2025, 14:00" in german and "2025-10-07" not in german
    english = client.get("/outbox", headers={"Accept-Language": "en-US"}).text
    assert "Oct 7, 2025, 2:00" in english
    page = client.get(f"/drafts/{d.id}", headers={"Accept-Language": "de-DE"}).text
    turns = page.split('data-testid="turn"')[1:]
    asked = next(t for t in turns if "Shorter please" in t)
    rewrite = next(t for t in turns if "A shorter reminder." in t)
    for turn in (asked, rewrite):
        assert "07.10.2025, 14:05" in turn and "18:05" not in turn
