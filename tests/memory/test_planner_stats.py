"""Planner statistics refreshed after a bulk load commits (PostgreSQL), and only then."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session, sessionmaker

from memory.models import Customer, Organisation
from memory.planner_stats import ANALYZE_MIN_ROWS, note_bulk_write, tables_to_refresh

ROWS = ANALYZE_MIN_ROWS + 113


def _load(session: Session, rows: int) -> None:
    org = Organisation(name="Bulk Co", slug="bulk-co")
    session.add(org)
    session.flush()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    session.execute(
        insert(Customer),
        [
            {"org_id": org.id, "external_ref": f"C{i}", "name": f"C {i}", "created_at": now}
            for i in range(rows)
        ],
    )
    note_bulk_write(session, "customer", rows)


def _estimated_rows(engine: Engine, table: str) -> float | None:
    """PostgreSQL's row estimate for ``table`` (what ANALYZE sets); None on SQLite."""
    if engine.dialect.name != "postgresql":
        return None
    query = text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)")
    with engine.connect() as conn:
        return float(conn.execute(query, {"t": table}).scalar_one())


def test_a_bulk_write_is_counted_per_table_and_only_a_large_one_is_refreshed(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        _load(session, 3)  # a transaction that wrote (the counts below are what it claims)
        note_bulk_write(session, "invoice", ANALYZE_MIN_ROWS - 1)
        note_bulk_write(session, "contact", ANALYZE_MIN_ROWS - 200)
        note_bulk_write(session, "contact", 200)
        note_bulk_write(session, "payment", -5)  # nonsense counts count as nothing
        assert tables_to_refresh(session) == ["contact"]
        session.rollback()
        assert tables_to_refresh(session) == []  # a rolled-back load leaves nothing to refresh


def test_the_statistics_describe_the_rows_once_the_load_commits(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        _load(session, ROWS)
        session.commit()
        assert tables_to_refresh(session) == []
    estimated = _estimated_rows(engine, "customer")
    if engine.dialect.name == "postgresql":
        assert estimated == ROWS
    else:  # SQLite keeps planning without statistics: nothing was analysed
        with engine.connect() as conn:
            assert (
                conn.execute(
                    text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
                ).scalar_one()
                == 0
            )


def test_a_small_write_leaves_the_statistics_to_autovacuum(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    with sessions() as session:
        _load(session, 37)
        session.commit()
    estimated = _estimated_rows(engine, "customer")
    assert estimated is None or estimated != 37
