"""Which invoices have an outreach due on a date: cadence steps and follow-ups.

Why it is its own module: Autopilot, the review panel's Today's Focus and the evals all need the
same answer to "what is due today", and it must be cheap on 10,000 invoices (a few queries, the
rest in Python).

Rules, on the organisation's date ``as_of``:

- **Cadence steps.** An open invoice with a balance, of a customer whose segment has a cadence,
  is due for the *latest* step whose date (due date + ``day_offset``) is on or before ``as_of`` and
  no more than ``catch_up_days`` old. Older missed steps are not sent late (one touch, not three),
  and after the last step the invoice leaves the cadence (a human calls).
- **Missed promise.** A promise-to-pay that is ``missed``, or still ``open`` past its date plus
  grace, gets one follow-up on the first day after the grace (``promise_broken``), about its still
  open, undisputed invoices.
- **Missed installment.** An active or defaulted payment plan with an unpaid installment past its
  due date plus ``INSTALLMENT_GRACE_DAYS`` gets one follow-up (``installment_missed``).
- **Not chased** (counted in ``excluded``): disputed invoices (the dispute workflow owns them),
  invoices under an open promise until its date plus grace, invoices in a live payment plan (the
  installments are chased instead), customers without a contact reachable by e-mail (consent, not
  opted out, not bounced), cadence steps of an invoice that already gets a follow-up today, and
  a pre-due or due-day step (``day_offset <= 0``) of an invoice already overdue on ``as_of``.

Each item has a stable ``run_key`` (``{invoice_id}:{step}:{step date}``): a draft with that key
exists at most once per organisation, which makes Autopilot safe to stop and run again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from memory.models import (
    OPEN_DISPUTE_STATUSES,
    Cadence,
    CadenceStep,
    Channel,
    Contact,
    Customer,
    Dispute,
    Draft,
    DraftKind,
    Invoice,
    InvoiceStatus,
    PaymentPlan,
    PlanInstallment,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
    Segment,
    plan_invoice,
    promise_invoice,
)
from tools.commitments.promises import PromiseReminder, covered_keys

CATCH_UP_DAYS = 7
INSTALLMENT_GRACE_DAYS = 3
PROMISE_TEMPLATE = "promise_broken"
PROMISE_REMINDER_TEMPLATE = "promise_reminder"
INSTALLMENT_TEMPLATE = "installment_missed"
_LIVE_PLANS = (PlanStatus.PROPOSED, PlanStatus.PENDING_APPROVAL, PlanStatus.ACTIVE)
_CHASED_PLANS = (PlanStatus.ACTIVE, PlanStatus.DEFAULTED)
#: an open invoice as ``select_due`` reads it: id, customer_id, due_date, disputed, segment_id
_InvoiceRow = Row[int, int, date, bool, int | None]


class UnknownSegment(ValueError):
    """The segment name does not exist in the organisation; the message lists the ones that do."""


@dataclass(frozen=True)
class DueItem:
    """One outreach due: an invoice (plus related invoices for follow-ups) and the step to send."""

    invoice_id: int
    customer_id: int
    contact_id: int
    segment_id: int | None
    segment: str | None
    kind: DraftKind
    step_key: str
    step_date: date
    template: str
    channel: Channel
    tone: str
    step_id: int | None = None
    promise_id: int | None = None
    installment_id: int | None = None
    related_invoice_ids: tuple[int, ...] = ()
    key: str | None = None
    #: a consolidated message (``tools.outreach.consolidation``): its invoices at their final-notice
    #: step, the cadence steps of all its invoices, and what the reviewer should know in words
    final_notice_ids: tuple[int, ...] = ()
    member_step_ids: tuple[int, ...] = ()
    reviewer_notes: tuple[str, ...] = ()

    @property
    def run_key(self) -> str:
        """The key a draft for this item is stored under (at most one draft per key and org).

        ``key`` overrides it where another module owns the key (``promise-reminder:{id}``, which
        ``tools.commitments.promises.due_reminders`` reads back to remind once per promise)."""
        return self.key or f"{self.invoice_id}:{self.step_key}:{self.step_date.isoformat()}"

    @property
    def invoice_ids(self) -> list[int]:
        return [self.invoice_id, *[i for i in self.related_invoice_ids if i != self.invoice_id]]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (to hand items to a worker process)."""
        data = asdict(self)
        data.update(
            kind=self.kind.value,
            channel=self.channel.value,
            step_date=self.step_date.isoformat(),
            related_invoice_ids=list(self.related_invoice_ids),
            final_notice_ids=list(self.final_notice_ids),
            member_step_ids=list(self.member_step_ids),
            reviewer_notes=list(self.reviewer_notes),
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DueItem:
        values = dict(data)
        values.update(
            kind=DraftKind(values["kind"]),
            channel=Channel(values["channel"]),
            step_date=date.fromisoformat(values["step_date"]),
            related_invoice_ids=tuple(values.get("related_invoice_ids", ())),
            final_notice_ids=tuple(values.get("final_notice_ids", ())),
            member_step_ids=tuple(values.get("member_step_ids", ())),
            reviewer_notes=tuple(values.get("reviewer_notes", ())),
        )
        return cls(**values)


@dataclass
class Selection:
    items: list[DueItem] = field(default_factory=list)
    existing: int = 0
    excluded: Counter[str] = field(default_factory=Counter)


def _pick_contacts(session: Session, org_id: int, customer_ids: set[int]) -> dict[int, int]:
    """Per customer, the contact to write to: reachable by e-mail (consent, not opted out, not
    bounced), primary first. Customers with none are not drafted for (counted as excluded)."""
    if not customer_ids:
        return {}
    best: dict[int, tuple[tuple[int, int], int]] = {}
    rows = session.execute(
        select(Contact.id, Contact.customer_id, Contact.is_primary).where(
            Contact.org_id == org_id,
            Contact.email.is_not(None),
            Contact.email != "",
            Contact.consent_email.is_(True),
            Contact.opted_out_email.is_(False),
            Contact.bounced.is_(False),
        )
    )
    for cid, cust, primary in rows:
        if cust not in customer_ids:
            continue
        rank = (0 if primary else 1, cid)
        if cust not in best or rank < best[cust][0]:
            best[cust] = (rank, cid)
    return {cust: cid for cust, (_, cid) in best.items()}


def promise_reminder_items(
    session: Session,
    org_id: int,
    reminders: Sequence[PromiseReminder],
    as_of: date,
    *,
    segment: str | None = None,
) -> tuple[list[DueItem], Counter[str]]:
    """Items for the reminders ``tools.commitments.promises.due_reminders`` returns: one draft per
    promise, about its open, undisputed invoices, to the contact who made it (when still reachable
    by e-mail) or the customer's usual contact. Also what was left out, by reason."""
    excluded: Counter[str] = Counter()
    if not reminders:
        return [], excluded
    segments = {s.id: s for s in session.scalars(select(Segment).where(Segment.org_id == org_id))}
    invoices = _promised_open_invoices(session, org_id, [r.promise_id for r in reminders])
    reachable = _pick_contacts(session, org_id, {r.customer_id for r in reminders})
    own_contacts = _reachable_contacts(session, org_id, [r.contact_id for r in reminders])
    items: list[DueItem] = []
    for r in reminders:
        targets = invoices.get(r.promise_id, [])
        if not targets:
            excluded["promise_reminder_nothing_open"] += 1
            continue
        seg_id = targets[0][1]
        seg = segments.get(seg_id) if seg_id is not None else None
        if segment is not None and (seg is None or seg.name != segment):
            continue
        contact = r.contact_id if r.contact_id in own_contacts else reachable.get(r.customer_id)
        if contact is None:
            excluded["no_reachable_contact"] += 1
            continue
        items.append(
            DueItem(
                invoice_id=targets[0][0],
                customer_id=r.customer_id,
                contact_id=contact,
                segment_id=seg_id,
                segment=seg.name if seg else None,
                kind=DraftKind.FOLLOW_UP,
                step_key=f"promise-reminder-{r.promise_id}",
                step_date=as_of,
                template=PROMISE_REMINDER_TEMPLATE,
                channel=Channel.EMAIL,
                tone="friendly",
                promise_id=r.promise_id,
                related_invoice_ids=tuple(i for i, _ in targets[1:]),
                key=r.run_key,
            )
        )
    return items, excluded


def _promised_open_invoices(
    session: Session, org_id: int, promise_ids: list[int]
) -> dict[int, list[tuple[int, int | None]]]:
    """Per promise-to-pay, its invoices still open with a balance and not disputed (flagged or
    under an open dispute), oldest due first, each with its customer's segment id.

    Why: a promise reminder is about what the customer still owes under that promise, and a
    disputed invoice belongs to the dispute workflow, never to a nudge; the first invoice also
    decides the reminder's segment.
    """
    rows = session.execute(
        select(
            promise_invoice.c.promise_id,
            Invoice.id,
            Invoice.due_date,
            Invoice.disputed,
            Customer.segment_id,
        )
        .join(Invoice, Invoice.id == promise_invoice.c.invoice_id)
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(
            promise_invoice.c.promise_id.in_(promise_ids),
            Invoice.org_id == org_id,
            Invoice.status == InvoiceStatus.OPEN,
            Invoice.balance_minor > 0,
        )
        .order_by(Invoice.due_date, Invoice.id)
    ).all()
    disputed = set(
        session.scalars(
            select(Dispute.invoice_id).where(
                Dispute.org_id == org_id, Dispute.status.in_(OPEN_DISPUTE_STATUSES)
            )
        )
    )
    invoices: dict[int, list[tuple[int, int | None]]] = {}
    for pid, inv_id, _, flagged, seg_id in rows:
        if not flagged and inv_id not in disputed:
            invoices.setdefault(pid, []).append((inv_id, seg_id))
    return invoices


def _reachable_contacts(
    session: Session, org_id: int, contact_ids: Sequence[int | None]
) -> set[int]:
    """Which of these contacts can be reached by e-mail (consent, not opted out, not bounced)."""
    ids = sorted({c for c in contact_ids if c is not None})
    if not ids:
        return set()
    return set(
        session.scalars(
            select(Contact.id).where(
                Contact.org_id == org_id,
                Contact.id.in_(ids),
                Contact.email.is_not(None),
                Contact.email != "",
                Contact.consent_email.is_(True),
                Contact.opted_out_email.is_(False),
                Contact.bounced.is_(False),
            )
        )
    )


def existing_run_keys(session: Session, org_id: int, keys: list[str]) -> set[str]:
    """The run keys that already have a draft in the organisation."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        found.update(
            k
            for k in session.scalars(
                select(Draft.run_key).where(Draft.org_id == org_id, Draft.run_key.in_(chunk))
            )
            if k is not None
        )
    return found


def _resolve_segments(
    session: Session, org_id: int, segment: str | None
) -> tuple[dict[int, Segment], int | None]:
    """The organisation's segments by id, and the id of the one asked for (``None``: all).

    Resolved before anything else so an unknown name fails fast, with the names that do exist."""
    segments = {s.id: s for s in session.scalars(select(Segment).where(Segment.org_id == org_id))}
    segment_id: int | None = None
    if segment is not None:
        match = [s for s in segments.values() if s.name == segment]
        if not match:
            names = ", ".join(sorted(s.name for s in segments.values())) or "none defined"
            raise UnknownSegment(f"No segment named {segment!r} (segments: {names}).")
        segment_id = match[0].id
    return segments, segment_id


def _steps_by_cadence(
    session: Session, org_id: int, segments: dict[int, Segment]
) -> dict[int, list[CadenceStep]]:
    """The steps of the cadences the segments use, in send order, in one query (not per invoice)."""
    cadence_ids = {s.cadence_id for s in segments.values() if s.cadence_id is not None}
    steps_by_cadence: dict[int, list[CadenceStep]] = {}
    if cadence_ids:
        for step in session.scalars(
            select(CadenceStep)
            .join(Cadence, Cadence.id == CadenceStep.cadence_id)
            .where(Cadence.org_id == org_id, CadenceStep.cadence_id.in_(cadence_ids))
            .order_by(CadenceStep.cadence_id, CadenceStep.day_offset, CadenceStep.position)
        ):
            steps_by_cadence.setdefault(step.cadence_id, []).append(step)
    return steps_by_cadence


def _open_invoices(session: Session, org_id: int, segment_id: int | None) -> Sequence[_InvoiceRow]:
    """Open invoices with a balance (of one segment when asked), oldest due first.

    Only the columns the selection needs: the point is to stay cheap on 10,000 invoices."""
    inv_query = (
        select(
            Invoice.id,
            Invoice.customer_id,
            Invoice.due_date,
            Invoice.disputed,
            Customer.segment_id,
        )
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(
            Invoice.org_id == org_id,
            Invoice.status == InvoiceStatus.OPEN,
            Invoice.balance_minor > 0,
        )
        .order_by(Invoice.due_date, Invoice.id)
    )
    if segment_id is not None:
        inv_query = inv_query.where(Customer.segment_id == segment_id)
    return session.execute(inv_query).all()


def _disputed_ids(session: Session, org_id: int, invoices: Sequence[_InvoiceRow]) -> set[int]:
    """Invoices flagged disputed or with an open dispute: the dispute workflow owns them."""
    disputed = {row.id for row in invoices if row.disputed}
    disputed |= set(
        session.scalars(
            select(Dispute.invoice_id).where(
                Dispute.org_id == org_id, Dispute.status.in_(OPEN_DISPUTE_STATUSES)
            )
        )
    )
    return disputed


def _promise_follow_ups(
    session: Session,
    org_id: int,
    as_of: date,
    catch_up_days: int,
    *,
    segments: dict[int, Segment],
    inv_info: dict[int, _InvoiceRow],
    open_ids: set[int],
    disputed: set[int],
) -> tuple[set[int], list[DueItem]]:
    """Promises: open ones pause their invoices; lapsed or missed ones get a follow-up.

    Returns the paused invoice ids (a partial promise pauses only what its amount covers) and one
    ``promise_broken`` follow-up per lapsed promise, about its open, undisputed invoices."""
    paused: set[int] = set()
    follow_ups: list[DueItem] = []
    promise_rows = session.execute(
        select(
            PromiseToPay.id,
            PromiseToPay.customer_id,
            PromiseToPay.promised_date,
            PromiseToPay.grace_days,
            PromiseToPay.status,
            PromiseToPay.amount_minor,
            promise_invoice.c.invoice_id,
            Invoice.due_date,
            Invoice.balance_minor,
            Invoice.status,
        )
        .join(promise_invoice, promise_invoice.c.promise_id == PromiseToPay.id)
        .join(Invoice, Invoice.id == promise_invoice.c.invoice_id)
        .where(
            PromiseToPay.org_id == org_id,
            PromiseToPay.status.in_((PromiseStatus.OPEN, PromiseStatus.MISSED)),
        )
        .order_by(PromiseToPay.id)
    ).all()
    promises: dict[int, tuple[int, date, PromiseStatus, int, list[tuple[int, date, int, int]]]] = {}
    for pid, cust, pdate, grace, status, amount, inv_id, due, balance, inv_status in promise_rows:
        deadline = pdate + timedelta(days=grace)
        entry = promises.setdefault(pid, (cust, deadline, status, amount, []))
        entry[4].append((inv_id, due, inv_id, balance if inv_status == InvoiceStatus.OPEN else 0))
    for pid, (cust, deadline, status, amount, links) in promises.items():
        inv_ids = [link[0] for link in links]
        if status is PromiseStatus.OPEN and deadline >= as_of:
            # A partial promise pauses only the invoices its amount covers.
            paused.update(covered_keys(amount, links))
            continue
        follow_date = deadline + timedelta(days=1)
        if not (0 <= (as_of - follow_date).days < catch_up_days):
            continue
        targets = [i for i in inv_ids if i in open_ids and i not in disputed]
        if not targets:
            continue
        targets.sort(key=lambda i: (inv_info[i].due_date, i))
        seg = inv_info[targets[0]].segment_id
        follow_ups.append(
            DueItem(
                invoice_id=targets[0],
                customer_id=cust,
                contact_id=0,
                segment_id=seg,
                segment=segments[seg].name if seg in segments else None,
                kind=DraftKind.FOLLOW_UP,
                step_key=f"promise-{pid}",
                step_date=follow_date,
                template=PROMISE_TEMPLATE,
                channel=Channel.EMAIL,
                tone="firm",
                promise_id=pid,
                related_invoice_ids=tuple(targets[1:]),
            )
        )
    return paused, follow_ups


def _first_missed_installments(
    session: Session, org_id: int, as_of: date
) -> dict[int, tuple[int, int, date]]:
    """Per chased plan, its first unpaid installment past due plus grace: (customer, installment,
    follow-up date). Only the first: one follow-up per plan, not one per installment missed."""
    plan_rows = session.execute(
        select(
            PaymentPlan.id,
            PaymentPlan.customer_id,
            PlanInstallment.id,
            PlanInstallment.due_date,
            PlanInstallment.amount_minor,
            PlanInstallment.paid_minor,
        )
        .join(PlanInstallment, PlanInstallment.plan_id == PaymentPlan.id)
        .where(PaymentPlan.org_id == org_id, PaymentPlan.status.in_(_CHASED_PLANS))
        .order_by(PaymentPlan.id, PlanInstallment.due_date, PlanInstallment.seq)
    ).all()
    first_missed: dict[int, tuple[int, int, date]] = {}
    for plan_id, cust, inst_id, due, amount, paid in plan_rows:
        if paid >= amount or plan_id in first_missed:
            continue
        follow_date = due + timedelta(days=INSTALLMENT_GRACE_DAYS + 1)
        if follow_date <= as_of:
            first_missed[plan_id] = (cust, inst_id, follow_date)
    return first_missed


def _plan_follow_ups(
    session: Session,
    org_id: int,
    as_of: date,
    catch_up_days: int,
    *,
    segments: dict[int, Segment],
    inv_info: dict[int, _InvoiceRow],
    open_ids: set[int],
    disputed: set[int],
) -> tuple[set[int], list[DueItem]]:
    """Plans: their invoices follow the installments; a missed installment gets a follow-up.

    Returns the invoice ids in a live plan (not chased by the cadence) and one
    ``installment_missed`` follow-up per plan, about its open, undisputed invoices."""
    follow_ups: list[DueItem] = []
    in_plan = set(
        session.scalars(
            select(plan_invoice.c.invoice_id)
            .join(PaymentPlan, PaymentPlan.id == plan_invoice.c.plan_id)
            .where(PaymentPlan.org_id == org_id, PaymentPlan.status.in_(_LIVE_PLANS))
        )
    )
    first_missed = _first_missed_installments(session, org_id, as_of)
    if first_missed:
        plan_invoices: dict[int, list[int]] = {}
        for plan_id, inv_id in session.execute(
            select(plan_invoice.c.plan_id, plan_invoice.c.invoice_id).where(
                plan_invoice.c.plan_id.in_(list(first_missed))
            )
        ):
            plan_invoices.setdefault(plan_id, []).append(inv_id)
        for plan_id, (cust, inst_id, follow_date) in first_missed.items():
            if not (0 <= (as_of - follow_date).days < catch_up_days):
                continue
            targets = sorted(
                (i for i in plan_invoices.get(plan_id, []) if i in open_ids and i not in disputed),
                key=lambda i: (inv_info[i].due_date, i),
            )
            if not targets:
                continue
            seg = inv_info[targets[0]].segment_id
            follow_ups.append(
                DueItem(
                    invoice_id=targets[0],
                    customer_id=cust,
                    contact_id=0,
                    segment_id=seg,
                    segment=segments[seg].name if seg in segments else None,
                    kind=DraftKind.FOLLOW_UP,
                    step_key=f"installment-{inst_id}",
                    step_date=follow_date,
                    template=INSTALLMENT_TEMPLATE,
                    channel=Channel.EMAIL,
                    tone="firm",
                    installment_id=inst_id,
                    related_invoice_ids=tuple(targets[1:]),
                )
            )
    return in_plan, follow_ups


def _due_step(
    row: _InvoiceRow, steps: Sequence[CadenceStep], as_of: date, catch_up_days: int
) -> tuple[CadenceStep, date] | None:
    """The latest step of the cadence dated on or before ``as_of``, and its date, unless it is
    ``catch_up_days`` old or more: missed steps are not sent late (one touch, not three)."""
    due_step: CadenceStep | None = None
    for step in steps:
        step_date = row.due_date + timedelta(days=step.day_offset)
        if step_date <= as_of:
            due_step = step
    if due_step is None:
        return None
    step_date = row.due_date + timedelta(days=due_step.day_offset)
    if (as_of - step_date).days >= catch_up_days:
        return None
    return due_step, step_date


def _cadence_items(
    invoices: Sequence[_InvoiceRow],
    as_of: date,
    catch_up_days: int,
    *,
    segments: dict[int, Segment],
    steps_by_cadence: dict[int, list[CadenceStep]],
    held: tuple[set[int], set[int], set[int], set[int]],
    excluded: Counter[str],
) -> list[DueItem]:
    """The cadence step due per invoice, counting in ``excluded`` the ones not chased.

    ``held`` is (disputed, paused by a promise, in a payment plan, followed up today): each of
    those keeps its invoice out of the cadence, first reason counted."""
    disputed, paused, in_plan, followed = held
    cadence_items: list[DueItem] = []
    for row in invoices:
        seg_obj = segments.get(row.segment_id) if row.segment_id is not None else None
        if seg_obj is None or seg_obj.cadence_id is None:
            continue
        found = _due_step(row, steps_by_cadence.get(seg_obj.cadence_id, []), as_of, catch_up_days)
        if found is None:
            continue
        due_step, step_date = found
        if due_step.day_offset <= 0 and as_of > row.due_date:
            # A step written for the due date still to come ("is due on", "due today") is never
            # drafted once the invoice is overdue: the next step after the due date speaks for it.
            excluded["pre_due_step_overdue"] += 1
            continue
        reason = (
            "disputed"
            if row.id in disputed
            else "promise_open"
            if row.id in paused
            else "in_payment_plan"
            if row.id in in_plan
            else "follow_up_first"
            if row.id in followed
            else None
        )
        if reason:
            excluded[reason] += 1
            continue
        cadence_items.append(
            DueItem(
                invoice_id=row.id,
                customer_id=row.customer_id,
                contact_id=0,
                segment_id=seg_obj.id,
                segment=seg_obj.name,
                kind=DraftKind.CADENCE,
                step_key=str(due_step.id),
                step_date=step_date,
                template=due_step.template,
                channel=due_step.channel,
                tone=due_step.tone,
                step_id=due_step.id,
            )
        )
    return cadence_items


def _ready_items(
    session: Session,
    org_id: int,
    candidates: list[DueItem],
    sel: Selection,
    *,
    skip_existing: bool,
    limit: int | None,
) -> list[DueItem]:
    """The candidates with a reachable contact, less the ones already drafted, capped at ``limit``.

    Counts the unreachable in ``sel.excluded`` and the already drafted in ``sel.existing``, so
    ``limit`` caps only the drafts still to write (a rerun after a stop picks up where it was)."""
    contacts = _pick_contacts(session, org_id, {c.customer_id for c in candidates})
    ready: list[DueItem] = []
    for item in candidates:
        contact_id = contacts.get(item.customer_id)
        if contact_id is None:
            sel.excluded["no_reachable_contact"] += 1
            continue
        ready.append(replace(item, contact_id=contact_id))
    if skip_existing and ready:
        seen = existing_run_keys(session, org_id, [i.run_key for i in ready])
        sel.existing = sum(1 for i in ready if i.run_key in seen)
        ready = [i for i in ready if i.run_key not in seen]
    if limit is not None:
        ready = ready[: max(0, limit)]
    return ready


def select_due(
    session: Session,
    org_id: int,
    as_of: date,
    *,
    segment: str | None = None,
    limit: int | None = None,
    catch_up_days: int = CATCH_UP_DAYS,
    skip_existing: bool = True,
) -> Selection:
    """The outreach due on ``as_of`` for ``org_id`` (optionally one segment), oldest due first.

    With ``skip_existing`` (the default) items whose ``run_key`` already has a draft are counted in
    ``existing`` and left out; ``limit`` then caps the items still to draft.
    """
    if catch_up_days < 1:
        raise ValueError("catch_up_days must be at least 1")
    segments, segment_id = _resolve_segments(session, org_id, segment)
    steps_by_cadence = _steps_by_cadence(session, org_id, segments)
    invoices = _open_invoices(session, org_id, segment_id)
    open_ids = {row.id for row in invoices}
    inv_info = {row.id: row for row in invoices}
    disputed = _disputed_ids(session, org_id, invoices)

    sel = Selection()
    paused, promise_items = _promise_follow_ups(
        session,
        org_id,
        as_of,
        catch_up_days,
        segments=segments,
        inv_info=inv_info,
        open_ids=open_ids,
        disputed=disputed,
    )
    in_plan, plan_items = _plan_follow_ups(
        session,
        org_id,
        as_of,
        catch_up_days,
        segments=segments,
        inv_info=inv_info,
        open_ids=open_ids,
        disputed=disputed,
    )
    follow_ups = promise_items + plan_items

    followed = {i for item in follow_ups for i in item.invoice_ids}
    cadence_items = _cadence_items(
        invoices,
        as_of,
        catch_up_days,
        segments=segments,
        steps_by_cadence=steps_by_cadence,
        held=(disputed, paused, in_plan, followed),
        excluded=sel.excluded,
    )

    candidates = follow_ups + cadence_items
    sel.items = _ready_items(
        session, org_id, candidates, sel, skip_existing=skip_existing, limit=limit
    )
    return sel
