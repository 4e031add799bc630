"""Batch approval: grouping, per-item refusals (limit, stale, state), audit, request validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import (
    AuditEvent,
    Draft,
    DraftStatus,
    Organisation,
    OutboxMessage,
    Persona,
)
from tests.api.factories import (
    NOW,
    Seeded,
    make_customer,
    make_draft,
    make_invoice,
    make_segment,
    seed_review,
    settings_for,
)
from tools.drafts import batch
from tools.drafts import service as drafts


@pytest.fixture
def seeded(session: Session, org: Organisation, tmp_path: Path) -> Seeded:
    return seed_review(session, org, settings_for(str(tmp_path)), drafts=10)


def _recheck(seeded: Seeded, role: Persona, tmp_path: Path) -> drafts.Rechecker:
    return drafts.make_recheck(settings_for(str(tmp_path)), approved_by=[role.value])


def test_groups_by_segment_step_and_reason(
    session: Session, seeded: Seeded, tmp_path: Path
) -> None:
    # a second segment, and a draft needing Legal in the first: three groups in all
    other = make_segment(session, seeded.org, "Enterprise")
    customer = make_customer(session, seeded.org, other, name="Big Co")
    invoice = make_invoice(
        session, seeded.org, customer, number="ENT-1", amount_minor=900_000, due=NOW.date()
    )
    make_draft(session, settings_for(str(tmp_path)), seeded.org, customer, invoice, segment=other)
    legal = seeded.drafts[0]
    drafts.edit_draft(
        session,
        seeded.org.id,
        legal.id,
        user=seeded.users[Persona.COLLECTOR],
        expected_version=legal.version,
        subject=legal.subject,
        body=legal.body + "\nWe may involve a collection agency.",
        settings=settings_for(str(tmp_path)),
        now=NOW,
    )
    session.commit()
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    groups = batch.pending_groups(session, seeded.org.id, user=manager)
    by_key = {(g.segment, tuple(g.reasons)): g for g in groups}
    assert len(groups) == 3
    mid = by_key[("Mid-market", ("shadow.review_required",))]
    assert mid.count == 9 and mid.step.startswith("Step 2")
    assert mid.totals == {"USD": sum(i.amount_minor or 0 for i in mid.items)}
    legal_group = next(g for g in groups if "content.legal_threat" in g.reasons)
    assert [i.draft_id for i in legal_group.items] == [legal.id]
    assert not legal_group.items[0].approvable  # a manager is not Legal
    assert "Legal" in (legal_group.items[0].problem or "")
    assert by_key[("Enterprise", ("shadow.review_required",))].count == 1


def test_batch_approve_refuses_items_over_the_limit_with_the_reason(
    session: Session, seeded: Seeded, tmp_path: Path
) -> None:
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    manager.approval_limits = {"USD": 120_400}  # drafts 0-4 chase $1,200.00 … $1,204.00
    session.commit()
    items = [(d.id, d.version) for d in seeded.drafts]
    result = batch.decide_batch(
        session,
        seeded.org.id,
        user=manager,
        action="approve",
        items=items,
        recheck=_recheck(seeded, Persona.COLLECTIONS_MANAGER, tmp_path),
        now=NOW,
    )
    session.commit()
    approved = [r.draft_id for r in result.results if r.outcome == "approved"]
    refused = [r for r in result.results if r.outcome == "refused"]
    assert approved == [d.id for d in seeded.drafts[:5]]
    assert [r.draft_id for r in refused] == [d.id for d in seeded.drafts[5:]]
    assert all("above your approval limit of $1,204" in r.message for r in refused)
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 5
    statuses = {d.id: session.get(Draft, d.id).status for d in seeded.drafts}  # type: ignore[union-attr]
    assert [statuses[d.id] for d in seeded.drafts[5:]] == [DraftStatus.PENDING_REVIEW] * 5
    # every item audited with the batch id; plus one event for the batch
    per_item = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "draft.approved")
    ).all()
    assert {e.detail["batch_id"] for e in per_item} == {result.batch_id}
    summary = session.scalars(select(AuditEvent).where(AuditEvent.action == "batch.approve")).one()
    assert summary.detail["done"] == 5 and len(summary.detail["refused"]) == 5


def test_stale_and_handled_items_are_refused_the_rest_stand(
    session: Session, seeded: Seeded, tmp_path: Path
) -> None:
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    first, second, third = seeded.drafts[:3]
    drafts.reject_draft(
        session,
        seeded.org.id,
        second.id,
        user=manager,
        expected_version=second.version,
        reason="duplicate",
    )
    session.commit()
    result = batch.decide_batch(
        session,
        seeded.org.id,
        user=manager,
        action="approve",
        items=[
            (first.id, first.version),
            (second.id, second.version),
            (third.id, 1_000),
            (999_999, 1),
        ],
        recheck=_recheck(seeded, Persona.COLLECTIONS_MANAGER, tmp_path),
        now=NOW,
    )
    session.commit()
    outcomes = {r.draft_id: (r.outcome, r.message) for r in result.results}
    assert outcomes[first.id][0] == "approved"
    assert outcomes[second.id][0] == "refused"
    assert outcomes[third.id][0] == "refused" and "version" in outcomes[third.id][1]
    assert outcomes[999_999][0] == "refused" and "No draft" in outcomes[999_999][1]
    assert session.get(Draft, first.id).status is DraftStatus.QUEUED  # type: ignore[union-attr]


def test_batch_reject_keeps_the_reason_on_every_item(session: Session, seeded: Seeded) -> None:
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    items = [(d.id, d.version) for d in seeded.drafts[:4]]
    with pytest.raises(batch.BatchError):
        batch.decide_batch(session, seeded.org.id, user=manager, action="reject", items=items)
    result = batch.decide_batch(
        session,
        seeded.org.id,
        user=manager,
        action="reject",
        items=items,
        reason="Wrong cadence step for this segment",
    )
    session.commit()
    assert result.done == 4
    for d in seeded.drafts[:4]:
        row = session.get(Draft, d.id)
        assert row is not None and row.status is DraftStatus.REJECTED
        assert row.rejection_reason == "Wrong cadence step for this segment"


@pytest.mark.parametrize(
    ("items", "message"),
    [([], "at least one"), ([(1, 1), (1, 1)], "twice"), ([(i, 1) for i in range(501)], "500")],
)
def test_malformed_batches_change_nothing(
    session: Session, seeded: Seeded, items: list[tuple[int, int]], message: str
) -> None:
    with pytest.raises(batch.BatchError) as err:
        batch.decide_batch(
            session,
            seeded.org.id,
            user=seeded.users[Persona.COLLECTIONS_MANAGER],
            action="approve",
            items=items,
        )
    assert message in str(err.value)
    assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
