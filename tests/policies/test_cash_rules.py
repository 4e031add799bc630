"""apply_cash: a person needs the permission; plixo alone only inside the Controller's limits."""

from __future__ import annotations

from typing import Any

import pytest

from policies.engine import decide, engine_for
from policies.policy_set import load_default, merge

EXACT: dict[str, Any] = {
    "confidence": 98,
    "amount_minor": 120_000,
    "currency": "USD",
    "match_kind": "exact",
}


def _rules(decision: Any) -> list[str]:
    return sorted(r.rule_id for r in decision.reasons)


def test_seed_policy_never_auto_applies() -> None:
    d = decide("apply_cash", EXACT)
    assert d.outcome.value == "needs_approval" and "cash.auto_apply_off" in _rules(d)
    assert d.approver_role == "Collector"


def test_people_need_the_apply_cash_permission() -> None:
    assert decide("apply_cash", {**EXACT, "actor_role": "Collector"}).outcome.value == "allow"
    low = {**EXACT, "actor_role": "Collector", "confidence": 10, "match_kind": "short_pay"}
    assert decide("apply_cash", low).outcome.value == "allow"  # a person judges the match
    sales = decide("apply_cash", {**EXACT, "actor_role": "Sales"})
    assert sales.outcome.value == "block" and _rules(sales) == ["access.denied"]


def test_auto_apply_inside_every_limit_only() -> None:
    ps = merge(
        load_default(),
        {"cash_app": {"auto_apply": True, "max_auto_apply_minor": {"USD": 500_000}}},
    )
    eng = engine_for(ps)
    ok = eng.decide("apply_cash", EXACT)
    assert ok.outcome.value == "allow" and _rules(ok) == ["cash.auto_apply"]
    cases = {
        "cash.low_confidence": {**EXACT, "confidence": 94},
        "cash.above_auto_limit": {**EXACT, "amount_minor": 500_001},
        "cash.kind_needs_review": {**EXACT, "match_kind": "over_payment"},
    }
    for rule, facts in cases.items():
        d = eng.decide("apply_cash", facts)
        assert d.outcome.value == "needs_approval" and _rules(d) == [rule], rule
    eur = eng.decide("apply_cash", {**EXACT, "currency": "EUR"})  # no EUR limit: never alone
    assert _rules(eur) == ["cash.above_auto_limit"]
    at_limit = eng.decide("apply_cash", {**EXACT, "amount_minor": 500_000, "confidence": 95})
    assert at_limit.outcome.value == "allow"


def test_a_float_amount_fails_closed() -> None:
    d = decide("apply_cash", {**EXACT, "amount_minor": 1200.5})
    assert d.outcome.value == "block" and "facts.invalid" in _rules(d)


def test_an_override_can_add_a_currency_to_the_auto_apply_limits() -> None:
    ps = merge(load_default(), {"cash_app": {"max_auto_apply_minor": {"EUR": 300_000}}})
    assert ps.cash_app.max_auto_apply_minor == {"USD": 500_000, "EUR": 300_000}


def test_a_copilot_split_always_waits_for_a_person() -> None:
    """The co-pilot's split (agent.remittance) is never applied alone, whatever the limits."""
    ps = merge(
        load_default(),
        {"cash_app": {"auto_apply": True, "min_confidence": 0,
                      "max_auto_apply_minor": {"USD": 10**12}}},
    )  # fmt: skip
    split = {**EXACT, "confidence": 100, "match_kind": "copilot_split"}
    d = engine_for(ps).decide("apply_cash", split)
    assert d.outcome.value == "needs_approval" and _rules(d) == ["cash.kind_needs_review"]
    assert decide("apply_cash", {**split, "actor_role": "Collector"}).outcome.value == "allow"
    assert decide("apply_cash", {**split, "actor_role": "Sales"}).outcome.value == "block"
    with pytest.raises(ValueError, match="auto_apply_kinds"):  # a Controller cannot list it
        merge(load_default(), {"cash_app": {"auto_apply_kinds": ["exact", "copilot_split"]}})
