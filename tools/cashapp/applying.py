"""Putting a bank line's money on the ledger, and taking it off again until the period closes.

Every application posts through :func:`tools.payments.post_payment` (one payment per invoice, with
an ``external_ref`` naming the line, so a retry never posts twice): balances fall, promises it
fulfils are kept, plan installments advance. A difference written off with a short-pay (discount
or bank fee) is a ``grant_credit`` decision of the policy engine, like any discount. What the
posting changed (balances, installments, plans, promises) is snapshotted before and after, so an
undo puts back exactly that, and refuses when the ledger has moved on since. Nothing is committed
here: the caller owns the transaction; a refusal leaves nothing behind.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from memory.models import (
    CashApplication,
    CashLine,
    CashLineStatus,
    CashPeriodClose,
    CustomerBankAccount,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentPlan,
    PlanInstallment,
    PromiseStatus,
    PromiseToPay,
    User,
    plan_invoice,
    utcnow,
)
from memory.money import format_money
from policies.access import allowed
from tools import audit, payments
from tools.cashapp.matching import normal_iban
from tools.cashapp.schemas import Allocation, Suggestion
from tools.plans import PolicyRefused, decide, decision_message
from tools.promises import CommitmentError, Conflict, NotFound, get_customer, get_invoice

AUTO_ACTOR = "Cash App Assist (auto-apply)"


def period_of(line: CashLine) -> str:
    return line.booked_on.strftime("%Y-%m")


def require(actor: User | str, permission: str) -> None:
    """People need the access-matrix permission; a string actor is plixo itself or the CLI."""
    if isinstance(actor, User) and not allowed(actor.role.value, permission):
        raise PolicyRefused(
            f"{actor.role.value} may not do this: it needs the {permission} permission.",
            {"outcome": "block", "reasons": []},
        )


def get_line(session: Session, org_id: int, line_id: int) -> CashLine:
    line = session.get(CashLine, line_id)
    if line is None or line.org_id != org_id:
        raise NotFound(f"Bank line {line_id} does not exist in this organisation.")
    return line


def period_closed(session: Session, org_id: int, period: str) -> bool:
    return (
        session.scalar(
            select(CashPeriodClose.id).where(
                CashPeriodClose.org_id == org_id, CashPeriodClose.period == period
            )
        )
        is not None
    )


# --- snapshots ------------------------------------------------------------------------------


def _snapshot_keys(
    session: Session, org_id: int, customer_id: int, invoice_ids: set[int]
) -> dict[str, list[int]]:
    """Which rows a posting may change: the invoices, their plans and installments, and the
    customer's open promises (read once, before posting)."""
    with session.no_autoflush:
        plan_ids = list(
            session.scalars(
                select(plan_invoice.c.plan_id).where(plan_invoice.c.invoice_id.in_(invoice_ids))
            )
        )
        inst_ids = (
            list(
                session.scalars(
                    select(PlanInstallment.id).where(PlanInstallment.plan_id.in_(plan_ids))
                )
            )
            if plan_ids
            else []
        )
        promise_ids = list(
            session.scalars(
                select(PromiseToPay.id).where(
                    PromiseToPay.org_id == org_id,
                    PromiseToPay.customer_id == customer_id,
                    PromiseToPay.status == PromiseStatus.OPEN,
                )
            )
        )
    return {
        "invoices": sorted(invoice_ids),
        "plans": plan_ids,
        "installments": inst_ids,
        "promises": promise_ids,
    }


def _snapshot(session: Session, keys: dict[str, list[int]]) -> dict[str, dict[int, Any]]:
    """The state of those rows as the session holds it (the identity map has every change, so
    nothing is flushed and rows already loaded cost no query)."""
    with session.no_autoflush:
        return {
            part: {i: _state(part, session.get(_MODELS[part], i)) for i in ids}
            for part, ids in keys.items()
        }


def _changes(before: dict, after: dict) -> dict:
    """Only what moved: ``{"invoices": {id: [before, after]}, ...}`` (JSON keys are strings)."""
    out: dict[str, dict[str, list[Any]]] = {}
    for part, rows in after.items():
        moved = {
            str(k): [before[part].get(k), v] for k, v in rows.items() if before[part].get(k) != v
        }
        if moved:
            out[part] = moved
    return out


# --- applying -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    line: CashLine
    applications: list[CashApplication]
    payments: list[Payment]


def apply_line(
    session: Session,
    org_id: int,
    line_id: int,
    *,
    actor: User | str,
    suggestion: Suggestion,
    note: str | None = None,
    now: datetime | None = None,
    auto_decision: dict[str, Any] | None = None,
) -> Applied:
    """Post ``suggestion`` for the line (all of it or none), audited, with its undo record.

    ``auto_decision`` is the engine's ``allow`` for auto-apply, taken by the importer in this
    same transaction from the same facts (it is not asked twice per line).
    """
    now = now or utcnow()
    require(actor, "apply_cash")
    line = get_line(session, org_id, line_id)
    if line.status == CashLineStatus.APPLIED:
        raise Conflict("This bank line is already applied; undo it first to apply it again.")
    if line.status == CashLineStatus.IGNORED:
        raise Conflict("This bank line is not a customer payment.")
    if period_closed(session, org_id, period_of(line)):
        raise Conflict(
            f"The cash period {period_of(line)} is closed; nothing more is applied to it."
        )
    customer = get_customer(session, org_id, suggestion.customer_id)
    invs = _check_allocations(session, org_id, line, suggestion)
    if auto_decision is not None and actor == AUTO_ACTOR and auto_decision["outcome"] == "allow":
        decision = auto_decision
    else:
        decision = _decide(session, org_id, line, suggestion, actor)
    grants = _decide_adjustments(session, org_id, line, suggestion, invs, actor)
    touched = {i.id for i in invs.values()} | _plan_invoices(session, suggestion)
    keys = _snapshot_keys(session, org_id, customer.id, touched)
    before = _snapshot(session, keys)
    with session.begin_nested():
        posted = _post(session, org_id, line, suggestion, customer.id, actor, now)
        apps = _record(session, line, suggestion, posted, actor, now)
        _write_off(session, org_id, line, suggestion, invs, grants, actor, now)
        after = _snapshot(session, keys)
        changes = _changes(before, after)
        for app in apps:
            app.effects = {"changes": changes}
        _mark_applied(session, line, customer.id, actor, now, decision, note)
    _learn_iban(session, org_id, line, customer.id, actor)
    audit.record(
        session,
        org_id,
        actor=actor,
        action="cash.applied",
        subject_type="cash_line",
        subject_id=line.id,
        from_state=CashLineStatus.EXCEPTION.value,
        to_state=CashLineStatus.APPLIED.value,
        detail={
            "amount_minor": line.amount_minor,
            "currency": line.currency,
            "kind": suggestion.kind,
            "score": suggestion.score,
            "reasons": suggestion.reasons,
            "allocations": [a.__dict__ for a in suggestion.allocations],
            "payments": [p.id for p in posted],
            "auto": not isinstance(actor, User),
            "note": note,
        },
    )
    session.flush()
    return Applied(line, apps, posted)


def _plan_invoices(session: Session, s: Suggestion) -> set[int]:
    if s.installment_id is None:
        return set()
    inst = session.get(PlanInstallment, s.installment_id)
    return {i.id for i in inst.plan.invoices} if inst is not None else set()


def _check_allocations(
    session: Session, org_id: int, line: CashLine, s: Suggestion
) -> dict[int, Invoice]:
    """The allocations add up to the line, on open invoices of one customer, in its currency."""
    if s.installment_id is not None and not s.allocations:
        return {}
    total = sum(a.amount_minor for a in s.allocations)
    if total != line.amount_minor:
        raise CommitmentError(
            f"The parts add up to {format_money(total, line.currency)}, not the line's "
            f"{format_money(line.amount_minor, line.currency)}; put the rest on account or on "
            "another invoice."
        )
    invs: dict[int, Invoice] = {}
    for a in s.allocations:
        if a.amount_minor < 0 or a.adjustment_minor < 0:
            raise CommitmentError("Amounts are positive; write a short-pay as an adjustment.")
        if a.invoice_id is None:
            if a.adjustment_minor:
                raise CommitmentError(
                    "An adjustment belongs to an invoice, not to on-account cash."
                )
            continue
        inv = get_invoice(session, org_id, a.invoice_id)
        _check_invoice(line, s, inv, a)
        invs[inv.id] = inv
    if not s.allocations:
        raise CommitmentError("Say where the money goes: an invoice, or on account.")
    return invs


def _check_invoice(line: CashLine, s: Suggestion, inv: Invoice, a: Allocation) -> None:
    if inv.customer_id != s.customer_id:
        raise CommitmentError(f"Invoice {inv.number} belongs to another customer.")
    if inv.currency != line.currency:
        raise CommitmentError(
            f"Invoice {inv.number} is in {inv.currency}; this {line.currency} payment cannot be "
            "applied to it. Put it on account or park it."
        )
    if inv.status != InvoiceStatus.OPEN or inv.balance_minor <= 0:
        raise Conflict(f"Invoice {inv.number} has nothing left to pay; choose another.")
    if a.amount_minor + a.adjustment_minor > inv.balance_minor:
        raise CommitmentError(
            f"{format_money(a.amount_minor + a.adjustment_minor, inv.currency)} is more than the "
            f"open balance of {inv.number} ({format_money(inv.balance_minor, inv.currency)}); "
            "put the rest on account."
        )
    if a.adjustment_minor and a.adjustment_kind not in ("discount", "bank_fee"):
        raise CommitmentError("An adjustment is a discount or a bank fee.")


def _decide(
    session: Session, org_id: int, line: CashLine, s: Suggestion, actor: User | str
) -> dict[str, Any]:
    """The guardrails on applying: the person's permission, or auto-apply's limits."""
    facts: dict[str, Any] = {
        "confidence": max(0, min(100, s.score)),
        "amount_minor": line.amount_minor,
        "currency": line.currency,
        "match_kind": s.kind,
    }
    if isinstance(actor, User):
        facts["actor_role"] = actor.role.value
    elif actor != AUTO_ACTOR:
        return {"outcome": "allow", "reasons": [], "by": actor}  # the CLI operator
    decision = decide(session, org_id, "apply_cash", facts)
    if decision["outcome"] != "allow":
        raise PolicyRefused(f"Not applied: {decision_message(decision)}", decision)
    return decision


def _decide_adjustments(
    session: Session,
    org_id: int,
    line: CashLine,
    s: Suggestion,
    invs: dict[int, Invoice],
    actor: User | str,
) -> list[dict[str, Any]]:
    """Each write-off (discount, bank fee) is a grant_credit decision; only people make them."""
    out: list[dict[str, Any]] = []
    for a in s.allocations:
        if not a.adjustment_minor or a.invoice_id is None:
            continue
        if not isinstance(actor, User):
            raise PolicyRefused(
                "Only a person writes off a difference; plixo applies the payment alone.",
                {"outcome": "needs_approval", "reasons": []},
            )
        inv = invs[a.invoice_id]
        facts = {
            "actor_role": actor.role.value,
            "kind": "discount" if a.adjustment_kind == "discount" else "credit",
            "amount_minor": a.adjustment_minor,
            "currency": inv.currency,
            "invoice_amount_minor": inv.amount_minor,
            "invoice_balance_minor": inv.balance_minor - a.amount_minor,
        }
        decision = decide(session, org_id, "grant_credit", facts)
        if decision["outcome"] != "allow":
            raise PolicyRefused(
                f"The {a.adjustment_kind} on {inv.number} is not allowed: "
                f"{decision_message(decision)}",
                decision,
            )
        out.append(decision)
    return out


def _post(
    session: Session,
    org_id: int,
    line: CashLine,
    s: Suggestion,
    customer_id: int,
    actor: User | str,
    now: datetime,
) -> list[Payment]:
    """One payment per allocation through the existing payment path (idempotent per ref)."""
    seq = _application_round(session, line)
    posted: list[Payment] = []
    parts = [a for a in s.allocations if a.amount_minor > 0]
    if s.installment_id is not None and not s.allocations:
        parts = [Allocation(None, line.amount_minor)]
    # The caller's apply_cash permission was checked where the cash application is written
    # (``require``); posting bank cash is what that permission grants, so the payment path is
    # entered past its own post_payment guard (a Collector applies cash but posts no manual
    # payment through POST /api/payments).
    post = inspect.unwrap(payments.post_payment)
    for idx, a in enumerate(parts):
        result = post(
            session,
            org_id,
            amount_minor=a.amount_minor,
            currency=line.currency,
            received_on=line.booked_on,
            actor=actor,
            customer_id=customer_id,
            invoice_id=a.invoice_id,
            installment_id=s.installment_id if a.invoice_id is None else None,
            method="bank",
            external_ref=f"cash:{line.id}:{seq}:{idx}",
            send_receipt=False,
            now=now,
        )
        if result.duplicate:
            raise Conflict("This bank line was already posted; nothing was applied twice.")
        posted.append(result.payment)
    return posted


def _application_round(session: Session, line: CashLine) -> int:
    """How many times the line was applied before (undone ones included): a fresh ref each time."""
    return len(
        session.scalars(select(CashApplication.id).where(CashApplication.line_id == line.id)).all()
    )


def _record(
    session: Session,
    line: CashLine,
    s: Suggestion,
    posted: list[Payment],
    actor: User | str,
    now: datetime,
) -> list[CashApplication]:
    by_name = actor_name(actor)
    apps: list[CashApplication] = []
    pays = iter(posted)
    for a in s.allocations or [Allocation(None, line.amount_minor)]:
        pay = next(pays) if a.amount_minor > 0 else None
        app = CashApplication(
            org_id=line.org_id,
            line_id=line.id,
            payment_id=pay.id if pay else None,
            customer_id=s.customer_id,
            invoice_id=a.invoice_id,
            amount_minor=a.amount_minor,
            currency=line.currency,
            adjustment_kind=a.adjustment_kind if a.adjustment_minor else None,
            adjustment_minor=a.adjustment_minor,
            period=period_of(line),
            applied_by=by_name,
            applied_at=now,
        )
        session.add(app)
        apps.append(app)
    session.flush()
    return apps


def _write_off(
    session: Session,
    org_id: int,
    line: CashLine,
    s: Suggestion,
    invs: dict[int, Invoice],
    grants: list[dict[str, Any]],
    actor: User | str,
    now: datetime,
) -> None:
    decisions = iter(grants)
    for a in s.allocations:
        if not a.adjustment_minor or a.invoice_id is None:
            continue
        inv = invs[a.invoice_id]
        inv.balance_minor -= a.adjustment_minor
        if inv.balance_minor == 0:
            inv.status = InvoiceStatus.PAID
            inv.settled_date = line.booked_on
        audit.record(
            session,
            org_id,
            actor=actor,
            action=f"cash.{a.adjustment_kind}_written_off",
            subject_type="invoice",
            subject_id=inv.id,
            detail={
                "amount_minor": a.adjustment_minor,
                "currency": inv.currency,
                "line_id": line.id,
                "balance_after_minor": inv.balance_minor,
                "decision": next(decisions),
            },
        )
    session.flush()


def _mark_applied(
    session: Session,
    line: CashLine,
    customer_id: int,
    actor: User | str,
    now: datetime,
    decision: dict[str, Any],
    note: str | None,
) -> None:
    line.status = CashLineStatus.APPLIED
    line.customer_id = customer_id
    line.applied_by = actor_name(actor)
    line.applied_at = now
    line.decision = decision
    if note:
        line.note = note
    session.flush()


def _learn_iban(
    session: Session, org_id: int, line: CashLine, customer_id: int, actor: User | str
) -> None:
    """A person confirmed who paid: remember the IBAN for the next line (never on auto)."""
    iban = normal_iban(line.payer_iban)
    if not iban or not isinstance(actor, User):
        return
    known = session.scalar(
        select(CustomerBankAccount).where(
            CustomerBankAccount.org_id == org_id, CustomerBankAccount.iban == iban
        )
    )
    if known is None:
        session.add(CustomerBankAccount(org_id=org_id, customer_id=customer_id, iban=iban))


def actor_name(actor: User | str) -> str:
    return f"{actor.name} ({actor.role.value})" if isinstance(actor, User) else actor


# --- parking, undo, closing -----------------------------------------------------------------


def park_line(
    session: Session,
    org_id: int,
    line_id: int,
    *,
    actor: User | str,
    note: str,
    now: datetime | None = None,
) -> CashLine:
    """Keep the money as unapplied cash on the line (no invoice), with the reason."""
    require(actor, "apply_cash")
    line = get_line(session, org_id, line_id)
    if line.status != CashLineStatus.EXCEPTION:
        raise Conflict(
            f"Only a line waiting in the exceptions queue can be parked ({line.status})."
        )
    if not note.strip():
        raise CommitmentError("Say why the line is parked (e.g. 'unknown payer, asked the bank').")
    line.status = CashLineStatus.PARKED
    line.note = note.strip()[:2000]
    line.applied_by = actor_name(actor)
    line.applied_at = now or utcnow()
    audit.record(
        session,
        org_id,
        actor=actor,
        action="cash.parked",
        subject_type="cash_line",
        subject_id=line.id,
        from_state=CashLineStatus.EXCEPTION.value,
        to_state=CashLineStatus.PARKED.value,
        detail={"amount_minor": line.amount_minor, "currency": line.currency, "note": line.note},
    )
    session.flush()
    return line


def undo_line(
    session: Session,
    org_id: int,
    line_id: int,
    *,
    actor: User | str,
    now: datetime | None = None,
) -> CashLine:
    """Take the line's money off the ledger again (or un-park it): back to the exceptions queue."""
    now = now or utcnow()
    require(actor, "apply_cash")
    line = get_line(session, org_id, line_id)
    if line.status not in (CashLineStatus.APPLIED, CashLineStatus.PARKED):
        raise Conflict("Only an applied or parked line can be undone.")
    if period_closed(session, org_id, period_of(line)):
        raise Conflict(f"The cash period {period_of(line)} is closed; its cash stays applied.")
    before = line.status
    if before == CashLineStatus.APPLIED:
        _reverse(session, org_id, line, actor, now)
    line.status = CashLineStatus.EXCEPTION
    line.applied_by = None
    line.applied_at = None
    audit.record(
        session,
        org_id,
        actor=actor,
        action="cash.undone",
        subject_type="cash_line",
        subject_id=line.id,
        from_state=before.value,
        to_state=CashLineStatus.EXCEPTION.value,
        detail={"amount_minor": line.amount_minor, "currency": line.currency},
    )
    session.flush()
    return line


def _reverse(
    session: Session, org_id: int, line: CashLine, actor: User | str, now: datetime
) -> None:
    apps = session.scalars(
        select(CashApplication).where(
            CashApplication.line_id == line.id, CashApplication.undone_at.is_(None)
        )
    ).all()
    changes = apps[0].effects.get("changes", {}) if apps else {}
    _restore(session, org_id, changes)
    pay_ids = [a.payment_id for a in apps if a.payment_id is not None]
    for app in apps:
        app.undone_at = now
        app.undone_by = actor_name(actor)
        app.payment_id = None
    session.flush()
    if pay_ids:
        session.execute(delete(Payment).where(Payment.id.in_(pay_ids), Payment.org_id == org_id))
    for pid in pay_ids:
        audit.record(
            session,
            org_id,
            actor=actor,
            action="payment.reversed",
            subject_type="payment",
            subject_id=pid,
            detail={"line_id": line.id, "reason": "cash application undone"},
        )


_MODELS: dict[str, Any] = {
    "invoices": Invoice,
    "plans": PaymentPlan,
    "installments": PlanInstallment,
    "promises": PromiseToPay,
}


def _restore(session: Session, org_id: int, changes: dict[str, Any]) -> None:
    """Put back what the posting changed, only if nothing else changed it since."""
    rows: list[tuple[Any, Any]] = []
    for part, moved in changes.items():
        for key, (old, new) in moved.items():
            obj = session.get(_MODELS[part], int(key))
            if obj is None or _state(part, obj) != new:
                raise Conflict(
                    "The ledger changed after this line was applied (another payment, credit or "
                    "plan change on the same invoices); undo that first, or correct it by hand."
                )
            rows.append((part, (obj, old)))
    for part, (obj, old) in rows:
        _set_state(part, obj, old)
    session.flush()


def _state(part: str, obj: Any) -> Any:
    if part == "invoices":
        settled = obj.settled_date.isoformat() if obj.settled_date else None
        return [obj.balance_minor, obj.status.value, settled]
    if part == "installments":
        return [obj.paid_minor, obj.status.value]
    return obj.status.value


def _set_state(part: str, obj: Any, old: Any) -> None:
    from datetime import date

    if part == "invoices":
        obj.balance_minor, obj.status = old[0], InvoiceStatus(old[1])
        obj.settled_date = date.fromisoformat(old[2]) if old[2] else None
    elif part == "installments":
        obj.paid_minor, obj.status = old[0], type(obj.status)(old[1])
    elif part == "promises":
        obj.status = PromiseStatus(old)
        if obj.status == PromiseStatus.OPEN:
            obj.resolved_at = None
    else:
        obj.status = type(obj.status)(old)


def close_period(
    session: Session, org_id: int, period: str, *, actor: User | str, now: datetime | None = None
) -> CashPeriodClose:
    """Close a month of cash: its applications are final (no undo) from now on."""
    require(actor, "close_cash_period")
    try:
        datetime.strptime(period, "%Y-%m")
    except ValueError:
        raise CommitmentError(f"{period!r} is not a period; write it as YYYY-MM.") from None
    if period_closed(session, org_id, period):
        raise Conflict(f"The cash period {period} is already closed.")
    row = CashPeriodClose(
        org_id=org_id, period=period, closed_by=actor_name(actor), closed_at=now or utcnow()
    )
    session.add(row)
    audit.record(
        session,
        org_id,
        actor=actor,
        action="cash.period_closed",
        subject_type="cash_period",
        subject_id=None,
        detail={"period": period},
    )
    session.flush()
    return row
