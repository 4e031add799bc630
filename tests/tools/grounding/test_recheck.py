"""Re-checking a stored draft: an edit that states what the ledger does not back is blocked."""

from __future__ import annotations

from sqlalchemy.orm import Session

from agent.deps import AgentDeps
from agent.drafter import draft_outreach
from memory.models import Draft
from tests.agent.factories import AS_OF, NOW, settings_for, small_ledger
from tools.grounding.recheck import recheck_draft


def test_recheck_draft_blocks_an_edit_that_lies(session: Session, data_dir: object) -> None:
    led = small_ledger(session)
    settings = settings_for()
    deps = AgentDeps(session=session, org_id=led.org.id, settings=settings, as_of=AS_OF, now=NOW)
    result = draft_outreach(deps, invoice_id=led.invoice.id, step=led.cadence.steps[1].id)
    session.commit()
    draft = session.get(Draft, result.draft_id)
    assert draft is not None
    good = recheck_draft(session, draft, NOW, settings=settings, as_of=AS_OF)
    assert not good.grounding_blocked and good.outcome == "needs_approval"
    draft.body = draft.body.replace("$1,250.00", "$125.00")
    bad = recheck_draft(session, draft, NOW, settings=settings, as_of=AS_OF)
    assert bad.grounding_blocked and bad.outcome == "block"
    assert "content.amount_mismatch" in {r["rule_id"] for r in bad.decision["reasons"]}
