"""The draft lifecycle: drafted → blocked | deferred | pending review → approved | edited |
rejected → queued → sent | failed. Every transition writes an audit event.

Creation (``store_new_draft``) maps the policy decision to the first state; review transitions
live beside it so the whole lifecycle has one home:

* ``approve_draft`` asks the guardrails again *with the approver's role* (the ledger may have moved;
  legal language needs Legal) and queues the message in the outbox in the same transaction, or
  holds it until a deferral passes (``release_deferred``, which asks once more before release);
* ``edit_draft`` re-runs grounding and the guardrails on the new text (a wrong figure blocks);
* ``reject_draft`` keeps the reason (the evals learn from it).

Every write carries the version the reviewer saw: a mismatch, or a concurrent writer caught by the
optimistic lock (``Draft.version``), is ``StaleDraft`` (409), never a lost update. Errors carry an
``http_status`` so the API maps them without guessing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from memory import clock
from memory.config import Settings, get_settings
from memory.errors import PlixoError
from memory.models import (
    Approval,
    Contact,
    Draft,
    DraftKind,
    DraftRevision,
    DraftStatus,
    Invoice,
    User,
)
from policies.access import allowed, at_least
from policies.money import format_money
from tools.drafts import lifecycle
from tools.grounding.recheck import recheck_draft
from tools.kit.authz import denial, guarded
from tools.kit.hooks import Hook
from tools.ledger.users import own_limit

_FIRST_STATE = {
    "block": DraftStatus.BLOCKED,
    "defer": DraftStatus.DEFERRED,
    "needs_approval": DraftStatus.PENDING_REVIEW,
    "allow": DraftStatus.APPROVED,
}


def status_for_decision(outcome: str, *, grounding_blocked: bool = False) -> DraftStatus:
    """The state a fresh draft enters: the policy decision decides, a grounding failure blocks."""
    if grounding_blocked:
        return DraftStatus.BLOCKED
    try:
        return _FIRST_STATE[outcome]
    except KeyError:  # fail closed on anything the engine did not say
        return DraftStatus.BLOCKED


def store_new_draft(
    session: Session,
    draft: Draft,
    *,
    decision: dict[str, Any],
    actor: User | str,
    grounding_blocked: bool = False,
    supersede: bool = True,
) -> Draft:
    """Persist a new draft with its decision and first state, and audit the transition.

    ``supersede=False``: older waiting drafts of the invoice stay (a person's blocked attempt
    must not retire a message that can still be approved)."""
    draft.decision = decision
    draft.decision_outcome = str(decision.get("outcome"))
    lifecycle.begin(
        draft, status_for_decision(draft.decision_outcome, grounding_blocked=grounding_blocked)
    )
    session.add(draft)
    session.flush()
    lifecycle.record_created(
        session,
        draft,
        actor=actor,
        detail={"outcome": draft.decision_outcome, "run_key": draft.run_key},
    )
    if supersede:
        supersede_older(session, [draft], actor=actor)
    return draft


#: Drafts still waiting for a person or the clock: a newer draft for the same invoice replaces them.
SUPERSEDABLE = frozenset(
    {DraftStatus.PENDING_REVIEW, DraftStatus.EDITED, DraftStatus.DEFERRED, DraftStatus.HELD}
)


def supersede_older(session: Session, new: Sequence[Draft], *, actor: User | str) -> list[int]:
    """Retire older drafts of the same invoices that are still waiting (``SUPERSEDABLE``).

    Why: one invoice must never have two pending drafts that contradict each other ("is due on
    December 3" beside an overdue reminder); the newer draft was written from newer facts, so it
    wins. Each retired draft moves to ``superseded`` with an audit event naming its successor.
    Nudges (Sales and CSM suggestions) follow their own flow and are left alone; approved,
    queued and sent drafts are a person's decision and are never touched here. Flushed drafts only
    (they need ids); the caller commits. Returns the superseded ids.
    """
    newest: dict[int, Draft] = {}
    covers = _listed_invoices(session, new)
    for d in new:
        if d.invoice_id is None or d.id is None or d.kind == DraftKind.NUDGE:
            continue
        if d.status is DraftStatus.HELD:  # no text yet: it cannot replace a written draft
            continue
        for invoice_id in (d.invoice_id, *covers.get(d.id, ())):
            if invoice_id not in newest or d.id > newest[invoice_id].id:
                newest[invoice_id] = d
    if not newest:
        return []
    org_ids = {d.org_id for d in newest.values()}
    # The candidates by id first: they include the new drafts themselves (waiting too), which
    # need not be loaded whole again (their texts, facts and decisions) only to be skipped.
    candidates = session.execute(
        select(Draft.id, Draft.invoice_id, Draft.org_id)
        .where(
            Draft.org_id.in_(org_ids),
            Draft.invoice_id.in_(list(newest)),
            Draft.status.in_(list(SUPERSEDABLE)),
            Draft.kind != DraftKind.NUDGE,
        )
        .order_by(Draft.id)
    ).all()
    successors: dict[int, Draft] = {}
    for old_id, invoice_id, org_id in candidates:
        successor = newest.get(invoice_id or -1)
        if successor is None or old_id >= successor.id or org_id != successor.org_id:
            continue
        successors[old_id] = successor
    if not successors:
        return []
    older = session.scalars(
        select(Draft)
        .where(Draft.id.in_(list(successors)), Draft.status.in_(list(SUPERSEDABLE)))
        .order_by(Draft.id)
    ).all()
    retired: list[int] = []
    for old in older:
        successor = successors[old.id]
        old.hold_reason = f"Superseded by draft {successor.id}, written from newer facts."
        lifecycle.move(
            session,
            old,
            DraftStatus.SUPERSEDED,
            actor=actor,
            action="draft.superseded",
            detail={"superseded_by": successor.id, "run_key": successor.run_key},
        )
        retired.append(old.id)
    if retired:
        session.flush()
    return retired


def _listed_invoices(session: Session, drafts: Sequence[Draft]) -> dict[int, list[int]]:
    """Per consolidated draft (one message for several invoices,
    ``tools.outreach.consolidation``), the invoices its text names: it is the newest word on each
    of them, not only on its first."""
    named = {
        d.id: [str(n) for n in (d.stated_facts or {}).get("invoice_numbers") or []]
        for d in drafts
        if d.id is not None and (d.run_key or "").startswith("group:")
    }
    if not any(named.values()):
        return {}
    customers: dict[int, set[int]] = {}
    for d in drafts:
        if d.id in named:
            customers.setdefault(d.org_id, set()).add(d.customer_id)
    ids: dict[tuple[int, int, str], int] = {}
    for org_id, customer_ids in customers.items():
        for inv_id, customer_id, number in session.execute(
            select(Invoice.id, Invoice.customer_id, Invoice.number).where(
                Invoice.org_id == org_id, Invoice.customer_id.in_(sorted(customer_ids))
            )
        ):
            ids[(org_id, customer_id, number)] = inv_id
    return {
        d.id: [ids[key] for n in named[d.id] if (key := (d.org_id, d.customer_id, n)) in ids]
        for d in drafts
        if d.id in named
    }


# --- review transitions -----------------------------------------------------------------------

# Which states a reviewer may act on. A human may rewrite a blocked, deferred or held draft (the
# edit is re-checked); only drafts that passed the guardrails up to "needs a human" can be approved.
REVIEWABLE = frozenset({DraftStatus.PENDING_REVIEW, DraftStatus.EDITED})
EDITABLE = frozenset(
    {
        DraftStatus.PENDING_REVIEW,
        DraftStatus.EDITED,
        DraftStatus.BLOCKED,
        DraftStatus.DEFERRED,
        DraftStatus.HELD,
    }
)
REJECTABLE = EDITABLE | {DraftStatus.APPROVED}
QUEUE_STATES = frozenset({DraftStatus.PENDING_REVIEW, DraftStatus.EDITED})

# Roles whose approval only they (or an Admin) can give: rank alone does not make a Controller a
# lawyer. Everyone else satisfies "X or above" by rank (policies/access.yaml).
SPECIALIST_ROLES = frozenset({"Legal"})

MAX_REASON_CHARS = 2000
MAX_SUBJECT_CHARS = 300
MAX_BODY_CHARS = 20000


class DraftError(PlixoError):
    """A review action that cannot be done; the message says why and what to do instead."""

    http_status = 400


class DraftNotFound(DraftError):
    """No such draft in the caller's organisation (foreign ids look exactly like unknown ones)."""

    http_status = 404


class StaleDraft(DraftError):
    """The draft changed since the caller loaded it (version mismatch or a concurrent writer)."""

    http_status = 409


class InvalidTransition(DraftError):
    """The draft's state does not allow this action (e.g. approving a sent draft)."""

    http_status = 409


class ApprovalRefused(DraftError):
    """The caller may not approve this draft: role, approval limit, or a guardrail blocks it."""

    http_status = 403

    def __init__(self, message: str, reasons: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or []


def _refused(role: str, permission: str) -> ApprovalRefused:
    return ApprovalRefused(denial(role, permission))


def _foreign() -> DraftNotFound:
    return DraftNotFound("No such draft in your organisation.")


DRAFT_GUARD: dict[str, Any] = {"actor": "user", "refuse": _refused, "foreign": _foreign}


class InvalidDraftInput(DraftError):
    http_status = 422


@dataclass
class Recheck:
    """What grounding and the guardrails say about a draft's current text."""

    decision: dict[str, Any]
    grounding: dict[str, Any] = field(default_factory=dict)
    grounding_blocked: bool = False

    @property
    def outcome(self) -> str:
        return str(self.decision.get("outcome"))


Rechecker = Callable[[Session, Draft, datetime], Recheck]


def _now() -> datetime:
    return clock.now()


def get_draft(session: Session, org_id: int, draft_id: int) -> Draft:
    """The draft, if it belongs to ``org_id``; otherwise ``DraftNotFound`` (never another org's)."""
    draft = session.scalars(
        select(Draft).where(Draft.id == draft_id, Draft.org_id == org_id)
    ).first()
    if draft is None:
        raise DraftNotFound(f"No draft {draft_id} in your organisation.")
    return draft


def check_version(draft: Draft, expected_version: int) -> None:
    if draft.version != expected_version:
        raise StaleDraft(
            f"Draft {draft.id} changed since you loaded it (it is at version {draft.version}, "
            f"you had version {expected_version}). Reload it, check the changes, and try again."
        )


def _flush(session: Session, draft: Draft) -> None:
    """Flush, turning a lost race into ``StaleDraft``; the caller rolls back (or its savepoint).

    The races: the optimistic lock (``version``) matched no row, the outbox's unique key refused a
    second row, or SQLite refused to upgrade a stale read snapshot to a write.
    """
    draft_id = draft.id
    try:
        session.flush()
    except (StaleDataError, IntegrityError) as exc:
        raise StaleDraft(
            f"Draft {draft_id} was changed by someone else at the same moment; reload it."
        ) from exc
    except OperationalError as exc:
        if "locked" not in str(exc.orig).lower():
            raise
        raise StaleDraft(
            f"Draft {draft_id} is being changed by someone else right now; reload it."
        ) from exc


def commit_or_conflict(session: Session, draft: Draft) -> None:
    """Commit a review action; a writer that got there first turns into ``StaleDraft`` (409)."""
    draft_id = draft.id
    try:
        session.commit()
    except (StaleDataError, IntegrityError) as exc:
        session.rollback()
        raise StaleDraft(
            f"Draft {draft_id} was changed by someone else at the same moment; reload it."
        ) from exc
    except OperationalError as exc:
        session.rollback()
        if "locked" not in str(exc.orig).lower():
            raise
        raise StaleDraft(
            f"Draft {draft_id} is being changed by someone else right now; reload it."
        ) from exc


def role_satisfies(role: str, required: str) -> bool:
    """Does a user with ``role`` satisfy a decision's ``approver_role`` ``required``?

    Mirrors the guardrails: "X or above" by rank, except specialist roles (Legal), which only
    that role can give.
    """
    if required in SPECIALIST_ROLES:
        return role == required
    try:
        return at_least(role, required)
    except ValueError:  # an approver role the matrix does not know: fail closed
        return False


def required_roles(decision: dict[str, Any]) -> list[str]:
    roles = [str(r) for r in decision.get("approver_roles") or []]
    single = decision.get("approver_role")
    if single and single not in roles:
        roles.append(str(single))
    return roles


def draft_exposure_minor(session: Session, draft: Draft) -> tuple[int, str] | None:
    """The amount a draft chases (its invoice's open balance), for approval limits."""
    if draft.invoice_id is None:
        numbers = [str(n) for n in (draft.stated_facts or {}).get("invoice_numbers", [])]
        if not numbers:
            return None
        rows = session.execute(
            select(Invoice.currency, func.sum(Invoice.balance_minor))
            .where(
                Invoice.org_id == draft.org_id,
                Invoice.customer_id == draft.customer_id,
                Invoice.number.in_(numbers),
            )
            .group_by(Invoice.currency)
        ).all()
        if not rows:
            return None
        currency, total = max(rows, key=lambda r: int(r[1] or 0))
        return int(total or 0), str(currency)
    invoice = session.get(Invoice, draft.invoice_id)
    if invoice is None:
        return None
    return invoice.balance_minor, invoice.currency


def approval_problem(session: Session, draft: Draft, user: User) -> str | None:
    """Why ``user`` may not approve ``draft`` (role, guardrail roles, limit), or None."""
    if not allowed(user.role.value, "approve_draft"):
        return f"{user.role.value} may not approve drafts."
    for role in required_roles(draft.decision or {}):
        if not role_satisfies(user.role.value, role):
            return (
                f"The guardrails ask for {role} approval of this draft; you are {user.role.value}."
            )
    if user.approval_limits is not None:
        exposure = draft_exposure_minor(session, draft)
        if exposure is not None:
            amount, currency = exposure
            limit = own_limit(user, currency)
            if currency not in user.approval_limits:
                held = ", ".join(sorted(user.approval_limits)) or "no currency"
                return (
                    f"This draft chases {format_money(amount, currency)}; you have no approval "
                    f"limit in {currency} (yours: {held}), so an approver with one must approve it."
                )
            if limit is not None and amount > limit:
                return (
                    f"This draft chases {format_money(amount, currency)}, above your approval "
                    f"limit of {format_money(limit, currency)}; a more senior approver must "
                    "approve it."
                )
    return None


def _not_before(decision: dict[str, Any]) -> datetime | None:
    raw = decision.get("not_before")
    if not raw:
        return None
    try:
        value = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _refuse_unless_allowed(result: Recheck) -> None:
    """:class:`ApprovalRefused` with the deciding reasons when the re-check blocks the draft,
    still asks for another approval, or finds figures that no longer match the ledger."""
    reasons = result.decision.get("reasons", [])
    if not (result.grounding_blocked or result.outcome in ("block", "needs_approval")):
        return
    deciding = [r for r in reasons if r.get("outcome") == result.outcome] or reasons
    if result.grounding_blocked and result.outcome != "block":
        mismatches = (result.grounding or {}).get("mismatches") or []
        deciding = [
            {"rule_id": "grounding.mismatch", "outcome": "block", "message": m.get("message")}
            for m in mismatches
        ] or deciding
    message = "; ".join(str(r.get("message")) for r in deciding) or "grounding failed"
    verb = "block this draft now" if result.outcome != "needs_approval" else "ask for more"
    raise ApprovalRefused(f"The guardrails {verb}: {message}", deciding)


class Enqueue(Protocol):
    """Queue an approved draft for delivery and move it to ``queued``:
    ``tools.delivery.outbox.enqueue_draft``."""

    def __call__(self, session: Session, draft: Draft, *, actor: User | str) -> object: ...


class DecideNudgeAgain(Protocol):
    """The ``send_nudge`` decision for a held nudge at release time:
    ``tools.outreach.nudges.decide_nudge_again``."""

    def __call__(self, session: Session, draft: Draft, now: datetime) -> dict[str, object]: ...


#: Delivery and outreach sit above drafts (the outbox moves drafts through their lifecycle, nudges
#: write drafts), so approving and releasing reach them through these hooks, filled by
#: ``tools.wiring``.
enqueue: Hook[Enqueue] = Hook("drafts.service.enqueue")
decide_nudge_again: Hook[DecideNudgeAgain] = Hook("drafts.service.decide_nudge_again")


@guarded("approve_draft", **DRAFT_GUARD)
def approve_draft(
    session: Session,
    org_id: int,
    draft_id: int,
    *,
    user: User,
    expected_version: int,
    settings: Settings | None = None,
    batch_id: str | None = None,
    recheck: Rechecker | None = None,
    now: datetime | None = None,
) -> Draft:
    """Approve a reviewed draft and queue it for delivery (in the caller's transaction).

    The guardrails are asked again with this approver's role: the ledger may have moved since the
    draft was written (a dispute opened, a payment arrived), and some rules need a particular
    approver (legal language needs Legal). A block or a still-missing approval refuses and changes
    nothing; a deferral (quiet hours) approves but holds delivery until its ``not_before``
    (``release_deferred``).
    """
    now = now or _now()
    draft = get_draft(session, org_id, draft_id)
    check_version(draft, expected_version)
    if draft.status not in REVIEWABLE:
        raise InvalidTransition(
            f"Draft {draft.id} is {draft.status.value}; only drafts pending review or edited can "
            "be approved."
        )
    problem = approval_problem(session, draft, user)
    if problem:
        raise ApprovalRefused(problem)
    check = recheck or make_recheck(settings or get_settings(), approved_by=[user.role.value])
    with session.no_autoflush:
        result = check(session, draft, now)
    _refuse_unless_allowed(result)
    draft.decision = result.decision
    draft.decision_outcome = result.outcome
    draft.grounding = result.grounding
    session.add(
        Approval(
            org_id=org_id,
            subject_type="draft",
            subject_id=draft.id,
            approver_user_id=user.id,
            outcome="approved",
            batch_id=batch_id,
        )
    )
    not_before = _not_before(result.decision) if result.outcome == "defer" else None
    lifecycle.move(
        session,
        draft,
        DraftStatus.APPROVED,
        actor=user,
        action="draft.approved",
        detail={
            "version": expected_version,
            "batch_id": batch_id,
            "outcome": result.outcome,
            "not_before": not_before.isoformat() if not_before else None,
        },
    )
    _flush(session, draft)
    if not_before is not None and not_before > now:
        draft.hold_reason = f"Approved; delivery deferred until {not_before.isoformat()}."
        _flush(session, draft)
        return draft
    enqueue.get()(session, draft, actor=user)
    _flush(session, draft)
    return draft


def approver_roles(session: Session, draft: Draft) -> list[str]:
    """Roles of the people who approved this draft (the guardrails' ``approved_by_roles``)."""
    rows = session.execute(
        select(User.role)
        .join(Approval, Approval.approver_user_id == User.id)
        .where(
            Approval.org_id == draft.org_id,
            Approval.subject_type == "draft",
            Approval.subject_id == draft.id,
            Approval.outcome == "approved",
        )
    ).all()
    return sorted({str(getattr(r[0], "value", r[0])) for r in rows})


def _decide_again(
    session: Session, draft: Draft, now: datetime, settings: Settings
) -> dict[str, Any]:
    """The guardrails' answer for a held, approved draft at the moment it would leave."""
    if draft.kind == DraftKind.NUDGE:
        return decide_nudge_again.get()(session, draft, now)
    result = make_recheck(settings, approved_by=approver_roles(session, draft))(session, draft, now)
    if result.grounding_blocked and result.outcome != "block":
        return {**result.decision, "outcome": "block"}
    return result.decision


def release_deferred(
    session: Session,
    *,
    now: datetime | None = None,
    settings: Settings | None = None,
    limit: int = 500,
) -> list[int]:
    """Queue approved drafts whose deferral (quiet hours, Autopilot spacing) has passed.

    The delivery worker holds each deferred draft in a durable sleep until its ``not_before``
    (``tools.delivery.flow``) and then calls ``release_one``; this sweeps them all at once (tests,
    a catch-up). Each draft in its own savepoint.
    """
    now = now or _now()
    settings = settings or get_settings()
    candidates = session.scalars(
        select(Draft.id).where(Draft.status == DraftStatus.APPROVED).order_by(Draft.id).limit(limit)
    ).all()
    return [
        d for d in candidates if release_one(session, d, now=now, settings=settings) == "queued"
    ]


def deferred_until(draft: Draft) -> datetime | None:
    """When an approved, deferred draft may leave (None: it is not waiting)."""
    if draft.status != DraftStatus.APPROVED:
        return None
    return _not_before(draft.decision or {}) or datetime.min.replace(tzinfo=UTC)


def release_one(session: Session, draft_id: int, *, now: datetime, settings: Settings) -> str:
    """Release one approved draft whose deferral has passed: ``queued``, ``deferred`` (a new
    ``not_before`` is kept), ``refused`` (back to review or blocked, with the reasons), ``waiting``
    (its time has not come) or ``gone`` (no longer approved). Flushes, does not commit.

    The guardrails are asked again first, because hours may have passed: a payment, a dispute or
    another touch since the approval must not be overridden.
    """
    draft = session.get(Draft, draft_id)
    if draft is None or draft.status != DraftStatus.APPROVED:
        return "gone"
    not_before = _not_before(draft.decision or {})
    if not_before is not None and not_before > now:
        return "waiting"
    try:
        with session.begin_nested():
            with session.no_autoflush:
                decision = _decide_again(session, draft, now, settings)
            outcome = str(decision.get("outcome"))
            draft.decision = decision
            draft.decision_outcome = outcome
            if outcome == "allow":
                draft.hold_reason = None
                enqueue.get()(session, draft, actor="delivery worker")
                result = "queued"
            elif outcome == "defer":
                draft.hold_reason = (
                    f"Approved; delivery deferred until {decision.get('not_before')}."
                )
                result = "deferred"
            else:
                reasons = [
                    str(r.get("message"))
                    for r in decision.get("reasons", [])
                    if r.get("outcome") == outcome
                ]
                draft.hold_reason = "Held at release: " + "; ".join(reasons)
                lifecycle.move(
                    session,
                    draft,
                    DraftStatus.BLOCKED if outcome == "block" else DraftStatus.PENDING_REVIEW,
                    actor="delivery worker",
                    action="draft.release_refused",
                    detail={"outcome": outcome, "reasons": reasons[:10]},
                )
                result = "refused"
            session.flush()
    except (DraftError, StaleDataError, IntegrityError, LookupError):
        return "gone"
    return result


def _clean_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise InvalidDraftInput("Say why you reject the draft; the reason is kept for the evals.")
    if len(text) > MAX_REASON_CHARS:
        raise InvalidDraftInput(f"Keep the reason under {MAX_REASON_CHARS} characters.")
    return text


@guarded("reject_draft", **DRAFT_GUARD)
def reject_draft(
    session: Session,
    org_id: int,
    draft_id: int,
    *,
    user: User,
    expected_version: int,
    reason: str,
    batch_id: str | None = None,
) -> Draft:
    """Reject a draft and keep the reason (on the draft, the approval row and the audit trail)."""
    text = _clean_reason(reason)
    draft = get_draft(session, org_id, draft_id)
    check_version(draft, expected_version)
    if not allowed(user.role.value, "reject_draft"):
        raise ApprovalRefused(f"{user.role.value} may not reject drafts.")
    if draft.status not in REJECTABLE:
        raise InvalidTransition(
            f"Draft {draft.id} is {draft.status.value}; it can no longer be rejected."
        )
    draft.rejection_reason = text
    session.add(
        Approval(
            org_id=org_id,
            subject_type="draft",
            subject_id=draft.id,
            approver_user_id=user.id,
            outcome="rejected",
            reason=text,
            batch_id=batch_id,
        )
    )
    lifecycle.move(
        session,
        draft,
        DraftStatus.REJECTED,
        actor=user,
        action="draft.rejected",
        detail={"reason": text, "version": expected_version, "batch_id": batch_id},
    )
    _flush(session, draft)
    return draft


def _next_seq(session: Session, draft: Draft) -> int:
    current = session.scalar(
        select(func.max(DraftRevision.seq)).where(DraftRevision.draft_id == draft.id)
    )
    return int(current or 0) + 1


def ensure_original_turn(session: Session, draft: Draft) -> None:
    """Keep the text as first written as turn 1 of the review chat, before anything changes it."""
    has_turns = session.scalar(
        select(func.count(DraftRevision.id)).where(DraftRevision.draft_id == draft.id)
    )
    if has_turns:
        return
    session.add(
        DraftRevision(
            draft_id=draft.id,
            seq=1,
            author="copilot",
            user_id=draft.created_by_user_id,
            subject=draft.subject,
            body=draft.body,
            decision=draft.decision,
            grounding=draft.grounding,
            created_at=draft.created_at,
        )
    )


@guarded("edit_draft", **DRAFT_GUARD)
def edit_draft(
    session: Session,
    org_id: int,
    draft_id: int,
    *,
    user: User,
    expected_version: int,
    subject: str,
    body: str,
    settings: Settings | None = None,
    recheck: Rechecker | None = None,
    now: datetime | None = None,
) -> Draft:
    """Replace the draft's text by hand; grounding and the guardrails re-check the new text.

    The edit becomes a turn of the review chat. A re-check that blocks leaves the draft blocked
    with the reasons; otherwise it is ``edited`` and waits for an approval (the version moves on,
    so an approval loaded before the edit gets a conflict).
    """
    now = now or _now()
    subject = subject.strip()
    if not subject or not body.strip():
        raise InvalidDraftInput("A draft needs a subject and a body.")
    if len(subject) > MAX_SUBJECT_CHARS or len(body) > MAX_BODY_CHARS:
        raise InvalidDraftInput(
            f"Keep the subject under {MAX_SUBJECT_CHARS} and the body under {MAX_BODY_CHARS} "
            "characters."
        )
    draft = get_draft(session, org_id, draft_id)
    check_version(draft, expected_version)
    if not allowed(user.role.value, "edit_draft"):
        raise ApprovalRefused(f"{user.role.value} may not edit drafts.")
    if draft.status not in EDITABLE:
        raise InvalidTransition(
            f"Draft {draft.id} is {draft.status.value}; it can no longer be edited."
        )
    ensure_original_turn(session, draft)  # keep the model's text: Shadow Mode agreement reads it
    draft.subject = subject
    draft.body = body
    with session.no_autoflush:  # the one flush is ours, where a lost race becomes a conflict
        result = (recheck or make_recheck(settings or get_settings()))(session, draft, now)
    draft.decision = result.decision
    draft.decision_outcome = result.outcome
    draft.grounding = result.grounding
    blocked = result.grounding_blocked or result.outcome == "block"
    session.add(
        DraftRevision(
            draft_id=draft.id,
            seq=_next_seq(session, draft),
            author="editor",
            user_id=user.id,
            subject=subject,
            body=body,
            decision=result.decision,
            grounding=result.grounding,
            created_at=now,
        )
    )
    lifecycle.move(
        session,
        draft,
        DraftStatus.BLOCKED if blocked else DraftStatus.EDITED,
        actor=user,
        action="draft.edited",
        detail={"version": expected_version, "outcome": result.outcome},
    )
    _flush(session, draft)
    return draft


def new_batch_id() -> str:
    return "batch-" + uuid.uuid4().hex[:16]


# --- re-checking a draft: grounding and the guardrails ------------------------------------------


def contact_for(session: Session, draft: Draft) -> Contact | None:
    """The draft's contact, else the customer's primary contact (with an e-mail if any)."""
    if draft.contact_id is not None:
        contact = session.get(Contact, draft.contact_id)
        if contact is not None and contact.org_id == draft.org_id:
            return contact
    return session.scalars(
        select(Contact)
        .where(Contact.org_id == draft.org_id, Contact.customer_id == draft.customer_id)
        .order_by(Contact.is_primary.desc(), Contact.email.is_(None), Contact.id)
    ).first()


def make_recheck(settings: Settings, *, approved_by: list[str] | None = None) -> Rechecker:
    """A re-check of a draft's current text: ``tools.grounding.recheck.recheck_draft`` (the same
    grounding and ``send_draft`` facts Autopilot uses) with ``settings`` for the pay links.

    ``approved_by`` lists the roles approving this version (empty for an edit): the guardrails
    treat a human approval as satisfying Shadow Mode, and a Legal approval as clearing legal
    language.
    """

    def recheck(session: Session, draft: Draft, now: datetime) -> Recheck:
        try:
            check = recheck_draft(
                session, draft, now, settings=settings, approved_by_roles=approved_by or ()
            )
        except LookupError as exc:
            raise DraftNotFound(f"Draft {draft.id} has no customer in your organisation.") from exc
        return Recheck(
            decision=check.decision,
            grounding=check.grounding,
            grounding_blocked=check.grounding_blocked,
        )

    return recheck
