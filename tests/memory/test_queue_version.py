"""The review queue's change counter: bumped by every commit that changes what the queue shows,
and by nothing else (so cached queue pages are exact and still worth caching)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from memory.models import Customer, Draft, Invoice, Note, Organisation, Segment
from memory.queue_version import mark_queue_changed, read_queue_version


def _version(engine: Engine, org_id: int) -> int:
    with engine.connect() as conn:
        version = read_queue_version(conn, org_id)
    assert version is not None
    return version


def _ledger(session: Session, org: Organisation) -> tuple[Customer, Invoice, Draft]:
    segment = Segment(org_id=org.id, name="Mid-market")
    session.add(segment)
    session.flush()
    customer = Customer(org_id=org.id, external_ref="C1", name="Northwind", segment_id=segment.id)
    session.add(customer)
    session.flush()
    invoice = Invoice(
        org_id=org.id,
        customer_id=customer.id,
        number="INV-1",
        currency="USD",
        amount_minor=10_000,
        balance_minor=10_000,
        issue_date=date(2026, 10, 1),
        due_date=date(2026, 10, 31),
    )
    session.add(invoice)
    session.flush()
    draft = Draft(
        org_id=org.id,
        customer_id=customer.id,
        invoice_id=invoice.id,
        run_key="t:1",
        subject="Invoice INV-1",
        body="Hello",
    )
    session.add(draft)
    session.commit()
    return customer, invoice, draft


def test_each_commit_that_changes_the_queue_bumps_it_once(
    engine: Engine, session: Session, org: Organisation
) -> None:
    start = _version(engine, org.id)
    customer, invoice, draft = _ledger(session, org)
    assert _version(engine, org.id) == start + 1  # one commit, however many rows

    draft.subject = "Invoice INV-1 is past due"
    session.flush()
    assert _version(engine, org.id) == start + 1  # flushed, not committed: readers see nothing
    session.commit()
    assert _version(engine, org.id) == start + 2

    invoice.balance_minor = 4_000  # the balance shown beside the draft
    session.commit()
    customer.name = "Northwind Traders"
    session.commit()
    assert _version(engine, org.id) == start + 4


def test_rollbacks_and_unrelated_changes_leave_it_alone(
    engine: Engine, session: Session, org: Organisation
) -> None:
    customer, _, draft = _ledger(session, org)
    before = _version(engine, org.id)

    draft.subject = "changed"
    session.flush()
    session.rollback()
    assert _version(engine, org.id) == before

    session.add(Note(org_id=org.id, customer_id=customer.id, body="Called AP"))
    session.commit()
    assert _version(engine, org.id) == before

    session.commit()  # an empty commit after a rollback carries no stale mark
    assert _version(engine, org.id) == before


def test_bulk_writes_mark_the_queue_themselves(
    engine: Engine, sessions: sessionmaker[Session], org: Organisation
) -> None:
    with sessions() as s:
        _, invoice, _ = _ledger(s, org)
        before = _version(engine, org.id)
        s.execute(update(Invoice).where(Invoice.id == invoice.id).values(balance_minor=1))
        s.commit()
        assert _version(engine, org.id) == before  # Core bypasses the flush hook...
        s.execute(update(Invoice).where(Invoice.id == invoice.id).values(balance_minor=2))
        mark_queue_changed(s, org.id)  # ...so bulk writers say so
        s.commit()
        assert _version(engine, org.id) == before + 1


def test_only_the_changed_organisation_moves(
    engine: Engine, sessions: sessionmaker[Session], org: Organisation
) -> None:
    with sessions() as s:
        other = Organisation(name="Other Ltd", slug="other-ltd")
        s.add(other)
        s.commit()
        _ledger(s, org)
        other_before = _version(engine, other.id)
        draft = s.scalars(select(Draft).where(Draft.org_id == org.id)).one()
        draft.subject = "changed"
        s.commit()
        assert _version(engine, other.id) == other_before
    with engine.connect() as conn:
        assert read_queue_version(conn, 999_999) is None
