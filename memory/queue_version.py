"""The review queue's change counter: ``organisation.queue_version``.

The review queue is the API's hottest read. A page of it is cached per organisation and checked
with one primary-key read of this counter instead of being rebuilt (``api/queue_cache.py``). For
that to be exact, every commit that changes what the queue shows (a draft, the invoice balance or
number beside it, a customer or segment name) bumps the counter *in the same transaction*:

* ORM changes to drafts, invoices, customers and segments are noticed by a flush hook;
* bulk Core writes call :func:`mark_queue_changed` themselves (the importer's balance updates).

The bump runs as the last statement before COMMIT (after the final flush), so on PostgreSQL the
organisation row is locked only for the moment of the commit, and no lock is taken after it: two
transactions cannot deadlock on it. A reader that reads the counter *before* it reads the page can
therefore never cache an old page under a new number.
"""

from __future__ import annotations

from itertools import chain

from sqlalchemy import Connection, bindparam, event, select, update
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

from memory.models import Customer, Draft, Invoice, Organisation, Segment

WATCHED = (Draft, Invoice, Customer, Segment)
_PENDING = "plixo.queue_changed_orgs"


def mark_queue_changed(session: Session, org_id: int) -> None:
    """Bump ``org_id``'s queue version when this session commits (for bulk Core writes)."""
    session.info.setdefault(_PENDING, set()).add(int(org_id))


_READ = select(Organisation.queue_version).where(Organisation.id == bindparam("org_id"))


def read_queue_version(conn: Connection, org_id: int) -> int | None:
    """The organisation's current queue version, or None when there is no such organisation."""
    value = conn.execute(_READ, {"org_id": org_id}).scalar()
    return None if value is None else int(value)


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush: UOWTransaction) -> None:
    # new / dirty / deleted still hold their pre-flush contents in after_flush. An attribute set
    # to its own value leaves an object "dirty" without a net change: that changes nothing. An
    # organisation already marked needs no second look (a batch's thousands of invoices).
    marked = session.info.get(_PENDING, set())
    dirty = (
        o
        for o in session.dirty
        if isinstance(o, WATCHED)
        and o.__dict__.get("org_id") not in marked
        and session.is_modified(o, include_collections=False)
    )
    for obj in chain(session.new, dirty, session.deleted):
        if isinstance(obj, WATCHED) and obj.org_id is not None:
            mark_queue_changed(session, obj.org_id)


@event.listens_for(Session, "before_commit")
def _bump(session: Session) -> None:
    session.flush()  # commit flushes after this hook; flush now so every change is collected
    pending: set[int] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    session.connection().execute(
        update(Organisation)
        .where(Organisation.id.in_(sorted(pending)))
        .values(queue_version=Organisation.queue_version + 1)
    )


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    # A rolled-back top-level transaction changed nothing: drop its marks. (A committed one
    # already took them in before_commit.)
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
