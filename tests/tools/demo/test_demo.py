"""The demo organisation: deterministic, complete, and removable without leftovers."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import (
    AgingBucket,
    Base,
    Dispute,
    Invoice,
    InvoiceStatus,
    PaymentPlan,
    Persona,
    PromiseStatus,
    PromiseToPay,
    User,
)
from tools.demo.builder import build_demo
from tools.insights.readiness import data_ready
from tools.ledger.orgs import delete_org

TODAY = date(2026, 11, 21)


def _fingerprint(session: Session, org_id: int) -> list[tuple[str, int, str]]:
    return [
        (i.number, i.balance_minor, i.due_date.isoformat())
        for i in session.scalars(
            select(Invoice).where(Invoice.org_id == org_id).order_by(Invoice.number)
        )
    ]


def test_demo_covers_every_bucket_persona_and_commitment(session: Session) -> None:
    result = build_demo(session, seed=7, today=TODAY)
    session.commit()
    org_id = result.org.id
    open_inv = session.scalars(
        select(Invoice).where(Invoice.org_id == org_id, Invoice.status == InvoiceStatus.OPEN)
    ).all()
    assert {i.aging_bucket(TODAY) for i in open_inv} == set(AgingBucket)
    assert {u.role for u in session.scalars(select(User))} == set(Persona)
    statuses = set(session.scalars(select(PromiseToPay.status)))
    assert statuses == {PromiseStatus.OPEN, PromiseStatus.KEPT, PromiseStatus.MISSED}
    assert session.scalar(select(func.count()).select_from(PaymentPlan)) >= 5
    assert session.scalar(select(func.max(PaymentPlan.total_minor))) > 5_000_000  # > $50,000
    assert session.scalar(select(func.count()).select_from(Dispute)) >= 10
    assert all(
        i.disputed
        for i in open_inv
        if any(
            d.invoice_id == i.id and d.resolved_at is None for d in session.scalars(select(Dispute))
        )
    )
    from tools.commitments.disputes import REASONS

    assert set(session.scalars(select(Dispute.reason))) <= set(REASONS)
    assert 200 <= result.counts["customers"] <= 400 and result.counts["invoices"] > 2000
    readiness = data_ready(session, org_id, datetime.now(UTC))
    assert readiness.components["contact_coverage"] >= 90


def test_demo_is_deterministic_and_deletable(session: Session) -> None:
    first = build_demo(session, seed=3, today=TODAY)
    session.commit()
    fp1 = _fingerprint(session, first.org.id)
    delete_org(session, first.org.id)
    session.commit()
    for table in Base.metadata.sorted_tables:
        assert session.scalar(select(func.count()).select_from(table)) == 0, table.name
    second = build_demo(session, seed=3, today=TODAY)
    session.commit()
    assert _fingerprint(session, second.org.id) == fp1
