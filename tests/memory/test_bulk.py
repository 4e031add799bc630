"""memory.bulk.insert_rows: the rows written are the ORM's rows, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, cast

import pytest
from sqlalchemy import Table, null, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from memory import bulk
from memory.models import (
    Activity,
    ActivityKind,
    AuditEvent,
    CashImport,
    CashLine,
    CashLineStatus,
    Customer,
    Invoice,
    InvoiceStatus,
    Organisation,
)

T = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


def _line(org_id: int, import_id: int, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "org_id": org_id,
        "import_id": import_id,
        "line_no": n,
        "fingerprint": f"fp-{n}",
        "booked_on": date(2026, 11, 27),
        "amount_minor": 1_000 * n,
        "currency": "USD",
        "payer_name": None,
        "payer_iban": None,
        "reference": f'INV-{n} "quoted" \\ back\tslash',
        "bank_ref": None,
        "created_at": T,
        "suggestions": [{"score": 90 + n, "reasons": ['a "b"', None]}],
        "best_score": 90 + n,
        **extra,
    }


def _import(session: Session, org: Organisation) -> CashImport:
    run = CashImport(org_id=org.id, kind="camt053", filename="s.xml", sha256="x" * 64)
    session.add(run)
    session.flush()
    return run


def test_rows_come_back_with_their_ids_and_read_back_as_given(
    session: Session, org: Organisation
) -> None:
    """Enums, dates, JSON, NULLs, quotes and backslashes, left-out columns with defaults; and
    ``null()`` in a JSON column is SQL NULL while ``None`` follows the column (JSON null)."""
    run = _import(session, org)
    rows = [_line(org.id, run.id, n, decision=null()) for n in range(1, 4)]
    rows[1]["decision"] = {"outcome": "allow", "reasons": []}
    rows[2]["payer_name"] = "Ünïcode GmbH"
    table = _table(CashLine)
    written = bulk.insert_rows(session, table, rows, (table.c.id, table.c.fingerprint))
    ids = {fp: i for i, fp in written}
    assert sorted(ids) == ["fp-1", "fp-2", "fp-3"] and len(set(ids.values())) == 3
    session.expire_all()
    for row in rows:
        line = session.get(CashLine, ids[row["fingerprint"]])
        assert line is not None
        assert line.status == CashLineStatus.EXCEPTION  # left out: the column's default
        assert (line.note, line.customer_id, line.applied_at) == (None, None, None)
        for key in ("line_no", "booked_on", "amount_minor", "reference", "suggestions"):
            assert getattr(line, key) == row[key]
        assert line.payer_name == row["payer_name"]
        assert line.created_at == T
    sql_nulls = session.scalars(
        select(CashLine.fingerprint).where(CashLine.decision.is_(None))
    ).all()
    assert sorted(sql_nulls) == ["fp-1", "fp-3"]
    assert session.get(CashLine, ids["fp-2"]).decision == {"outcome": "allow", "reasons": []}  # type: ignore[union-attr]


def test_rows_match_what_the_orm_writes(session: Session, org: Organisation) -> None:
    """The same activity and audit rows through the ORM and through insert_rows read back the
    same, column by column (ids and the default timestamp aside)."""
    acme = Customer(org_id=org.id, external_ref="C1", name="Acme Inc")
    session.add(acme)
    session.flush()
    activity = {
        "org_id": org.id,
        "customer_id": acme.id,
        "invoice_id": None,
        "kind": ActivityKind.PAYMENT,
        "direction": "in",
        "summary": "Payment of $10.00 received (bank)",
        "occurred_at": T,
    }
    audit = {
        "org_id": org.id,
        "actor_user_id": None,
        "actor": "import",
        "action": "payment.posted",
        "subject_type": "payment",
        "subject_id": 7,
        "from_state": None,
        "to_state": None,
        "detail": {"allocations": [{"invoice_id": 3, "amount_minor": 1_000}], "ref": None},
    }
    for model, row in ((Activity, activity), (AuditEvent, audit)):
        session.add(model(**row))
        session.flush()
        bulk.insert_rows(session, _table(model), [row])
        session.expire_all()
        orm, ours = session.scalars(select(model).order_by(model.id)).all()[-2:]
        skip = {"id", "created_at"}
        columns = [c.key for c in _table(model).c if c.key not in skip]
        assert [getattr(ours, c) for c in columns] == [getattr(orm, c) for c in columns]
    created = session.scalars(select(AuditEvent.created_at)).all()
    assert len(created) == 2 and all(c is not None for c in created)


def test_bad_rows_are_refused_and_nothing_is_written(session: Session, org: Organisation) -> None:
    run = _import(session, org)
    table = _table(CashLine)
    with pytest.raises(ValueError, match="same columns"):
        bulk.insert_rows(session, table, [_line(org.id, run.id, 1), {"org_id": org.id}])
    with pytest.raises(ValueError, match="no column"):
        bulk.insert_rows(session, table, [{**_line(org.id, run.id, 1), "colour": "red"}])
    assert bulk.insert_rows(session, table, []) == []
    session.commit()
    too_long = _line(org.id, run.id, 1, currency="USDX")  # String(3): never cut to fit
    if session.get_bind().dialect.name == "postgresql":  # SQLite keeps any length
        with pytest.raises(DBAPIError, match="too long"):
            bulk.insert_rows(session, table, [too_long, _line(org.id, run.id, 2)])
        session.rollback()
        assert session.scalar(select(text("count(*)")).select_from(table)) == 0
    else:
        bulk.insert_rows(session, table, [too_long])
        assert session.scalar(select(CashLine.currency)) == "USDX"


def test_more_rows_than_a_batch_are_written_in_several_statements(
    session: Session, org: Organisation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "BATCH", 2)
    run = _import(session, org)
    table = _table(CashLine)
    rows = [_line(org.id, run.id, n) for n in range(1, 6)]
    written = bulk.insert_rows(session, table, rows, (table.c.id, table.c.line_no))
    assert sorted(n for _, n in written) == [1, 2, 3, 4, 5]
    assert len({i for i, _ in written}) == 5


def test_changed_rows_are_written_at_once_and_a_rolled_back_savepoint_forgets_them(
    session: Session, org: Organisation
) -> None:
    """write_changes sends what the flush would (the changed columns, ``updated_at``, the
    review queue's counter) and, on PostgreSQL, leaves nothing for the flush (on SQLite the
    flush writes them); a savepoint rolled back after it puts the rows back as the database has
    them."""
    acme = Customer(org_id=org.id, external_ref="C1", name="Acme Inc")
    session.add(acme)
    session.flush()
    invs = [
        Invoice(
            org_id=org.id,
            customer_id=acme.id,
            number=f"INV-{n}",
            currency="USD",
            amount_minor=10_000,
            balance_minor=10_000,
            issue_date=date(2026, 10, 1),
            due_date=date(2026, 11, 1),
            status=InvoiceStatus.OPEN,
            updated_at=T,
        )
        for n in range(3)
    ]
    session.add_all(invs)
    session.commit()
    session.refresh(org)
    version = org.queue_version
    invs[0].balance_minor = 4_000  # partly paid
    invs[1].balance_minor, invs[1].status = 0, InvoiceStatus.PAID  # paid
    invs[1].settled_date = date(2026, 11, 27)
    bulk.write_changes(session, invs)
    written = session.get_bind().dialect.name == "postgresql"
    assert [session.is_modified(i) for i in invs] == [not written, not written, False]
    read = {
        n: (b, s, d, u)
        for n, b, s, d, u in session.execute(
            select(
                Invoice.number,
                Invoice.balance_minor,
                Invoice.status,
                Invoice.settled_date,
                Invoice.updated_at,
            ).where(Invoice.number.in_(["INV-0", "INV-1", "INV-2"]))
        )
    }
    assert read["INV-0"][:3] == (4_000, InvoiceStatus.OPEN, None) and read["INV-0"][3] > T
    assert read["INV-1"][:3] == (0, InvoiceStatus.PAID, date(2026, 11, 27))
    assert read["INV-2"] == (10_000, InvoiceStatus.OPEN, None, T)  # unchanged: not touched
    session.commit()
    session.refresh(org)
    assert org.queue_version == version + 1  # bumped by write_changes: the flush saw nothing
    new = Invoice(**{**_invoice_columns(invs[2]), "number": "INV-new"})
    session.add(new)
    bulk.write_changes(session, [new])
    assert new in session.new  # a new row is left to the flush

    savepoint = session.begin_nested()
    invs[2].balance_minor = 1
    bulk.write_changes(session, [invs[2]])
    savepoint.rollback()
    assert invs[2].balance_minor == 10_000  # read again: the UPDATE was rolled back too


def _invoice_columns(inv: Invoice) -> dict[str, Any]:
    keys = ("org_id", "customer_id", "currency", "amount_minor", "balance_minor")
    return {k: getattr(inv, k) for k in keys} | {
        "issue_date": inv.issue_date,
        "due_date": inv.due_date,
        "status": InvoiceStatus.OPEN,
    }
