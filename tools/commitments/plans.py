"""Payment plans: installment schedules, approval through the guardrails, adherence, default.

A plan settles one customer's open invoices in installments. Every plan is decided by the policy
engine (``offer_plan`` when proposed, ``approve_plan`` when a person approves it): role limits,
Controller above the proposer's limit or above $50,000, Legal for non-standard terms, and caps on
installments, months and discount that block outright. The decision is stored on the plan and its
sentences are what the API and pages show inline.

Visibility: the customer (mini-portal) only ever sees plans whose status is in
:data:`CUSTOMER_VISIBLE` — an unapproved plan does not exist for them.

Installments keep their history: one paid after its due date plus grace stays ``missed`` with
``paid_minor == amount_minor`` ("paid late"), so adherence is not rewritten by a late payment.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory import business_day
from memory.models import (
    Approval,
    InstallmentStatus,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentPlan,
    Persona,
    PlanInstallment,
    PlanStatus,
    User,
    plan_invoice,
    utcnow,
)
from policies import engine
from tools.commitments.promises import (
    CommitmentError,
    Conflict,
    NotFound,
    foreign_not_found,
    get_customer,
    get_promise,
    load_open_invoices,
    org_today,
)
from tools.kit import audit
from tools.kit.authz import denial, guarded
from tools.kit.hooks import Hook
from tools.ledger.policy_overrides import policy_set_for
from tools.ledger.users import own_limit

INSTALLMENT_GRACE_DAYS = 3
APPROACHING_DEFAULT_DAYS = 3
MAX_SCHEDULE_LENGTH = 120  # a sanity bound; the policy's max_installments is the real cap

CUSTOMER_VISIBLE = frozenset({PlanStatus.ACTIVE, PlanStatus.DEFAULTED, PlanStatus.COMPLETED})
RUNNING = frozenset({PlanStatus.ACTIVE, PlanStatus.DEFAULTED})
UNDECIDED = frozenset({PlanStatus.PROPOSED, PlanStatus.PENDING_APPROVAL})


class PolicyRefused(CommitmentError):
    """The guardrails blocked the plan or credit, or asked for someone else's approval.

    ``decision`` is the engine's full decision (every rule that fired, with its sentence), so the
    API and pages can show the guardrail message inline.
    """

    def __init__(self, message: str, decision: dict[str, Any]) -> None:
        super().__init__(message)
        self.decision = decision

    @property
    def http_status(self) -> int:  # type: ignore[override]  # follows the decision
        """403 when someone else must approve or the access matrix said no; 422 when a cap
        blocks whoever asks."""
        blocked = self.decision.get("outcome") == "block"
        denied = getattr(self, "access_denied", None) is not None
        return 422 if blocked and not denied else 403

    @property
    def reasons(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return list(self.decision.get("reasons", []))

    def body(self) -> dict[str, Any]:
        return {
            "detail": str(self),
            "outcome": self.decision.get("outcome"),
            "approver_roles": self.decision.get("approver_roles", []),
            "reasons": self.reasons,
        }


def access_refused(role: str, permission: str) -> PolicyRefused:
    """The access matrix's refusal, shaped like the guardrails' own ``access.denied`` block."""
    message = denial(role, permission)
    reason = {"rule_id": "access.denied", "outcome": "block", "message": message}
    return PolicyRefused(message, {"outcome": "block", "reasons": [reason], "approver_roles": []})


COMMITMENT_GUARD: dict[str, Any] = {"refuse": access_refused, "foreign": foreign_not_found}


# --- the policy engine --------------------------------------------------------------------------


def decide(session: Session, org_id: int, action: str, facts: dict[str, Any]) -> dict[str, Any]:
    """Ask the organisation's guardrails; the decision comes back as JSON-ready data (stored on
    the plan or dispute, shown inline)."""
    return engine.decide(action, facts, policy_set_for(session, org_id)).as_dict()


def decision_message(decision: dict[str, Any]) -> str:
    """The deciding sentences ("Plan exceeds $50,000: Controller approval required")."""
    outcome = decision.get("outcome")
    sentences = [r["message"] for r in decision.get("reasons", []) if r.get("outcome") == outcome]
    return "; ".join(sentences) or f"The guardrails answered {outcome}."


def role_of(actor: User | None) -> str | None:
    return actor.role.value if actor is not None else None


# --- schedules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallmentSpec:
    due_date: date
    amount_minor: int


def add_months(d: date, months: int) -> date:
    """Same day ``months`` later, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def months_spanned(start: date, last_due: date) -> int:
    """Calendar months from ``start`` to the last due date, a started month counting as one."""
    months = (last_due.year - start.year) * 12 + (last_due.month - start.month)
    if last_due.day > start.day:
        months += 1
    return max(1, months)


def split_evenly(
    total_minor: int, count: int, first_due: date, *, interval_months: int = 1
) -> list[InstallmentSpec]:
    """``count`` installments summing exactly to ``total_minor``; the odd cents go first."""
    if count < 1:
        raise CommitmentError("A plan needs at least one installment.")
    if count > MAX_SCHEDULE_LENGTH:
        raise CommitmentError(f"A plan has at most {MAX_SCHEDULE_LENGTH} installments.")
    if total_minor < count:
        raise CommitmentError("The amount is too small to split into that many installments.")
    if interval_months < 1:
        raise CommitmentError("Installments must be at least one month apart.")
    base, rest = divmod(total_minor, count)
    try:
        return [
            InstallmentSpec(
                add_months(first_due, i * interval_months), base + (1 if i < rest else 0)
            )
            for i in range(count)
        ]
    except (ValueError, OverflowError) as exc:
        raise CommitmentError(
            "The schedule would run past the calendar's end; start earlier."
        ) from exc


def validate_schedule(
    installments: Sequence[InstallmentSpec], *, expected_total: int, today: date
) -> None:
    """Dates strictly increasing from today on, amounts positive, and the sum exactly right."""
    if not installments:
        raise CommitmentError("A plan needs at least one installment.")
    if len(installments) > MAX_SCHEDULE_LENGTH:
        raise CommitmentError(f"A plan has at most {MAX_SCHEDULE_LENGTH} installments.")
    if installments[0].due_date < today:
        raise CommitmentError(
            f"The first installment is due {installments[0].due_date.isoformat()}, in the past; "
            f"start on {today.isoformat()} or later."
        )
    for prev, nxt in zip(installments, installments[1:], strict=False):
        if nxt.due_date <= prev.due_date:
            raise CommitmentError(
                "Installment dates must be strictly increasing "
                f"({prev.due_date.isoformat()} then {nxt.due_date.isoformat()})."
            )
    for i, inst in enumerate(installments, start=1):
        if inst.amount_minor <= 0:
            raise CommitmentError(f"Installment {i} must be greater than zero.")
    total = sum(i.amount_minor for i in installments)
    if total != expected_total:
        raise CommitmentError(
            f"The installments sum to {total} minor units but the open balance to settle is "
            f"{expected_total} (after any discount); adjust the amounts so they add up exactly."
        )


# --- lookups ------------------------------------------------------------------------------------


def get_plan(session: Session, org_id: int, plan_id: int) -> PaymentPlan:
    plan = session.get(PaymentPlan, plan_id)
    if plan is None or plan.org_id != org_id:
        raise NotFound(f"Plan {plan_id} does not exist in this organisation.")
    return plan


def get_installment(session: Session, org_id: int, installment_id: int) -> PlanInstallment:
    inst = session.get(PlanInstallment, installment_id)
    if inst is None or inst.plan.org_id != org_id:
        raise NotFound(f"Installment {installment_id} does not exist in this organisation.")
    return inst


def installment_by_seq(plan: PaymentPlan, seq: int) -> PlanInstallment:
    for inst in plan.installments:
        if inst.seq == seq:
            return inst
    raise NotFound(f"Plan {plan.id} has no installment {seq}.")


def plans_for_invoice(session: Session, org_id: int, invoice_id: int) -> list[PaymentPlan]:
    return list(
        session.scalars(
            select(PaymentPlan)
            .join(plan_invoice, plan_invoice.c.plan_id == PaymentPlan.id)
            .where(PaymentPlan.org_id == org_id, plan_invoice.c.invoice_id == invoice_id)
            .order_by(PaymentPlan.id)
        )
    )


def visible_to_customer(plan: PaymentPlan) -> bool:
    return plan.status in CUSTOMER_VISIBLE


# --- proposing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanDraft:
    """A prefilled, unsaved plan (e.g. from a promise) for the proposer to adjust."""

    customer_id: int
    invoice_ids: list[int]
    currency: str
    balance_minor: int
    installments: list[InstallmentSpec]
    from_promise_id: int | None = None


def prefill_from_promise(
    session: Session,
    org_id: int,
    promise_id: int,
    *,
    count: int = 3,
    interval_months: int = 1,
    first_due: date | None = None,
    now: datetime | None = None,
) -> PlanDraft:
    """A plan over the promise's open invoices, first installment on the promised date (or today
    if that has passed), the balance split evenly. Nothing is saved."""
    promise = get_promise(session, org_id, promise_id)
    open_invoices = [
        i for i in promise.invoices if i.status == InvoiceStatus.OPEN and i.balance_minor > 0
    ]
    if not open_invoices:
        raise CommitmentError(
            f"Promise {promise_id} has no open invoice linked; link its invoices or build the plan "
            "by hand."
        )
    today = org_today(session, org_id, now)
    start = first_due or max(promise.promised_date, today)
    balance = sum(i.balance_minor for i in open_invoices)
    return PlanDraft(
        customer_id=promise.customer_id,
        invoice_ids=[i.id for i in open_invoices],
        currency=open_invoices[0].currency,
        balance_minor=balance,
        installments=split_evenly(balance, count, start, interval_months=interval_months),
        from_promise_id=promise.id,
    )


def plan_terms_facts(
    *,
    total_minor: int,
    currency: str,
    installments: Sequence[InstallmentSpec] | Sequence[PlanInstallment],
    discount_minor: int,
    non_standard_terms: bool,
    start: date,
) -> dict[str, Any]:
    """The facts every plan decision shares. ``total_minor`` is the amount the plan settles (the
    invoices' open balance, so a discount is measured against everything it forgives)."""
    return {
        "total_minor": total_minor,
        "currency": currency,
        "installments": len(installments),
        "months": months_spanned(start, max(i.due_date for i in installments)),
        "discount_minor": discount_minor,
        "non_standard_terms": non_standard_terms,
    }


@dataclass
class PlanOutcome:
    """A plan and what the guardrails said about it (``message`` is shown inline)."""

    plan: PaymentPlan
    decision: dict[str, Any]
    message: str
    awaiting_roles: list[str] = field(default_factory=list)


def _proposing_permissions(args: dict[str, Any]) -> tuple[str, ...]:
    """Administering plans (``manage_plans``) lets a plan within the proposer's limit start at
    once; ``for_approval`` (a CSM from Account 360) needs only ``propose_plan``."""
    return ("propose_plan",) if args.get("for_approval") else ("manage_plans",)


def _plannable_invoices(
    session: Session, org_id: int, customer_id: int, invoice_ids: Sequence[int]
) -> list[Invoice]:
    """The customer's open invoices the plan settles: none disputed, none in another running or
    undecided plan."""
    if not invoice_ids:
        raise CommitmentError("Choose the invoices the plan settles.")
    invoices = load_open_invoices(session, org_id, customer_id, invoice_ids)
    for inv in invoices:
        if inv.disputed:
            raise CommitmentError(
                f"Invoice {inv.number} is disputed; resolve the dispute before offering a plan."
            )
        for other in plans_for_invoice(session, org_id, inv.id):
            if other.status in RUNNING | UNDECIDED:
                raise Conflict(
                    f"Invoice {inv.number} is already in plan {other.id} ({other.status.value}); "
                    "cancel that plan first."
                )
    return invoices


def _offer_decision(
    session: Session,
    org_id: int,
    proposer: User | None,
    currency: str,
    balance: int,
    schedule: list[InstallmentSpec],
    discount_minor: int,
    non_standard_terms: bool,
    today: date,
) -> tuple[dict[str, Any], str, str]:
    """The guardrails' ``offer_plan`` decision, its outcome and its sentence; a block or any
    outcome other than allow / needs_approval raises :class:`PolicyRefused`."""
    facts = plan_terms_facts(
        total_minor=balance,
        currency=currency,
        installments=schedule,
        discount_minor=discount_minor,
        non_standard_terms=non_standard_terms,
        start=today,
    )
    if proposer is None:
        facts["proposed_via"] = "portal"
    else:
        facts["proposed_via"] = "staff"
        facts["actor_role"] = proposer.role.value
        facts["actor_limit_minor"] = own_limit(proposer, currency)
    decision = decide(session, org_id, "offer_plan", facts)
    outcome = decision["outcome"]
    message = decision_message(decision)
    if outcome == "block":
        raise PolicyRefused(f"The plan is not allowed: {message}", decision)
    if outcome not in ("allow", "needs_approval"):
        raise PolicyRefused(f"The guardrails did not approve the plan: {message}", decision)
    return decision, outcome, message


def _record_proposal(
    session: Session,
    plan: PaymentPlan,
    proposer: User | None,
    active: bool,
    outcome: str,
    message: str,
    n_installments: int,
    now: datetime,
) -> None:
    """The audit row of the proposal and, for a plan active at once, the proposer's approval."""
    audit.record(
        session,
        plan.org_id,
        actor=proposer or "payer (mini-portal)",
        action="plan.proposed",
        subject_type="plan",
        subject_id=plan.id,
        to_state=plan.status.value,
        detail={
            "decision": outcome,
            "message": message,
            "total_minor": plan.total_minor,
            "discount_minor": plan.discount_minor,
            "installments": n_installments,
            "invoice_ids": [i.id for i in plan.invoices],
            "source": plan.source,
        },
    )
    if active and proposer is not None:
        session.add(
            Approval(
                org_id=plan.org_id,
                subject_type="plan",
                subject_id=plan.id,
                approver_user_id=proposer.id,
                outcome="approved",
                reason="within the proposer's own limit",
                created_at=now,
            )
        )
        session.flush()


@guarded(
    "manage_plans",
    actor="proposer",
    payer_source=True,
    permissions_for=_proposing_permissions,
    **COMMITMENT_GUARD,
)
def propose_plan(
    session: Session,
    org_id: int,
    *,
    customer_id: int,
    invoice_ids: Sequence[int],
    installments: Sequence[InstallmentSpec],
    proposer: User | None,
    discount_minor: int = 0,
    non_standard_terms: bool = False,
    terms_note: str | None = None,
    from_promise_id: int | None = None,
    source: str = "manual",
    for_approval: bool = False,
    now: datetime | None = None,
) -> PlanOutcome:
    """Validate a schedule, ask the guardrails (``offer_plan``) and store the plan.

    ``proposer=None`` means the payer proposed it in the mini-portal: the plan always waits for a
    person. Outcomes: block → :class:`PolicyRefused`, nothing saved; needs_approval → the plan waits
    in ``pending_approval`` for the named role; allow → the proposer's own authority covers it and
    the plan is active at once. ``for_approval``: the proposer only proposes (``propose_plan``);
    the plan waits for an approver whatever their limit says.
    """
    now = now or utcnow()
    today = org_today(session, org_id, now)
    customer = get_customer(session, org_id, customer_id)
    invoices = _plannable_invoices(session, org_id, customer.id, invoice_ids)
    balance = sum(i.balance_minor for i in invoices)
    if not 0 <= discount_minor < balance:
        raise CommitmentError("The discount must be at least zero and less than the balance.")
    if non_standard_terms and not (terms_note and terms_note.strip()):
        raise CommitmentError("Describe the non-standard terms in the terms note for Legal.")
    schedule = list(installments)
    validate_schedule(schedule, expected_total=balance - discount_minor, today=today)
    if from_promise_id is not None:
        promise = get_promise(session, org_id, from_promise_id)
        if promise.customer_id != customer.id:
            raise CommitmentError("The promise belongs to another customer.")

    decision, outcome, message = _offer_decision(
        session, org_id, proposer, invoices[0].currency, balance, schedule, discount_minor,
        non_standard_terms, today,
    )  # fmt: skip
    # The payer can never approve their own plan, whatever the engine said; nor can a proposer
    # who only proposes.
    active = outcome == "allow" and proposer is not None and not for_approval

    plan = PaymentPlan(
        org_id=org_id,
        customer_id=customer.id,
        total_minor=balance - discount_minor,
        currency=invoices[0].currency,
        status=PlanStatus.ACTIVE if active else PlanStatus.PENDING_APPROVAL,
        non_standard_terms=non_standard_terms,
        terms_note=terms_note,
        discount_minor=discount_minor,
        source=source,
        proposed_by_user_id=proposer.id if proposer else None,
        approved_by_user_id=proposer.id if active and proposer else None,
        from_promise_id=from_promise_id,
        decision=decision,
        created_at=now,
        updated_at=now,
    )
    plan.invoices = list(invoices)
    plan.installments = [
        PlanInstallment(seq=i, due_date=s.due_date, amount_minor=s.amount_minor)
        for i, s in enumerate(schedule, start=1)
    ]
    session.add(plan)
    session.flush()
    _record_proposal(session, plan, proposer, active, outcome, message, len(schedule), now)
    awaiting = [] if active else list(decision.get("approver_roles") or [])
    if not active and not awaiting:
        ps = policy_set_for(session, org_id)
        awaiting = [ps.plans.portal_approver_role if proposer is None else ps.plans.escalation_role]
    return PlanOutcome(plan=plan, decision=decision, message=message, awaiting_roles=awaiting)


def _legal_approved(session: Session, plan: PaymentPlan) -> bool:
    rows = session.execute(
        select(User.role)
        .join(Approval, Approval.approver_user_id == User.id)
        .where(
            Approval.org_id == plan.org_id,
            Approval.subject_type == "plan",
            Approval.subject_id == plan.id,
            Approval.outcome == "approved",
        )
    ).all()
    return any(r[0] == Persona.LEGAL for r in rows)


def legal_signed(session: Session, plan: PaymentPlan) -> bool:
    """Has Legal already approved this plan's terms (the approvals inbox stops asking Legal)?"""
    return _legal_approved(session, plan)


def _next_approvers(session: Session, plan: PaymentPlan, facts: dict[str, Any]) -> list[str]:
    """After Legal's sign-off: the role that can now finish the approval — the proposer's own
    role when the plan is within its limit, else the role the guardrails name."""
    proposer = session.get(User, plan.proposed_by_user_id) if plan.proposed_by_user_id else None
    if proposer is not None:
        role = proposer.role.value
    else:
        ps = policy_set_for(session, plan.org_id)
        role = ps.plans.portal_approver_role
    probe = decide(
        session,
        plan.org_id,
        "approve_plan",
        {**facts, "actor_role": role, "actor_limit_minor": None, "legal_approved": True},
    )
    if probe["outcome"] == "allow":
        return [role]
    return list(probe.get("approver_roles") or [])


def _record_legal_sign_off(
    session: Session,
    plan: PaymentPlan,
    approver: User,
    rationale: str | None,
    decision: dict[str, Any],
    message: str,
    facts: dict[str, Any],
    now: datetime,
) -> PlanOutcome:
    """Legal signed off the non-standard terms: record it; the plan keeps waiting for the role
    the engine names."""
    org_id = plan.org_id
    # Legal signed off the terms; the plan still waits for the role the engine names.
    session.add(
        Approval(
            org_id=org_id,
            subject_type="plan",
            subject_id=plan.id,
            approver_user_id=approver.id,
            outcome="approved",
            reason=rationale or "non-standard terms approved by Legal",
            created_at=now,
        )
    )
    plan.decision = decision
    plan.updated_at = now
    audit.record(
        session,
        org_id,
        actor=approver,
        action="plan.legal_approved",
        subject_type="plan",
        subject_id=plan.id,
        from_state=plan.status.value,
        to_state=plan.status.value,
        detail={"message": message, "rationale": rationale},
    )
    session.flush()
    return PlanOutcome(
        plan=plan,
        decision=decision,
        message=message,
        awaiting_roles=_next_approvers(session, plan, facts),
    )


def _activate_plan(
    session: Session,
    plan: PaymentPlan,
    approver: User,
    rationale: str | None,
    decision: dict[str, Any],
    message: str,
    now: datetime,
) -> PlanOutcome:
    """The approval suffices: the plan becomes active, with the approval row and the audit row."""
    org_id = plan.org_id
    before = plan.status
    plan.status = PlanStatus.ACTIVE
    plan.approved_by_user_id = approver.id
    plan.decision = decision
    plan.updated_at = now
    session.add(
        Approval(
            org_id=org_id,
            subject_type="plan",
            subject_id=plan.id,
            approver_user_id=approver.id,
            outcome="approved",
            reason=rationale,
            created_at=now,
        )
    )
    audit.record(
        session,
        org_id,
        actor=approver,
        action="plan.approved",
        subject_type="plan",
        subject_id=plan.id,
        from_state=before.value,
        to_state=PlanStatus.ACTIVE.value,
        detail={"message": message, "rationale": rationale},
    )
    session.flush()
    return PlanOutcome(plan=plan, decision=decision, message=message)


@guarded("approve_plan", actor="approver", **COMMITMENT_GUARD)
def approve_plan(
    session: Session,
    org_id: int,
    plan_id: int,
    *,
    approver: User,
    rationale: str | None = None,
    now: datetime | None = None,
) -> PlanOutcome:
    """A person approves a pending plan; the guardrails decide whether their approval suffices.

    ``rationale``: why (kept on the approval row and in the audit trail; the approvals inbox
    requires one).

    Legal's approval of non-standard terms is recorded and the plan keeps waiting for any other
    role still required (e.g. the Controller above $50,000); any other refusal raises
    :class:`PolicyRefused` with the guardrail sentence and changes nothing.
    """
    now = now or utcnow()
    plan = get_plan(session, org_id, plan_id)
    if plan.status not in UNDECIDED:
        raise Conflict(
            f"Plan {plan.id} is {plan.status.value}; only a pending plan can be approved."
        )
    today = org_today(session, org_id, now)
    open_now = sum(i.balance_minor for i in plan.invoices if i.status == InvoiceStatus.OPEN)
    if open_now != plan.total_minor + plan.discount_minor:
        raise Conflict(
            f"The invoices' open balance changed since plan {plan.id} was proposed "
            f"({plan.total_minor + plan.discount_minor} then, {open_now} now); reject it and "
            "propose a new schedule."
        )
    already_legal = _legal_approved(session, plan)
    is_legal = approver.role == Persona.LEGAL
    facts = plan_terms_facts(
        total_minor=plan.total_minor + plan.discount_minor,
        currency=plan.currency,
        installments=plan.installments,
        discount_minor=plan.discount_minor,
        non_standard_terms=plan.non_standard_terms,
        start=min(today, plan.installments[0].due_date),
    )
    facts["actor_role"] = approver.role.value
    facts["actor_limit_minor"] = own_limit(approver, plan.currency)
    facts["legal_approved"] = already_legal or is_legal
    decision = decide(session, org_id, "approve_plan", facts)
    outcome = decision["outcome"]
    message = decision_message(decision)
    if outcome == "block":
        raise PolicyRefused(f"The plan cannot be approved: {message}", decision)
    if outcome == "needs_approval":
        legal_newly_satisfied = is_legal and plan.non_standard_terms and not already_legal
        if not legal_newly_satisfied:
            raise PolicyRefused(f"Your approval is not enough: {message}", decision)
        return _record_legal_sign_off(
            session, plan, approver, rationale, decision, message, facts, now
        )
    if outcome != "allow":
        raise PolicyRefused(f"The guardrails did not approve the plan: {message}", decision)
    return _activate_plan(session, plan, approver, rationale, decision, message, now)


@guarded("approve_plan", actor="approver", **COMMITMENT_GUARD)
def reject_plan(
    session: Session,
    org_id: int,
    plan_id: int,
    *,
    approver: User,
    reason: str,
    now: datetime | None = None,
) -> PaymentPlan:
    """Turn a pending plan down with a reason (kept for the record and the evals)."""
    now = now or utcnow()
    plan = get_plan(session, org_id, plan_id)
    if plan.status not in UNDECIDED:
        raise Conflict(
            f"Plan {plan.id} is {plan.status.value}; only a pending plan can be rejected."
        )
    if not reason.strip():
        raise CommitmentError("Give a reason for rejecting the plan.")
    before = plan.status
    plan.status = PlanStatus.REJECTED
    plan.updated_at = now
    session.add(
        Approval(
            org_id=org_id,
            subject_type="plan",
            subject_id=plan.id,
            approver_user_id=approver.id,
            outcome="rejected",
            reason=reason,
            created_at=now,
        )
    )
    audit.record(
        session,
        org_id,
        actor=approver,
        action="plan.rejected",
        subject_type="plan",
        subject_id=plan.id,
        from_state=before.value,
        to_state=PlanStatus.REJECTED.value,
        detail={"reason": reason},
    )
    session.flush()
    return plan


@guarded("manage_plans", **COMMITMENT_GUARD)
def cancel_plan(
    session: Session,
    org_id: int,
    plan_id: int,
    *,
    actor: User | str,
    reason: str,
    now: datetime | None = None,
) -> PaymentPlan:
    """Stop a plan; its invoices (whatever is still open) go back into the cadence."""
    now = now or utcnow()
    plan = get_plan(session, org_id, plan_id)
    if plan.status not in RUNNING | UNDECIDED:
        raise Conflict(f"Plan {plan.id} is {plan.status.value} and cannot be cancelled.")
    before = plan.status
    plan.status = PlanStatus.CANCELLED
    plan.updated_at = now
    audit.record(
        session,
        org_id,
        actor=actor,
        action="plan.cancelled",
        subject_type="plan",
        subject_id=plan.id,
        from_state=before.value,
        to_state=PlanStatus.CANCELLED.value,
        detail={"reason": reason, "invoice_ids": [i.id for i in plan.invoices]},
    )
    session.flush()
    return plan


def _forgive_discount(
    session: Session, plan: PaymentPlan, *, actor: User | str, now: datetime
) -> int:
    """On completion, write off what the approved discount forgave (never more than it)."""
    left = plan.discount_minor
    forgiven = 0
    for inv in sorted(plan.invoices, key=lambda i: (i.due_date, i.id)):
        if left <= 0:
            break
        if inv.status != InvoiceStatus.OPEN or inv.balance_minor <= 0:
            continue
        take = min(left, inv.balance_minor)
        inv.balance_minor -= take
        left -= take
        forgiven += take
        if inv.balance_minor == 0:
            inv.status = InvoiceStatus.PAID
            inv.settled_date = business_day.org_business_date(session, inv.org_id, now)
    if forgiven:
        audit.record(
            session,
            plan.org_id,
            actor=actor,
            action="plan.discount_applied",
            subject_type="plan",
            subject_id=plan.id,
            detail={"discount_minor": forgiven},
        )
    return forgiven


def _complete(session: Session, plan: PaymentPlan, *, actor: User | str, now: datetime) -> None:
    before = plan.status
    plan.status = PlanStatus.COMPLETED
    plan.updated_at = now
    _forgive_discount(session, plan, actor=actor, now=now)
    audit.record(
        session,
        plan.org_id,
        actor=actor,
        action="plan.completed",
        subject_type="plan",
        subject_id=plan.id,
        from_state=before.value,
        to_state=PlanStatus.COMPLETED.value,
    )


@guarded("manage_plans", **COMMITMENT_GUARD)
def complete_plan(
    session: Session,
    org_id: int,
    plan_id: int,
    *,
    actor: User | str,
    now: datetime | None = None,
) -> PaymentPlan:
    """Close a plan whose installments are all paid (normally automatic on the last payment)."""
    now = now or utcnow()
    plan = get_plan(session, org_id, plan_id)
    if plan.status not in RUNNING:
        raise Conflict(f"Plan {plan.id} is {plan.status.value}; only a running plan can complete.")
    unpaid = [i.seq for i in plan.installments if i.paid_minor < i.amount_minor]
    if unpaid:
        raise Conflict(
            f"Installments {', '.join(map(str, unpaid))} are not paid yet; mark them paid or "
            "cancel the plan instead."
        )
    _complete(session, plan, actor=actor, now=now)
    session.flush()
    return plan


class PostedPayment(Protocol):
    """What posting a payment answers (``tools.payments.posting.PaymentResult``)."""

    @property
    def payment(self) -> Payment: ...

    @property
    def duplicate(self) -> bool: ...


class PostPayment(Protocol):
    """Post money received to an installment: ``tools.payments.posting.post_payment``."""

    def __call__(
        self,
        session: Session,
        org_id: int,
        *,
        amount_minor: int,
        currency: str,
        received_on: date,
        actor: User | str,
        installment_id: int | None = None,
        method: str = "manual",
        external_ref: str | None = None,
        now: datetime | None = None,
    ) -> PostedPayment: ...


#: Payments sit above commitments (posting advances plans through ``apply_payment``), so an
#: installment paid by hand reaches the one posting path through this hook, filled by
#: ``tools.wiring``.
post_payment: Hook[PostPayment] = Hook("commitments.plans.post_payment")


@guarded("post_payment", **COMMITMENT_GUARD)
def mark_installment_paid(
    session: Session,
    org_id: int,
    plan_id: int,
    seq: int,
    *,
    actor: User | str,
    received_on: date | None = None,
    reference: str | None = None,
    now: datetime | None = None,
) -> Payment:
    """Record that an installment was paid outside Stripe (bank transfer, cheque): a payment of its
    remaining amount is posted, so invoice balances, promises and the receipt follow."""
    now = now or utcnow()
    plan = get_plan(session, org_id, plan_id)
    inst = installment_by_seq(plan, seq)
    if plan.status not in RUNNING:
        raise Conflict(f"Plan {plan.id} is {plan.status.value}; it takes no payments.")
    remaining = inst.amount_minor - inst.paid_minor
    if remaining <= 0:
        raise Conflict(f"Installment {seq} of plan {plan.id} is already paid.")
    result = post_payment.get()(
        session,
        org_id,
        amount_minor=remaining,
        currency=plan.currency,
        received_on=received_on or org_today(session, org_id, now),
        installment_id=inst.id,
        method="manual",
        external_ref=reference,
        actor=actor,
        now=now,
    )
    if result.duplicate:
        raise Conflict(f"Reference {reference} was already posted as payment {result.payment.id}.")
    return result.payment


# --- payments advancing plans ------------------------------------------------------------------


@dataclass
class PlanAdvance:
    installments_paid: list[int] = field(default_factory=list)
    plans_completed: list[int] = field(default_factory=list)


def apply_payment(
    session: Session,
    org_id: int,
    payment: Payment,
    *,
    applied_by_invoice: dict[int, int],
    installment: PlanInstallment | None,
    actor: User | str,
    now: datetime,
) -> PlanAdvance:
    """Credit what a payment applied to a running plan's invoices to its installments.

    The named installment is filled first, then the earliest unpaid ones. A fully paid
    installment is ``paid`` if the money arrived by its due date plus grace, else it stays
    ``missed`` (paid late). A defaulted plan with no unpaid missed installment is running again;
    a plan with every installment paid completes.
    """
    advance = PlanAdvance()
    plans: list[PaymentPlan] = []
    if installment is not None:
        plans.append(installment.plan)
    for invoice_id in applied_by_invoice:
        for plan in plans_for_invoice(session, org_id, invoice_id):
            if plan.status in RUNNING and plan not in plans:
                plans.append(plan)
    for plan in plans:
        amount = sum(applied_by_invoice.get(i.id, 0) for i in plan.invoices)
        if amount <= 0:
            continue
        order = sorted(
            (i for i in plan.installments if i.paid_minor < i.amount_minor),
            key=lambda i: (installment is None or i.id != installment.id, i.seq),
        )
        for inst in order:
            if amount <= 0:
                break
            take = min(amount, inst.amount_minor - inst.paid_minor)
            inst.paid_minor += take
            amount -= take
            if inst.paid_minor >= inst.amount_minor:
                late = payment.received_on > inst.due_date + timedelta(days=INSTALLMENT_GRACE_DAYS)
                before = inst.status
                inst.status = InstallmentStatus.MISSED if late else InstallmentStatus.PAID
                advance.installments_paid.append(inst.id)
                audit.record(
                    session,
                    org_id,
                    actor=actor,
                    action="plan.installment_paid",
                    subject_type="plan",
                    subject_id=plan.id,
                    from_state=before.value,
                    to_state=inst.status.value,
                    detail={"seq": inst.seq, "payment_id": payment.id, "late": late},
                )
        if plan.status == PlanStatus.DEFAULTED and not any(
            i.status == InstallmentStatus.MISSED and i.paid_minor < i.amount_minor
            for i in plan.installments
        ):
            plan.status = PlanStatus.ACTIVE
            audit.record(
                session,
                org_id,
                actor=actor,
                action="plan.cured",
                subject_type="plan",
                subject_id=plan.id,
                from_state=PlanStatus.DEFAULTED.value,
                to_state=PlanStatus.ACTIVE.value,
            )
        if all(i.paid_minor >= i.amount_minor for i in plan.installments):
            _complete(session, plan, actor=actor, now=now)
            advance.plans_completed.append(plan.id)
        plan.updated_at = now
    session.flush()
    return advance


# --- the daily sweep and the figures -----------------------------------------------------------


@dataclass(frozen=True)
class PlanSweep:
    missed_installments: list[int]
    defaulted_plans: list[int]


@guarded("manage_promises", **COMMITMENT_GUARD)
def evaluate_plans(
    session: Session,
    org_id: int,
    *,
    now: datetime | None = None,
    actor: User | str,
) -> PlanSweep:
    """Flag installments unpaid after their due date plus grace as missed and their plans as
    defaulted; the plan's invoices re-enter the cadence (the selector reads ``defaulted``)."""
    now = now or utcnow()
    today = org_today(session, org_id, now)
    missed: list[int] = []
    defaulted: list[int] = []
    running = session.scalars(
        select(PaymentPlan)
        .where(PaymentPlan.org_id == org_id, PaymentPlan.status.in_(list(RUNNING)))
        .order_by(PaymentPlan.id)
    ).all()
    for plan in running:
        for inst in plan.installments:
            if (
                inst.status == InstallmentStatus.DUE
                and inst.paid_minor < inst.amount_minor
                and today > inst.due_date + timedelta(days=INSTALLMENT_GRACE_DAYS)
            ):
                inst.status = InstallmentStatus.MISSED
                missed.append(inst.id)
                audit.record(
                    session,
                    org_id,
                    actor=actor,
                    action="plan.installment_missed",
                    subject_type="plan",
                    subject_id=plan.id,
                    from_state=InstallmentStatus.DUE.value,
                    to_state=InstallmentStatus.MISSED.value,
                    detail={"seq": inst.seq, "due_date": inst.due_date.isoformat()},
                )
        if plan.status == PlanStatus.ACTIVE and any(
            i.status == InstallmentStatus.MISSED and i.paid_minor < i.amount_minor
            for i in plan.installments
        ):
            plan.status = PlanStatus.DEFAULTED
            plan.updated_at = now
            defaulted.append(plan.id)
            audit.record(
                session,
                org_id,
                actor=actor,
                action="plan.defaulted",
                subject_type="plan",
                subject_id=plan.id,
                from_state=PlanStatus.ACTIVE.value,
                to_state=PlanStatus.DEFAULTED.value,
                detail={
                    "follow_up": "plan_installment_missed",
                    "invoice_ids": [i.id for i in plan.invoices],
                },
            )
    session.flush()
    return PlanSweep(missed_installments=missed, defaulted_plans=defaulted)


@dataclass(frozen=True)
class PlanSummary:
    """The plan inspector's figures."""

    plan_id: int
    status: str
    total_minor: int
    paid_minor: int
    remaining_minor: int
    currency: str
    installments: int
    installments_paid: int
    installments_missed: int
    adherence_pct: int | None  # whole percent; None before anything fell due
    next_due_date: date | None
    next_due_minor: int | None
    approaching_default: bool


def summarize(plan: PaymentPlan, today: date) -> PlanSummary:
    """Adherence = installments paid on time / installments that have fallen due (due date plus
    grace passed, or already paid); next due = the earliest installment not fully paid."""
    grace = timedelta(days=INSTALLMENT_GRACE_DAYS)
    fallen_due = [
        i
        for i in plan.installments
        if i.paid_minor >= i.amount_minor
        or i.status == InstallmentStatus.MISSED
        or today > i.due_date + grace
    ]
    on_time = [i for i in fallen_due if i.status == InstallmentStatus.PAID]
    unpaid = [i for i in plan.installments if i.paid_minor < i.amount_minor]
    nxt = min(unpaid, key=lambda i: i.seq) if unpaid else None
    paid = sum(min(i.paid_minor, i.amount_minor) for i in plan.installments)
    approaching = (
        plan.status in RUNNING
        and nxt is not None
        and nxt.due_date <= today + timedelta(days=APPROACHING_DEFAULT_DAYS)
    )
    return PlanSummary(
        plan_id=plan.id,
        status=plan.status.value,
        total_minor=plan.total_minor,
        paid_minor=paid,
        remaining_minor=plan.total_minor - paid,
        currency=plan.currency,
        installments=len(plan.installments),
        installments_paid=sum(1 for i in plan.installments if i.paid_minor >= i.amount_minor),
        installments_missed=sum(
            1 for i in plan.installments if i.status == InstallmentStatus.MISSED
        ),
        adherence_pct=(len(on_time) * 100 // len(fallen_due)) if fallen_due else None,
        next_due_date=nxt.due_date if nxt else None,
        next_due_minor=(nxt.amount_minor - nxt.paid_minor) if nxt else None,
        approaching_default=approaching,
    )


def list_plans(
    session: Session,
    org_id: int,
    *,
    customer_id: int | None = None,
    statuses: Sequence[PlanStatus] | None = None,
    limit: int = 200,
) -> list[PaymentPlan]:
    q = select(PaymentPlan).where(PaymentPlan.org_id == org_id)
    if customer_id is not None:
        q = q.where(PaymentPlan.customer_id == customer_id)
    if statuses:
        q = q.where(PaymentPlan.status.in_(list(statuses)))
    return list(session.scalars(q.order_by(PaymentPlan.id.desc()).limit(limit)))


def open_invoice_ids(plan: PaymentPlan) -> list[int]:
    return [i.id for i in plan.invoices if i.status == InvoiceStatus.OPEN]


def invoices_of(plan: PaymentPlan) -> list[Invoice]:
    return sorted(plan.invoices, key=lambda i: (i.due_date, i.id))
