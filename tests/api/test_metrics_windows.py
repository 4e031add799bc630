"""GET /api/metrics and the CFO console: which window is shown, and figures a CFO can trust.

Done when: for the default period and for a one-day period, DSO and average days delinquent lie
in [0, 365] and CEI in [0, 100] on the demo, and match a hand computation on a fixture
(tests/tools/insights/test_metric_windows.py has the arithmetic)."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from memory.models import Organisation, Persona, User
from tests.api.test_insights import client  # noqa: F401 - fixture
from tests.tools.insights.test_metric_windows import build_small_ledger
from tools.demo.builder import build_demo
from tools.insights import metrics
from tools.insights.account360 import org_today
from tools.ledger.users import issue_api_token


def _bearer(session: Session, user: User) -> dict[str, str]:
    token = issue_api_token(session, user)
    session.commit()
    return {"Authorization": f"Bearer {token}"}


def _in_bounds(body: dict, where: str) -> None:
    for name in ("dso_simple", "dso_countback", "average_days_delinquent"):
        value = body[name]["value"]
        assert value is not None and 0 <= value <= 365, (where, name, body[name])
    cei = body["cei"]["value"]
    assert cei is not None and 0 <= cei <= 100, (where, body["cei"])


def test_one_day_on_the_fixture_matches_the_hand_computation(
    client: TestClient,  # noqa: F811
    session: Session,
    org: Organisation,
) -> None:
    build_small_ledger(session, org)
    controller = User(org_id=org.id, email="cfo@x.test", name="C", role=Persona.CONTROLLER)
    session.add(controller)
    session.commit()
    r = client.get(
        "/api/metrics?start=2025-12-05&end=2025-12-05", headers=_bearer(session, controller)
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["period"] == {
        "start": "2025-12-05", "end": "2025-12-05", "days": 1,
        "label": "2025-12-05 – 2025-12-05", "kind": "requested",
    }  # fmt: skip
    assert body["dso_simple"]["value"] == pytest.approx(5_800 / 3_900 * 30, abs=1e-4)
    assert body["dso_simple"]["window"]["start"] == "2025-11-06"
    assert body["average_days_delinquent"]["value"] == pytest.approx(400 / 3_900 * 30, abs=1e-4)
    assert body["cei"]["value"] == pytest.approx(0.0)
    assert body["dso_countback"]["value"] == pytest.approx(5 + 4_900 / 5_000 * 30, abs=1e-4)
    _in_bounds(body, "fixture, one day")
    half = client.get("/api/metrics?start=2025-12-05", headers=_bearer(session, controller))
    assert half.status_code == 422 and "both start and end" in half.text


def test_the_demo_defaults_to_the_last_complete_month_with_the_month_to_date(
    client: TestClient,  # noqa: F811
    session: Session,
) -> None:
    demo = build_demo(session, today=date.today())
    session.commit()
    today = org_today(session, demo.org.id)
    headers = _bearer(session, demo.users["controller"])
    r = client.get("/api/metrics?currency=USD", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    month = metrics.last_complete_month(today)
    assert body["period"]["kind"] == "last complete month"
    assert (body["period"]["start"], body["period"]["end"]) == (
        month.start.isoformat(), month.end.isoformat(),
    )  # fmt: skip
    _in_bounds(body, "default period")
    ptd = body["period_to_date"]
    assert ptd["period"]["kind"] == "month to date"
    assert (ptd["period"]["start"], ptd["period"]["end"]) == (
        today.replace(day=1).isoformat(), today.isoformat(),
    )  # fmt: skip
    _in_bounds(ptd, "month to date")
    for back in range(0, 8):
        day = (today - timedelta(days=back)).isoformat()
        one = client.get(f"/api/metrics?start={day}&end={day}&currency=USD", headers=headers)
        assert one.status_code == 200, one.text
        _in_bounds(one.json(), f"one day {day}")


def test_the_console_headlines_the_last_complete_month_and_formats_money(
    client: TestClient,  # noqa: F811
    session: Session,
) -> None:
    demo = build_demo(session, today=date.today())
    session.commit()
    today = org_today(session, demo.org.id)
    page = client.get("/console", headers=_bearer(session, demo.users["controller"]))
    assert page.status_code == 200, page.text
    html = page.text
    month = metrics.last_complete_month(today)
    assert f"Figures for {month.label()}" in html
    for metric in ("dso_simple", "average_days_delinquent", "dso_countback"):
        m = re.search(rf'data-metric="{metric}">\s*<div class="label">[^<]*</div>\s*'
                      r'<div class="value">([\d.]+) days', html)  # fmt: skip
        assert m and 0 <= float(m.group(1)) <= 365, metric
    cei = re.search(r'data-metric="cei">\s*<div class="label">CEI</div>\s*<div class="value">'
                    r"([\d.]+)%", html)  # fmt: skip
    assert cei and 0 <= float(cei.group(1)) <= 100
    assert 'data-period-to-date="dso_simple"' in html  # the month to date, beside
    cash_table = html[html.index('id="table-cash_collected"') : html.index('id="table-dso"')]
    assert re.search(r"<td>\$[\d,]+\.\d\d</td>", cash_table), cash_table[:600]
    aging_table = html[html.index('id="table-aging"') : html.index('id="table-promise_adherence"')]
    assert re.search(r"<td>\$[\d,]+\.\d\d</td>", aging_table)
