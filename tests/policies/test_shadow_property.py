"""Property: while Shadow Mode is on, no draft is allowed without a human review.

Generated drafts cover every other guardrail's facts (quiet hours, caps, content, promises, four
policy variants); Shadow Mode is forced on for the organisation, the segment, or both.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.access import at_least
from policies.engine import PolicyEngine
from tests.policies.strategies import drafts, variants

_engines = [PolicyEngine(ps) for ps in variants()]


@settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=drafts(), which=st.sampled_from(["org", "segment", "both"]), reviewed=st.booleans())
def test_no_unreviewed_draft_is_allowed_in_shadow_mode(
    case: tuple[int, dict[str, Any]], which: str, reviewed: bool
) -> None:
    index, facts = case
    facts["org_shadow_mode"] = which in ("org", "both")
    facts["segment_shadow_mode"] = which in ("segment", "both")
    if not reviewed:
        below = ("Sales", "CSM", "Viewer", "Payer", "collector")
        facts["approved_by_roles"] = [r for r in facts["approved_by_roles"] if r in below]
    decision = _engines[index].decide("send_draft", facts)
    minimum = variants()[index].shadow_mode.reviewer_min_role
    human = any(at_least(r, minimum) for r in facts["approved_by_roles"] if r in _known())
    if decision.allowed:
        assert human, (facts, decision.reasons)
    if not human:
        assert decision.outcome != "allow"
        assert "shadow.review_required" in decision.rule_ids


def _known() -> set[str]:
    from policies.access import roles

    return set(roles())
