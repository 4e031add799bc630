"""The draft lifecycle: approve / edit / reject with audit events, re-checks, conflicts, limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from memory.config import Settings
from memory.models import (
    Approval,
    AuditEvent,
    Draft,
    DraftRevision,
    DraftStatus,
    Organisation,
    OutboxMessage,
    Persona,
    User,
)
from tests.api.factories import (
    NOW,
    Seeded,
    make_customer,
    make_draft,
    make_invoice,
    seed_review,
    settings_for,
)
from tools.delivery import outbox
from tools.drafts import service as drafts
from tools.drafts.service import (
    ApprovalRefused,
    DraftNotFound,
    InvalidDraftInput,
    InvalidTransition,
    StaleDraft,
)


@pytest.fixture
def seeded(session: Session, org: Organisation, tmp_path: Path) -> Seeded:
    return seed_review(session, org, settings_for(str(tmp_path)), drafts=3)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(str(tmp_path))


def _events(session: Session, draft_id: int) -> list[tuple[str, str | None, str | None]]:
    rows = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.subject_type == "draft", AuditEvent.subject_id == draft_id)
        .order_by(AuditEvent.id)
    ).all()
    return [(e.action, e.from_state, e.to_state) for e in rows]


def test_seeded_drafts_need_review_in_shadow_mode(seeded: Seeded) -> None:
    for d in seeded.drafts:
        assert d.status is DraftStatus.PENDING_REVIEW
        assert d.decision_outcome == "needs_approval"
        assert "shadow.review_required" in [r["rule_id"] for r in d.decision["reasons"]]
        assert d.grounding["ok"] is True


def test_approve_queues_once_with_audit_trail(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    collector = seeded.users[Persona.COLLECTOR]
    d = seeded.drafts[0]
    drafts.approve_draft(
        session,
        seeded.org.id,
        d.id,
        user=collector,
        expected_version=d.version,
        settings=settings,
        now=NOW,
    )
    session.commit()
    assert d.status is DraftStatus.QUEUED
    assert d.decision_outcome == "allow"
    assert "review.approved" in [r["rule_id"] for r in d.decision["reasons"]]
    msgs = session.scalars(select(OutboxMessage).where(OutboxMessage.draft_id == d.id)).all()
    assert len(msgs) == 1 and msgs[0].recipient == d.recipient and msgs[0].body == d.body
    assert msgs[0].message_id.startswith("<plixo.") and msgs[0].message_id.endswith(">")
    approval = session.scalars(select(Approval).where(Approval.subject_id == d.id)).one()
    assert (approval.outcome, approval.approver_user_id) == ("approved", collector.id)
    assert _events(session, d.id) == [
        ("draft.created", "drafted", "pending_review"),
        ("draft.approved", "pending_review", "approved"),
        ("draft.queued", "approved", "queued"),
    ]
    # a second approval of the same draft: stale version, and even with the new version the
    # state forbids it; nothing is enqueued twice
    with pytest.raises(StaleDraft):
        drafts.approve_draft(
            session,
            seeded.org.id,
            d.id,
            user=collector,
            expected_version=1,
            settings=settings,
            now=NOW,
        )
    with pytest.raises(InvalidTransition):
        drafts.approve_draft(
            session,
            seeded.org.id,
            d.id,
            user=collector,
            expected_version=d.version,
            settings=settings,
            now=NOW,
        )
    session.rollback()
    assert session.scalar(select(OutboxMessage.id).where(OutboxMessage.draft_id == d.id))


def test_reject_keeps_reason_and_needs_one(session: Session, seeded: Seeded) -> None:
    manager = seeded.users[Persona.COLLECTIONS_MANAGER]
    d = seeded.drafts[1]
    with pytest.raises(InvalidDraftInput):
        drafts.reject_draft(
            session, seeded.org.id, d.id, user=manager, expected_version=d.version, reason="  "
        )
    drafts.reject_draft(
        session,
        seeded.org.id,
        d.id,
        user=manager,
        expected_version=d.version,
        reason="Tone too firm for a key account",
    )
    session.commit()
    session.expire_all()
    row = session.get(Draft, d.id)
    assert row is not None and row.status is DraftStatus.REJECTED
    assert row.rejection_reason == "Tone too firm for a key account"
    approval = session.scalars(select(Approval).where(Approval.subject_id == d.id)).one()
    assert approval.reason == "Tone too firm for a key account"
    assert _events(session, d.id)[-1] == ("draft.rejected", "pending_review", "rejected")


def test_foreign_org_draft_is_not_found(session: Session, seeded: Seeded) -> None:
    other = Organisation(name="Other", slug="other-org-x")
    session.add(other)
    session.commit()
    with pytest.raises(DraftNotFound):
        drafts.get_draft(session, other.id, seeded.drafts[0].id)
    with pytest.raises(DraftNotFound):
        drafts.get_draft(session, seeded.org.id, 999_999)


def test_edit_reruns_grounding_and_blocks_a_wrong_amount(
    session: Session,
    seeded: Seeded,
    settings,  # type: ignore[no-untyped-def]
) -> None:
    collector = seeded.users[Persona.COLLECTOR]
    d = seeded.drafts[0]
    v0 = d.version
    seeded_body = d.body
    bad_body = d.body.replace("$1,200.00", "$1,250.00")
    assert bad_body != d.body
    drafts.edit_draft(
        session,
        seeded.org.id,
        d.id,
        user=collector,
        expected_version=v0,
        subject=d.subject,
        body=bad_body,
        settings=settings,
        now=NOW,
    )
    session.commit()
    assert d.status is DraftStatus.BLOCKED
    assert d.grounding["ok"] is False
    assert any("1,250.00" in m["message"] for m in d.grounding["mismatches"])
    assert d.decision_outcome == "block"
    original, rev = session.scalars(
        select(DraftRevision).where(DraftRevision.draft_id == d.id).order_by(DraftRevision.seq)
    ).all()
    # the model's text is kept as turn 1 before the edit replaces it (Shadow Mode agreement)
    assert (original.seq, original.author, original.body) == (1, "copilot", seeded_body)
    assert (rev.seq, rev.author, rev.user_id, rev.body) == (2, "editor", collector.id, bad_body)
    # a blocked draft can be fixed by another edit, which re-checks clean
    good_body = bad_body.replace("$1,250.00", "$1,200.00") + "\nKind regards."
    drafts.edit_draft(
        session,
        seeded.org.id,
        d.id,
        user=collector,
        expected_version=d.version,
        subject=d.subject,
        body=good_body,
        settings=settings,
        now=NOW,
    )
    session.commit()
    assert d.status is DraftStatus.EDITED and d.grounding["ok"] is True
    assert d.decision_outcome == "needs_approval"
    assert [e[0] for e in _events(session, d.id)][-2:] == ["draft.edited", "draft.edited"]


def _user(session: Session, seeded: Seeded, role: Persona) -> User:
    user = session.get(User, seeded.users[role].id)
    assert user is not None
    return user


def _draft(session: Session, draft_id: int) -> Draft:
    draft = session.get(Draft, draft_id)
    assert draft is not None
    return draft


def test_approving_a_version_edited_since_it_was_loaded_conflicts(
    sessions: sessionmaker[Session], seeded: Seeded, settings: Settings
) -> None:
    """Two reviewers load version N; one edits; the other's approval of N is a conflict."""
    d_id, org_id = seeded.drafts[0].id, seeded.org.id
    with sessions() as a, sessions() as b:
        da = _draft(a, d_id)
        loaded = _draft(b, d_id).version
        drafts.edit_draft(
            a,
            org_id,
            d_id,
            user=_user(a, seeded, Persona.COLLECTOR),
            expected_version=da.version,
            subject="Reminder: " + da.subject,
            body=da.body,
            settings=settings,
            now=NOW,
        )
        a.commit()
        manager = _user(b, seeded, Persona.COLLECTIONS_MANAGER)
        b.expire_all()  # b reloads the row: the version it loaded is gone
        with pytest.raises(StaleDraft):
            drafts.approve_draft(
                b,
                org_id,
                d_id,
                user=manager,
                expected_version=loaded,
                settings=settings,
                now=NOW,
            )
        b.rollback()
    with sessions() as c:
        assert c.scalar(select(OutboxMessage.id).where(OutboxMessage.draft_id == d_id)) is None


def test_concurrent_writers_lose_to_the_optimistic_lock(
    sessions: sessionmaker[Session], seeded: Seeded
) -> None:
    """Both load version N and both pass the version check; the second flush is a conflict."""
    d_id, org_id = seeded.drafts[2].id, seeded.org.id
    with sessions() as a, sessions() as b:
        ua, ub = _user(a, seeded, Persona.COLLECTOR), _user(b, seeded, Persona.COLLECTOR)
        version = _draft(a, d_id).version
        db_ = _draft(b, d_id)  # loaded before a's change, still in b's identity map
        drafts.reject_draft(a, org_id, d_id, user=ua, expected_version=version, reason="first")
        a.commit()
        with pytest.raises(StaleDraft):
            drafts.reject_draft(b, org_id, d_id, user=ub, expected_version=version, reason="second")
            drafts.commit_or_conflict(b, db_)
        b.rollback()
    with sessions() as c:
        assert _draft(c, d_id).rejection_reason == "first"


def test_legal_language_needs_legal_approval(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    d = seeded.drafts[0]
    body = d.body + "\nOtherwise we will start legal action."
    collector = seeded.users[Persona.COLLECTOR]
    drafts.edit_draft(
        session,
        seeded.org.id,
        d.id,
        user=collector,
        expected_version=d.version,
        subject=d.subject,
        body=body,
        settings=settings,
        now=NOW,
    )
    session.commit()
    assert "content.legal_threat" in [r["rule_id"] for r in d.decision["reasons"]]
    assert "Legal" in drafts.required_roles(d.decision)
    with pytest.raises(ApprovalRefused) as err:
        drafts.approve_draft(
            session,
            seeded.org.id,
            d.id,
            user=collector,
            expected_version=d.version,
            settings=settings,
            now=NOW,
        )
    assert "Legal" in str(err.value)
    session.rollback()
    legal = seeded.users[Persona.LEGAL]
    drafts.approve_draft(
        session,
        seeded.org.id,
        d.id,
        user=legal,
        expected_version=d.version,
        settings=settings,
        now=NOW,
    )
    session.commit()
    assert d.status is DraftStatus.QUEUED


def test_approval_above_the_users_limit_is_refused_with_the_reason(
    session: Session,
    seeded: Seeded,
    settings,  # type: ignore[no-untyped-def]
) -> None:
    collector = seeded.users[Persona.COLLECTOR]
    collector.approval_limits = {"USD": 100_000}  # $1,000 < the $1,200 invoice
    session.commit()
    d = seeded.drafts[0]
    with pytest.raises(ApprovalRefused) as err:
        drafts.approve_draft(
            session,
            seeded.org.id,
            d.id,
            user=collector,
            expected_version=d.version,
            settings=settings,
            now=NOW,
        )
    assert "$1,200" in str(err.value) and "$1,000" in str(err.value)
    session.rollback()
    assert session.get(Draft, d.id).status is DraftStatus.PENDING_REVIEW  # type: ignore[union-attr]


def test_limits_are_per_currency_and_never_converted(
    session: Session,
    seeded: Seeded,
    settings,  # type: ignore[no-untyped-def]
) -> None:
    """A EUR draft is judged against the approver's EUR limit; with none in EUR, it is refused
    (fail closed) instead of being compared with a USD figure."""
    customer = make_customer(session, seeded.org, seeded.segment, name="Berliner Logistik GmbH")
    invoice = make_invoice(
        session,
        seeded.org,
        customer,
        number="INV-EUR-1",
        amount_minor=800_000,
        due=NOW.date() - timedelta(days=12),
        currency="EUR",
    )
    d = make_draft(session, settings, seeded.org, customer, invoice, segment=seeded.segment)
    session.commit()
    collector = seeded.users[Persona.COLLECTOR]

    def approve() -> None:
        drafts.approve_draft(
            session,
            seeded.org.id,
            d.id,
            user=collector,
            expected_version=d.version,
            settings=settings,
            now=NOW,
        )

    collector.approval_limits = {"USD": 10_000_000}  # $100,000, but nothing in EUR
    session.commit()
    with pytest.raises(ApprovalRefused) as err:
        approve()
    assert "no approval limit in EUR" in str(err.value) and "USD" in str(err.value)
    session.rollback()

    collector.approval_limits = {"USD": 10_000_000, "EUR": 799_999}  # one cent short
    session.commit()
    with pytest.raises(ApprovalRefused) as err:
        approve()
    assert "€8,000" in str(err.value) and "€7,999.99" in str(err.value)
    session.rollback()

    collector.approval_limits = {"USD": 0, "EUR": 800_000}  # exactly the balance
    session.commit()
    approve()
    session.commit()
    assert session.get(Draft, d.id).status is DraftStatus.QUEUED  # type: ignore[union-attr]


def test_sales_cannot_approve_even_through_the_tool(
    session: Session,
    seeded: Seeded,
    settings,  # type: ignore[no-untyped-def]
) -> None:
    d = seeded.drafts[0]
    with pytest.raises(ApprovalRefused):
        drafts.approve_draft(
            session,
            seeded.org.id,
            d.id,
            user=seeded.users[Persona.SALES],
            expected_version=d.version,
            settings=settings,
            now=NOW,
        )


def test_a_disputed_invoice_blocks_the_approval(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    """The ledger moved since drafting: the re-check at approval blocks and nothing changes."""
    d = seeded.drafts[0]
    seeded.invoices[0].disputed = True
    session.commit()
    with pytest.raises(ApprovalRefused) as err:
        drafts.approve_draft(
            session,
            seeded.org.id,
            d.id,
            user=seeded.users[Persona.COLLECTOR],
            expected_version=d.version,
            settings=settings,
            now=NOW,
        )
    assert "dispute" in str(err.value).lower()
    assert err.value.reasons
    session.rollback()
    assert session.get(Draft, d.id).status is DraftStatus.PENDING_REVIEW  # type: ignore[union-attr]
    assert session.scalar(select(OutboxMessage.id)) is None


def test_quiet_hours_defer_delivery_until_release(
    session: Session, seeded: Seeded, settings: Settings
) -> None:
    night = datetime(2025, 10, 8, 3, 0, tzinfo=UTC)  # 23:00 in New York
    held = []
    for d in seeded.drafts[:2]:
        drafts.approve_draft(
            session,
            seeded.org.id,
            d.id,
            user=seeded.users[Persona.COLLECTOR],
            expected_version=d.version,
            settings=settings,
            now=night,
        )
        held.append(d)
    session.commit()
    for d in held:
        assert d.status is DraftStatus.APPROVED
        assert d.decision_outcome == "defer" and d.hold_reason
    not_before = datetime.fromisoformat(held[0].decision["not_before"])
    assert not_before > night
    early = not_before - timedelta(minutes=1)
    assert drafts.release_deferred(session, now=early, settings=settings) == []
    # by the morning the second invoice is disputed: the re-check at release holds that draft
    seeded.invoices[1].disputed = True
    session.commit()
    assert drafts.release_deferred(session, now=not_before, settings=settings) == [held[0].id]
    session.commit()
    assert held[0].status is DraftStatus.QUEUED
    assert held[1].status is DraftStatus.BLOCKED
    assert "dispute" in (held[1].hold_reason or "").lower()
    assert _events(session, held[1].id)[-1] == ("draft.release_refused", "approved", "blocked")
    assert [m.draft_id for m in outbox.list_messages(session, seeded.org.id)] == [held[0].id]
