"""Mini-portal links over the API: create, list and revoke a customer's tokenized link.

Every route names its access-matrix permission and scopes every query to the caller's
organisation (another organisation's id is a 404, like an unknown one). Bad input is a 4xx
with a sentence that says what to do, and nothing is written.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AppSettings, DbSession
from api.routes.commitments.schemas import (
    ERRORS,
    Id,
    LinkManager,
    TokenIn,
    TokenOut,
)
from memory.models import (
    PortalToken,
)
from tools.portal import access as portal

router = APIRouter(tags=["commitments"])


def _token(t: PortalToken, url: str | None = None) -> TokenOut:
    return TokenOut(
        id=t.id,
        customer_id=t.customer_id,
        expires_at=t.expires_at,
        revoked_at=t.revoked_at,
        created_at=t.created_at,
        url=url,
    )


@router.post("/api/portal-tokens", response_model=TokenOut, status_code=201, responses=ERRORS)
def issue_token(body: TokenIn, db: DbSession, user: LinkManager, settings: AppSettings) -> TokenOut:
    """A mini-portal link for one customer. The URL is returned once; only its hash is kept."""
    issued = portal.issue_token(
        db,
        user.org_id,
        body.customer_id,
        actor=user,
        base_url=settings.public_base_url,
        ttl=timedelta(days=body.ttl_days),
    )
    db.commit()
    return _token(issued.token, issued.url)


@router.get("/api/portal-tokens", response_model=list[TokenOut])
def list_tokens(
    db: DbSession,
    user: LinkManager,
    customer_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> list[TokenOut]:
    return [_token(t) for t in portal.list_tokens(db, user.org_id, customer_id)]


@router.post("/api/portal-tokens/{token_id}/revoke", response_model=TokenOut, responses=ERRORS)
def revoke_token(token_id: Id, db: DbSession, user: LinkManager) -> TokenOut:
    token = portal.revoke_token(db, user.org_id, token_id, actor=user)
    db.commit()
    return _token(token)
