"""Organisations (tenants): look one up by slug, or create it on first use."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import Organisation


def get_org(session: Session, slug: str) -> Organisation | None:
    return session.scalars(select(Organisation).where(Organisation.slug == slug)).first()


def get_or_create_org(session: Session, slug: str, name: str | None = None) -> Organisation:
    org = get_org(session, slug)
    if org is None:
        org = Organisation(name=name or slug.replace("-", " ").title(), slug=slug)
        session.add(org)
        session.flush()
    return org
