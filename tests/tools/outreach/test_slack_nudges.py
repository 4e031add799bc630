"""Slack nudge suggestions: Block Kit to a local stand-in for Slack's API, and the interactivity
endpoint behind slack_sdk's SignatureVerifier (forged, stale and unsigned requests refused)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from memory.config import Settings
from memory.models import Draft, DraftStatus, Organisation, OutboxMessage, Persona
from tests.api.factories import NOW, Seeded, seed_review, settings_for
from tools.outreach import nudges

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


class FakeSlack:
    """Answers Slack Web API calls on loopback and keeps them for the assertions."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                ctype = self.headers.get("content-type", "")
                if "json" in ctype:
                    body = json.loads(raw or b"{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                    if isinstance(body.get("blocks"), str):
                        body["blocks"] = json.loads(body["blocks"])
                outer.calls.append((self.path, dict(self.headers), body))
                answer = {"ok": True, "channel": "D0OWNER", "ts": "1728316800.000100"}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    yield fake
    fake.close()


@pytest.fixture
def settings(tmp_path: Path, slack: FakeSlack) -> Settings:
    return settings_for(str(tmp_path)).model_copy(
        update={
            "slack_bot_token": SecretStr("xoxb-test-token"),
            "slack_signing_secret": SecretStr(SECRET),
            "slack_base_url": slack.url,
        }
    )


@pytest.fixture
def seeded(session: Session, org: Organisation, settings: Settings) -> Seeded:
    return seed_review(session, org, settings, drafts=2)


@pytest.fixture
def client(engine: Engine, settings: Settings) -> Iterator[TestClient]:
    app = create_app(engine, settings)
    app.state.clock = lambda: NOW
    with TestClient(app) as c:
        yield c


def _suggest(
    session: Session, seeded: Seeded, settings: Settings, i: int = 0
) -> nudges.NudgeResult:
    result = nudges.suggest_nudge(
        session,
        seeded.org.id,
        user=seeded.users[Persona.COLLECTIONS_MANAGER],
        customer_id=seeded.customers[i].id,
        template_id="friendly_check_in",
        settings=settings,
        now=NOW,
    )
    session.commit()
    return result


def _signed(body: str, *, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    timestamp = str(ts if ts is not None else int(time.time()))
    sig = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": str(sig),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def _press(action: str, draft: Draft, slack_user: str, *, version: int | None = None) -> str:
    payload = {
        "type": "block_actions",
        "user": {"id": slack_user},
        "team": {"id": "T0TEAM"},
        "channel": {"id": "D0OWNER"},
        "message": {"ts": "1728316800.000100"},
        "actions": [
            {
                "action_id": action,
                "value": f"{draft.org_id}:{draft.id}:{version or draft.version}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


def test_suggestion_is_a_block_kit_dm_with_approve_and_dismiss(
    session: Session, seeded: Seeded, settings: Settings, slack: FakeSlack
) -> None:
    result = _suggest(session, seeded, settings)
    assert result.slack_ts == "1728316800.000100"
    path, headers, body = slack.calls[-1]
    assert path == "/api/chat.postMessage"
    assert headers["Authorization"] == "Bearer xoxb-test-token"
    owner = seeded.users[Persona.SALES]
    assert body["channel"] == owner.slack_user_id
    actions = next(b for b in body["blocks"] if b["type"] == "actions")
    buttons = {e["action_id"]: e for e in actions["elements"]}
    assert set(buttons) == {"plixo_nudge_approve", "plixo_nudge_dismiss"}
    d = result.draft
    assert buttons["plixo_nudge_approve"]["value"] == f"{d.org_id}:{d.id}:{d.version}"
    assert any(d.subject in b.get("text", {}).get("text", "") for b in body["blocks"])


def test_approve_in_slack_queues_the_nudge_and_updates_the_message(
    session: Session, seeded: Seeded, settings: Settings, slack: FakeSlack, client: TestClient
) -> None:
    draft = _suggest(session, seeded, settings).draft
    owner = seeded.users[Persona.SALES]
    body = _press("plixo_nudge_approve", draft, str(owner.slack_user_id))
    r = client.post("/api/slack/interactivity", content=body, headers=_signed(body))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued"
    session.expire_all()
    assert session.get(Draft, draft.id).status is DraftStatus.QUEUED  # type: ignore[union-attr]
    path, _, update = slack.calls[-1]
    assert path == "/api/chat.update" and update["ts"] == "1728316800.000100"
    assert "Approved" in update["text"]
    # the same press again (freshly signed): already handled, a conflict, nothing doubled
    again = client.post("/api/slack/interactivity", content=body, headers=_signed(body))
    assert again.status_code == 409
    assert session.query(OutboxMessage).count() == 1


def test_dismiss_keeps_the_reason(
    session: Session, seeded: Seeded, settings: Settings, client: TestClient
) -> None:
    draft = _suggest(session, seeded, settings).draft
    body = _press("plixo_nudge_dismiss", draft, str(seeded.users[Persona.SALES].slack_user_id))
    r = client.post("/api/slack/interactivity", content=body, headers=_signed(body))
    assert r.status_code == 200
    session.expire_all()
    row = session.get(Draft, draft.id)
    assert row is not None and row.status is DraftStatus.REJECTED
    assert row.rejection_reason == "Dismissed by the account owner"


@pytest.mark.parametrize(
    "headers",
    [
        "forged",
        "stale",
        "unsigned",
        "tampered",
    ],
)
def test_forged_stale_unsigned_or_tampered_requests_change_nothing(
    session: Session,
    seeded: Seeded,
    settings: Settings,
    client: TestClient,
    headers: str,
) -> None:
    draft = _suggest(session, seeded, settings).draft
    body = _press("plixo_nudge_approve", draft, str(seeded.users[Persona.SALES].slack_user_id))
    sent = body
    if headers == "forged":
        h = _signed(body, secret="not-the-secret")
    elif headers == "stale":
        h = _signed(body, ts=int(time.time()) - 6 * 60)
    elif headers == "unsigned":
        h = {"Content-Type": "application/x-www-form-urlencoded"}
    else:  # signed, then the body is altered in transit
        h = _signed(body)
        sent = body.replace("plixo_nudge_approve", "plixo_nudge_dismiss")
    r = client.post("/api/slack/interactivity", content=sent, headers=h)
    assert r.status_code == 401, r.text
    session.expire_all()
    assert session.get(Draft, draft.id).status is DraftStatus.DRAFTED  # type: ignore[union-attr]


def test_unknown_slack_user_malformed_payload_and_wrong_version(
    session: Session, seeded: Seeded, settings: Settings, client: TestClient
) -> None:
    draft = _suggest(session, seeded, settings).draft
    stranger = _press("plixo_nudge_approve", draft, "U0STRANGER")
    assert (
        client.post(
            "/api/slack/interactivity", content=stranger, headers=_signed(stranger)
        ).status_code
        == 403
    )
    # a colleague of the org who is not the account's owner
    csm = _press("plixo_nudge_approve", draft, str(seeded.users[Persona.CSM].slack_user_id))
    assert (
        client.post("/api/slack/interactivity", content=csm, headers=_signed(csm)).status_code
        == 403
    )
    junk = "payload=%7Bnot-json"
    assert (
        client.post("/api/slack/interactivity", content=junk, headers=_signed(junk)).status_code
        == 400
    )
    stale_version = _press(
        "plixo_nudge_approve", draft, str(seeded.users[Persona.SALES].slack_user_id), version=99
    )
    r = client.post(
        "/api/slack/interactivity", content=stale_version, headers=_signed(stale_version)
    )
    assert r.status_code == 409
    session.expire_all()
    assert session.get(Draft, draft.id).status is DraftStatus.DRAFTED  # type: ignore[union-attr]


def test_interactivity_without_slack_configured_is_not_found(
    engine: Engine, tmp_path: Path
) -> None:
    app = create_app(engine, settings_for(str(tmp_path)))
    with TestClient(app) as c:
        body = "payload=%7B%7D"
        assert (
            c.post("/api/slack/interactivity", content=body, headers=_signed(body)).status_code
            == 404
        )
