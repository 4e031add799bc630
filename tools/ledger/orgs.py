"""Organisations (tenants): look one up by slug, or create it on first use."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import Base, Organisation


def get_org(session: Session, slug: str) -> Organisation | None:
    return session.scalars(select(Organisation).where(Organisation.slug == slug)).first()


def get_or_create_org(session: Session, slug: str, name: str | None = None) -> Organisation:
    org = get_org(session, slug)
    if org is None:
        org = Organisation(name=name or slug.replace("-", " ").title(), slug=slug)
        session.add(org)
        session.flush()
    return org


def delete_org(session: Session, org_id: int) -> None:
    """Remove an organisation and every row that belongs to it (children first).

    Tables without ``org_id`` are reached through their foreign key to a table that has one.
    """
    from sqlalchemy import delete

    tables = list(reversed(Base.metadata.sorted_tables))
    owned = {t.name for t in tables if "org_id" in t.c}
    for table in tables:
        if table.name == "organisation":
            continue
        if "org_id" in table.c:
            session.execute(delete(table).where(table.c.org_id == org_id))
            continue
        for fk in table.foreign_keys:
            parent = fk.column.table
            if parent.name in owned:
                ids = select(parent.c.id).where(parent.c.org_id == org_id)
                session.execute(delete(table).where(fk.parent.in_(ids)))
                break
    session.execute(delete(Organisation).where(Organisation.id == org_id))
    # Bulk deletes bypass the identity map: drop loaded objects so none outlives its row.
    session.expunge_all()
