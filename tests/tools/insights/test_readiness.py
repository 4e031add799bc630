"""The Data-Ready score from its three components, on a real ledger."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy.orm import Session

from memory.models import Contact, Customer, Invoice, Organisation
from tools.insights.readiness import data_ready

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def _book(session: Session, org: Organisation, n: int) -> list[Customer]:
    out = []
    for i in range(n):
        c = Customer(org_id=org.id, external_ref=f"C{i}", name=f"C{i}")
        session.add(c)
        session.flush()
        session.add(
            Invoice(
                org_id=org.id,
                customer_id=c.id,
                number=f"I{i}",
                currency="USD",
                amount_minor=1000,
                balance_minor=1000,
                issue_date=date(2026, 10, 1),
                due_date=date(2026, 10, 31),
            )
        )
        out.append(c)
    return out


def test_nothing_imported_scores_low_with_reasons(session: Session, org: Organisation) -> None:
    r = data_ready(session, org.id, NOW)
    assert r.components["freshness"] == 0 and r.score < 50
    assert any("import" in i for i in r.issues)


def test_score_moves_with_freshness_and_contacts(session: Session, org: Organisation) -> None:
    customers = _book(session, org, 4)
    org.last_import_at = NOW - timedelta(hours=3)
    for c in customers[:3]:
        session.add(
            Contact(org_id=org.id, customer_id=c.id, name="AP", email=f"ap@{c.name}.example")
        )
    session.add(
        Contact(
            org_id=org.id, customer_id=customers[3].id, name="X", email="x@y.example", bounced=True
        )
    )
    session.commit()
    r = data_ready(session, org.id, NOW)
    assert r.components == {"freshness": 100, "contact_coverage": 75, "invoice_completeness": 100}
    assert r.score == round(0.25 * 100 + 0.5 * 75 + 0.25 * 100)
    stale = data_ready(session, org.id, NOW + timedelta(days=30))
    assert stale.components["freshness"] == 0 and stale.score < r.score
