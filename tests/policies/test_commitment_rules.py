"""Plans, discounts, credits, disputes and the actions gated by the access matrix."""

from __future__ import annotations

import pytest

from policies.engine import PolicyEngine
from policies.policy_set import load_default, merge
from tests.policies.factories import check, credit, ids, plan

# --- payment plans: role limits, the Controller line, Legal, caps ---------------------------------


@pytest.mark.parametrize(
    ("role", "limit"),
    [("Collector", 1_000_000), ("Collections Manager", 2_500_000), ("Admin", 5_000_000)],
)
def test_a_plan_within_the_proposers_limit_is_allowed_one_cent_more_needs_the_controller(
    role: str, limit: int
) -> None:
    at_limit = check("offer_plan", plan(actor_role=role, total_minor=limit))
    assert at_limit.allowed and ids(at_limit) == {"access.granted", "plan.within_limit"}
    over = check("offer_plan", plan(actor_role=role, total_minor=limit + 1))
    assert over.outcome == "needs_approval" and over.approver_role == "Controller"
    assert "plan.above_role_limit" in ids(over)


def test_plans_above_50000_always_need_the_controller_exactly_50000_does_not() -> None:
    exactly = check("offer_plan", plan(actor_role="Admin", total_minor=5_000_000))
    assert exactly.allowed
    above = check("offer_plan", plan(actor_role="Admin", total_minor=5_000_001))
    assert above.outcome == "needs_approval" and above.approver_role == "Controller"
    assert ids(above) == {
        "access.granted",
        "plan.above_role_limit",
        "plan.above_controller_threshold",
    }
    message = next(
        r.message for r in above.reasons if r.rule_id == "plan.above_controller_threshold"
    )
    assert message == "Plan exceeds $50,000: Controller approval required"


def test_the_controller_may_offer_and_approve_large_plans_within_their_limit() -> None:
    assert check("offer_plan", plan(actor_role="Controller", total_minor=6_000_000)).allowed
    assert check("approve_plan", plan(actor_role="Controller", total_minor=6_000_000)).allowed
    over = check("approve_plan", plan(actor_role="Controller", total_minor=100_000_001))
    assert over.outcome == "needs_approval" and ids(over) >= {"plan.above_role_limit"}


def test_non_standard_terms_need_legal_and_the_controller_leads_when_both_are_needed() -> None:
    d = check("offer_plan", plan(non_standard_terms=True))
    assert d.outcome == "needs_approval" and d.approver_role == "Legal"
    both = check("offer_plan", plan(non_standard_terms=True, total_minor=6_000_000))
    assert both.approver_roles == ["Controller", "Legal"] and both.approver_role == "Controller"
    signed = check(
        "approve_plan", plan(actor_role="Controller", non_standard_terms=True, legal_approved=True)
    )
    assert signed.allowed
    by_legal = check(
        "approve_plan", plan(actor_role="Legal", non_standard_terms=True, total_minor=1)
    )
    assert "plan.non_standard_terms" not in ids(by_legal)  # Legal's own approval covers the terms
    assert by_legal.approver_role == "Controller"  # but Legal has no money limit


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"installments": 13}, "plan.max_installments"),
        ({"months": 13}, "plan.max_months"),
        ({"discount_minor": 50_001}, "plan.max_discount"),  # 10.0002 % of 500,000
        ({"currency": "JPY"}, "plan.currency"),
    ],
)
def test_plan_caps_block_outright(change: dict, rule: str) -> None:
    d = check("offer_plan", plan(**change))
    assert d.outcome == "block" and rule in ids(d)
    # a Controller cannot approve past a cap either
    assert check("approve_plan", plan(actor_role="Controller", **change)).outcome == "block"


def test_plan_caps_at_the_limit_are_fine() -> None:
    d = check("offer_plan", plan(installments=12, months=12, discount_minor=50_000))  # 10.00 %
    assert d.allowed


def test_portal_proposals_need_an_approver_before_the_customer_sees_them() -> None:
    d = check("offer_plan", {**plan(proposed_via="portal"), "actor_role": None})
    assert d.outcome == "needs_approval" and d.approver_role == "Collector"
    assert "access.denied" not in ids(d)
    big = check(
        "offer_plan", {**plan(proposed_via="portal", total_minor=6_000_000), "actor_role": None}
    )
    assert big.approver_role == "Controller" and big.approver_roles == ["Controller", "Collector"]


def test_a_staff_plan_without_a_proposer_role_fails_closed() -> None:
    facts = plan()
    del facts["actor_role"]
    d = check("offer_plan", facts)
    assert d.outcome == "block" and "actor_role is required" in d.reasons[0].message


def test_plan_approvals_follow_the_access_matrix() -> None:
    d = check("approve_plan", plan(actor_role="Sales", total_minor=100))
    assert d.outcome == "block" and "access.denied" in ids(d)
    assert "needs the approve_plan permission" in d.reasons[0].message
    viewer = check("offer_plan", plan(actor_role="Viewer", total_minor=100))
    assert viewer.outcome == "block"


def test_a_users_own_limit_only_lowers_the_roles() -> None:
    lower = check(
        "approve_plan", plan(actor_role="Collector", total_minor=600_000, actor_limit_minor=500_000)
    )
    assert lower.outcome == "needs_approval" and ids(lower) >= {"plan.above_user_limit"}
    higher = check(
        "approve_plan",
        plan(actor_role="Collector", total_minor=1_500_000, actor_limit_minor=9_000_000),
    )
    assert higher.outcome == "needs_approval" and "plan.above_role_limit" in ids(higher)


def test_unknown_roles_have_no_limit_and_no_permission() -> None:
    d = check("offer_plan", plan(actor_role="Payer", total_minor=1))
    assert d.outcome == "block" and {"access.denied", "plan.above_role_limit"} <= ids(d)


def test_limits_are_data() -> None:
    eng = PolicyEngine(
        merge(
            load_default(),
            {"approval_limits": {"Collector": 100}, "plans": {"controller_above_minor": 200}},
        )
    )
    assert eng.decide("offer_plan", plan(total_minor=100)).allowed
    d = eng.decide("offer_plan", plan(total_minor=201))
    assert ids(d) >= {"plan.above_role_limit", "plan.above_controller_threshold"}
    assert "Plan exceeds $2: Controller approval required" in [r.message for r in d.reasons]


# --- discounts and credits ------------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "outcome"), [(150_000, "allow"), (150_001, "block")])
def test_discount_cap_15_percent_boundary(amount: int, outcome: str) -> None:
    d = check("grant_credit", credit(kind="discount", amount_minor=amount, actor_role="Controller"))
    assert d.outcome == outcome
    if outcome == "block":
        assert ids(d) >= {"credit.max_discount"}


def test_credits_are_not_capped_by_the_discount_percentage_but_by_role_limits() -> None:
    assert check("grant_credit", credit(kind="credit", amount_minor=500_000)).allowed
    over = check("grant_credit", credit(kind="credit", amount_minor=500_001))
    assert over.outcome == "needs_approval" and over.approver_role == "Controller"


def test_a_credit_larger_than_the_open_balance_is_blocked() -> None:
    d = check("grant_credit", credit(amount_minor=10_001, invoice_balance_minor=10_000))
    assert d.outcome == "block" and "credit.exceeds_balance" in ids(d)
    assert check("grant_credit", credit(amount_minor=10_000, invoice_balance_minor=10_000)).allowed


def test_who_may_grant_credits() -> None:
    assert check("grant_credit", credit(actor_role="Billing Admin", amount_minor=250_000)).allowed
    assert check("grant_credit", credit(actor_role="Sales")).outcome == "block"
    assert check("grant_credit", credit(currency="JPY")).outcome == "block"


# --- disputes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("open", "allow"),
        ("investigating", "allow"),
        ("awaiting_customer", "allow"),
        ("escalated_legal", "block"),
        ("resolved_credit", "block"),
        ("rejected", "block"),
    ],
)
def test_dispute_escalation(status: str, outcome: str) -> None:
    d = check("escalate_dispute", {"actor_role": "Collector", "dispute_status": status})
    assert d.outcome == outcome
    assert d.notify == (["legal"] if outcome == "allow" else [])


def test_sales_cannot_escalate_disputes() -> None:
    d = check("escalate_dispute", {"actor_role": "Sales", "dispute_status": "open"})
    assert d.outcome == "block" and "access.denied" in ids(d)


# --- configuration actions, gated by the access matrix --------------------------------------------


@pytest.mark.parametrize(
    ("action", "allowed_roles"),
    [
        ("change_policy", {"Admin", "Controller"}),
        ("change_cadence", {"Admin", "Controller", "Collections Manager"}),
        ("change_segment", {"Admin", "Controller", "Collections Manager"}),
        ("set_sending_mode", {"Admin", "Controller", "Collections Manager"}),
    ],
)
def test_configuration_changes_follow_the_matrix(action: str, allowed_roles: set[str]) -> None:
    from policies.access import roles

    facts: dict = {"actor_role": ""}
    if action == "set_sending_mode":
        facts |= {"switch": "maintenance", "value": True, "scope": "org"}
    for role in roles():
        d = check(action, {**facts, "actor_role": role})
        assert d.allowed == (role in allowed_roles), (action, role, d.reasons)
    # Sales and CSM are view-only on cadences, segments and policies
    for role in ("Sales", "CSM", "Viewer"):
        assert check(action, {**facts, "actor_role": role}).outcome == "block"


@pytest.mark.parametrize(
    ("score", "domain", "outcome"), [(79, True, "block"), (80, True, "allow"), (95, False, "block")]
)
def test_enabling_autopilot_is_gated(score: int, domain: bool, outcome: str) -> None:
    facts = {
        "actor_role": "Collections Manager",
        "segment": "SMB",
        "data_ready_score": score,
        "sending_domain_verified": domain,
        "shadow_decided": 200,
        "shadow_unchanged": 190,
    }
    assert check("enable_autopilot", facts).outcome == outcome
    facts["actor_role"] = "Collector"
    assert check("enable_autopilot", facts).outcome == "block"


@pytest.mark.parametrize(
    ("decided", "unchanged", "fired"),
    [
        (200, 190, None),  # exactly 95 %
        (200, 189, "autopilot.enable_shadow_disagreement"),  # 94.5 %
        (199, 199, "autopilot.enable_shadow_too_few"),  # all unchanged, one draft short
        (None, None, "autopilot.enable_shadow_record_missing"),  # fail closed
    ],
)
def test_enabling_autopilot_needs_the_shadow_mode_record(
    decided: int | None, unchanged: int | None, fired: str | None
) -> None:
    facts: dict[str, object] = {
        "actor_role": "Controller",
        "segment": "SMB",
        "data_ready_score": 90,
        "sending_domain_verified": True,
    }
    if decided is not None:
        facts |= {"shadow_decided": decided, "shadow_unchanged": unchanged}
    d = check("enable_autopilot", facts)
    ids = [r.rule_id for r in d.reasons if r.outcome == "block"]
    if fired is None:
        assert d.outcome == "allow", d.reasons
    else:
        assert d.outcome == "block" and ids == [fired], d.reasons
    if fired == "autopilot.enable_shadow_disagreement":
        message = next(r.message for r in d.reasons if r.rule_id == fired)
        assert "189 of the last 200" in message and "94.5%" in message and "95%" in message


def test_a_segment_switch_names_its_segment() -> None:
    d = check(
        "set_sending_mode",
        {"actor_role": "Controller", "switch": "shadow_mode", "value": False, "scope": "segment"},
    )
    assert d.outcome == "block" and "segment is required" in d.reasons[0].message
