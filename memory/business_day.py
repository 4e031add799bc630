"""Today for an organisation: the business date in its own time zone (``memory.clock``'s rule).

Why apart from ``memory.clock``: the ledger's column defaults read the clock, so the clock cannot
import the ledger; reading an organisation's zone needs the ledger, so it lives here, above both.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy.orm import Session

from memory import clock
from memory.models import Organisation


def org_zone(session: Session, org_id: int) -> str:
    """The organisation's time zone name ("UTC" when it has none); ``LookupError`` if no such
    organisation."""
    org = session.get(Organisation, org_id)
    if org is None:
        raise LookupError(f"organisation {org_id} does not exist")
    return org.timezone or "UTC"


def org_business_date(session: Session, org_id: int, at: datetime | None = None) -> date:
    """Today for organisation ``org_id`` (its own time zone) at ``at`` (default: now)."""
    return clock.business_date(org_zone(session, org_id), at)
