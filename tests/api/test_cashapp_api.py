"""Cash App Assist over HTTP: upload, the exceptions queue, apply/park/undo, export, permissions.

Shared by the browser test: ``seed_cash`` builds two payers and three open invoices.
"""

# ruff: noqa: F811 - pytest fixtures are imported from tests.api.review_fixtures by name

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import (
    AuditEvent,
    Customer,
    Invoice,
    InvoiceStatus,
    Organisation,
    Payment,
    Persona,
)
from tests.api.factories import NOW, Seeded
from tests.api.review_fixtures import app, client, seeded, settings  # noqa: F401 - fixtures
from tests.tools.cashapp_files import Entry, camt053

BOOKED = NOW.date() - timedelta(days=1)


@dataclass
class CashWorld:
    a: Invoice
    b: Invoice
    c: Invoice
    statement: bytes


def seed_cash(session: Session, org: Organisation) -> CashWorld:
    acme = Customer(org_id=org.id, external_ref="CASH-ACME", name="Acme Trading Inc")
    initech = Customer(org_id=org.id, external_ref="CASH-INITECH", name="Initech LLC")
    session.add_all([acme, initech])
    session.flush()

    def invoice(cust: Customer, number: str, amount: int) -> Invoice:
        inv = Invoice(
            org_id=org.id,
            customer_id=cust.id,
            number=number,
            currency="USD",
            amount_minor=amount,
            balance_minor=amount,
            issue_date=BOOKED - timedelta(days=40),
            due_date=BOOKED - timedelta(days=10),
        )
        session.add(inv)
        return inv

    a = invoice(acme, "INV-7100401", 40_000)
    b = invoice(acme, "INV-7100402", 60_000)
    c = invoice(initech, "INV-7100533", 200_000)
    session.commit()
    statement = camt053(
        [
            Entry(BOOKED, "1000.00", "USD", f"Invoices {a.number} {b.number}", "ACME TRADING"),
            Entry(BOOKED, "1960.00", "USD", f"Payment {c.number} less 2% discount", "Initech"),
            Entry(BOOKED, "77.77", "USD", "Gift", "A. Stranger"),
        ],
        msg_id="CAMT-DEMO-1",
    )
    return CashWorld(a, b, c, statement)


def _payments(session: Session) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(Payment)) or 0)


def test_api_upload_apply_park_undo_export(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    world = seed_cash(session, seeded.org)
    clerk = seeded.auth(Persona.COLLECTOR)
    files = {"file": ("stmt.xml", world.statement, "application/xml")}
    r = client.post("/api/cash/imports", files=files, headers=clerk)
    assert r.status_code == 200, r.text
    assert r.json()["lines_new"] == 3 and r.json()["auto_applied"] == 0
    lines = client.get("/api/cash/lines", headers=clerk).json()
    assert [ln["amount_minor"] for ln in lines] == [100_000, 196_000, 7_777]
    bundle, short, unknown = lines
    assert bundle["suggestions"][0]["kind"] == "one_to_many"
    assert short["suggestions"][0]["difference_kind"] == "discount"
    # a Sales user may not apply cash; a bad split is refused and writes nothing
    assert (
        client.post(
            f"/api/cash/lines/{bundle['id']}/apply", json={}, headers=seeded.auth(Persona.SALES)
        ).status_code
        == 403
    )
    bad = {"parts": [{"invoice_number": world.a.number, "amount_minor": 50_000}]}
    r = client.post(f"/api/cash/lines/{bundle['id']}/apply", json=bad, headers=clerk)
    assert r.status_code == 400 and "add up to" in r.json()["detail"]
    assert _payments(session) == 0
    r = client.post(f"/api/cash/lines/{bundle['id']}/apply", json={"suggestion": 0}, headers=clerk)
    assert r.status_code == 200, r.text
    assert len(r.json()["payments"]) == 2
    split = {
        "parts": [
            {
                "invoice_number": world.c.number,
                "amount_minor": 196_000,
                "adjustment_kind": "discount",
                "adjustment_minor": 4_000,
            }
        ]
    }
    assert (
        client.post(f"/api/cash/lines/{short['id']}/apply", json=split, headers=clerk).status_code
        == 200
    )
    r = client.post(
        f"/api/cash/lines/{unknown['id']}/park", json={"note": "unknown payer"}, headers=clerk
    )
    assert r.status_code == 200 and r.json()["status"] == "parked"
    assert _payments(session) == 3
    # the page: dates in the reader's locale (German here), statuses in words, no ISO dates
    page = client.get("/cash", headers={**clerk, "Accept-Language": "de-DE,de;q=0.9"}).text
    assert BOOKED.isoformat() not in page and not re.search(r">[^<]*\d{4}-\d{2}-\d{2}", page)
    assert f"<td>{BOOKED:%d.%m.%Y}</td>" in page  # booked, as a German reader writes it
    assert re.search(r"<td>\d{2}\.\d{2}\.\d{4}, \d{2}:\d{2}:\d{2}</td>", page)  # imported
    assert ">Applied</span>" in page and ">Unapplied cash</span>" in page
    assert ">applied</span>" not in page
    period = BOOKED.strftime("%Y-%m")
    assert client.get(f"/api/cash/export?period={period}", headers=clerk).status_code == 403
    ctrl = seeded.auth(Persona.CONTROLLER)
    data = client.get(f"/api/cash/export?period={period}", headers=ctrl).json()
    kinds = sorted((row["kind"], row["invoice_number"] or "") for row in data["rows"])
    assert kinds == [
        ("applied", world.a.number),
        ("applied", world.b.number),
        ("applied", world.c.number),
        ("unapplied", ""),
    ]
    csv = client.get(f"/api/cash/export?period={period}&format=csv", headers=ctrl)
    assert csv.headers["content-type"].startswith("text/csv") and "1960.00" in csv.text
    # undo the bundle: balances back, payments gone; then the period closes and undo is refused
    r = client.post(f"/api/cash/lines/{bundle['id']}/undo", headers=clerk)
    assert r.status_code == 200 and _payments(session) == 1
    session.refresh(world.a)
    assert world.a.status == InvoiceStatus.OPEN and world.a.balance_minor == 40_000
    assert client.post(f"/api/cash/periods/{period}/close", headers=clerk).status_code == 403
    assert client.post(f"/api/cash/periods/{period}/close", headers=ctrl).status_code == 200
    r = client.post(f"/api/cash/lines/{short['id']}/undo", headers=clerk)
    assert r.status_code == 409 and "closed" in r.json()["detail"]
    # re-importing the same statement applies nothing
    r = client.post("/api/cash/imports", files=files, headers=clerk)
    assert r.json()["lines_new"] == 0 and len(r.json()["duplicates"]) == 3
    assert _payments(session) == 1
    actions = set(session.scalars(select(AuditEvent.action)))
    assert {"cash.applied", "cash.parked", "cash.undone", "cash.discount_written_off"} <= actions


def test_a_file_in_the_wrong_format_is_refused_whole(client: TestClient, seeded: Seeded) -> None:
    files = {"file": ("invoice.xml", b"<?xml version='1.0'?><Invoice/>", "application/xml")}
    r = client.post("/api/cash/imports", files=files, headers=seeded.auth(Persona.COLLECTOR))
    assert r.status_code == 400 and "not a CAMT.053" in r.json()["detail"]


def test_a_line_cleared_against_a_stripe_payout_is_shown_apart_with_its_reasons(
    client: TestClient, seeded: Seeded, session: Session
) -> None:
    """The payout's CSV and then the bank statement, uploaded through the API: the bank line is
    cleared (neither applied nor waiting), listed with the payout and its reasons on the page and
    by /api/cash/cleared; the payout's charge waits as a line of its own."""
    from tests.tools.stripe_payout_fixtures import charge_txn, fee_txn, itemized_csv

    world = seed_cash(session, seeded.org)
    clerk = seeded.auth(Persona.COLLECTOR)
    paid = BOOKED - timedelta(days=3)
    ch = charge_txn(200_000, 5_830, paid, intent_id=None, description=world.c.number)
    rows = [("po_1PlxPAGE", BOOKED, t) for t in (ch, fee_txn(500, paid))]
    files = {"file": ("payouts.csv", itemized_csv(rows), "text/csv")}
    r = client.post("/api/cash/imports", files=files, headers=clerk)
    assert r.status_code == 200 and r.json()["kind"] == "stripe_payout", r.text
    entry = Entry(BOOKED, "1936.70", "USD", "STRIPE PAYOUT po_1PlxPAGE", "STRIPE", bank_ref="S1")
    files = {"file": ("stmt.xml", camt053([entry], msg_id="CAMT-PO-1"), "application/xml")}
    r = client.post("/api/cash/imports", files=files, headers=clerk)
    assert r.status_code == 200 and r.json()["cleared"] == 1, r.text

    cleared = client.get("/api/cash/cleared", headers=seeded.auth(Persona.SALES)).json()
    assert [(c["amount_minor"], c["payout_id"], c["status"]) for c in cleared] == [
        (193_670, "po_1PlxPAGE", "ignored")
    ]
    reasons = cleared[0]["decision"]["reasons"]
    assert "names payout po_1PlxPAGE" in reasons[0]
    assert any("Stripe fees $63.30" in x and "= $1,936.70" in x for x in reasons)
    waiting = client.get("/api/cash/lines", headers=clerk).json()
    assert [w["reference"] for w in waiting] == [world.c.number]  # the charge, not the bank line

    page = client.get("/cash", headers=clerk).text
    card = page[page.index('data-testid="cleared-card"') :]
    card = card[: card.index("</table>")]
    assert 'data-testid="cleared-count">1<' in card
    assert 'data-payout="po_1PlxPAGE"' in card and "$1,936.70" in card
    assert "names payout po_1PlxPAGE" in card and "Stripe fees $63.30" in card
    assert 'data-testid="waiting-count">1<' in page  # only the charge waits
    assert 'data-testid="done-line"' not in page  # nothing applied or parked
    assert "STRIPE PAYOUT po_1PlxPAGE" not in page[: page.index('data-testid="cleared-card"')]
