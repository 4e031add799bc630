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


# A $980.00 payment of a $1,000.00 invoice, the $20.00 short explained as a discount taken.
SHORT: dict[str, Any] = {
    "confidence": 90,
    "amount_minor": 98_000,
    "currency": "USD",
    "match_kind": "short_pay",
    "write_off_minor": 2_000,
    "write_off_kind": "discount",
    "invoices_minor": 100_000,
}


def _write_off_engine(**cash: Any) -> Any:
    on = {"auto_apply": True, "max_auto_apply_minor": {"USD": 500_000}, "auto_write_off": True}
    return engine_for(merge(load_default(), {"cash_app": {**on, **cash}}))


def test_the_write_off_rule_is_off_by_default() -> None:
    """Off (the seed), a short-pay with a write-off waits for a person even with auto-apply on."""
    d = decide("apply_cash", SHORT)
    assert d.outcome.value == "needs_approval" and "cash.auto_write_off_off" in _rules(d)
    ps = merge(
        load_default(),
        {"cash_app": {"auto_apply": True, "auto_apply_kinds": ["exact", "short_pay"],
                      "min_confidence": 90}},
    )  # fmt: skip
    listed = engine_for(ps).decide("apply_cash", SHORT)  # listing the kind is not enough
    assert listed.outcome.value == "needs_approval"
    assert _rules(listed) == ["cash.auto_apply", "cash.auto_write_off_off"]
    assert decide("apply_cash", {**SHORT, "actor_role": "Collector"}).outcome.value == "allow"


def test_the_write_off_rule_on_applies_a_short_pay_within_its_limits() -> None:
    eng = _write_off_engine()
    ok = eng.decide("apply_cash", SHORT)
    assert ok.outcome.value == "allow" and _rules(ok) == ["cash.short_pay_write_off"]
    assert "written off by the rule" in ok.reasons[0].message
    fee = {**SHORT, "write_off_kind": "bank_fee", "write_off_minor": 1_500, "amount_minor": 98_500}
    assert eng.decide("apply_cash", fee).outcome.value == "allow"
    at_cap = {**SHORT, "write_off_minor": 2_500, "invoices_minor": 125_000}  # $25.00, 2.00 %
    assert eng.decide("apply_cash", at_cap).outcome.value == "allow"


def test_a_write_off_over_the_limits_waits() -> None:
    eng = _write_off_engine()
    cases = {
        "over the USD cap": {**SHORT, "write_off_minor": 2_501, "invoices_minor": 1_000_000},
        "over 2 % of the invoices": {**SHORT, "write_off_minor": 2_001, "invoices_minor": 100_000},
        "below its confidence bar": {**SHORT, "confidence": 89},
        "a kind not listed": {**SHORT, "write_off_kind": "bank_fee"},
    }
    eng_discount_only = _write_off_engine(auto_write_off_kinds=["discount"])
    for why, facts in cases.items():
        e = eng_discount_only if why == "a kind not listed" else eng
        d = e.decide("apply_cash", facts)
        assert d.outcome.value == "needs_approval", why
        assert _rules(d) == ["cash.write_off_needs_review"], why
        assert d.approver_role == "Collector"
    big = eng.decide("apply_cash", {**SHORT, "amount_minor": 600_000, "invoices_minor": 602_000})
    assert _rules(big) == ["cash.above_auto_limit"]  # the line's own limit still holds


def test_a_write_off_in_another_currency_or_of_another_kind_never_applies_alone() -> None:
    eng = _write_off_engine()
    eur = eng.decide("apply_cash", {**SHORT, "currency": "EUR"})  # no EUR cap, no EUR limit
    assert eur.outcome.value == "needs_approval"
    assert _rules(eur) == ["cash.above_auto_limit", "cash.write_off_needs_review"]
    eur_limit = _write_off_engine(max_auto_apply_minor={"USD": 500_000, "EUR": 500_000})
    assert _rules(eur_limit.decide("apply_cash", {**SHORT, "currency": "EUR"})) == [
        "cash.write_off_needs_review"
    ]
    # a write-off on anything but a short-pay, and an unrelated line put on account
    exact = eng.decide("apply_cash", {**SHORT, "match_kind": "exact", "confidence": 100})
    assert exact.outcome.value == "needs_approval"
    assert "cash.write_off_needs_review" in _rules(exact)
    on_account = {**EXACT, "match_kind": "on_account", "confidence": 30}
    unrelated = eng.decide("apply_cash", on_account)
    assert _rules(unrelated) == ["cash.kind_needs_review", "cash.low_confidence"]
    open_rest = eng.decide("apply_cash", {**EXACT, "match_kind": "short_pay", "confidence": 90})
    assert _rules(open_rest) == ["cash.kind_needs_review", "cash.low_confidence"]


def test_write_off_facts_are_consistent_or_blocked() -> None:
    for bad in (
        {**SHORT, "write_off_kind": None},
        {k: v for k, v in SHORT.items() if k != "invoices_minor"},
        {**SHORT, "write_off_minor": 0},
        {**SHORT, "write_off_minor": 200_000},
        {**SHORT, "write_off_kind": "dispute"},
    ):
        d = decide("apply_cash", bad)
        assert d.outcome.value == "block" and "facts.invalid" in _rules(d), bad


def test_an_override_can_add_a_currency_to_the_write_off_caps() -> None:
    ps = merge(load_default(), {"cash_app": {"auto_write_off_max_minor": {"EUR": 1_000}}})
    assert ps.cash_app.auto_write_off_max_minor == {"USD": 2_500, "EUR": 1_000}
    with pytest.raises(ValueError, match="ISO 4217"):
        merge(load_default(), {"cash_app": {"auto_write_off_max_minor": {"euro": 1}}})


# A $1,020.00 payment of a $1,000.00 invoice: $20.00 kept on account.
OVER: dict[str, Any] = {
    "confidence": 80,
    "amount_minor": 102_000,
    "currency": "USD",
    "match_kind": "over_payment",
    "on_account_minor": 2_000,
    "invoices_minor": 100_000,
}


def test_the_over_payment_rule_is_off_by_default_and_on_keeps_the_surplus_on_account() -> None:
    assert _rules(decide("apply_cash", OVER)) == [
        "cash.auto_apply_off", "cash.kind_needs_review", "cash.low_confidence"
    ]  # fmt: skip
    on = {"auto_apply": True, "max_auto_apply_minor": {"USD": 500_000}}
    off = engine_for(merge(load_default(), {"cash_app": on})).decide("apply_cash", OVER)
    assert _rules(off) == ["cash.kind_needs_review", "cash.low_confidence"]
    eng = engine_for(merge(load_default(), {"cash_app": {**on, "auto_over_payment": True}}))
    ok = eng.decide("apply_cash", OVER)
    assert ok.outcome.value == "allow" and _rules(ok) == ["cash.over_payment_on_account"]
    cases = {
        "over the USD cap": {**OVER, "on_account_minor": 2_501, "invoices_minor": 1_000_000},
        "over 2 % of the invoices": {**OVER, "on_account_minor": 2_001},
        "below its confidence bar": {**OVER, "confidence": 79},
    }
    for why, facts in cases.items():
        d = eng.decide("apply_cash", facts)
        assert _rules(d) == ["cash.over_payment_needs_review"], why
    eur = eng.decide("apply_cash", {**OVER, "currency": "EUR"})
    assert _rules(eur) == ["cash.above_auto_limit", "cash.over_payment_needs_review"]
    # a whole line on account (an unrelated or unknown payer) is never the rule's
    unrelated = {**EXACT, "match_kind": "on_account", "confidence": 30, "on_account_minor": 120_000}
    assert _rules(eng.decide("apply_cash", unrelated)) == [
        "cash.kind_needs_review", "cash.low_confidence"
    ]  # fmt: skip
    d = decide("apply_cash", {k: v for k, v in OVER.items() if k != "invoices_minor"})
    assert d.outcome.value == "block" and "facts.invalid" in _rules(d)
