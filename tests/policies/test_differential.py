"""Differential test: the durable_rules engine and the plain-Python reference agree.

At least 10,000 generated actions (every action type, four policy variants, fifteen time zones with
DST at midnight, half-hour DST and +14/-11 offsets) must get identical decisions: the outcome, every
rule that fired, the next allowed moment, the approver roles and who is notified. A few percent of
the actions carry corrupted facts (a required fact dropped, a wrong type, an unknown key) and must
be blocked with a reason naming the problem.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.engine import PolicyEngine
from policies.holidaycal import place_or_none
from policies.timewin import next_allowed
from policies.types import Decision
from tests.policies.reference import (
    Expected,
    _earliest_allowed,
    public_holidays,
    reference_decide,
)
from tests.policies.strategies import CONTACT_PLACES, ZONES, actions, moments, variants

EXAMPLES = 10_000

_engines: dict[int, PolicyEngine] = {}


def engine(index: int) -> PolicyEngine:
    if index not in _engines:
        _engines[index] = PolicyEngine(variants()[index])
    return _engines[index]


def _same(decision: Decision, expected: Expected, where: str) -> None:
    got = (
        decision.outcome.value,
        sorted(decision.rule_ids),
        decision.not_before,
        decision.approver_roles,
        decision.notify,
    )
    want = (
        expected.outcome,
        expected.rule_ids,
        expected.not_before,
        expected.approver_roles,
        expected.notify,
    )
    assert got == want, f"{where}\nengine:    {got}\nreference: {want}\n{decision.reasons}"


# Required facts whose removal or mistyping must block (not every fact: some have defaults).
_CORRUPTIBLE = {
    "send_draft": ["now", "touches", "contact", "org_shadow_mode", "content", "promises"],
    "send_nudge": ["now", "touches", "scheduled_autopilot_touches", "template_approved"],
    "offer_plan": ["total_minor", "non_standard_terms", "currency"],
    "approve_plan": ["actor_role", "total_minor", "installments"],
    "grant_credit": ["amount_minor", "invoice_balance_minor", "kind"],
    "escalate_dispute": ["dispute_status"],
    "change_cadence": ["actor_role"],
    "change_segment": ["actor_role"],
    "change_policy": ["actor_role"],
    "enable_autopilot": ["data_ready_score", "sending_domain_verified"],
    "set_sending_mode": ["switch", "value"],
    "apply_cash": ["confidence", "amount_minor", "match_kind"],
}
_WRONG = {"now": "yesterday", "touches": "none", "contact": [], "content": "x", "promises": {}}


def _corrupt(action: str, facts: dict[str, Any], how: str, key: str) -> tuple[dict[str, Any], str]:
    bad = copy.deepcopy(facts)
    if how == "drop":
        bad.pop(key, None)
        return bad, "facts.missing"
    if how == "retype":
        value = bad.get(key)
        if key in _WRONG:
            bad[key] = _WRONG[key]
        elif isinstance(value, bool):
            bad[key] = "true" if value else "false"
        elif isinstance(value, int):
            bad[key] = float(value) + 0.5
        else:
            bad[key] = 12345
        return bad, "facts.invalid"
    bad["surprise_" + key] = True
    return bad, "facts.unknown"


counter = {"n": 0}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(case=actions(), corruption=st.integers(0, 99), pick=st.integers(0, 10_000))
def _check(case: tuple[int, str, dict[str, Any]], corruption: int, pick: int) -> None:
    counter["n"] += 1
    index, action, facts = case
    ps = variants()[index]
    if corruption < 3:  # 3 % corrupted facts: blocked, naming what is wrong
        keys = _CORRUPTIBLE[action]
        how = ["drop", "retype", "extra"][corruption]
        bad, rule_id = _corrupt(action, facts, how, keys[pick % len(keys)])
        decision = engine(index).decide(action, bad)
        assert decision.outcome.value == "block", decision
        assert decision.reasons and {r.rule_id for r in decision.reasons} == {rule_id}, decision
        return
    if corruption == 3:  # an unknown action type
        action = action.upper()
    decision = engine(index).decide({"type": action}, facts)
    _same(decision, reference_decide(action, facts, ps), f"variant {index} {action} {facts}")


@settings(max_examples=3000, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_next_allowed_moment_matches_reference(data: st.DataObject) -> None:
    """The calendar alone, where DST gaps and repeats hide: engine jumps vs reference search."""
    index = data.draw(st.integers(0, len(variants()) - 1))
    ps = variants()[index]
    zone = data.draw(st.sampled_from(ZONES))
    now = data.draw(moments(ps, zone))
    tz = ZoneInfo(zone)
    scheduled = [
        now + timedelta(minutes=m) for m in data.draw(st.lists(st.integers(-600, 3000), max_size=3))
    ]
    gap = timedelta(hours=data.draw(st.sampled_from([0, 1, 6, 24])))
    contact = data.draw(st.sampled_from(CONTACT_PLACES))
    calendar = engine(index).book.calendar.for_place(
        place_or_none(contact.get("country"), contact.get("subdivision"))
    )
    got = next_allowed(now, calendar, tz, scheduled, gap)
    closed = public_holidays(ps, contact)
    want = _earliest_allowed(now, tz, ps, scheduled, gap, closed=closed)
    assert got == want, (zone, now, got, want)
    assert calendar.is_open(got, tz)


def test_engine_matches_reference_on_10000_generated_actions() -> None:
    counter["n"] = 0
    _check()
    assert counter["n"] >= EXAMPLES
