"""Fresh planner statistics after a bulk load: ``ANALYZE`` on PostgreSQL once it commits.

Why: PostgreSQL plans from table statistics that autovacuum refreshes a minute or more after a
large write. Until then a freshly imported ledger looks empty to the planner, and it picks nested
loops that walk a whole index once per row. Measured on a ledger of 2,000 invoices and 1,000
contacts loaded a moment before: Data-Ready's contact-coverage count took 378 ms (it walked the
organisation's contacts once per open invoice: a million rows) instead of 1.8 ms, and Autopilot
reads it every few seconds during a pass. An import followed at once by a pass (``plixo demo``,
a first morning) is the ordinary case, so the write that loads the rows refreshes the statistics
of the tables it filled, after its commit (the rows are visible then; a rolled-back load leaves
nothing to refresh). SQLite plans without statistics unless ``ANALYZE`` was ever run, and keeps
doing so: nothing is done there.

Writers that go through ``insert(...)`` with many rows call :func:`note_bulk_write`; ORM flushes of
a few rows do not need it.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger("plixo.ledger")

#: Rows a committed transaction must have written to a table before its statistics are refreshed
#: (fewer stay within what the last statistics describe well enough; autovacuum follows anyway).
ANALYZE_MIN_ROWS = 500
_PENDING = "plixo.bulk_written"


def note_bulk_write(session: Session, table: str, rows: int) -> None:
    """Count ``rows`` written to ``table`` in this transaction; once it commits with at least
    ``ANALYZE_MIN_ROWS`` of them, PostgreSQL's statistics for ``table`` are refreshed."""
    pending: dict[str, int] = session.info.setdefault(_PENDING, {})
    pending[table] = pending.get(table, 0) + max(0, int(rows))


def tables_to_refresh(session: Session) -> list[str]:
    """The tables this transaction wrote enough rows to, in name order."""
    pending: dict[str, int] = session.info.get(_PENDING, {})
    return sorted(t for t, n in pending.items() if n >= ANALYZE_MIN_ROWS)


@event.listens_for(Session, "after_commit")
def _refresh(session: Session) -> None:
    tables = tables_to_refresh(session)
    session.info.pop(_PENDING, None)
    if not tables:
        return
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    engine: Engine = bind.engine if isinstance(bind, Connection) else bind
    names = ", ".join(engine.dialect.identifier_preparer.quote(t) for t in tables)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"ANALYZE {names}"))
    except SQLAlchemyError as exc:  # the load is committed: stale statistics only cost speed
        log.warning("refreshing the planner's statistics of %s failed: %s", names, exc)


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost one: committed (refreshed above) or rolled back
        session.info.pop(_PENDING, None)
