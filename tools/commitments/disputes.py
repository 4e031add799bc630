"""Disputes: intake, the status workflow, SLA clocks, evidence files and credits.

Workflow::

    open → investigating → awaiting customer → escalated to Legal → resolved with credit | rejected

(any active status may move to any later one, and work can go back from awaiting customer or Legal
to investigating; resolved and rejected are final). While a dispute is active its invoice is
``disputed`` and the guardrails block dunning on it; when the last active dispute on the invoice
ends, dunning resumes.

SLA: each active status has a clock, :data:`SLA_HOURS` (documented data, calendar hours). Entering
a status restarts its clock: ``sla_due_at = status_changed_at + SLA_HOURS[status]``, stored so the
breaching ones are one indexed query away. Every function takes ``now`` so tests control the clock.

Credits are decided by the policy engine (``grant_credit``): a credit within the actor's limit is
granted at once; above it, it is stored as proposed and waits for an approver whose limit covers it.
"""

from __future__ import annotations

import hashlib
import os
import re
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from memory import business_day
from memory.models import (
    Approval,
    Customer,
    Dispute,
    DisputeEvidence,
    DisputeStatus,
    InvoiceStatus,
    Persona,
    User,
    utcnow,
)
from tools.commitments.plans import COMMITMENT_GUARD, PolicyRefused, decide, decision_message
from tools.commitments.promises import CommitmentError, Conflict, NotFound, get_invoice
from tools.kit import audit
from tools.kit.authz import guarded
from tools.kit.hooks import Hook

# Hours each active status may last before its SLA is breached (calendar hours).
SLA_HOURS: dict[DisputeStatus, int] = {
    DisputeStatus.OPEN: 48,  # acknowledge and triage within two days
    DisputeStatus.INVESTIGATING: 120,  # five days to investigate
    DisputeStatus.AWAITING_CUSTOMER: 240,  # ten days for the customer to answer
    DisputeStatus.ESCALATED_LEGAL: 240,  # ten days for Legal
}
NEAR_BREACH_HOURS = 24

ACTIVE = frozenset(SLA_HOURS)
FINAL = frozenset({DisputeStatus.RESOLVED_CREDIT, DisputeStatus.REJECTED})

TRANSITIONS: dict[DisputeStatus, frozenset[DisputeStatus]] = {
    DisputeStatus.OPEN: frozenset(
        {
            DisputeStatus.INVESTIGATING,
            DisputeStatus.AWAITING_CUSTOMER,
            DisputeStatus.ESCALATED_LEGAL,
            DisputeStatus.RESOLVED_CREDIT,
            DisputeStatus.REJECTED,
        }
    ),
    DisputeStatus.INVESTIGATING: frozenset(
        {
            DisputeStatus.AWAITING_CUSTOMER,
            DisputeStatus.ESCALATED_LEGAL,
            DisputeStatus.RESOLVED_CREDIT,
            DisputeStatus.REJECTED,
        }
    ),
    DisputeStatus.AWAITING_CUSTOMER: frozenset(
        {
            DisputeStatus.INVESTIGATING,
            DisputeStatus.ESCALATED_LEGAL,
            DisputeStatus.RESOLVED_CREDIT,
            DisputeStatus.REJECTED,
        }
    ),
    DisputeStatus.ESCALATED_LEGAL: frozenset(
        {DisputeStatus.INVESTIGATING, DisputeStatus.RESOLVED_CREDIT, DisputeStatus.REJECTED}
    ),
    DisputeStatus.RESOLVED_CREDIT: frozenset(),
    DisputeStatus.REJECTED: frozenset(),
}

REASONS: dict[str, str] = {
    "pricing": "Price or rate differs from what was agreed",
    "quantity": "Quantity billed differs from what was delivered",
    "not_received": "Goods or services not received",
    "quality": "Goods or services not as described",
    "duplicate_billing": "Billed twice for the same thing",
    "already_paid": "Already paid",
    "tax": "Tax or VAT is wrong",
    "contract_terms": "Billed outside the contract terms",
    "other": "Other",
}
SOURCES = frozenset({"collector", "portal", "reply_triage"})

# Evidence files: what is accepted, checked against the file's own bytes, not only its label.
MAX_EVIDENCE_BYTES = 5 * 1024 * 1024
MAX_EVIDENCE_FILES = 20
EVIDENCE_SLOTS: dict[str, str] = {
    "invoice_copy": "Copy of the invoice",
    "proof_of_delivery": "Proof of delivery",
    "contract": "Contract or order",
    "correspondence": "Correspondence",
    "payment_proof": "Proof of payment",
    "other": "Other",
}
EVIDENCE_TYPES: dict[str, str] = {
    "application/pdf": ".pdf",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "text/plain": ".txt",
    "text/csv": ".csv",
}


# --- lookups ------------------------------------------------------------------------------------


def get_dispute(session: Session, org_id: int, dispute_id: int) -> Dispute:
    dispute = session.get(Dispute, dispute_id)
    if dispute is None or dispute.org_id != org_id:
        raise NotFound(f"Dispute {dispute_id} does not exist in this organisation.")
    return dispute


def active_disputes_for_invoice(session: Session, org_id: int, invoice_id: int) -> list[Dispute]:
    return list(
        session.scalars(
            select(Dispute).where(
                Dispute.org_id == org_id,
                Dispute.invoice_id == invoice_id,
                Dispute.status.in_(list(ACTIVE)),
            )
        )
    )


def list_disputes(
    session: Session,
    org_id: int,
    *,
    customer_id: int | None = None,
    statuses: Sequence[DisputeStatus] | None = None,
    limit: int = 200,
) -> list[Dispute]:
    q = select(Dispute).where(Dispute.org_id == org_id)
    if customer_id is not None:
        q = q.where(Dispute.customer_id == customer_id)
    if statuses:
        q = q.where(Dispute.status.in_(list(statuses)))
    return list(
        session.scalars(q.order_by(Dispute.opened_at.desc(), Dispute.id.desc()).limit(limit))
    )


# --- intake and workflow ------------------------------------------------------------------------


@guarded("manage_disputes", **COMMITMENT_GUARD)
def open_dispute(
    session: Session,
    org_id: int,
    *,
    invoice_id: int,
    reason: str,
    actor: User | str,
    description: str | None = None,
    source: str = "collector",
    customer_id: int | None = None,
    now: datetime | None = None,
) -> Dispute:
    """Open a dispute on an invoice and pause its dunning.

    ``source`` is ``collector`` (staff), ``portal`` (the payer; ``customer_id`` scopes it to them)
    or ``reply_triage`` (a triage proposal a person accepted). Refused: a paid or void invoice, an
    invoice that already has an active dispute, an unknown reason.
    """
    now = now or utcnow()
    if reason not in REASONS:
        raise CommitmentError(
            f"Unknown dispute reason {reason!r}; use one of {', '.join(REASONS)}."
        )
    if source not in SOURCES:
        raise CommitmentError(f"Unknown dispute source {source!r}.")
    invoice = get_invoice(session, org_id, invoice_id)
    if customer_id is not None and invoice.customer_id != customer_id:
        raise NotFound(f"Invoice {invoice_id} does not exist in this organisation.")
    if invoice.status != InvoiceStatus.OPEN or invoice.balance_minor <= 0:
        raise CommitmentError(
            f"Invoice {invoice.number} is {invoice.status.value} with nothing left to pay; a "
            "dispute can only be opened on an open invoice (ask for a refund instead)."
        )
    if active_disputes_for_invoice(session, org_id, invoice.id):
        raise Conflict(
            f"Invoice {invoice.number} already has an open dispute; add evidence to that one."
        )
    description = (description or "").strip() or None
    if description and len(description) > 5000:
        raise CommitmentError("Keep the description under 5,000 characters; attach a file instead.")
    dispute = Dispute(
        org_id=org_id,
        customer_id=invoice.customer_id,
        invoice_id=invoice.id,
        reason=reason,
        description=description,
        status=DisputeStatus.OPEN,
        source=source,
        opened_at=now,
        status_changed_at=now,
        sla_due_at=now + timedelta(hours=SLA_HOURS[DisputeStatus.OPEN]),
        opened_by_user_id=actor.id if isinstance(actor, User) else None,
    )
    session.add(dispute)
    invoice.disputed = True
    session.flush()
    audit.record(
        session,
        org_id,
        actor=actor,
        action="dispute.opened",
        subject_type="dispute",
        subject_id=dispute.id,
        to_state=DisputeStatus.OPEN.value,
        detail={"invoice_id": invoice.id, "reason": reason, "source": source},
    )
    return dispute


def _release_invoice(session: Session, dispute: Dispute) -> None:
    """Clear the invoice's disputed flag once no other dispute on it is active: dunning resumes."""
    others = [
        d
        for d in active_disputes_for_invoice(session, dispute.org_id, dispute.invoice_id)
        if d.id != dispute.id
    ]
    if not others:
        invoice = get_invoice(session, dispute.org_id, dispute.invoice_id)
        invoice.disputed = False


def _move(
    session: Session,
    dispute: Dispute,
    to: DisputeStatus,
    *,
    actor: User | str,
    now: datetime,
    note: str | None,
    detail: dict[str, Any] | None = None,
) -> Dispute:
    if to not in TRANSITIONS[dispute.status]:
        allowed = ", ".join(s.value for s in sorted(TRANSITIONS[dispute.status])) or "nothing"
        raise Conflict(
            f"Dispute {dispute.id} is {dispute.status.value}; it can move to {allowed}, "
            f"not {to.value}."
        )
    before = dispute.status
    dispute.status = to
    dispute.status_changed_at = now
    if to in ACTIVE:
        dispute.sla_due_at = now + timedelta(hours=SLA_HOURS[to])
    else:
        dispute.sla_due_at = None
        dispute.resolved_at = now
        _release_invoice(session, dispute)
    audit.record(
        session,
        dispute.org_id,
        actor=actor,
        action=f"dispute.{to.value}",
        subject_type="dispute",
        subject_id=dispute.id,
        from_state=before.value,
        to_state=to.value,
        detail={"note": note, **(detail or {})},
    )
    session.flush()
    return dispute


@guarded("manage_disputes", **COMMITMENT_GUARD)
def change_status(
    session: Session,
    org_id: int,
    dispute_id: int,
    to: DisputeStatus,
    *,
    actor: User,
    note: str | None = None,
    now: datetime | None = None,
) -> Dispute:
    """Move a dispute along the workflow. Escalation to Legal asks the guardrails
    (``escalate_dispute``); resolving with a credit goes through :func:`propose_credit`."""
    now = now or utcnow()
    dispute = get_dispute(session, org_id, dispute_id)
    if to == DisputeStatus.RESOLVED_CREDIT:
        raise CommitmentError(
            "Resolve with a credit through the credit action: the amount needs the guardrails."
        )
    if to == DisputeStatus.REJECTED and not (note and note.strip()):
        raise CommitmentError("Say why the dispute is rejected; the payer will be told.")
    detail: dict[str, Any] = {}
    if to == DisputeStatus.ESCALATED_LEGAL:
        if to not in TRANSITIONS[dispute.status]:
            _move(session, dispute, to, actor=actor, now=now, note=note)  # raises the clear error
        decision = decide(
            session,
            org_id,
            "escalate_dispute",
            {"actor_role": actor.role.value, "dispute_status": dispute.status.value},
        )
        if decision["outcome"] != "allow":
            raise PolicyRefused(
                f"The dispute cannot be escalated: {decision_message(decision)}", decision
            )
        detail = {"decision": decision, "notify": decision.get("notify", [])}
    moved = _move(session, dispute, to, actor=actor, now=now, note=note, detail=detail)
    if to == DisputeStatus.ESCALATED_LEGAL:
        _tell(
            session,
            dispute,
            "escalation",
            f"Dispute escalated to Legal by {actor.name}",
            now,
            roles=[Persona.LEGAL],
            exclude=actor.id,
            body=note or "",
        )
    return moved


class NotifyRoles(Protocol):
    """Notify the active people of ``roles`` who hold ``permission`` (except ``exclude``), once
    per ``key``: the inbox's ``tools.inbox.notifications.notify_roles``."""

    def __call__(
        self,
        session: Session,
        org_id: int,
        *,
        permission: str,
        roles: Sequence[Persona],
        exclude: int,
        kind: str,
        title: str,
        key: str,
        body: str,
        link: str,
        now: datetime,
    ) -> None: ...


#: The inbox sits above commitments (it delivers by e-mail through the outbox), so disputes reach it
#: through this hook, filled by ``tools.wiring``.
notify_roles: Hook[NotifyRoles] = Hook("commitments.disputes.notify_roles")


def _tell(
    session: Session,
    dispute: Dispute,
    kind: str,
    title: str,
    now: datetime,
    *,
    roles: Sequence[Persona],
    exclude: int,
    body: str = "",
) -> None:
    """Notify the people of ``roles`` who work disputes (tools.inbox.notifications, through the
    ``notify_roles`` hook), once per event."""

    permission = "manage_disputes" if kind == "escalation" else "grant_credit"
    customer = session.get(Customer, dispute.customer_id)
    notify_roles.get()(
        session,
        dispute.org_id,
        permission=permission,
        roles=roles,
        exclude=exclude,
        kind=kind,
        title=f"{title}: {customer.name if customer else ''}".rstrip(": "),
        key=f"dispute:{dispute.id}:{kind}:{now.isoformat()}",
        body=body,
        link=f"/disputes/{dispute.id}",
        now=now,
    )


# --- credits ------------------------------------------------------------------------------------


@dataclass
class CreditOutcome:
    dispute: Dispute
    granted: bool
    decision: dict[str, Any]
    message: str


def _credit_facts(session: Session, dispute: Dispute, amount: int, actor: User) -> dict[str, Any]:
    invoice = get_invoice(session, dispute.org_id, dispute.invoice_id)
    return {
        "actor_role": actor.role.value,
        "kind": "credit",
        "amount_minor": amount,
        "currency": invoice.currency,
        "invoice_amount_minor": invoice.amount_minor,
        "invoice_balance_minor": invoice.balance_minor,
    }


def _grant(
    session: Session,
    dispute: Dispute,
    amount: int,
    *,
    approver: User,
    decision: dict[str, Any],
    now: datetime,
) -> None:
    invoice = get_invoice(session, dispute.org_id, dispute.invoice_id)
    invoice.balance_minor -= amount
    if invoice.balance_minor == 0:
        invoice.status = InvoiceStatus.PAID
        invoice.settled_date = business_day.org_business_date(session, invoice.org_id, now)
    dispute.credit_minor = amount
    session.add(
        Approval(
            org_id=dispute.org_id,
            subject_type="credit",
            subject_id=dispute.id,
            approver_user_id=approver.id,
            outcome="approved",
            reason=decision_message(decision),
            created_at=now,
        )
    )
    _move(
        session,
        dispute,
        DisputeStatus.RESOLVED_CREDIT,
        actor=approver,
        now=now,
        note=f"credit of {amount} minor units granted",
        detail={"credit_minor": amount, "invoice_balance_after": invoice.balance_minor},
    )


@guarded("grant_credit", **COMMITMENT_GUARD)
def propose_credit(
    session: Session,
    org_id: int,
    dispute_id: int,
    *,
    amount_minor: int,
    actor: User,
    note: str | None = None,
    now: datetime | None = None,
) -> CreditOutcome:
    """Resolve a dispute with a credit on its invoice, as far as the actor's authority goes.

    allow → granted now (balance lowered, dispute resolved, dunning resumes); needs_approval → the
    amount is stored as proposed and waits for :func:`approve_credit`; block → refused, unchanged.
    """
    now = now or utcnow()
    dispute = get_dispute(session, org_id, dispute_id)
    if dispute.status not in ACTIVE:
        raise Conflict(f"Dispute {dispute.id} is {dispute.status.value}; it takes no credit.")
    invoice = get_invoice(session, org_id, dispute.invoice_id)
    if not 0 < amount_minor <= invoice.balance_minor:
        raise CommitmentError(
            f"The credit must be between 1 and the invoice's open balance ({invoice.balance_minor} "
            "minor units)."
        )
    decision = decide(
        session, org_id, "grant_credit", _credit_facts(session, dispute, amount_minor, actor)
    )
    outcome = decision["outcome"]
    message = decision_message(decision)
    if outcome == "block":
        raise PolicyRefused(f"The credit is not allowed: {message}", decision)
    if outcome == "allow":
        _grant(session, dispute, amount_minor, approver=actor, decision=decision, now=now)
        return CreditOutcome(dispute, True, decision, message)
    if outcome != "needs_approval":
        raise PolicyRefused(f"The guardrails did not allow the credit: {message}", decision)
    dispute.credit_minor = amount_minor
    audit.record(
        session,
        org_id,
        actor=actor,
        action="dispute.credit_proposed",
        subject_type="dispute",
        subject_id=dispute.id,
        from_state=dispute.status.value,
        to_state=dispute.status.value,
        detail={"credit_minor": amount_minor, "decision": decision, "note": note},
    )
    session.flush()
    _tell(
        session,
        dispute,
        "approval",
        f"Credit waiting for your approval, proposed by {actor.name}",
        now,
        roles=[Persona.CONTROLLER, Persona.COLLECTIONS_MANAGER, Persona.ADMIN],
        exclude=actor.id,
        body=message,
    )
    return CreditOutcome(dispute, False, decision, message)


@guarded("grant_credit", actor="approver", **COMMITMENT_GUARD)
def approve_credit(
    session: Session,
    org_id: int,
    dispute_id: int,
    *,
    approver: User,
    now: datetime | None = None,
) -> CreditOutcome:
    """Grant the proposed credit if the guardrails allow it for this approver."""
    now = now or utcnow()
    dispute = get_dispute(session, org_id, dispute_id)
    if dispute.status not in ACTIVE or dispute.credit_minor <= 0:
        raise Conflict(f"Dispute {dispute.id} has no proposed credit waiting for approval.")
    invoice = get_invoice(session, org_id, dispute.invoice_id)
    if dispute.credit_minor > invoice.balance_minor:
        raise Conflict(
            "The invoice's balance is now lower than the proposed credit; propose it again."
        )
    facts = _credit_facts(session, dispute, dispute.credit_minor, approver)
    decision = decide(session, org_id, "grant_credit", facts)
    if decision["outcome"] != "allow":
        raise PolicyRefused(f"Your approval is not enough: {decision_message(decision)}", decision)
    _grant(session, dispute, dispute.credit_minor, approver=approver, decision=decision, now=now)
    return CreditOutcome(dispute, True, decision, decision_message(decision))


# --- evidence -----------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


def sniff_type(data: bytes, declared: str | None) -> str:
    """The content type the bytes really are, among the accepted ones; refuses anything else."""
    declared = (declared or "").split(";")[0].strip().lower()
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if b"\x00" not in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "text/csv" if declared == "text/csv" else "text/plain"
    raise CommitmentError(
        "That file type is not accepted; upload a PDF, PNG, JPEG, plain-text or CSV file."
    )


def safe_filename(name: str) -> str:
    base = os.path.basename(name.replace("\\", "/")).strip()
    cleaned = _SAFE_NAME.sub("_", base)[:200].strip(" .")
    return cleaned or "evidence"


def write_once(target: Path, data: bytes) -> None:
    """Write a content-addressed evidence file atomically (a temporary file, fsync, rename); a
    file already there has the same bytes and is left alone. Uploads and mailed attachments
    (``tools.replies.mailbox``) both store evidence this way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@guarded("manage_disputes", **COMMITMENT_GUARD)
def add_evidence(
    session: Session,
    org_id: int,
    dispute_id: int,
    *,
    filename: str,
    data: bytes,
    evidence_dir: Path,
    uploaded_by: str,
    actor: User | str,
    content_type: str | None = None,
    slot: str = "other",
    customer_id: int | None = None,
    now: datetime | None = None,
) -> DisputeEvidence:
    """Store an evidence file under ``evidence_dir/<org>/<dispute>/<sha256><ext>`` and record it.

    Refused before anything is written: a file over :data:`MAX_EVIDENCE_BYTES`, an empty file, a
    type outside :data:`EVIDENCE_TYPES` (judged by the bytes), an unknown slot, a closed dispute.
    The file is content-addressed and written atomically, so a retried upload cannot corrupt it.
    """
    now = now or utcnow()
    dispute = get_dispute(session, org_id, dispute_id)
    if customer_id is not None and dispute.customer_id != customer_id:
        raise NotFound(f"Dispute {dispute_id} does not exist in this organisation.")
    if dispute.status not in ACTIVE:
        raise Conflict(
            f"Dispute {dispute.id} is {dispute.status.value}; it takes no more evidence."
        )
    if slot not in EVIDENCE_SLOTS:
        raise CommitmentError(
            f"Unknown evidence slot {slot!r}; use one of {', '.join(EVIDENCE_SLOTS)}."
        )
    if len(data) > MAX_EVIDENCE_BYTES:
        raise CommitmentError(
            f"The file is {len(data):,} bytes; the limit is {MAX_EVIDENCE_BYTES:,} bytes "
            f"({MAX_EVIDENCE_BYTES // (1024 * 1024)} MB). Compress it or split it."
        )
    if not data:
        raise CommitmentError("The file is empty.")
    if len(dispute.evidence) >= MAX_EVIDENCE_FILES:
        raise CommitmentError(f"A dispute holds at most {MAX_EVIDENCE_FILES} files.")
    ctype = sniff_type(data, content_type)
    digest = hashlib.sha256(data).hexdigest()
    if any(e.sha256 == digest for e in dispute.evidence):
        raise Conflict("That file is already attached to this dispute.")
    rel = Path(str(org_id)) / str(dispute.id) / f"{digest}{EVIDENCE_TYPES[ctype]}"
    write_once(Path(evidence_dir) / rel, data)
    item = DisputeEvidence(
        dispute_id=dispute.id,
        slot=slot,
        filename=safe_filename(filename),
        content_type=ctype,
        size_bytes=len(data),
        sha256=digest,
        storage_path=rel.as_posix(),
        uploaded_by=uploaded_by[:120],
        uploaded_at=now,
    )
    dispute.evidence.append(item)
    session.flush()
    audit.record(
        session,
        org_id,
        actor=uploaded_by[:120],
        action="dispute.evidence_added",
        subject_type="dispute",
        subject_id=dispute.id,
        detail={"slot": slot, "sha256": digest, "size_bytes": len(data), "content_type": ctype},
    )
    return item


def evidence_path(evidence_dir: Path, item: DisputeEvidence) -> Path:
    """The stored file, refusing any path that would leave the evidence directory."""
    root = Path(evidence_dir).resolve()
    path = (root / item.storage_path).resolve()
    if root not in path.parents:
        raise NotFound("Evidence file not found.")
    return path


# --- SLA clocks and the snapshot ---------------------------------------------------------------


@dataclass(frozen=True)
class SlaClock:
    status: str
    hours_allowed: int | None
    due_at: datetime | None
    remaining_hours: float | None  # negative once breached
    breached: bool
    near_breach: bool
    age_hours: float


def sla_clock(dispute: Dispute, now: datetime) -> SlaClock:
    age = (now - dispute.opened_at).total_seconds() / 3600
    if dispute.status not in ACTIVE or dispute.sla_due_at is None:
        return SlaClock(dispute.status.value, None, None, None, False, False, round(age, 2))
    remaining = (dispute.sla_due_at - now).total_seconds() / 3600
    return SlaClock(
        status=dispute.status.value,
        hours_allowed=SLA_HOURS[dispute.status],
        due_at=dispute.sla_due_at,
        remaining_hours=round(remaining, 2),
        breached=remaining < 0,
        near_breach=0 <= remaining <= NEAR_BREACH_HOURS,
        age_hours=round(age, 2),
    )


@dataclass(frozen=True)
class SlaSnapshot:
    open: int
    breaching: int
    near_breach: int
    median_age_hours: float | None
    by_status: dict[str, int]
    breaching_ids: list[int]
    near_breach_ids: list[int]


def sla_snapshot(session: Session, org_id: int, *, now: datetime | None = None) -> SlaSnapshot:
    """Open (active) disputes, how many breach their SLA now, and their median age in hours."""
    now = now or utcnow()
    active = list(
        session.scalars(
            select(Dispute)
            .where(Dispute.org_id == org_id, Dispute.status.in_(list(ACTIVE)))
            .order_by(Dispute.sla_due_at, Dispute.id)
        )
    )
    clocks = [(d, sla_clock(d, now)) for d in active]
    by_status: dict[str, int] = {}
    for d in active:
        by_status[d.status.value] = by_status.get(d.status.value, 0) + 1
    breaching = [d.id for d, c in clocks if c.breached]
    near = [d.id for d, c in clocks if c.near_breach]
    ages = [c.age_hours for _, c in clocks]
    return SlaSnapshot(
        open=len(active),
        breaching=len(breaching),
        near_breach=len(near),
        median_age_hours=round(statistics.median(ages), 2) if ages else None,
        by_status=by_status,
        breaching_ids=breaching,
        near_breach_ids=near,
    )
