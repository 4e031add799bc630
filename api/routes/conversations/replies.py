"""Payer replies: triage proposes, a person accepts.

``POST /api/customers/{id}/replies/triage`` classifies a reply and returns proposed ledger changes
without applying any; ``POST /api/proposals/accept`` is the human acceptance step that writes one
proposal through the commitment tools (promise or dispute), audited.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AppSettings, Clock, DbSession, require
from memory.models import User
from tools.replies.proposals import TriageProposal, accept_proposal

router = APIRouter(prefix="/api", tags=["replies"])

ReplyWorker = Annotated[User, Depends(require("triage_replies"))]
CustomerId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000, description="The payer's reply, verbatim.")


class AcceptedOut(BaseModel):
    kind: str
    customer_id: int
    promise_id: int | None = None
    dispute_ids: list[int] = Field(default_factory=list)


@router.post("/customers/{customer_id}/replies/triage", response_model=dict[str, Any])
def triage(
    customer_id: CustomerId,
    body: ReplyIn,
    user: ReplyWorker,
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
) -> dict[str, Any]:
    """Classify the reply and propose changes; nothing is written or sent."""
    # lazy: the agent (pydantic-ai, ~280 modules) loads on the first triage, not at app start-up
    from agent.service import triage_reply

    try:
        result = triage_reply(db, user.org_id, customer_id, body.text, settings, now=clock())
    except LookupError as exc:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "No such customer in your organisation."
        ) from exc
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    data: dict[str, Any] = result.model_dump(mode="json")
    # Each proposal in the shape /api/proposals/accept takes, so a reviewer can send it back as is.
    data["acceptable"] = [
        {"customer_id": result.customer_id, **change.model_dump(mode="json")}
        for change in result.proposed_changes
    ]
    return data


@router.post(
    "/proposals/accept",
    response_model=AcceptedOut,
    responses={400: {"description": "Refused: says why"}, 404: {"description": "Unknown id"}},
)
def accept(body: TriageProposal, user: ReplyWorker, db: DbSession, clock: Clock) -> AcceptedOut:
    """Accept one triage proposal: the promise or dispute is written, audited, or refused whole."""
    # A refusal (CommitmentError) is answered by the app's handler; the session rolls back.
    accepted = accept_proposal(db, user.org_id, body, user, now=clock())
    db.commit()
    return AcceptedOut(
        kind=accepted.kind,
        customer_id=accepted.customer_id,
        promise_id=accepted.promise_id,
        dispute_ids=list(accepted.dispute_ids),
    )
