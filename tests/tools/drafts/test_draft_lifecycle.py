"""The draft lifecycle has one home: every status change goes through ``tools.drafts.lifecycle``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import AuditEvent, Draft, DraftStatus
from tools.drafts import lifecycle

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("agent", "tools", "api", "memory", "policies", "prompts", "evals")


def _status_assignments(path: Path) -> list[int]:
    """Lines of ``<something>.status = DraftStatus...``-like writes to a draft's status."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Attribute) and t.attr == "status":
                    src = ast.unparse(node.value)
                    owner = ast.unparse(t.value).lower()
                    if "DraftStatus" in src or "draft" in owner or owner in ("d", "old"):
                        lines.append(node.lineno)
    return lines


def test_only_the_lifecycle_module_assigns_a_draft_status() -> None:
    found = {
        str(p.relative_to(ROOT)): lines
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if (lines := _status_assignments(p))
    }
    assert set(found) == {"tools/drafts/lifecycle.py"}, found


def test_every_state_has_its_moves_and_final_states_have_none() -> None:
    assert set(lifecycle.ALLOWED) == set(DraftStatus)
    for final in (DraftStatus.SENT, DraftStatus.REJECTED, DraftStatus.SUPERSEDED):
        assert lifecycle.ALLOWED[final] == frozenset()
    assert not lifecycle.can_move(DraftStatus.REJECTED, DraftStatus.QUEUED)
    assert not lifecycle.can_move(DraftStatus.PENDING_REVIEW, DraftStatus.SENT)
    assert lifecycle.can_move(DraftStatus.QUEUED, DraftStatus.PENDING_REVIEW)


def _a_draft(session: Session) -> Draft:
    from tests.agent.factories import small_ledger

    led = small_ledger(session)
    draft = Draft(
        org_id=led.org.id,
        customer_id=led.customer.id,
        invoice_id=led.invoice.id,
        subject="Reminder",
        body="Hello",
    )
    lifecycle.begin(draft, DraftStatus.PENDING_REVIEW)
    session.add(draft)
    session.flush()
    return draft


def test_a_move_is_audited_and_an_illegal_one_refused(session: Session) -> None:
    draft = _a_draft(session)
    lifecycle.move(session, draft, DraftStatus.REJECTED, actor="a test", action="draft.rejected")
    session.flush()
    event = session.scalars(
        select(AuditEvent).where(AuditEvent.subject_id == draft.id).order_by(AuditEvent.id.desc())
    ).first()
    assert event is not None and (event.from_state, event.to_state) == (
        "pending_review",
        "rejected",
    )
    with pytest.raises(lifecycle.IllegalTransition, match="cannot become queued"):
        lifecycle.move(session, draft, DraftStatus.QUEUED, actor="a test", action="draft.queued")
    assert draft.status is DraftStatus.REJECTED


def test_a_new_draft_cannot_start_as_sent() -> None:
    with pytest.raises(lifecycle.IllegalTransition):
        lifecycle.begin(Draft(), DraftStatus.SENT)
