"""The insight endpoints and pages over HTTP: permissions, organisation scoping, bad input as
clear 4xx, the Nudge button for Sales only, SVG charts and CSV exports on the console."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from memory.config import Settings
from memory.models import Organisation
from tests.tools.insights.test_focus import Book, build_book
from tools.ledger.users import issue_api_token


@pytest.fixture
def book(session: Session, org: Organisation) -> Book:
    return build_book(session, org, today=datetime.now(UTC).date())


@pytest.fixture
def client(engine: Engine, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        public_base_url="http://testserver",
        secret_key="insights-test-secret-key-0123456789",  # type: ignore[arg-type]
        smtp_host="127.0.0.1",
        smtp_port=1,
    )
    with TestClient(create_app(engine, settings)) as c:
        yield c


def auth(session: Session, book: Book, key: str) -> dict[str, str]:
    token = issue_api_token(session, book.users[key])
    session.commit()
    return {"Authorization": f"Bearer {token}"}


def test_focus_api_is_scoped_to_the_collector(
    client: TestClient, session: Session, book: Book
) -> None:
    r = client.get("/api/focus", headers=auth(session, book, "collector1"))
    assert r.status_code == 200, r.text
    data = r.json()
    mine = {c.id for c in book.customers if c.collector_user_id == book.users["collector1"].id}
    assert data["items"] and {i["customer_id"] for i in data["items"]} <= mine
    assert data["model"]["kind"] == "fallback" and data["model"]["fallback_reason"]
    first = data["items"][0]
    assert first["rank"] == 1 and first["reasons"] and 0 < first["risk"] < 1
    assert (
        client.get("/api/focus?currency=US1", headers=auth(session, book, "manager")).status_code
        == 422
    )
    assert (
        client.get("/api/focus?limit=0", headers=auth(session, book, "manager")).status_code == 422
    )
    assert (
        client.get("/api/focus?as_of=yesterday", headers=auth(session, book, "manager")).status_code
        == 422
    )
    assert client.get("/api/focus").status_code == 401


def test_pages_need_a_login(client: TestClient) -> None:
    for path in ("/focus", "/console", "/renewal-risk", "/accounts/1"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path


def test_account_360_shows_risk_and_the_nudge_button_to_sales_only(
    client: TestClient, session: Session, book: Book
) -> None:
    cust = book.customers[0]
    sales = client.get(f"/accounts/{cust.id}", headers=auth(session, book, "sales"))
    assert sales.status_code == 200, sales.text
    html = sales.text
    assert 'id="nudge-button"' in html and f'action="/customers/{cust.id}/nudge"' in html
    assert 'id="readonly-note"' in html  # Sales sees cadence and segment but cannot edit them
    assert "Standard" in html and "Enterprise" in html
    assert 'id="open-invoices"' in html and "%" in html
    collector = client.get(f"/accounts/{cust.id}", headers=auth(session, book, "collector1"))
    assert collector.status_code == 200 and 'id="nudge-button"' not in collector.text
    controller = client.get(f"/accounts/{cust.id}", headers=auth(session, book, "controller"))
    assert 'id="readonly-note"' not in controller.text
    risk = client.get(f"/api/accounts/{cust.id}/risk", headers=auth(session, book, "sales"))
    assert risk.status_code == 200
    assert {i["invoice_id"] for i in risk.json()["invoices"]} == {
        i.id for i in book.open_invoices if i.customer_id == cust.id
    }


def test_foreign_and_unknown_accounts_are_404(
    client: TestClient, session: Session, book: Book
) -> None:
    other = Organisation(name="Other", slug="other-org")
    session.add(other)
    session.commit()
    other_book = build_book(session, other, seed=5)
    foreign = other_book.customers[0].id
    headers = auth(session, book, "manager")
    assert client.get(f"/api/accounts/{foreign}/risk", headers=headers).status_code == 404
    assert client.get(f"/accounts/{foreign}", headers=headers).status_code == 404
    assert client.get("/api/accounts/999999/risk", headers=headers).status_code == 404
    assert client.get("/api/accounts/0/risk", headers=headers).status_code == 422
    foreign_user = other_book.users["csm"].id
    r = client.get(f"/api/renewal-risk?owner_id={foreign_user}", headers=headers)
    assert r.status_code == 404


def test_renewal_risk_api_and_page(client: TestClient, session: Session, book: Book) -> None:
    headers = auth(session, book, "csm")
    r = client.get("/api/renewal-risk?window=90", headers=headers)
    assert r.status_code == 200
    data = r.json()
    assert data["rows"] and data["computed_at"] and data["ledger_updated_at"]
    page = client.get("/renewal-risk", headers=headers)
    assert page.status_code == 200
    # A CSM starts from their own accounts.
    mine = [c for i, c in enumerate(book.customers[:4]) if i % 4 != 3]
    for c in mine:
        assert f'data-customer="{c.id}"' in page.text
    assert f'data-customer="{book.customers[8].id}"' not in page.text
    everyone = client.get("/renewal-risk?owner_id=all", headers=headers)
    assert f'data-customer="{book.customers[8].id}"' in everyone.text
    assert 'id="freshness"' in page.text
    assert client.get("/api/renewal-risk?window=9999", headers=headers).status_code == 422
    assert client.get("/renewal-risk?owner_id=abc", headers=headers).status_code == 422
    csv_refused = client.get("/renewal-risk.csv", headers=headers)
    assert csv_refused.status_code == 403  # CSMs may not export
    export = client.get("/renewal-risk.csv", headers=auth(session, book, "controller"))
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert rows and {"customer", "past_due_balance", "level"} <= set(rows[0])


def test_console_page_has_charts_and_every_table_exports(
    client: TestClient, session: Session, book: Book
) -> None:
    headers = auth(session, book, "controller")
    page = client.get("/console", headers=headers)
    assert page.status_code == 200, page.text
    html = page.text
    assert html.count("<svg") >= 5 and 'class="bar"' in html and 'class="series"' in html
    assert 'class="segment"' in html  # the aging bar
    assert "https://" not in html.split("</head>")[0]  # nothing fetched from the internet
    for table in ("cash_collected", "dso", "aging", "promise_adherence", "exposure"):
        assert f"/console/export/{table}.csv" in html
        r = client.get(f"/console/export/{table}.csv?currency=USD", headers=headers)
        assert r.status_code == 200, (table, r.text)
        rows = list(csv.reader(io.StringIO(r.text)))
        assert len(rows) >= 2, table
    aging = list(
        csv.DictReader(
            io.StringIO(client.get("/console/export/aging.csv?currency=USD", headers=headers).text)
        )
    )
    usd_open = sum(i.balance_minor for i in book.open_invoices if i.currency == "USD")
    assert round(sum(float(r["outstanding"]) for r in aging) * 100) == usd_open
    assert client.get("/console/export/secrets.csv", headers=headers).status_code == 404
    viewer = auth(session, book, "viewer")
    assert client.get("/console", headers=viewer).status_code == 200
    assert client.get("/console/export/aging.csv", headers=viewer).status_code == 403
    assert client.get("/console?end=2025-13", headers=headers).status_code == 422
    assert client.get("/console?currency=dollars", headers=headers).status_code == 422
    data = client.get("/api/console?currency=USD", headers=headers).json()
    assert set(data["tables"]) == {
        "cash_collected",
        "dso",
        "aging",
        "promise_adherence",
        "exposure",
        "drafting_cost",
    }
    assert "Drafting cost per model" in html


def test_metrics_api_reports_not_enough_data_instead_of_dividing_by_zero(
    client: TestClient, session: Session, book: Book
) -> None:
    headers = auth(session, book, "controller")
    mixed = client.get("/api/metrics?start=2000-01-01&end=2000-01-31", headers=headers).json()
    assert mixed["dso_simple"]["value"] is None
    assert mixed["dso_simple"]["reason"].startswith("not enough data")
    everything = client.get(
        f"/api/metrics?start=2000-01-01&end={datetime.now(UTC).date()}", headers=headers
    ).json()
    assert "currency mix (EUR, USD)" in everything["cei"]["reason"]
    usd = client.get(
        f"/api/metrics?start=2000-01-01&end={datetime.now(UTC).date()}&currency=USD",
        headers=headers,
    ).json()
    assert usd["dso_simple"]["value"] is not None and usd["cei"]["value"] is not None
    bad = client.get("/api/metrics?start=2025-02-01&end=2025-01-01", headers=headers)
    assert bad.status_code == 422 and "before it starts" in bad.text
    assert client.get("/api/metrics?start=x&end=y", headers=headers).status_code == 422
    far = client.get("/api/metrics?start=0001-01-01&end=9999-12-31", headers=headers)
    assert far.status_code == 422 and "out of range" in far.text
    assert client.get("/api/console?end=9999-12", headers=headers).status_code == 422
    segment = client.get(
        "/api/metrics?start=2025-01-01&end=2025-01-31&segment_id=999999", headers=headers
    )
    assert segment.status_code == 404


def test_focus_page_and_csv(client: TestClient, session: Session, book: Book) -> None:
    page = client.get("/focus", headers=auth(session, book, "collector1"))
    assert page.status_code == 200
    assert 'id="focus-list"' in page.text and 'data-model-kind="fallback"' in page.text
    assert "Export CSV" not in page.text  # collectors may not export
    assert client.get("/focus.csv", headers=auth(session, book, "collector1")).status_code == 403
    export = client.get("/focus.csv", headers=auth(session, book, "manager"))
    assert export.status_code == 200
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert rows and rows[0]["rank"] == "1" and rows[0]["currency"] == "USD"


def test_console_on_an_old_history_shows_its_last_year(
    client: TestClient, session: Session, org: Organisation
) -> None:
    """A ledger whose last activity is years ago (the IBM sample) opens on its own last months."""
    from datetime import date

    from memory.models import Customer, Invoice, InvoiceStatus, Payment, Persona, User

    user = User(org_id=org.id, email="cfo@x.test", name="CFO", role=Persona.CONTROLLER)
    cust = Customer(org_id=org.id, external_ref="OLD", name="Old Co")
    session.add_all([user, cust])
    session.flush()
    inv = Invoice(
        org_id=org.id,
        customer_id=cust.id,
        number="OLD-1",
        currency="USD",
        amount_minor=50_00,
        balance_minor=0,
        issue_date=date(2013, 5, 1),
        due_date=date(2013, 5, 31),
        status=InvoiceStatus.PAID,
        settled_date=date(2013, 6, 10),
    )
    session.add(inv)
    session.flush()
    session.add(
        Payment(
            org_id=org.id,
            customer_id=cust.id,
            invoice_id=inv.id,
            amount_minor=50_00,
            applied_minor=50_00,
            currency="USD",
            received_on=date(2013, 6, 10),
        )
    )
    token = issue_api_token(session, user)
    session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    data = client.get("/api/console", headers=headers).json()
    assert data["end"] == "2013-06-10" and "last activity" in data["note"]
    assert data["tables"]["cash_collected"][-1] == {
        "month": "2013-06",
        "currency": "USD",
        "cash_collected": "50.00",
    }
    page = client.get("/console?end=2013-06", headers=headers)
    assert page.status_code == 200 and "not enough data" in page.text


# A bare ISO date ("2026-12-06") or month ("2026-12"), a Python "None", a snake_case identifier.
ISO_OR_RAW = [
    re.compile(r"\b\d{4}-\d{2}(-\d{2})?\b"),
    re.compile(r"\bNone\b"),
    re.compile(r"\b[a-z]+_[a-z_]+\b"),
]


def _visible(html: str) -> str:
    """What a person reads: no scripts, styles, charts, form fields or attribute values."""
    html = re.sub(r"<(script|style|svg|head)\b.*?</\1>", " ", html, flags=re.S)
    html = re.sub(r"<(input|textarea|select|option)\b[^>]*>", " ", html)
    return re.sub(r"<[^>]+>", "><", html)


def test_focus_renewal_and_console_write_dates_in_the_readers_locale(
    client: TestClient, session: Session, book: Book
) -> None:
    """Today's Focus, Renewal Risk and the CFO console: no ISO dates or months, none of their
    timestamps in a fixed "UTC" format; German dates for a German reader."""
    from babel.dates import format_date

    today = datetime.now(UTC).date()
    de = {"Accept-Language": "de-DE,de;q=0.9", **auth(session, book, "controller")}
    pages = {
        "focus": client.get("/focus", headers=de).text,
        "renewal": client.get("/renewal-risk?owner_id=all&window=365", headers=de).text,
        "console": client.get("/console", headers=de).text,
    }
    for name, page in pages.items():
        text = _visible(page)
        for pattern in ISO_OR_RAW:
            found = pattern.search(text)
            assert found is None, f"{name} shows {found.group(0)!r}"
        assert " UTC" not in text, name
    assert format_date(today, "medium", locale="de_DE") in pages["focus"]  # "06.12.2026"
    assert re.search(r"\b\d{2}\.\d{2}\.\d{4}\b", _visible(pages["renewal"]).split("<tbody>")[-1])
    assert re.search(r"Computed \d{2}\.\d{2}\.\d{4}, \d{2}:\d{2}", pages["renewal"])
    console = pages["console"]
    assert f"12 months to {format_date(today, 'medium', locale='de_DE')}" in console
    german_month = format_date(today, "MMM y", locale="de_DE")  # "Dez. 2026"
    assert german_month in console
    axis = format_date(today, "MMM yy", locale="de_DE")  # the charts' axis: "Dez. 26"
    assert f">{axis}<" in console
    english = client.get("/console", headers=auth(session, book, "controller")).text
    assert today.strftime("%b") in _visible(english)
