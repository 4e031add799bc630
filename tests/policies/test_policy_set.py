"""Policy files: loading, strict validation with lines, overrides and diffs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from policies.human_units import human_form
from policies.policy_set import PolicySet, diff, load, load_default, merge, parse
from policies.types import ActionType, PolicyError


def test_the_seed_policy_set_loads_and_holds_the_issue_numbers() -> None:
    ps = load_default()
    assert ps.currency == "USD"
    assert ps.plans.controller_above_minor == 5_000_000
    assert ps.shadow_mode.reviewer_min_role == "Collector"
    assert ps.quiet_hours.start == "20:00" and ps.quiet_hours.end == "08:00"
    assert {d.value for d in ps.quiet_hours.weekend_days} == {"saturday", "sunday"}
    assert ps.quiet_hours.holiday_calendars == ["contact"] and ps.content.legal_threat_phrases
    assert set(ps.action_permissions) == set(ActionType) - {ActionType.SEND_DRAFT}


def test_load_reads_a_full_policy_file(tmp_path: Path) -> None:
    data = human_form(load_default().model_dump(mode="json"))
    data["name"], data["cadence"]["max_touches"] = "strict", 1
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    ps = load(path)
    assert ps.cadence.max_touches == 1 and ps.name == "strict"
    assert ps.quiet_hours.holidays == load_default().quiet_hours.holidays


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "cadence:\n  max_touches: three\n",
            "line 2: cadence.max_touches: Input should be a valid integer",
        ),
        ("cadence:\n  max_touches: 3.5\n", "line 2: cadence.max_touches"),
        (
            "cadence:\n  max_touches: 0\n",
            "line 2: cadence.max_touches: Input should be greater than or equal to 1",
        ),
        ("quiet_hours:\n  start: 20:00\n", "line 2: quiet_hours.start: must be a quoted 'HH:MM'"),
        ("quiet_hours:\n  end: '25:00'\n", "'25:00' is not a 24-hour 'HH:MM' time"),
        ("quiet_hours:\n  holidays: [2025-13-01]\n", "line 2: quiet_hours.holidays"),
        (
            "quiet_hours:\n  holiday_calendars: [contact, XX]\n",
            "'XX' is not a country with a holiday calendar",
        ),
        ("quiet_hours:\n  holiday_calendars: [CH-QQ]\n", "'QQ' is not a subdivision of CH"),
        ("quiet_hours:\n  holiday_calendars: [US, US]\n", "lists a calendar twice"),
        (
            "quiet_hours:\n  weekend_days:\n    [monday, tuesday, wednesday, thursday, friday, "
            "saturday, sunday]\n",
            "every day is a weekend day",
        ),
        ("quiet_hours:\n  weekend_days: [caturday]\n", "line 2: quiet_hours.weekend_days.0"),
        ("cadnece:\n  max_touches: 3\n", "line 1: cadnece: Extra inputs are not permitted"),
        ("approval_limits:\n  Boss: '100.00'\n", "unknown role 'Boss'"),
        ("approval_limits:\n  Collector: '-1.00'\n", "line 2: approval_limits.Collector"),
        ("currency: usd\n", "line 1: currency: 'usd' is not an ISO 4217 code"),
        (
            "shadow_mode:\n  reviewer_min_role: Intern\n",
            "shadow_mode.reviewer_min_role: unknown role 'Intern'",
        ),
        (
            "action_permissions:\n  change_policy: rule_the_world\n",
            "unknown permission 'rule_the_world'",
        ),
        ("plans:\n  max_discount_bps: 10001\n", "line 2: plans.max_discount_bps"),
        ("autopilot:\n  data_ready_threshold: '80'\n", "line 2: autopilot.data_ready_threshold"),
        (
            "cadence:\n  max_touches: 3\n  max_touches: 4\n",
            "line 3: duplicate key 'max_touches' (first at line 2)",
        ),
        ("cadence: [\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_malformed_policy_files_name_the_line_and_key(text: str, needle: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse(text, "org.yaml")
    assert needle in str(err.value)
    assert str(err.value).startswith("org.yaml")


def test_a_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load(tmp_path / "nope.yaml")


def test_action_permissions_must_cover_every_action() -> None:
    base = load_default().model_dump(mode="json")
    del base["action_permissions"]["change_policy"]
    with pytest.raises(PolicyError, match="change_policy has no permission"):
        parse(yaml.safe_dump(base), "x.yaml")


def test_a_partial_file_is_not_a_complete_policy_set() -> None:
    with pytest.raises(PolicyError, match="has no permission"):
        parse("name: strict\n", "x.yaml")
    assert isinstance(PolicySet.model_validate(load_default().model_dump()), PolicySet)


def test_merge_applies_nested_overrides_and_validates_the_result() -> None:
    base = load_default()
    merged = merge(base, {"plans": {"max_installments": 6}, "approval_limits": {"Sales": 0}})
    assert merged.plans.max_installments == 6
    assert merged.plans.max_months == base.plans.max_months  # untouched siblings kept
    assert merged.approval_limits["Collector"] == base.approval_limits["Collector"]
    assert merged.approval_limits["Sales"] == 0
    replaced = merge(base, {"quiet_hours": {"holidays": ["2030-01-01"]}})
    assert [str(h) for h in replaced.quiet_hours.holidays] == ["2030-01-01"]  # lists replace


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"plan": {"max_installments": 6}}, "unknown key 'plan'"),
        ({"plans": {"max_instalments": 6}}, "unknown key 'plans.max_instalments'"),
        (
            {"plans": {"max_installments": "6"}},
            "plans.max_installments: Input should be a valid integer",
        ),
        ({"plans": {"max_installments": 6.0}}, "plans.max_installments"),
        ({"cadence": {"max_touches": True}}, "cadence.max_touches"),
        ({"approval_limits": {"Intern": 5}}, "unknown role 'Intern'"),
    ],
)
def test_bad_overrides_are_refused_with_the_key(override: dict, needle: str) -> None:
    with pytest.raises(PolicyError) as err:
        merge(load_default(), override)
    assert needle in str(err.value)


def test_override_must_be_a_mapping() -> None:
    with pytest.raises(PolicyError, match="must be a mapping"):
        merge(load_default(), ["plans"])  # type: ignore[arg-type]


def test_diff_lists_changed_leaves() -> None:
    base = load_default()
    merged = merge(base, {"plans": {"max_installments": 6}, "cadence": {"max_touches": 2}})
    assert diff(base, merged) == {
        "cadence.max_touches": {"from": 3, "to": 2},
        "plans.max_installments": {"from": 12, "to": 6},
    }
    assert diff(base, base) == {}


def test_digest_follows_content_only() -> None:
    assert load_default().digest == merge(load_default(), {}).digest
    assert load_default().digest != merge(load_default(), {"cadence": {"max_touches": 2}}).digest
