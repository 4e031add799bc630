"""The ledger on a real database: migrations, constraints, tenancy, derived aging."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from memory import migrate
from memory.models import (
    AgingBucket,
    Base,
    Customer,
    Draft,
    Invoice,
    Organisation,
    aging_bucket,
)


def test_migrations_create_every_model_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_migrations_match_models(engine: Engine) -> None:
    """Alembic's comparison finds nothing to add: the models and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


@pytest.mark.parametrize(
    ("days_past_due", "bucket"),
    [
        (-10, AgingBucket.CURRENT),
        (0, AgingBucket.CURRENT),
        (1, AgingBucket.D1_30),
        (30, AgingBucket.D1_30),
        (31, AgingBucket.D31_60),
        (60, AgingBucket.D31_60),
        (61, AgingBucket.D61_90),
        (90, AgingBucket.D61_90),
        (91, AgingBucket.D90_PLUS),
    ],
)
def test_aging_bucket_boundaries(days_past_due: int, bucket: AgingBucket) -> None:
    due = date(2026, 1, 31)
    assert aging_bucket(due, due + timedelta(days=days_past_due)) is bucket


def _customer(session: Session, org: Organisation, ref: str = "C-1") -> Customer:
    c = Customer(org_id=org.id, external_ref=ref, name=f"Customer {ref}")
    session.add(c)
    session.flush()
    return c


def _invoice(org: Organisation, cust: Customer, number: str = "INV-1") -> Invoice:
    return Invoice(
        org_id=org.id,
        customer_id=cust.id,
        number=number,
        currency="USD",
        amount_minor=12_345,
        balance_minor=12_345,
        issue_date=date(2026, 1, 1),
        due_date=date(2026, 1, 31),
    )


def test_invoice_number_unique_per_organisation(session: Session, org: Organisation) -> None:
    cust = _customer(session, org)
    session.add(_invoice(org, cust))
    session.commit()
    other = Organisation(name="Other", slug="other-org")
    session.add(other)
    session.flush()
    other_cust = _customer(session, other)
    session.add(_invoice(other, other_cust))  # the same number in another tenant is fine
    session.commit()
    session.add(_invoice(org, cust))
    with pytest.raises(IntegrityError):
        session.commit()


def test_money_is_integer_and_aging_is_derived(session: Session, org: Organisation) -> None:
    cust = _customer(session, org)
    session.add(_invoice(org, cust))
    session.commit()
    inv = session.scalars(select(Invoice)).one()
    assert isinstance(inv.amount_minor, int)
    assert inv.aging_bucket(date(2026, 3, 15)) is AgingBucket.D31_60
    assert inv.aging_bucket(date(2026, 1, 15)) is AgingBucket.CURRENT
    assert not hasattr(Invoice, "aging_bucket_stored")


def test_datetimes_come_back_aware_utc(session: Session, org: Organisation) -> None:
    got = session.get(Organisation, org.id)
    assert got is not None and got.created_at.tzinfo is not None
    with pytest.raises(Exception, match="naive datetime"):
        got.last_import_at = datetime(2026, 1, 1)
        session.commit()


def test_draft_optimistic_version_refuses_lost_update(
    sessions: object, session: Session, org: Organisation
) -> None:
    cust = _customer(session, org)
    d = Draft(org_id=org.id, customer_id=cust.id, subject="s", body="b")
    session.add(d)
    session.commit()
    from sqlalchemy.orm import sessionmaker

    assert isinstance(sessions, sessionmaker)
    a, b = sessions(), sessions()
    da, db = a.get(Draft, d.id), b.get(Draft, d.id)
    assert da is not None and db is not None
    da.body = "first edit"
    a.commit()
    db.body = "second edit, loaded before the first was saved"
    with pytest.raises(StaleDataError):
        b.commit()
    a.close()
    b.rollback()
    b.close()
    assert datetime.now(UTC) > d.created_at
