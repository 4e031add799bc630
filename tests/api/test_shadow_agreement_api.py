"""Shadow Mode earns its way out (issue 19 item 8), over HTTP: people approve, edit and reject
Autopilot's drafts in one segment; the agreement figures come back from the API and the
sending-modes page, and switching Autopilot on below the policy's minimum is refused with them."""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures by name

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import AuditEvent, Organisation, Persona, Segment
from tests.api.factories import NOW, Seeded
from tests.api.review_fixtures import (  # noqa: F401 - fixtures
    app,
    client,
    csrf_of,
    login,
    seeded,
    settings,
)
from tools.ledger.policy_overrides import update_policy


def _decide_three(client: TestClient, seeded: Seeded) -> None:
    """One draft approved as written, one edited then approved, one rejected."""
    h = seeded.auth(Persona.COLLECTOR)
    same, edited, rejected = seeded.drafts
    r = client.post(f"/api/drafts/{same.id}/approve", headers=h, json={"version": 1})
    assert r.status_code == 200, r.text
    new_body = edited.body.replace(
        "Thank you,",
        "Please arrange payment immediately; we must close this account.\n\nThank you,",
    )
    r = client.post(
        f"/api/drafts/{edited.id}/edit",
        headers=h,
        json={"version": 1, "subject": edited.subject, "body": new_body},
    )
    assert r.status_code == 200 and r.json()["status"] == "edited", r.text
    r = client.post(
        f"/api/drafts/{edited.id}/approve", headers=h, json={"version": r.json()["version"]}
    )
    assert r.status_code == 200, r.text
    r = client.post(
        f"/api/drafts/{rejected.id}/reject",
        headers=seeded.auth(Persona.COLLECTIONS_MANAGER),
        json={"version": 1, "reason": "Too early: the customer called yesterday"},
    )
    assert r.status_code == 200, r.text


def _data_ready(session: Session, seeded: Seeded) -> None:
    org = session.get(Organisation, seeded.org.id)
    assert org is not None
    org.last_import_at = NOW
    session.commit()


def _switch_on(client: TestClient, seeded: Seeded) -> object:
    return client.put(
        f"/api/segments/{seeded.segment.id}/sending-modes",
        headers=seeded.auth(Persona.CONTROLLER),
        json={"switch": "autopilot", "value": True},
    )


def test_agreement_figures_are_read_back_and_gate_autopilot(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    _decide_three(client, seeded)
    r = client.get("/api/shadow-agreement", headers=seeded.auth(Persona.VIEWER))
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["window_drafts"], report["min_unchanged_pct"]) == (200, 95)
    seg = next(s for s in report["segments"] if s["segment_id"] == seeded.segment.id)
    f = seg["window"]
    assert (f["decided"], f["unchanged"], f["edited"], f["rejected"]) == (3, 1, 1, 1)
    assert f["unchanged_pct"] == 33.3
    added = len("Please arrange payment immediately; we must close this account.\n\n")
    assert f["edit_distance_median"] == f["edit_distance_max"] == added
    assert f["changes"]["tone"] == 1 and f["changes"]["length"] == 1
    assert f["changes"]["amounts"] == 0 and f["changes"]["wording"] == 0
    assert f["rejection_reasons"] == [
        {"reason": "Too early: the customer called yesterday", "count": 1}
    ]
    assert seg["meets_minimum"] is False
    [step] = seg["steps"]
    assert step["window"]["decided"] == 3 and "step 2" in step["label"]
    assert report["organisation"]["window"]["decided"] == 3
    assert len(seg["weeks"]) == 12

    # the default policy: 200 decided drafts are needed first; refused with the figures
    _data_ready(session, seeded)
    refused = _switch_on(client, seeded)
    assert refused.status_code == 403  # type: ignore[attr-defined]
    body = refused.json()  # type: ignore[attr-defined]
    assert "Only 3 drafts" in body["detail"] and "200 are needed" in body["detail"]
    assert body["shadow_agreement"]["decided"] == 3
    assert body["shadow_agreement"]["unchanged"] == 1
    assert {x["rule_id"] for x in body["reasons"]} == {
        "autopilot.enable_shadow_too_few",
        "autopilot.enable_shadow_disagreement",
    }

    # a window of 3 at 95 %: enough drafts, too few approved unchanged
    controller = seeded.users[Persona.CONTROLLER]
    update_policy(
        session,
        seeded.org.id,
        controller,
        {"autopilot": {"shadow_window_drafts": 3, "shadow_min_unchanged_pct": 95}},
    )
    session.commit()
    refused = _switch_on(client, seeded)
    body = refused.json()  # type: ignore[attr-defined]
    assert refused.status_code == 403, body  # type: ignore[attr-defined]
    assert (
        "1 of the last 3 drafts decided in Shadow Mode were approved unchanged (33.3%)"
        in (body["detail"])
    )
    assert [x["rule_id"] for x in body["reasons"]] == ["autopilot.enable_shadow_disagreement"]
    session.expire_all()
    segment = session.get(Segment, seeded.segment.id)
    assert segment is not None and segment.autopilot_enabled is False

    # a bar the record meets: switched on, and the audit keeps the figures it was decided on
    update_policy(
        session, seeded.org.id, controller, {"autopilot": {"shadow_min_unchanged_pct": 33}}
    )
    session.commit()
    ok = _switch_on(client, seeded)
    assert ok.status_code == 200, ok.text  # type: ignore[attr-defined]
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "sending_mode.changed")
    ).one()
    assert event.detail["decision"]["shadow_agreement"]["unchanged"] == 1


def test_the_sending_modes_page_shows_the_figures_beside_the_switches(
    client: TestClient, seeded: Seeded
) -> None:
    _decide_three(client, seeded)
    login(client, seeded, Persona.CONTROLLER)
    page = client.get("/sending-modes")
    assert page.status_code == 200
    html = page.text
    assert "1 of 3 approved unchanged (33.3%) · 1 edited · 1 rejected" in html
    assert "Too early: the customer called yesterday" in html
    assert 'data-testid="agreement-gate-' in html and "below the policy" in html
    assert "95% approved unchanged over the last 200 drafts people decided" in html
    german = client.get("/sending-modes", headers={"Accept-Language": "de-DE"}).text
    weeks = german.split('data-testid="trend"', 1)[1].split("</tr>", 1)[0]
    assert re.search(r'<td class="num">\d{2}\.\d{2}\.\d{4}</td>', weeks), weeks  # week of
    # refused from the page: the reason, with the figures, comes back as the flash message
    r = client.post(
        "/sending-modes",
        data={
            "csrf": csrf_of(html),
            "segment_id": str(seeded.segment.id),
            "switch": "autopilot",
            "value": "true",
        },
        follow_redirects=True,
    )
    assert r.status_code == 200
    assert "Only 3 drafts" in r.text and "Autopilot cannot be enabled" in r.text
