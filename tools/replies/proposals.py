"""Accepting a reply-triage proposal: the human (or rule) step that turns it into a ledger change.

Why a separate step: reply triage reads payer text, and payer text can be hostile. The agent only
*proposes* ("log a promise of $2,400.00 for 20 October on INV-1580"); nothing it proposes touches
the ledger until a person (or a rule an Admin configured) accepts it here. Acceptance goes through
the same commitment tools a collector uses (``tools.commitments.promises.add_promise``,
``tools.commitments.disputes.open_dispute`` with ``source="reply_triage"``), so every check they
make applies,
and it is audited as ``proposal.accepted`` next to what the tools record themselves.

Refused, with nothing written (``ProposalRefused``, a ``CommitmentError``): a kind that makes no
ledger change (``verify_payment``, ``pause_outreach``, ``answer_question`` are tasks for a person),
an unknown kind or field, a customer or invoice outside the caller's organisation or of another
customer, and figures the ledger does not back (an amount above the invoices' open balance, a
currency other than theirs, a promise date in the past, a dispute reason the workflow does not
know). A proposal is only as trustworthy as the reply it came from; these checks do not trust it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import Invoice, InvoiceStatus, User, utcnow
from memory.money import MoneyError, check_currency
from policies.access import allowed
from tools.commitments.disputes import REASONS, open_dispute
from tools.commitments.promises import (
    CommitmentError,
    NotFound,
    add_promise,
    get_customer,
    org_today,
)
from tools.kit import audit
from tools.kit.authz import guarded

#: Proposal kinds that become a ledger change, and the permission a person needs to accept them.
ACCEPTABLE: dict[str, str] = {"log_promise": "manage_promises", "open_dispute": "manage_disputes"}
#: Kinds triage proposes that are tasks for a person, not ledger changes.
TASKS: dict[str, str] = {
    "verify_payment": "match the claimed payment against the payments received",
    "pause_outreach": "hold outreach by hand until the contact is back",
    "answer_question": "answer the payer's question",
}
MAX_INVOICES = 20


class ProposalRefused(CommitmentError):
    """The proposal cannot be accepted as it stands; the message says why. Nothing was written."""


class ProposalMoney(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int
    currency: str = Field(min_length=3, max_length=3)


class TriageProposal(BaseModel):
    """A proposed change from reply triage, with the customer whose reply it came from.

    The same fields as ``agent.schemas.ProposedChange`` plus ``customer_id`` (tools may not import
    the agent, so the API passes ``{"customer_id": result.customer_id, **change.model_dump()}``).
    """

    model_config = ConfigDict(extra="forbid")

    customer_id: int
    kind: str
    invoice_numbers: list[str] = Field(default_factory=list, max_length=MAX_INVOICES)
    amount: ProposalMoney | None = None
    on_date: date | None = None
    reason: str | None = Field(default=None, max_length=200)
    detail: str = Field(default="", max_length=300)


@dataclass(frozen=True)
class AcceptedProposal:
    """What accepting a proposal wrote: the promise, or the disputes (one per invoice)."""

    kind: Literal["log_promise", "open_dispute"]
    customer_id: int
    promise_id: int | None = None
    dispute_ids: list[int] = field(default_factory=list)


def _parse(proposal: TriageProposal | Mapping[str, Any]) -> TriageProposal:
    if isinstance(proposal, TriageProposal):
        return proposal
    try:
        return TriageProposal.model_validate(dict(proposal))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "proposal"
        raise ProposalRefused(f"The proposal is malformed at {where}: {first['msg']}.") from None


def _needed(proposal: object) -> tuple[str, ...]:
    """The permission accepting ``proposal`` needs (none for a malformed one: it is refused as
    malformed before anything is written)."""
    kind = proposal.get("kind") if isinstance(proposal, Mapping) else getattr(proposal, "kind", "")
    return (ACCEPTABLE[kind],) if kind in ACCEPTABLE else ()


def _actor_may(user: User | str, kind: str) -> None:
    if isinstance(user, User) and not allowed(user.role.value, ACCEPTABLE[kind]):
        raise ProposalRefused(
            f"{user.role.value} may not accept a {kind} proposal (needs {ACCEPTABLE[kind]})."
        )


def _invoices(
    session: Session, org_id: int, customer_id: int, numbers: Sequence[str]
) -> list[Invoice]:
    """The named invoices, all of this customer, open with a balance; refused otherwise.

    A number of another customer or organisation gets the same answer as an unknown one, so a
    hostile reply learns nothing about other accounts.
    """
    wanted = list(dict.fromkeys(n.strip() for n in numbers if n.strip()))
    if not wanted:
        raise ProposalRefused("The proposal names no invoice; say which invoices it is about.")
    found = {
        inv.number: inv
        for inv in session.scalars(
            select(Invoice).where(
                Invoice.org_id == org_id,
                Invoice.customer_id == customer_id,
                Invoice.number.in_(wanted),
            )
        )
    }
    missing = [n for n in wanted if n not in found]
    if missing:
        raise ProposalRefused(
            f"Invoice {', '.join(missing)} is not an invoice of this customer; a proposal can only "
            "change the ledger of the customer whose reply it came from."
        )
    closed = [
        n for n in wanted if found[n].status != InvoiceStatus.OPEN or found[n].balance_minor <= 0
    ]
    if closed:
        raise ProposalRefused(f"Invoice {', '.join(closed)} has nothing left to pay.")
    return [found[n] for n in wanted]


def _check_promise_figures(p: TriageProposal, invoices: list[Invoice], today: date) -> None:
    if p.amount is None:
        raise ProposalRefused("A promise needs an amount; read it from the reply and fill it in.")
    if p.on_date is None:
        raise ProposalRefused("A promise needs the date the payer gave.")
    try:
        currency = check_currency(p.amount.currency)
    except MoneyError as exc:
        raise ProposalRefused(str(exc)) from None
    currencies = {i.currency for i in invoices}
    if currencies != {currency}:
        raise ProposalRefused(
            f"The promise is in {currency} but the invoices are in "
            f"{', '.join(sorted(currencies))}; the figures do not match the ledger."
        )
    if p.amount.amount_minor <= 0:
        raise ProposalRefused("The promised amount must be greater than zero.")
    open_total = sum(i.balance_minor for i in invoices)
    if p.amount.amount_minor > open_total:
        raise ProposalRefused(
            f"The promised amount ({p.amount.amount_minor} minor units) is more than the open "
            f"balance of {', '.join(i.number for i in invoices)} ({open_total}); the figures do "
            "not match the ledger."
        )
    if p.on_date < today:
        raise ProposalRefused(
            f"The promised date {p.on_date.isoformat()} is already past; ask the payer for a new "
            "date."
        )


def _accept_promise(
    session: Session,
    org_id: int,
    p: TriageProposal,
    customer_id: int,
    invoices: list[Invoice],
    user: User | str,
    today: date,
    now: datetime,
) -> AcceptedProposal:
    """Log the promise the reply made, through the promise tool and its own checks."""
    _check_promise_figures(p, invoices, today)
    assert p.amount is not None and p.on_date is not None
    promise = add_promise(
        session,
        org_id,
        customer_id=customer_id,
        amount_minor=p.amount.amount_minor,
        promised_date=p.on_date,
        actor=user,
        invoice_ids=[i.id for i in invoices],
        currency=p.amount.currency,
        source="reply_triage",
        now=now,
    )
    return AcceptedProposal("log_promise", customer_id, promise_id=promise.id)


def _accept_dispute(
    session: Session,
    org_id: int,
    p: TriageProposal,
    customer_id: int,
    invoices: list[Invoice],
    user: User | str,
    now: datetime,
) -> AcceptedProposal:
    """Open one dispute per named invoice, for a known reason and without an amount."""
    reason = (p.reason or "").strip()
    if reason not in REASONS:
        raise ProposalRefused(
            f"Unknown dispute reason {reason!r}; use one of {', '.join(REASONS)}."
        )
    if p.amount is not None:
        raise ProposalRefused(
            "A dispute proposal carries no amount; credits are proposed on the dispute."
        )
    ids = [
        open_dispute(
            session,
            org_id,
            invoice_id=inv.id,
            reason=reason,
            actor=user,
            description=p.detail or None,
            source="reply_triage",
            customer_id=customer_id,
            now=now,
        ).id
        for inv in invoices
    ]
    return AcceptedProposal("open_dispute", customer_id, dispute_ids=ids)


@guarded(
    actor="user",
    permissions_for=lambda args: _needed(args.get("proposal")),
    refuse=lambda role, permission: ProposalRefused(
        f"{role} may not accept this proposal (needs {permission})."
    ),
    foreign=lambda: NotFound("That does not exist in your organisation."),
)
def accept_proposal(
    session: Session,
    org_id: int,
    proposal: TriageProposal | Mapping[str, Any],
    user: User | str,
    *,
    now: datetime | None = None,
) -> AcceptedProposal:
    """Accept one reply-triage proposal: write it to the ledger through the commitment tools.

    ``user``: the person accepting (checked against the access matrix: ``manage_promises`` /
    ``manage_disputes``), or the name of the rule that accepts it. Flushed in one savepoint, not
    committed: a refusal (``ProposalRefused``) or a tool's own refusal leaves nothing written.
    ``NotFound`` for a customer outside ``org_id``.
    """
    now = now or utcnow()
    p = _parse(proposal)
    if p.kind in TASKS:
        raise ProposalRefused(
            f"{p.kind} is not a ledger change: {TASKS[p.kind]}. There is nothing to accept."
        )
    if p.kind not in ACCEPTABLE:
        raise ProposalRefused(
            f"Unknown proposal kind {p.kind!r}; only {', '.join(ACCEPTABLE)} can be accepted."
        )
    if isinstance(user, User) and user.org_id != org_id:
        raise NotFound("This user does not belong to the organisation.")
    _actor_may(user, p.kind)
    customer = get_customer(session, org_id, p.customer_id)
    invoices = _invoices(session, org_id, customer.id, p.invoice_numbers)
    today = org_today(session, org_id, now)
    with session.begin_nested():
        if p.kind == "log_promise":
            accepted = _accept_promise(session, org_id, p, customer.id, invoices, user, today, now)
        else:
            accepted = _accept_dispute(session, org_id, p, customer.id, invoices, user, now)
        audit.record(
            session,
            org_id,
            actor=user,
            action="proposal.accepted",
            subject_type="promise" if accepted.promise_id else "dispute",
            subject_id=accepted.promise_id or accepted.dispute_ids[0],
            to_state="accepted",
            detail={
                "kind": p.kind,
                "customer_id": customer.id,
                "invoice_numbers": [i.number for i in invoices],
                "amount": p.amount.model_dump() if p.amount else None,
                "on_date": p.on_date.isoformat() if p.on_date else None,
                "reason": p.reason,
                "promise_id": accepted.promise_id,
                "dispute_ids": accepted.dispute_ids,
            },
        )
        session.flush()
    return accepted
