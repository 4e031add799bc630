"""``POST /webhooks/stripe``: Stripe's signed events, verified, applied once, always answered.

* Unsigned, tampered or stale (outside the timestamp tolerance) requests: 400, nothing recorded.
* A genuine event: applied in one transaction and recorded by its id; the answer says the outcome.
* The same event again (a retry or a replay), even concurrently: 200 ``duplicate``, nothing changes.
* A genuine event plixo cannot match (unknown intent or invoice, another account): recorded,
  logged and answered 200, so Stripe does not retry it forever.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from api.deps import AppSettings, DbSession
from tools import stripe_pay
from tools.stripe_pay import StripeNotConfigured, WebhookRejected

router = APIRouter(tags=["webhooks"])
log = logging.getLogger("plixo.stripe.webhook")


@router.post(
    "/webhooks/stripe",
    include_in_schema=False,  # called by Stripe, not by API clients; documented above
    responses={
        200: {"description": "Processed, duplicate, or recorded as not applicable"},
        400: {"description": "Not a genuine, fresh Stripe event (bad or missing signature)"},
        503: {"description": "Webhooks are not configured (no signing secret)"},
    },
)
async def stripe_webhook(request: Request, db: DbSession, settings: AppSettings) -> JSONResponse:
    payload = await request.body()
    try:
        event = stripe_pay.verify_webhook(
            payload, request.headers.get("stripe-signature"), settings
        )
    except StripeNotConfigured as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    except WebhookRejected as exc:
        log.warning("stripe webhook refused: %s", exc)
        return JSONResponse({"detail": f"Webhook refused: {exc}"}, status_code=400)
    try:
        result = stripe_pay.handle_event(db, event)
        db.commit()
    except IntegrityError:
        # A concurrent delivery of the same event (or intent) committed first.
        db.rollback()
        return JSONResponse(_body(str(event.get("id")), str(event.get("type")), "duplicate", {}))
    return JSONResponse(_body(result.event_id, result.event_type, result.outcome, result.detail))


def _body(event_id: str, event_type: str, outcome: str, detail: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "received": True,
        "event_id": event_id,
        "type": event_type,
        "outcome": outcome,
    }
    if "payment_id" in detail:
        out["payment_id"] = detail["payment_id"]
    return out
