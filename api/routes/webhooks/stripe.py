"""``POST /webhooks/stripe``: Stripe's signed events, verified, applied once, always answered.

* Unsigned, tampered or stale (outside the timestamp tolerance) requests: 400, nothing recorded.
* A genuine event: applied in one transaction and recorded by its id; the answer says the outcome.
* The same event again (a retry or a replay), even concurrently: 200 ``duplicate``, nothing changes.
* A genuine event plixo cannot match (unknown intent or invoice, another account): recorded,
  logged and answered 200, so Stripe does not retry it forever.
* ``payout.paid`` / ``payout.reconciliation_completed``: the payout's balance transactions are
  read from Stripe and imported into Cash App Assist (``tools/cashapp/stripe_payouts.py``), off
  the event loop. No API key, or Stripe not answering: 503/502 and nothing recorded, so Stripe
  retries the event later.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import AppSettings, DbSession
from memory.config import Settings
from tools.cashapp import stripe_payouts
from tools.payments import stripe_pay
from tools.payments.stripe_pay import StripeFailure, StripeNotConfigured, WebhookRejected

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
    """Read the exact signed bytes here; verify, post and commit in the thread pool (ledger
    writes and, for payouts, Stripe reads never run on the event loop)."""
    payload = await request.body()
    signature = request.headers.get("stripe-signature")
    return await run_in_threadpool(_receive, payload, signature, db, settings)


def _receive(
    payload: bytes, signature: str | None, db: Session, settings: Settings
) -> JSONResponse:
    try:
        event = stripe_pay.verify_webhook(payload, signature, settings)
    except StripeNotConfigured as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    except WebhookRejected as exc:
        log.warning("stripe webhook refused: %s", exc)
        return JSONResponse({"detail": f"Webhook refused: {exc}"}, status_code=400)
    try:
        if event.get("type") in stripe_payouts.PAYOUT_EVENTS:
            result = stripe_payouts.handle_payout_event(db, event, settings=settings)
        else:
            result = stripe_pay.handle_event(db, event)
        db.commit()
    except StripeNotConfigured as exc:
        db.rollback()
        return JSONResponse({"detail": str(exc)}, status_code=503)
    except StripeFailure as exc:
        db.rollback()
        log.warning("stripe payout event %s not imported: %s", event.get("id"), exc)
        return JSONResponse({"detail": str(exc)}, status_code=502)
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
    for key in ("payment_id", "payout_id", "import_id"):
        if key in detail:
            out[key] = detail[key]
    return out
