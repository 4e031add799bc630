"""Disputes: intake, workflow, SLA clocks on a controllable clock, evidence files, credits."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import (
    AuditEvent,
    Dispute,
    DisputeEvidence,
    DisputeStatus,
    Invoice,
    InvoiceStatus,
    Organisation,
    Persona,
)
from tests.tools.commit_factories import NOW, Factory
from tools.commitments import disputes
from tools.commitments.plans import PolicyRefused
from tools.commitments.promises import CommitmentError, Conflict, NotFound

PDF = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def cf(session: Session, org: Organisation) -> Factory:
    return Factory(session, org)


def _count(session: Session, model: type) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _open(session: Session, cf: Factory, amount: int = 100_000, **kw: object) -> Dispute:
    c = cf.customer()
    inv = cf.invoice(c, amount)
    args: dict[str, object] = {"invoice_id": inv.id, "reason": "pricing", "actor": "t", "now": NOW}
    args.update(kw)
    return disputes.open_dispute(session, cf.org.id, **args)  # type: ignore[arg-type]


def test_open_pauses_dunning_and_starts_the_clock(session: Session, cf: Factory) -> None:
    d = _open(session, cf, description="Rate should be $90/h")
    inv = session.get(Invoice, d.invoice_id)
    assert inv is not None and inv.disputed
    assert d.status == DisputeStatus.OPEN
    assert d.sla_due_at == NOW + timedelta(hours=48)
    clock = disputes.sla_clock(d, NOW + timedelta(hours=47, minutes=59))
    assert not clock.breached and clock.near_breach and clock.hours_allowed == 48
    assert disputes.sla_clock(d, NOW + timedelta(hours=48)).breached is False  # at the limit
    assert disputes.sla_clock(d, NOW + timedelta(hours=48, seconds=1)).breached


@pytest.mark.parametrize(
    ("status", "balance", "match"),
    [
        (InvoiceStatus.PAID, 0, "paid with nothing left"),
        (InvoiceStatus.VOID, 1000, "void"),
    ],
)
def test_dispute_on_a_paid_or_void_invoice_is_refused(
    session: Session, cf: Factory, status: InvoiceStatus, balance: int, match: str
) -> None:
    c = cf.customer()
    inv = cf.invoice(c, 1000, balance_minor=balance, status=status)
    with pytest.raises(CommitmentError, match=match):
        disputes.open_dispute(session, cf.org.id, invoice_id=inv.id, reason="pricing", actor="t")
    assert _count(session, Dispute) == 0 and not inv.disputed


def test_bad_reason_second_dispute_and_foreign_customer(session: Session, cf: Factory) -> None:
    d = _open(session, cf)
    with pytest.raises(Conflict, match="already has an open dispute"):
        disputes.open_dispute(session, cf.org.id, invoice_id=d.invoice_id, reason="tax", actor="t")
    with pytest.raises(CommitmentError, match="Unknown dispute reason"):
        disputes.open_dispute(
            session, cf.org.id, invoice_id=d.invoice_id, reason="bored", actor="t"
        )
    other = cf.customer(email="z@z.example")
    inv = cf.invoice(other)
    with pytest.raises(NotFound):
        disputes.open_dispute(
            session,
            cf.org.id,
            invoice_id=inv.id,
            reason="tax",
            actor="t",
            source="portal",
            customer_id=d.customer_id,
        )
    assert _count(session, Dispute) == 1


def test_workflow_restarts_the_clock_per_status(session: Session, cf: Factory) -> None:
    collector = cf.user(Persona.COLLECTOR)
    d = _open(session, cf)
    t1 = NOW + timedelta(hours=10)
    disputes.change_status(
        session, cf.org.id, d.id, DisputeStatus.INVESTIGATING, actor=collector, now=t1
    )
    assert d.sla_due_at == t1 + timedelta(hours=120)
    t2 = t1 + timedelta(hours=100)
    disputes.change_status(
        session,
        cf.org.id,
        d.id,
        DisputeStatus.AWAITING_CUSTOMER,
        actor=collector,
        now=t2,
        note="asked for the PO",
    )
    assert d.sla_due_at == t2 + timedelta(hours=240)
    t3 = t2 + timedelta(hours=241)
    assert disputes.sla_clock(d, t3).breached
    disputes.change_status(
        session, cf.org.id, d.id, DisputeStatus.ESCALATED_LEGAL, actor=collector, now=t3
    )
    esc = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "dispute.escalated_legal")
    ).one()
    assert esc.detail["notify"] == ["legal"] and esc.from_state == "awaiting_customer"
    with pytest.raises(CommitmentError, match="Say why"):
        disputes.change_status(session, cf.org.id, d.id, DisputeStatus.REJECTED, actor=collector)
    disputes.change_status(
        session,
        cf.org.id,
        d.id,
        DisputeStatus.REJECTED,
        actor=collector,
        now=t3,
        note="Rate matches the signed order",
    )
    inv = session.get(Invoice, d.invoice_id)
    assert inv is not None and not inv.disputed  # dunning resumes
    assert d.sla_due_at is None and d.resolved_at == t3
    with pytest.raises(Conflict, match="it can move to nothing"):
        disputes.change_status(
            session, cf.org.id, d.id, DisputeStatus.INVESTIGATING, actor=collector
        )


def test_escalation_needs_the_permission(session: Session, cf: Factory) -> None:
    d = _open(session, cf)
    with pytest.raises(PolicyRefused):
        disputes.change_status(
            session, cf.org.id, d.id, DisputeStatus.ESCALATED_LEGAL, actor=cf.user(Persona.SALES)
        )
    assert d.status == DisputeStatus.OPEN


def test_sla_snapshot_with_a_controlled_clock(session: Session, cf: Factory) -> None:
    collector = cf.user(Persona.COLLECTOR)
    fresh = _open(session, cf, now=NOW)
    old = _open(session, cf, now=NOW - timedelta(hours=60))  # open 60 h: breached at 48 h
    working = _open(session, cf, now=NOW - timedelta(hours=30))
    disputes.change_status(
        session,
        cf.org.id,
        working.id,
        DisputeStatus.INVESTIGATING,
        actor=collector,
        now=NOW - timedelta(hours=20),
    )
    done = _open(session, cf, now=NOW - timedelta(hours=500))
    disputes.change_status(
        session,
        cf.org.id,
        done.id,
        DisputeStatus.REJECTED,
        actor=collector,
        now=NOW - timedelta(hours=400),
        note="no basis",
    )
    snap = disputes.sla_snapshot(session, cf.org.id, now=NOW)
    assert snap.open == 3
    assert snap.breaching == 1 and snap.breaching_ids == [old.id]
    assert snap.median_age_hours == 30.0
    assert snap.by_status == {"open": 2, "investigating": 1}
    assert fresh.id not in snap.near_breach_ids  # 48 h left
    later = disputes.sla_snapshot(session, cf.org.id, now=NOW + timedelta(hours=30))
    assert fresh.id in later.near_breach_ids and later.breaching == 1
    assert disputes.sla_snapshot(session, cf.org.id, now=NOW + timedelta(hours=49)).breaching == 2
    empty_org = disputes.sla_snapshot(session, cf.org.id + 999, now=NOW)
    assert (empty_org.open, empty_org.median_age_hours) == (0, None)


def test_credit_within_limit_resolves_and_releases_the_invoice(
    session: Session, cf: Factory
) -> None:
    d = _open(session, cf)
    out = disputes.propose_credit(
        session, cf.org.id, d.id, amount_minor=100_000, actor=cf.user(Persona.COLLECTOR), now=NOW
    )
    assert out.granted and d.status == DisputeStatus.RESOLVED_CREDIT
    inv = session.get(Invoice, d.invoice_id)
    assert inv is not None
    assert inv.balance_minor == 0 and inv.status == InvoiceStatus.PAID and not inv.disputed


def test_credit_above_limit_waits_for_an_approver_with_authority(
    session: Session, cf: Factory
) -> None:
    d = _open(session, cf, amount=500_000)
    collector = cf.user(Persona.COLLECTOR)
    out = disputes.propose_credit(
        session, cf.org.id, d.id, amount_minor=100_001, actor=collector, now=NOW
    )
    assert not out.granted and d.status == DisputeStatus.OPEN and d.credit_minor == 100_001
    assert "exceeds the Collector limit of $1,000: Controller approval required" in out.message
    with pytest.raises(PolicyRefused, match="not enough"):
        disputes.approve_credit(session, cf.org.id, d.id, approver=collector)
    disputes.approve_credit(session, cf.org.id, d.id, approver=cf.user(Persona.CONTROLLER), now=NOW)
    assert d.status == DisputeStatus.RESOLVED_CREDIT


def test_credit_bad_amounts(session: Session, cf: Factory) -> None:
    d = _open(session, cf)
    with pytest.raises(CommitmentError, match="between 1 and"):
        disputes.propose_credit(
            session, cf.org.id, d.id, amount_minor=100_001 * 10, actor=cf.user(Persona.CONTROLLER)
        )
    with pytest.raises(PolicyRefused):  # Billing Admin may grant credit; Viewer may not
        disputes.propose_credit(
            session, cf.org.id, d.id, amount_minor=1, actor=cf.user(Persona.VIEWER)
        )
    assert d.status == DisputeStatus.OPEN


def test_evidence_is_stored_with_its_hash(session: Session, cf: Factory, tmp_path: Path) -> None:
    tmp_path = tmp_path / "evidence"
    d = _open(session, cf)
    item = disputes.add_evidence(
        session,
        cf.org.id,
        d.id,
        filename="../../etc/PO 123.pdf",
        data=PDF,
        content_type="application/pdf",
        slot="contract",
        evidence_dir=tmp_path,
        uploaded_by="payer",
        actor="payer (mini-portal)",
        now=NOW,
    )
    digest = hashlib.sha256(PDF).hexdigest()
    assert item.sha256 == digest and item.filename == "PO 123.pdf"
    stored = disputes.evidence_path(tmp_path, item)
    assert stored.read_bytes() == PDF and stored.name == f"{digest}.pdf"
    assert stored.parent == tmp_path / str(cf.org.id) / str(d.id)
    with pytest.raises(Conflict, match="already attached"):
        disputes.add_evidence(
            session,
            cf.org.id,
            d.id,
            filename="again.pdf",
            data=PDF,
            evidence_dir=tmp_path,
            uploaded_by="payer",
            actor="payer (mini-portal)",
        )


@pytest.mark.parametrize(
    ("data", "ctype", "slot", "match"),
    [
        (b"MZ\x90\x00\x03\x00" + b"\x00" * 64, "application/pdf", "other", "not accepted"),
        (b"\xff\xfe\x00bin", "text/plain", "other", "not accepted"),
        (b"%PDF-" + b"x" * disputes.MAX_EVIDENCE_BYTES, "application/pdf", "other", "limit is"),
        (b"", "text/plain", "other", "empty"),
        (PNG, "image/png", "selfie", "Unknown evidence slot"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_stored(
    session: Session, cf: Factory, tmp_path: Path, data: bytes, ctype: str, slot: str, match: str
) -> None:
    d = _open(session, cf)
    root = tmp_path / "evidence"
    with pytest.raises(CommitmentError, match=match):
        disputes.add_evidence(
            session,
            cf.org.id,
            d.id,
            filename="f",
            data=data,
            content_type=ctype,
            slot=slot,
            evidence_dir=root,
            uploaded_by="payer",
            actor="payer (mini-portal)",
        )
    assert _count(session, DisputeEvidence) == 0
    assert not root.exists() or not any(p.is_file() for p in root.rglob("*"))


def test_accepted_types_are_judged_by_their_bytes(tmp_path: Path) -> None:
    assert disputes.sniff_type(PNG, "application/octet-stream") == "image/png"
    assert disputes.sniff_type(b"\xff\xd8\xff\xe0JFIF", None) == "image/jpeg"
    assert disputes.sniff_type(b"a,b\n1,2\n", "text/csv") == "text/csv"
    assert disputes.sniff_type("Grüße".encode(), "text/plain") == "text/plain"
