"""Putting a bank line's money on the ledger, and taking it off again until the period closes.

Every application posts through :func:`tools.payments.posting.post_payment` (one payment per
invoice, with
an ``external_ref`` naming the line, so a retry never posts twice): balances fall, promises it
fulfils are kept, plan installments advance. A difference written off with a short-pay (discount
or bank fee) is a ``grant_credit`` decision of the policy engine, like any discount. What the
posting changed (balances, installments, plans, promises) is snapshotted before and after, so an
undo puts back exactly that, and refuses when the ledger has moved on since. Nothing is committed
here: the caller owns the transaction; a refusal leaves nothing behind.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from memory import bulk
from memory.models import (
    CashApplication,
    CashLine,
    CashLineStatus,
    CashPeriodClose,
    Customer,
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
from tools.cashapp.decision import WRITE_OFF_RULE, apply_cash_facts, written_off_by_rule
from tools.cashapp.matching import normal_iban
from tools.cashapp.schemas import COPILOT_SPLIT, Allocation, Suggestion
from tools.commitments.plans import PolicyRefused, decide, decision_message
from tools.commitments.promises import (
    CommitmentError,
    Conflict,
    NotFound,
    get_customer,
    get_invoice,
)
from tools.kit import audit
from tools.kit.authz import authorize
from tools.payments import posting as payments
from tools.payments.posting import PaymentRequest

AUTO_ACTOR = "Cash App Assist (auto-apply)"


def period_of(line: CashLine) -> str:
    return line.booked_on.strftime("%Y-%m")


def require(actor: User | str, permission: str) -> None:
    """The access matrix's check (:func:`tools.kit.authz.authorize`): people need ``permission``, a
    string actor is plixo itself or the CLI. Refused as :class:`PolicyRefused`, which the cash
    pages and routes already answer."""
    authorize(actor, None, permission, refuse=_refused)


def _refused(role: str, permission: str) -> Exception:
    return PolicyRefused(
        f"{role} may not do this: it needs the {permission} permission.",
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


# --- what a batch reads once ------------------------------------------------------------------


@dataclass
class _Reads:
    """What applying a set of lines reads, loaded once for all of them (rows land in the
    session's identity map, so the per-line ``session.get`` calls cost no query)."""

    closed: set[str]
    rounds: dict[int, int]  # line id -> earlier applications (undone ones included)
    plans_of_invoice: dict[int, list[int]]
    installments_of_plan: dict[int, list[int]]
    promises_of_customer: dict[int, list[int]]  # open promises when the batch started
    rows: list[Any]  # the rows read, held: the identity map keeps only what someone holds
    plans_read: set[int]  # invoices whose plans are in plans_of_invoice (none is an answer)
    promisers: set[tuple[int, str]] = field(default_factory=set)  # (customer, currency) of those


def _load(session: Session, reads: _Reads, model: Any, ids: list[int]) -> None:
    """Put the ``model`` rows of ``ids`` in the session (held by ``reads``), reading only those
    it does not hold already."""
    held = payments.held_rows(session, model, ids)
    reads.rows += held
    have = {row.id for row in held}
    for cond in bulk.among(session, model.id, [i for i in ids if i not in have]):
        reads.rows += session.scalars(select(model).where(cond))


def _read(session: Session, org_id: int, items: list[LineToApply]) -> _Reads:
    line_ids = sorted({it.line_id for it in items})
    customer_ids = sorted({it.suggestion.customer_id for it in items})
    invoice_ids = sorted(
        {a.invoice_id for it in items for a in it.suggestion.allocations if a.invoice_id}
    )
    reads = _Reads(set(), {}, {}, {}, {}, [], set(invoice_ids))
    with session.no_autoflush:
        reads.closed = set(
            session.scalars(select(CashPeriodClose.period).where(CashPeriodClose.org_id == org_id))
        )
        _load(session, reads, CashLine, line_ids)
        for cond in bulk.among(session, CashApplication.line_id, line_ids):
            for line_id, n in session.execute(
                select(CashApplication.line_id, func.count())
                .where(cond)
                .group_by(CashApplication.line_id)
            ):
                reads.rounds[line_id] = n
        _load(session, reads, Customer, customer_ids)
        for cond in bulk.among(session, PromiseToPay.customer_id, customer_ids):
            for pid, cid, cur in session.execute(
                select(PromiseToPay.id, PromiseToPay.customer_id, PromiseToPay.currency).where(
                    PromiseToPay.org_id == org_id, cond, PromiseToPay.status == PromiseStatus.OPEN
                )
            ):
                reads.promises_of_customer.setdefault(cid, []).append(pid)
                reads.promisers.add((cid, cur))
        _load(session, reads, Invoice, invoice_ids)
        for cond in bulk.among(session, plan_invoice.c.invoice_id, invoice_ids):
            for plan_id, inv_id in session.execute(
                select(plan_invoice.c.plan_id, plan_invoice.c.invoice_id).where(cond)
            ):
                reads.plans_of_invoice.setdefault(inv_id, []).append(plan_id)
        plan_ids = sorted({p for ps in reads.plans_of_invoice.values() for p in ps})
        for cond in bulk.among(session, PlanInstallment.plan_id, plan_ids):
            for inst_id, plan_id in session.execute(
                select(PlanInstallment.id, PlanInstallment.plan_id).where(cond)
            ):
                reads.installments_of_plan.setdefault(plan_id, []).append(inst_id)
    return reads


# --- snapshots ------------------------------------------------------------------------------


def _snapshot_keys(
    session: Session, reads: _Reads, customer_id: int, invoice_ids: set[int]
) -> dict[str, list[int]]:
    """Which rows a posting may change: the invoices, their plans and installments, and the
    customer's open promises."""
    missing = [i for i in invoice_ids if i not in reads.plans_read]
    reads.plans_read.update(missing)
    if missing:  # an installment's plan invoices, not among the allocations read for the batch
        with session.no_autoflush:
            for plan_id, inv_id in session.execute(
                select(plan_invoice.c.plan_id, plan_invoice.c.invoice_id).where(
                    plan_invoice.c.invoice_id.in_(missing)
                )
            ):
                reads.plans_of_invoice.setdefault(inv_id, []).append(plan_id)
                if plan_id not in reads.installments_of_plan:
                    reads.installments_of_plan[plan_id] = list(
                        session.scalars(
                            select(PlanInstallment.id).where(PlanInstallment.plan_id == plan_id)
                        )
                    )
    plan_ids = sorted({p for i in invoice_ids for p in reads.plans_of_invoice.get(i, [])})
    return {
        "invoices": sorted(invoice_ids),
        "plans": plan_ids,
        "installments": [i for p in plan_ids for i in reads.installments_of_plan.get(p, [])],
        "promises": list(reads.promises_of_customer.get(customer_id, [])),
    }


def _snapshot(session: Session, keys: dict[str, list[int]]) -> dict[str, dict[int, Any]]:
    """The state of those rows as the session holds it (the identity map has every change, so
    nothing is flushed and rows already loaded cost no query)."""
    with session.no_autoflush:
        return {
            part: {i: _state(part, payments.held_or_get(session, _MODELS[part], i)) for i in ids}
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


@dataclass(frozen=True)
class LineToApply:
    """One line and where its money goes; ``auto_decision`` is the engine's ``allow`` for
    auto-apply, taken by the importer in the same transaction from the same facts (it is not
    asked twice per line)."""

    line_id: int
    suggestion: Suggestion
    note: str | None = None
    auto_decision: dict[str, Any] | None = None


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
    """Post ``suggestion`` for the line (all of it or none), audited, with its undo record."""
    item = LineToApply(line_id, suggestion, note, auto_decision)
    return _apply_all(session, org_id, [item], actor=actor, now=now or utcnow())[0]


def apply_lines(
    session: Session,
    org_id: int,
    items: list[LineToApply],
    *,
    actor: User | str,
    now: datetime | None = None,
) -> list[Applied | CommitmentError | PolicyRefused]:
    """Apply many lines (the importer's auto-apply, a bank file at a time): per item, what
    :func:`apply_line` would have returned, or the refusal it would have raised.

    Why a batch: one line at a time costs a savepoint, a dozen queries and several flushes, about
    10 ms a line; a statement of 10,000 lines spent minutes there. Here the permission is checked
    once for the batch (the same check, where the write happens), the rows every line reads are
    loaded together, the payments are posted through one
    :func:`tools.payments.posting.payment_batch`,
    and everything is flushed at the end; each line still gets every check, its own
    ``cash.applied`` audit row and its undo record. All or nothing: if any line is refused, the
    whole batch is rolled back and its lines are applied one by one, so a refused line is left
    as it was and the others apply.
    """
    now = now or utcnow()
    require(actor, "apply_cash")
    if not items:
        return []
    try:
        return list(_apply_all(session, org_id, items, actor=actor, now=now))
    except (CommitmentError, PolicyRefused):
        pass
    out: list[Applied | CommitmentError | PolicyRefused] = []
    for item in items:
        try:
            out.append(_apply_all(session, org_id, [item], actor=actor, now=now)[0])
        except (CommitmentError, PolicyRefused) as exc:
            out.append(exc)
    return out


def _apply_all(
    session: Session,
    org_id: int,
    items: list[LineToApply],
    *,
    actor: User | str,
    now: datetime,
) -> list[Applied]:
    """Apply every item or none (one savepoint); raises the first refusal."""
    require(actor, "apply_cash")
    pending = set(session.new)
    savepoint = session.begin_nested()
    try:
        done = _apply_in(session, org_id, items, actor, now)
    except BaseException:
        _roll_back(session, savepoint, pending)
        raise
    savepoint.commit()
    return done


def _roll_back(session: Session, savepoint: Any, pending: set[Any]) -> None:
    """Undo a refused batch: what it wrote to the database and what it only added in memory."""
    try:
        with session.no_autoflush:
            for obj in list(session.new):
                if obj not in pending:
                    session.expunge(obj)
    finally:
        savepoint.rollback()


def _apply_in(
    session: Session,
    org_id: int,
    items: list[LineToApply],
    actor: User | str,
    now: datetime,
) -> list[Applied]:
    reads = _read(session, org_id, items)
    requests = [
        req
        for it in items
        for req in _requests(
            get_line(session, org_id, it.line_id),
            it.suggestion,
            reads.rounds.get(it.line_id, 0),
        )
    ]
    # The caller's apply_cash permission was checked where the cash application is written
    # (``require``); posting bank cash is what that permission grants, so the payment path is
    # entered past its own post_payment guard (a Collector applies cash but posts no manual
    # payment through POST /api/payments).
    posting = inspect.unwrap(payments.payment_batch)(
        session,
        org_id,
        actor=actor,
        requests=requests,
        now=now,
        # what _read already knows (plan membership, open promises), not asked again
        in_plans=set(reads.plans_of_invoice),
        promisers=reads.promisers,
    )
    done: list[tuple[Applied, LineToApply, dict[str, Any]]] = []
    with session.no_autoflush:
        for item in items:
            applied, decision = _apply_one(session, org_id, item, actor, now, reads, posting)
            done.append((applied, item, decision))
    # the lines' new status in one UPDATE (the flush would send one per line)
    bulk.write_changes(session, [applied.line for applied, _, _ in done])
    posting.finish()
    for applied, _, _ in done:
        for app, pay in zip(
            [a for a in applied.applications if a.amount_minor > 0], applied.payments, strict=True
        ):
            app.payment_id = pay.id
    apps = [a for applied, _, _ in done for a in applied.applications]
    # written with their payments' ids, not updated after
    payments.insert_pending(session, CashApplication, apps, _APP_KEYS)
    audit.record_many(session, [_applied_row(org_id, a, it, actor) for a, it, _ in done])
    session.flush()
    return [a for a, _, _ in done]


def _requests(line: CashLine, s: Suggestion, seq: int) -> list[PaymentRequest]:
    """One payment per allocation with money, its ``external_ref`` naming the line and how many
    times it was applied before (undone ones included), so a retry never posts twice."""
    parts = [a for a in s.allocations if a.amount_minor > 0]
    if s.installment_id is not None and not s.allocations:
        parts = [Allocation(None, line.amount_minor)]
    return [
        PaymentRequest(
            amount_minor=a.amount_minor,
            currency=line.currency,
            received_on=line.booked_on,
            customer_id=s.customer_id,
            invoice_id=a.invoice_id,
            installment_id=s.installment_id if a.invoice_id is None else None,
            method="bank",
            external_ref=f"cash:{line.id}:{seq}:{idx}",
        )
        for idx, a in enumerate(parts)
    ]


def _apply_one(
    session: Session,
    org_id: int,
    item: LineToApply,
    actor: User | str,
    now: datetime,
    reads: _Reads,
    posting: payments.Posting,
) -> tuple[Applied, dict[str, Any]]:
    suggestion = item.suggestion
    line = get_line(session, org_id, item.line_id)
    if line.status == CashLineStatus.APPLIED:
        raise Conflict("This bank line is already applied; undo it first to apply it again.")
    if line.status == CashLineStatus.IGNORED:
        raise Conflict("This bank line is not a customer payment.")
    if period_of(line) in reads.closed:
        raise Conflict(
            f"The cash period {period_of(line)} is closed; nothing more is applied to it."
        )
    customer = get_customer(session, org_id, suggestion.customer_id)
    invs = _check_allocations(session, org_id, line, suggestion)
    if suggestion.kind == COPILOT_SPLIT and not isinstance(actor, User):
        raise PolicyRefused(
            "The co-pilot's split is applied only when a person accepts it.",
            {"outcome": "needs_approval", "reasons": []},
        )
    auto = item.auto_decision
    if auto is not None and actor == AUTO_ACTOR and auto["outcome"] == "allow":
        decision = auto
    else:
        decision = _decide(session, org_id, line, suggestion, invs, actor)
    grants = _decide_adjustments(session, org_id, line, suggestion, invs, actor, decision)
    touched = {i.id for i in invs.values()} | _plan_invoices(session, suggestion)
    keys = _snapshot_keys(session, reads, customer.id, touched)
    before = _snapshot(session, keys)
    seq = reads.rounds.get(line.id, 0)
    reads.rounds[line.id] = seq + 1
    posted = _post(posting, _requests(line, suggestion, seq))
    apps = _record(line, suggestion, actor, now)
    _write_off(session, org_id, line, suggestion, invs, grants, actor, now)
    changes = _changes(before, _snapshot(session, keys))
    for app in apps:
        app.effects = {"changes": changes}
    _mark_applied(line, customer.id, actor, now, decision, item.note)
    _learn_iban(session, org_id, line, customer.id, actor)
    return Applied(line, apps, posted), decision


def _applied_row(
    org_id: int, applied: Applied, item: LineToApply, actor: User | str
) -> dict[str, Any]:
    line, s = applied.line, item.suggestion
    return audit.row(
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
            "kind": s.kind,
            "score": s.score,
            "reasons": s.reasons,
            "allocations": [a.__dict__ for a in s.allocations],
            "payments": [p.id for p in applied.payments],
            "auto": not isinstance(actor, User),
            "note": item.note,
        },
    )


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
    session: Session,
    org_id: int,
    line: CashLine,
    s: Suggestion,
    invs: dict[int, Invoice],
    actor: User | str,
) -> dict[str, Any]:
    """The guardrails on applying: the person's permission, or auto-apply's limits."""
    balances = {i: inv.balance_minor for i, inv in invs.items()}
    facts = apply_cash_facts(s, line.amount_minor, line.currency, balances)
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
    applying: dict[str, Any],
) -> list[dict[str, Any]]:
    """Each write-off (discount, bank fee) is a grant_credit decision when a person makes it.

    With no person, only the Controller's write-off rule can allow one: its ``apply_cash``
    decision (``applying``, in which the rule fired) is the write-off's authority, recorded
    with the rule's name. Anything else written off by plixo alone is refused.
    """
    out: list[dict[str, Any]] = []
    for a in s.allocations:
        if not a.adjustment_minor or a.invoice_id is None:
            continue
        if not isinstance(actor, User):
            if actor == AUTO_ACTOR and written_off_by_rule(applying):
                out.append({**applying, "approved_by_rule": WRITE_OFF_RULE})
                continue
            raise PolicyRefused(
                "Only a person, or the Controller's write-off rule, writes off a difference; "
                "plixo applies the payment alone.",
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


def _post(posting: payments.Posting, requests: list[PaymentRequest]) -> list[Payment]:
    """Post through the payment path (balances, promises, plans), refusing a second posting."""
    posted: list[Payment] = []
    for req in requests:
        result = posting.post(req)
        if result.duplicate:
            raise Conflict("This bank line was already posted; nothing was applied twice.")
        posted.append(result.payment)
    return posted


# What tells a batch's application rows apart when they are inserted together.
_APP_KEYS = ("line_id", "payment_id", "invoice_id", "amount_minor", "adjustment_minor")


def _record(
    line: CashLine,
    s: Suggestion,
    actor: User | str,
    now: datetime,
) -> list[CashApplication]:
    """The application rows, added to the session once the batch's payments have ids."""
    by_name = actor_name(actor)
    apps: list[CashApplication] = []
    for a in s.allocations or [Allocation(None, line.amount_minor)]:
        app = bulk.built(
            CashApplication,
            dict(
                org_id=line.org_id,
                line_id=line.id,
                payment_id=None,
                customer_id=s.customer_id,
                invoice_id=a.invoice_id,
                amount_minor=a.amount_minor,
                currency=line.currency,
                adjustment_kind=a.adjustment_kind if a.adjustment_minor else None,
                adjustment_minor=a.adjustment_minor,
                period=period_of(line),
                applied_by=by_name,
                applied_at=now,
                effects={},
                undone_at=None,
                undone_by=None,
            ),
        )
        apps.append(app)
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
        decision = next(decisions)
        detail = {
            "amount_minor": a.adjustment_minor,
            "currency": inv.currency,
            "line_id": line.id,
            "balance_after_minor": inv.balance_minor,
            "decision": decision,
        }
        by: User | str = actor
        if decision.get("approved_by_rule"):  # no person: the Controller's rule approved it
            detail["approved_by_rule"] = decision["approved_by_rule"]
            by = f"{actor_name(actor)} under rule {decision['approved_by_rule']}"
        audit.record(
            session,
            org_id,
            actor=by,
            action=f"cash.{a.adjustment_kind}_written_off",
            subject_type="invoice",
            subject_id=inv.id,
            detail=detail,
        )


def _mark_applied(
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


def _learn_iban(
    session: Session, org_id: int, line: CashLine, customer_id: int, actor: User | str
) -> None:
    """A person confirmed who paid: remember the IBAN for the next line (never on auto)."""
    if not line.payer_iban or not isinstance(actor, User):
        return
    iban = normal_iban(line.payer_iban)
    if not iban:
        return
    known = session.scalar(
        select(CustomerBankAccount).where(
            CustomerBankAccount.org_id == org_id, CustomerBankAccount.iban == iban
        )
    )
    added = any(
        isinstance(o, CustomerBankAccount) and o.org_id == org_id and o.iban == iban
        for o in session.new
    )
    if known is None and not added:
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
