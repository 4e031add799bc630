"""Slack interactivity: the Approve / Dismiss buttons of nudge suggestions.

Nothing is read from the payload until Slack's signature over the raw body checks out (401
otherwise). The presser is mapped to an active plixo user of the draft's organisation by their Slack
user id (403 if there is none), and the usual draft rules apply: a handled suggestion is a 409.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import select

from api.deps import AppSettings, Clock, DbSession
from memory.models import User
from tools.outreach import nudges, slack_nudges

router = APIRouter(prefix="/api/slack", tags=["slack"])

PUBLIC_ROUTES = {"/api/slack/interactivity"}  # authenticated by Slack's signature, not a session


async def raw_body(request: Request) -> bytes:
    """The exact bytes Slack signed (read once, before anything parses them)."""
    return await request.body()


@router.post(
    "/interactivity",
    responses={
        200: {"description": "The button press was applied"},
        400: {"description": "Malformed payload"},
        401: {"description": "Missing, forged or stale Slack signature"},
        403: {"description": "The Slack user is not a plixo user who may act on this nudge"},
        404: {"description": "Slack is not configured, or no such nudge suggestion"},
        409: {"description": "The suggestion was already handled or changed"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {"payload": {"type": "string"}},
                        "required": ["payload"],
                    }
                }
            },
        }
    },
)
def interactivity(
    request: Request,
    body: Annotated[bytes, Depends(raw_body)],
    db: DbSession,
    settings: AppSettings,
    clock: Clock,
) -> JSONResponse:
    """Slack calls this when the owner presses Approve or Dismiss on a nudge suggestion."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        slack_nudges.verify_request(settings, body, headers)
    except slack_nudges.SlackError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except slack_nudges.SlackRequestInvalid as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from exc
    try:
        action = slack_nudges.parse_action(body)
    except slack_nudges.SlackRequestInvalid as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    user = db.scalars(
        select(User).where(
            User.org_id == action.org_id,
            User.slack_user_id == action.slack_user_id,
            User.active.is_(True),
        )
    ).first()
    if user is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "Your Slack account is not linked to a plixo user here."
        )
    result: dict[str, Any]
    try:
        if action.action == slack_nudges.APPROVE:
            outcome = nudges.confirm_suggestion(
                db,
                user.org_id,
                action.draft_id,
                user=user,
                expected_version=action.version,
                now=clock(),
            )
            draft = outcome.draft
            text = _approved_text(draft.status.value, draft.decision or {})
        else:
            draft = nudges.dismiss_suggestion(
                db, user.org_id, action.draft_id, user=user, expected_version=action.version
            )
            text = f"Dismissed by {user.name}. The A/R team keeps the account."
        db.commit()
    except nudges.NudgeError as exc:
        # Slack's buttons answer a nudge refusal with 403 (the nudge API answers 422).
        db.rollback()
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from exc
    slack_nudges.update_outcome(settings, action, text)
    result = {"ok": True, "draft_id": draft.id, "status": draft.status.value, "text": text}
    return JSONResponse(result)


def _approved_text(status_value: str, decision: dict[str, Any]) -> str:
    if status_value == "queued":
        return "Approved: the nudge is on its way. The A/R team has been told."
    if status_value == "approved" and decision.get("not_before"):
        return (
            f"Approved: the guardrails hold it until {decision['not_before']} "
            "(quiet hours or a nearby Autopilot touch)."
        )
    reasons = "; ".join(
        str(r.get("message"))
        for r in decision.get("reasons", [])
        if r.get("outcome") in ("block", "needs_approval")
    )
    return f"Not sent: {reasons or status_value}."
