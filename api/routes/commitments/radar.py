"""The Commitment Radar: its JSON and its page in the review panel.

Every route names its access-matrix permission and scopes every query to the caller's
organisation (another organisation's id is a 404, like an unknown one). Bad input is a 4xx
with a sentence that says what to do, and nothing is written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from api.deps import Clock, DbSession, template_context
from api.pages import templates
from api.routes.commitments.schemas import (
    RadarOut,
    Viewer,
    radar_out,
)
from tools.commitments import disputes, radar

router = APIRouter(tags=["commitments"])


@router.get("/api/radar", response_model=RadarOut)
def commitment_radar(
    db: DbSession,
    user: Viewer,
    high_exposure_minor: Annotated[int, Query(ge=1, le=10**13)] = radar.HIGH_EXPOSURE_MINOR,
) -> RadarOut:
    """Promises due today and overdue, plans approaching default — each with badges saying why —
    and promise exposure, adherence and active plan exposure."""
    return radar_out(
        radar.commitment_radar(db, user.org_id, high_exposure_minor=high_exposure_minor)
    )


def radar_context(session: Session, org_id: int, now: datetime | None = None) -> dict[str, Any]:
    """What ``radar_card.html`` needs; the review panel includes the card with this context."""
    return {
        "radar": radar.commitment_radar(session, org_id, now=now),
        "sla": disputes.sla_snapshot(session, org_id, now=now),
    }


@router.get("/radar", response_class=HTMLResponse, include_in_schema=False)
def radar_page(request: Request, db: DbSession, user: Viewer, clock: Clock) -> HTMLResponse:
    """The Radar on the app's clock (the same "today" as the rest of the panel)."""
    context = radar_context(db, user.org_id, clock())
    return templates.TemplateResponse(
        request, "radar.html", template_context(request, user, **context)
    )
