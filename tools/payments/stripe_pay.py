"""Stripe with the official SDK: PaymentIntents in the organisation's own account, and webhooks.

plixo never holds funds. A PaymentIntent is created for one invoice's open balance or one plan
installment's remaining amount, in the organisation's own Stripe account (the ``Stripe-Account``
header when ``organisation.stripe_account`` is set, i.e. a connected account). The payer confirms it
in the mini-portal; Stripe then sends ``payment_intent.succeeded`` to ``POST /webhooks/stripe``.

Webhooks are verified with ``stripe.Webhook.construct_event`` (HMAC-SHA256 over ``t.payload``, and
the timestamp must be within :data:`WEBHOOK_TOLERANCE_S`): unsigned, tampered or stale requests are
refused. Each event id is processed once (``stripe_event.event_id`` is unique) and each
PaymentIntent posts one payment (``payment.external_ref`` is unique per organisation), so a replay —
even a concurrent one — changes nothing. Events that cannot be matched (an unknown intent or
invoice, another account) are recorded, logged and answered 200 so Stripe stops retrying.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import stripe
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.config import Settings
from memory.models import (
    CashLine,
    Invoice,
    InvoiceStatus,
    Organisation,
    Payment,
    PaymentIntentLink,
    PlanInstallment,
    StripeEvent,
    utcnow,
)
from tools.commitments.plans import RUNNING, get_installment
from tools.commitments.promises import CommitmentError, Conflict, NotFound, get_invoice, org_today
from tools.kit import audit
from tools.kit.hooks import Hook
from tools.payments import posting as payments

log = logging.getLogger("plixo.stripe")


class PayoutLines(Protocol):
    """The Stripe payout lines Cash App Assist holds for a PaymentIntent:
    ``tools.cashapp.stripe_payouts``."""

    def applied_line_for_intent(
        self, session: Session, org_id: int, intent_id: str
    ) -> CashLine | None: ...

    def link_posted_intent(
        self, session: Session, org_id: int, intent_id: str, payment: Payment
    ) -> int: ...


#: Cash App Assist sits above payments (it applies payout lines through the posting path and reads
#: this module's events), so the webhook asks it about an intent's payout line through this hook,
#: filled by ``tools.wiring``.
payout_lines: Hook[PayoutLines] = Hook("payments.stripe_pay.payout_lines")

WEBHOOK_TOLERANCE_S = 300
MAX_WEBHOOK_BYTES = 512 * 1024
REUSABLE_STATUSES = frozenset(
    {"requires_payment_method", "requires_confirmation", "requires_action"}
)


class StripeNotConfigured(CommitmentError):
    http_status = 503


class StripeFailure(CommitmentError):
    """Stripe refused or could not be reached; the message is safe to show the payer."""

    http_status = 502


class WebhookRejected(Exception):
    """The request is not a genuine, fresh Stripe event (answered 400, nothing recorded)."""


def client(settings: Settings) -> stripe.StripeClient:
    """A Stripe client for the configured key (and API base: localstripe in tests)."""
    if settings.stripe_api_key is None:
        raise StripeNotConfigured(
            "Online payment is not set up: set PLIXO_STRIPE_API_KEY to the organisation's "
            "secret key."
        )
    base = {"api": settings.stripe_api_base.rstrip("/")} if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=1,
    )


def _options(org: Organisation, idempotency_key: str | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if org.stripe_account:
        opts["stripe_account"] = org.stripe_account
    if idempotency_key:
        opts["idempotency_key"] = idempotency_key
    return opts


def _org(session: Session, org_id: int) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None:
        raise NotFound(f"Organisation {org_id} does not exist.")
    return org


def _stripe_error(exc: stripe.StripeError) -> StripeFailure:
    if isinstance(exc, stripe.CardError):
        return StripeFailure(f"The card was declined: {exc.user_message or 'try another card'}.")
    log.warning("stripe call failed: %s", exc)
    return StripeFailure("The payment service did not answer as expected; try again in a minute.")


@dataclass(frozen=True)
class Target:
    invoice: Invoice | None
    installment: PlanInstallment | None
    customer_id: int
    amount_minor: int
    currency: str
    label: str


def payment_target(
    session: Session,
    org_id: int,
    *,
    invoice_id: int | None = None,
    installment_id: int | None = None,
    customer_id: int | None = None,
) -> Target:
    """What a PaymentIntent would collect: an invoice's open balance or an installment's rest.

    ``customer_id`` scopes the lookup (the mini-portal): another customer's id is "not found".
    """
    if (invoice_id is None) == (installment_id is None):
        raise CommitmentError("Pay either one invoice or one installment.")
    if invoice_id is not None:
        inv = get_invoice(session, org_id, invoice_id)
        if customer_id is not None and inv.customer_id != customer_id:
            raise NotFound(f"Invoice {invoice_id} does not exist in this organisation.")
        if inv.status != InvoiceStatus.OPEN or inv.balance_minor <= 0:
            raise Conflict(f"Invoice {inv.number} has nothing left to pay.")
        return Target(
            inv, None, inv.customer_id, inv.balance_minor, inv.currency, f"Invoice {inv.number}"
        )
    assert installment_id is not None
    inst = get_installment(session, org_id, installment_id)
    plan = inst.plan
    if customer_id is not None and plan.customer_id != customer_id:
        raise NotFound(f"Installment {installment_id} does not exist in this organisation.")
    if plan.status not in RUNNING:
        raise Conflict(f"Plan {plan.id} is {plan.status.value}; it takes no payments.")
    remaining = inst.amount_minor - inst.paid_minor
    if remaining <= 0:
        raise Conflict(f"Installment {inst.seq} of plan {plan.id} is already paid.")
    return Target(
        None,
        inst,
        plan.customer_id,
        remaining,
        plan.currency,
        f"Plan {plan.id}, installment {inst.seq}",
    )


def _reusable_intent(
    session: Session, org: Organisation, target: Target, sc: stripe.StripeClient
) -> PaymentIntentLink | None:
    """An unfinished intent for the same target and amount, its status refreshed from Stripe
    (newest first); None when none is still usable."""
    q = select(PaymentIntentLink).where(
        PaymentIntentLink.org_id == org.id,
        PaymentIntentLink.amount_minor == target.amount_minor,
        PaymentIntentLink.status.in_(list(REUSABLE_STATUSES)),
    )
    if target.invoice is not None:
        q = q.where(PaymentIntentLink.invoice_id == target.invoice.id)
    elif target.installment is not None:
        q = q.where(PaymentIntentLink.installment_id == target.installment.id)
    for link in session.scalars(q.order_by(PaymentIntentLink.id.desc())):
        try:
            pi = sc.v1.payment_intents.retrieve(link.intent_id, options=_options(org))  # type: ignore[arg-type]
        except stripe.StripeError as exc:
            raise _stripe_error(exc) from exc
        link.status = pi.status
        if pi.status in REUSABLE_STATUSES:
            session.flush()
            return link
    return None


def _intent_idempotency_key(session: Session, org_id: int, target: Target) -> str:
    """Stripe's idempotency key for a new intent: the target, its amount and the newest intent
    id of the organisation, so a retry reuses the intent and a later attempt gets a new one."""
    attempt = (
        session.scalar(
            select(PaymentIntentLink.id)
            .where(PaymentIntentLink.org_id == org_id)
            .order_by(PaymentIntentLink.id.desc())
            .limit(1)
        )
        or 0
    )
    what = (
        f"inv-{target.invoice.id}"
        if target.invoice is not None
        else f"inst-{target.installment.id if target.installment else 0}"
    )
    return f"plixo-{org_id}-{what}-{target.amount_minor}-{attempt}"


def create_intent(
    session: Session,
    org_id: int,
    *,
    settings: Settings,
    invoice_id: int | None = None,
    installment_id: int | None = None,
    customer_id: int | None = None,
    stripe_client: stripe.StripeClient | None = None,
) -> PaymentIntentLink:
    """A PaymentIntent for the target's amount, in the organisation's own Stripe account.

    An unfinished intent for the same target and amount is reused (refreshing its status from
    Stripe), so reloading the pay page does not pile up intents.
    """
    target = payment_target(
        session,
        org_id,
        invoice_id=invoice_id,
        installment_id=installment_id,
        customer_id=customer_id,
    )
    org = _org(session, org_id)
    sc = stripe_client or client(settings)
    reused = _reusable_intent(session, org, target, sc)
    if reused is not None:
        return reused
    metadata = {
        "plixo_org_id": str(org_id),
        "plixo_customer_id": str(target.customer_id),
        "plixo_invoice_id": str(target.invoice.id) if target.invoice else "",
        "plixo_installment_id": str(target.installment.id) if target.installment else "",
        "plixo_label": target.label,
    }
    key = _intent_idempotency_key(session, org_id, target)
    try:
        pi = sc.v1.payment_intents.create(
            params={
                "amount": target.amount_minor,
                "currency": target.currency.lower(),
                "metadata": metadata,
            },
            options=_options(org, key),  # type: ignore[arg-type]
        )
    except stripe.StripeError as exc:
        raise _stripe_error(exc) from exc
    link = PaymentIntentLink(
        org_id=org_id,
        customer_id=target.customer_id,
        invoice_id=target.invoice.id if target.invoice else None,
        installment_id=target.installment.id if target.installment else None,
        intent_id=pi.id,
        amount_minor=target.amount_minor,
        currency=target.currency,
        status=pi.status,
    )
    session.add(link)
    session.flush()
    audit.record(
        session,
        org_id,
        actor="mini-portal" if customer_id is not None else "stripe",
        action="stripe.intent_created",
        subject_type="payment_intent",
        subject_id=link.id,
        detail={"intent_id": pi.id, "amount_minor": target.amount_minor, "target": target.label},
    )
    return link


def client_secret(settings: Settings, org: Organisation, link: PaymentIntentLink) -> str:
    """The intent's client secret, for Stripe.js' Payment Element (never stored by plixo)."""
    try:
        pi = client(settings).v1.payment_intents.retrieve(link.intent_id, options=_options(org))  # type: ignore[arg-type]
    except stripe.StripeError as exc:
        raise _stripe_error(exc) from exc
    return str(pi.client_secret)


def get_link(
    session: Session, org_id: int, intent_id: str, *, customer_id: int | None = None
) -> PaymentIntentLink:
    link = session.scalars(
        select(PaymentIntentLink).where(
            PaymentIntentLink.org_id == org_id, PaymentIntentLink.intent_id == intent_id
        )
    ).first()
    if link is None or (customer_id is not None and link.customer_id != customer_id):
        raise NotFound("That payment does not exist.")
    return link


def confirm_intent(
    session: Session,
    org_id: int,
    link: PaymentIntentLink,
    *,
    payment_method: str,
    settings: Settings,
    stripe_client: stripe.StripeClient | None = None,
) -> str:
    """Confirm the intent with a PaymentMethod id created by Stripe.js (card data never reaches
    plixo). The ledger changes only when the ``payment_intent.succeeded`` webhook arrives."""
    if not payment_method.startswith(("pm_", "card_", "src_")) or len(payment_method) > 100:
        raise CommitmentError("That is not a payment method id (pm_…).")
    org = _org(session, org_id)
    sc = stripe_client or client(settings)
    try:
        # Set the method first, then confirm: works on Stripe and on localstripe alike.
        sc.v1.payment_intents.update(
            link.intent_id,
            params={"payment_method": payment_method},
            options=_options(org),  # type: ignore[arg-type]
        )
        pi = sc.v1.payment_intents.confirm(link.intent_id, options=_options(org))  # type: ignore[arg-type]
    except stripe.StripeError as exc:
        raise _stripe_error(exc) from exc
    link.status = pi.status
    audit.record(
        session,
        org_id,
        actor="mini-portal",
        action="stripe.intent_confirmed",
        subject_type="payment_intent",
        subject_id=link.id,
        detail={"intent_id": link.intent_id, "status": pi.status},
    )
    session.flush()
    return str(pi.status)


# --- webhooks ------------------------------------------------------------------------------------


def verify_webhook(
    payload: bytes,
    signature: str | None,
    settings: Settings,
    *,
    tolerance: int = WEBHOOK_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The event, if the request is genuine and fresh; else :class:`WebhookRejected`.

    Fresh both ways: Stripe's library refuses a signature older than ``tolerance``; one dated
    more than ``tolerance`` ahead of this server's clock is refused too (a signature made for
    later replay, or a clock gone wrong: either way not an event to apply now).
    """
    if settings.stripe_webhook_secret is None:
        raise StripeNotConfigured("Set PLIXO_STRIPE_WEBHOOK_SECRET to receive Stripe webhooks.")
    if len(payload) > MAX_WEBHOOK_BYTES:
        raise WebhookRejected("payload too large")
    if not signature:
        raise WebhookRejected("missing Stripe-Signature header")
    try:
        stripe.Webhook.construct_event(
            payload, signature, settings.stripe_webhook_secret.get_secret_value(), tolerance
        )
    except stripe.SignatureVerificationError as exc:
        raise WebhookRejected(f"signature verification failed: {exc.user_message or exc}") from exc
    except (ValueError, KeyError, IndexError) as exc:
        raise WebhookRejected(f"malformed event: {exc}") from exc
    signed_at = _signature_time(signature)
    current = time.time() if now is None else now
    if signed_at is None or signed_at > current + tolerance:
        raise WebhookRejected(
            "timestamp is in the future beyond the tolerance (check this server's clock)"
        )
    event = json.loads(payload)
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise WebhookRejected("malformed event: no id")
    return event


def _signature_time(header: str) -> int | None:
    """The ``t=`` value of a Stripe-Signature header."""
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


@dataclass
class WebhookResult:
    event_id: str
    event_type: str
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)
    payment_id: int | None = None


def seen(session: Session, event_id: str) -> StripeEvent | None:
    return session.scalars(select(StripeEvent).where(StripeEvent.event_id == event_id)).first()


def handle_event(
    session: Session, event: dict[str, Any], *, now: datetime | None = None
) -> WebhookResult:
    """Apply a verified event once. The caller commits; a unique-key clash on commit means a
    concurrent delivery won the race, and this one must be answered as a duplicate."""
    now = now or utcnow()
    event_id = str(event["id"])[:120]
    event_type = str(event.get("type", ""))[:80]
    previous = seen(session, event_id)
    if previous is not None:
        return WebhookResult(event_id, event_type, "duplicate", {"first_outcome": previous.outcome})
    obj = (event.get("data") or {}).get("object") or {}
    if event_type == "payment_intent.succeeded":
        result, org_id = _on_succeeded(session, event, obj, now)
    elif event_type in ("payment_intent.payment_failed", "payment_intent.canceled"):
        result, org_id = _on_status(session, event, obj)
    else:
        result, org_id = WebhookResult(event_id, event_type, "ignored"), None
    session.add(
        StripeEvent(
            org_id=org_id,
            event_id=event_id,
            event_type=event_type,
            outcome=result.outcome,
            detail=result.detail,
            received_at=now,
        )
    )
    session.flush()
    if result.outcome not in ("processed", "ignored", "status_updated"):
        log.warning(
            "stripe event %s (%s) not applied: %s %s",
            event_id,
            event_type,
            result.outcome,
            result.detail,
        )
    return result


def _match(
    session: Session, event: dict[str, Any], obj: dict[str, Any]
) -> tuple[PaymentIntentLink | None, str, dict[str, Any]]:
    """The link for the event's intent, checked against its metadata and connected account."""
    intent_id = str(obj.get("id", ""))
    link = session.scalars(
        select(PaymentIntentLink).where(PaymentIntentLink.intent_id == intent_id)
    ).first()
    detail: dict[str, Any] = {"intent_id": intent_id, "metadata": obj.get("metadata") or {}}
    if link is None:
        return None, "unknown_invoice", detail
    meta_org = (obj.get("metadata") or {}).get("plixo_org_id")
    if meta_org and str(meta_org) != str(link.org_id):
        return None, "org_mismatch", detail
    org = session.get(Organisation, link.org_id)
    account = event.get("account")
    expected = org.stripe_account if org else None
    if (account or None) != (expected or None):
        detail["account"] = account
        return None, "account_mismatch", detail
    return link, "ok", detail


def _post_intent_payment(
    session: Session,
    link: PaymentIntentLink,
    amount: int,
    currency: str,
    paid_at: datetime,
    now: datetime,
    detail: dict[str, Any],
) -> payments.PaymentResult:
    """Post the intent's money to its target; when the target refuses it (e.g. the plan was
    cancelled meanwhile) post it on account instead, noting why in ``detail``."""
    try:
        with session.begin_nested():  # a refusal rolls back only this attempt
            result = payments.post_payment(
                session,
                link.org_id,
                amount_minor=amount,
                currency=currency,
                received_on=org_today(session, link.org_id, paid_at),
                customer_id=link.customer_id,
                invoice_id=None if link.installment_id else link.invoice_id,
                installment_id=link.installment_id,
                method="stripe",
                external_ref=link.intent_id,
                actor="stripe webhook",
                now=now,
            )
    except CommitmentError as exc:
        # e.g. the plan was cancelled meanwhile: keep the money on account, never lose it.
        detail["fallback"] = str(exc)
        result = payments.post_payment(
            session,
            link.org_id,
            amount_minor=amount,
            currency=currency,
            received_on=org_today(session, link.org_id, paid_at),
            customer_id=link.customer_id,
            method="stripe",
            external_ref=link.intent_id,
            actor="stripe webhook",
            now=now,
        )
    return result


def _on_succeeded(
    session: Session, event: dict[str, Any], obj: dict[str, Any], now: datetime
) -> tuple[WebhookResult, int | None]:
    event_id, event_type = str(event["id"]), str(event.get("type"))
    link, verdict, detail = _match(session, event, obj)
    if link is None:
        return WebhookResult(event_id, event_type, verdict, detail), None
    amount = int(obj.get("amount_received") or obj.get("amount") or 0)
    intended = obj.get("amount")
    currency = str(obj.get("currency", "")).upper()
    # The intent was created for exactly link.amount_minor (an invoice's balance or an
    # installment's rest): anything else is not what the payer was asked for. Part-payments
    # have their own declared paths (a plan's installments; POST /api/payments by a person).
    if (
        amount != link.amount_minor
        or (intended is not None and int(intended) != link.amount_minor)
        or currency != link.currency
    ):
        detail.update({"amount": amount, "currency": currency, "expected_minor": link.amount_minor})
        return WebhookResult(event_id, event_type, "amount_mismatch", detail), link.org_id
    # A Stripe payout's line may have applied this intent already (the webhook came late), or
    # wait for it: never post twice (the ``payout_lines`` hook).
    stripe_payouts = payout_lines.get()

    applied = stripe_payouts.applied_line_for_intent(session, link.org_id, link.intent_id)
    if applied is not None:
        link.status = "succeeded"
        detail["cash_line_id"] = applied.id
        return WebhookResult(event_id, event_type, "already_applied", detail), link.org_id
    created = event.get("created")
    paid_at = (
        min(datetime.fromtimestamp(int(created), UTC), now) if isinstance(created, int) else now
    )
    link.status = "succeeded"
    result = _post_intent_payment(session, link, amount, currency, paid_at, now, detail)
    if not result.duplicate:
        stripe_payouts.link_posted_intent(session, link.org_id, link.intent_id, result.payment)
    detail.update(
        {
            "payment_id": result.payment.id,
            "duplicate_payment": result.duplicate,
            "applied_minor": result.payment.applied_minor,
            "unapplied_minor": result.payment.unapplied_minor,
            "promises_kept": result.promises_kept,
            "installments_paid": result.installments_paid,
        }
    )
    return (
        WebhookResult(event_id, event_type, "processed", detail, payment_id=result.payment.id),
        link.org_id,
    )


def _on_status(
    session: Session, event: dict[str, Any], obj: dict[str, Any]
) -> tuple[WebhookResult, int | None]:
    event_id, event_type = str(event["id"]), str(event.get("type"))
    link, verdict, detail = _match(session, event, obj)
    if link is None:
        return WebhookResult(event_id, event_type, verdict, detail), None
    link.status = str(obj.get("status") or ("canceled" if "canceled" in event_type else "failed"))
    audit.record(
        session,
        link.org_id,
        actor="stripe webhook",
        action="stripe.intent_" + event_type.rsplit(".", 1)[1],
        subject_type="payment_intent",
        subject_id=link.id,
        detail={"intent_id": link.intent_id, "status": link.status},
    )
    return WebhookResult(event_id, event_type, "status_updated", detail), link.org_id
