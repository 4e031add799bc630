"""Today's Focus after an import: a new customer with an overdue invoice never breaks it.

It used to: the customer had no row in the risk snapshot (refreshed at most every 15 minutes),
the explanation took the invoice back out of an empty history and ``math.log1p(-1)`` raised, so
``/focus``, ``/api/focus`` and ``/focus.csv`` answered 500 until the snapshot caught up.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import Customer, CustomerRiskSnapshot, Invoice, InvoiceStatus, Organisation
from tests.api.test_insights import auth, book, client  # noqa: F401 - fixtures
from tests.tools.insights.test_focus import Book
from tools.imports import importer


def _import_new_overdue_customer(session: Session, org: Organisation, tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    issued, due = today - timedelta(days=40), today - timedelta(days=10)
    path = tmp_path / "new-customer.csv"
    path.write_text(
        "invoice_number,customer_ref,customer_name,issue_date,due_date,amount,currency\n"
        f"NEW-1,NEWCO,Newco AG,{issued},{due},9000000.00,USD\n",
        encoding="utf-8",
    )
    report = importer.import_invoices(session, org, path)
    assert report.committed and report.created == 1, report.errors
    session.commit()


def test_focus_answers_right_after_importing_a_new_overdue_customer(
    client: TestClient,  # noqa: F811
    session: Session,
    book: Book,  # noqa: F811
    org: Organisation,
    tmp_path: Path,
) -> None:
    headers = auth(session, book, "manager")
    assert client.get("/api/focus", headers=headers).status_code == 200  # the snapshot exists
    _import_new_overdue_customer(session, org, tmp_path)

    r = client.get("/api/focus", headers=headers)
    assert r.status_code == 200, r.text
    top = r.json()["items"][0]
    assert top["invoice_number"] == "NEW-1" and top["reasons"] and 0 < top["risk"] < 1
    assert client.get("/focus", headers=headers).status_code == 200
    export = client.get("/focus.csv", headers=headers)
    assert export.status_code == 200 and "NEW-1" in export.text


def test_the_import_refreshes_the_touched_customers_snapshot(
    client: TestClient,  # noqa: F811
    session: Session,
    book: Book,  # noqa: F811
    org: Organisation,
    tmp_path: Path,
) -> None:
    assert client.get("/api/focus", headers=auth(session, book, "manager")).status_code == 200
    before = {
        r.customer_id: (r.ledger_mark, r.computed_at)
        for r in session.scalars(
            select(CustomerRiskSnapshot).where(CustomerRiskSnapshot.org_id == org.id)
        )
    }
    _import_new_overdue_customer(session, org, tmp_path)
    newco = session.scalars(select(Customer).where(Customer.external_ref == "NEWCO")).one()
    rows = {
        r.customer_id: r
        for r in session.scalars(
            select(CustomerRiskSnapshot).where(CustomerRiskSnapshot.org_id == org.id)
        )
    }
    assert newco.id in rows and newco.id not in before
    new = rows[newco.id]
    assert (new.n_earlier, new.n_open_pd, new.open_currencies) == (1, 1, "USD")
    # The untouched customers keep their rows and the snapshot keeps its day and mark.
    assert {
        cid: (r.ledger_mark, r.computed_at) for cid, r in rows.items() if cid != newco.id
    } == before
    assert len({r.as_of for r in rows.values()}) == 1


def test_focus_answers_for_a_customer_the_snapshot_has_not_seen(
    client: TestClient,  # noqa: F811
    session: Session,
    book: Book,  # noqa: F811
    org: Organisation,
) -> None:
    """Written outside an import (the snapshot lags by design): scored on an empty history."""
    headers = auth(session, book, "manager")
    assert client.get("/api/focus", headers=headers).status_code == 200
    today = datetime.now(UTC).date()
    cust = Customer(org_id=org.id, external_ref="LATE", name="Late Ltd")
    session.add(cust)
    session.flush()
    session.add(
        Invoice(
            org_id=org.id, customer_id=cust.id, number="LATE-1", currency="USD",
            amount_minor=900_000_000, balance_minor=900_000_000, status=InvoiceStatus.OPEN,
            issue_date=today - timedelta(days=40), due_date=today - timedelta(days=10),
        )
    )  # fmt: skip
    session.commit()
    r = client.get("/api/focus", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["invoice_number"] == "LATE-1"
