"""True at send time: the last check before a message is handed to delivery.

Why: a draft is grounded and decided when it is written and again when it is approved, but it may
leave hours or days later (quiet hours, Autopilot spacing, a retry after a relay outage). By then a
payment may have arrived, a promise may have been kept, and "a short reminder ahead of December 8"
may be going out on December 14. So, immediately before delivery, ``recheck_before_send`` reads the
draft again against the ledger *and the send time*, on the organisation's business date at that
moment (``memory.clock``):

* grounding again: every amount, date, invoice number and link still in the ledger;
* the invoices it chases are still open, and a payment it calls promised is still promised;
* date-dependent wording ("ahead of", "is due on", "due today", "overdue since", "promised for",
  in the supported languages: ``tools.grounding.date_wording``) is still true on that date.

When's-it-allowed (quiet hours, caps, Shadow Mode) stays with the guardrails, which decided at
approval and decide again when a deferral is released (``tools.drafts.service.release_deferred``);
this
check is about whether the words are still true. The answer is a ``SendCheck``: ``send`` (deliver
as written) or ``hold`` (back to a person with every reason; the review chat re-renders it with
today's facts, re-grounded and re-decided, for a new approval). ``recheck_before_send`` only reads,
``apply_send_check`` writes the transition (audited). A delivery step calls the two; today's outbox
calls ``vet_before_delivery`` once per claimed message, which also withdraws the claimed outbox row
(so a re-approval can queue the draft again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import and_, delete, select
from sqlalchemy.orm import Session, sessionmaker

from memory import business_day, clock
from memory.config import Settings, get_settings
from memory.models import (
    Customer,
    Draft,
    DraftStatus,
    Invoice,
    InvoiceStatus,
    MailThread,
    OutboxMessage,
    OutboxStatus,
    PromiseStatus,
    PromiseToPay,
)
from tools.drafts import lifecycle
from tools.grounding.comparison import ground_text
from tools.grounding.date_wording import date_wording_problems
from tools.grounding.guardrail_facts import is_dispute_correspondence
from tools.grounding.recheck import draft_pay_link
from tools.grounding.truth import ledger_truth
from tools.kit import audit
from tools.kit.formatting import locale_for

log = logging.getLogger("plixo.send_check")

SendAction = Literal["send", "hold"]


@dataclass(frozen=True)
class SendCheck:
    """What the last check before delivery decided, and why (shown to the person it goes to)."""

    action: SendAction
    business_date: date
    reasons: tuple[str, ...] = ()
    grounding: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Deliver the message exactly as written."""
        return self.action == "send"


def _invoice_problems(session: Session, draft: Draft, numbers: list[str]) -> list[str]:
    """Invoices the draft chases that are no longer open (paid, credited or voided since). A reply
    about a dispute chases nothing: its "credit issued" may settle the invoice in full."""
    if is_dispute_correspondence(draft):
        return []
    q = select(Invoice).where(Invoice.org_id == draft.org_id)
    if draft.invoice_id is not None:
        q = q.where((Invoice.id == draft.invoice_id) | Invoice.number.in_(numbers))
    else:
        q = q.where(Invoice.customer_id == draft.customer_id, Invoice.number.in_(numbers))
    out: list[str] = []
    for inv in session.scalars(q):
        if inv.status is not InvoiceStatus.OPEN or inv.balance_minor <= 0:
            out.append(f"invoice {inv.number} is {inv.status.value} now; the message chases it")
    return out


def _promise_problems(session: Session, draft: Draft, stated: list[date]) -> list[str]:
    """A promised payment the text names (by its date) that was kept or cancelled since."""
    if not stated or not _about_a_promise(draft):
        return []
    rows = session.execute(
        select(PromiseToPay.promised_date, PromiseToPay.status).where(
            PromiseToPay.org_id == draft.org_id,
            PromiseToPay.customer_id == draft.customer_id,
            PromiseToPay.promised_date.in_(stated),
        )
    ).all()
    live = {d for d, s in rows if s in (PromiseStatus.OPEN, PromiseStatus.MISSED)}
    done = {d: s for d, s in rows if s not in (PromiseStatus.OPEN, PromiseStatus.MISSED)}
    return [
        f"the payment promised for {d.isoformat()} is {s.value} now"
        for d, s in sorted(done.items())
        if d not in live
    ]


def _about_a_promise(draft: Draft) -> bool:
    key = draft.run_key or ""
    template = str((draft.stated_facts or {}).get("template") or "")
    return key.startswith("promise-") or template.startswith("promise_")


def _due_dates(session: Session, draft: Draft) -> tuple[date, ...]:
    if draft.invoice_id is None:
        return ()
    inv = session.get(Invoice, draft.invoice_id)
    return (inv.due_date,) if inv is not None and inv.org_id == draft.org_id else ()


def _ground(session: Session, draft: Draft, today: date, settings: Settings) -> dict[str, Any]:
    """Grounding of the draft's text against the ledger as it is on the business date ``today``
    (the same reader and ledger facts as at drafting, approval and edit)."""
    customer = session.get(Customer, draft.customer_id)
    if customer is None or customer.org_id != draft.org_id:
        raise LookupError(f"draft {draft.id} points at a customer outside its organisation")
    link = draft_pay_link(session, draft, settings)
    language = draft.language or customer.language or "en"
    truth = ledger_truth(
        session,
        draft.org_id,
        customer.id,
        as_of=today,
        links=[link] if link else [],
        locale=locale_for(language, customer.country_code),
    )
    text = f"{draft.subject}\n\n{draft.body}"
    return ground_text(text, truth, language=language, as_of=today).as_dict()


def recheck_before_send(
    session: Session, draft: Draft, at: datetime, *, settings: Settings | None = None
) -> SendCheck:
    """Is ``draft`` still true at ``at``, the moment it would be handed to delivery?

    Reads only. "Today" is the organisation's business date at ``at`` (``memory.clock``); the
    contact's time zone is not used here (it only sets quiet hours and send windows, which the
    guardrails decided at approval and again when a deferral was released). A message that is
    no longer true is held for a person with every reason; one that is true is sent as written.
    """
    settings = settings or get_settings()
    today = business_day.org_business_date(session, draft.org_id, at)
    with session.no_autoflush:
        grounding = _ground(session, draft, today, settings)
        stated = grounding.get("stated") or {}
        numbers = [str(n) for n in stated.get("invoice_numbers") or []]
        dates = [date.fromisoformat(str(d)) for d in stated.get("dates") or []]
        untrue = [str(m.get("message")) for m in grounding.get("mismatches") or []]
        untrue += _invoice_problems(session, draft, numbers)
        untrue += _promise_problems(session, draft, dates)
        wording = date_wording_problems(
            f"{draft.subject}\n\n{draft.body}",
            language=draft.language or "en",
            today=today,
            locale=locale_for(draft.language),
            due_dates=_due_dates(session, draft),
        )
    untrue += [p.message for p in wording]
    if not untrue:
        return SendCheck("send", today, (), grounding)
    grounding["ok"] = False
    grounding["mismatches"] = [
        *(grounding.get("mismatches") or []),
        *({"kind": "date", "stated": p.phrase, "message": p.message} for p in wording),
    ]
    return SendCheck("hold", today, tuple(untrue), grounding)


def apply_send_check(session: Session, draft: Draft, check: SendCheck, *, actor: str) -> None:
    """Send a draft that is no longer true back to a person, with the reasons (audited).

    The draft returns to review (``pending_review``) with ``hold_reason`` and the failed
    grounding shown on its page; the reviewer edits it, or asks the co-pilot to rewrite it with
    today's facts (re-grounded and re-decided), and approves again. The caller commits; ``send``
    changes nothing.
    """
    if check.ok:
        return
    if check.grounding:
        draft.grounding = check.grounding
    reasons = "; ".join(check.reasons)
    draft.hold_reason = f"Held at send time ({check.business_date.isoformat()}): {reasons}"
    lifecycle.move(
        session,
        draft,
        DraftStatus.PENDING_REVIEW,
        actor=actor,
        action="draft.held_at_send",
        detail={
            "business_date": check.business_date.isoformat(),
            "reasons": list(check.reasons)[:10],
        },
    )


def withhold_if_untrue(
    sessions: sessionmaker[Session],
    outbox_id: int,
    *,
    executor: str,
    at: datetime | None = None,
    settings: Settings | None = None,
) -> str | None:
    """The durable delivery's last look before the hand-off: ``None`` to deliver the queued
    message as written, else the action taken (its row withdrawn, its draft held with the
    reasons by ``apply_send_check``, both audited in one transaction).

    Only a row still ``queued`` is withdrawn: one a worker already attempted is left to the
    hand-off, which never sends a message twice. A check that fails with an error holds the draft
    too (fail closed)."""
    at = at or clock.now()
    with sessions() as session:
        row = session.get(OutboxMessage, outbox_id)
        if row is None or row.draft_id is None or row.status != OutboxStatus.QUEUED:
            return None
        draft = session.get(Draft, row.draft_id)
        if draft is None:
            return None
        try:
            check = recheck_before_send(session, draft, at, settings=settings)
        except Exception as exc:  # a check that cannot run must not let the message through
            log.exception("send-time check of draft %s failed", draft.id)
            today = business_day.org_business_date(session, draft.org_id, at)
            check = SendCheck("hold", today, (f"the send-time check failed: {exc}",))
        if check.ok:
            return None
        # the reply thread opened when the message was queued goes with it (a new approval
        # opens a new one for the new message)
        session.execute(delete(MailThread).where(MailThread.outbox_message_id == outbox_id))
        withdrawn = session.execute(
            delete(OutboxMessage).where(
                and_(OutboxMessage.id == outbox_id, OutboxMessage.status == OutboxStatus.QUEUED)
            )
        )
        if withdrawn.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            return None
        actor = f"outbox worker {executor}"
        apply_send_check(session, draft, check, actor=actor)
        audit.record(
            session,
            draft.org_id,
            actor=actor,
            action="outbox.withdrawn",
            subject_type="outbox",
            subject_id=outbox_id,
            from_state=OutboxStatus.QUEUED.value,
            to_state=None,
            detail={"message_id": row.message_id, "draft_id": draft.id, "action": check.action},
        )
        session.commit()
        log.info("outbox %s withdrawn at send time: %s", outbox_id, check.action)
        return check.action
