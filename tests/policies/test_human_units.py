"""The policy YAML in human units (``policies.human_units``): money strings in the policy's
currency, percents and durations in words are read into the stored form; saved versions in the
stored keys still load; bad values are refused with the line and what to write."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies.human_units import human_form, stored_form
from policies.policy_set import load_default, load_override, merge
from policies.types import PolicyError
from policies.units import UnitError, format_minutes, parse_minutes


def test_the_seed_file_is_written_in_human_units_and_reads_as_the_stored_numbers() -> None:
    text = Path("policies/default.yaml").read_text(encoding="utf-8")
    assert 'controller_above: "50000.00"' in text and "_minor:" not in text and "_bps:" not in text
    ps = load_default()
    assert ps.plans.controller_above_minor == 5_000_000
    assert ps.plans.max_discount_bps == 1000 and ps.credits.max_discount_bps == 1500
    assert ps.cash_app.short_pay_tolerance_bps == 300 and ps.cash_app.short_pay_max_minor == 50_000
    assert ps.cash_app.max_auto_apply_minor == {"USD": 500_000}
    assert ps.sending.pause_recheck_minutes == 15
    assert ps.approval_limits["Collector"] == 1_000_000
    assert ps.currency_limits["GBP"].controller_above_minor == 4_000_000


def test_a_saved_version_in_the_stored_keys_loads_as_it_did() -> None:
    saved = {  # what tools.ledger.policy_overrides stored before human units (and still stores)
        "plans": {"controller_above_minor": 2_000_000, "max_discount_bps": 500},
        "approval_limits": {"Collector": 250_000},
        "cash_app": {"max_auto_apply_minor": {"EUR": 300_000}, "short_pay_tolerance_bps": 200},
        "sending": {"pause_recheck_minutes": 30},
        "currency_limits": {"EUR": {"controller_above_minor": 1_000_000}},
    }
    human = {
        "plans": {"controller_above": "20,000.00 USD", "max_discount": "5%"},
        "approval_limits": {"Collector": "2500.00"},
        "cash_app": {"max_auto_apply": {"EUR": "3000.00"}, "short_pay_tolerance": "2%"},
        "sending": {"pause_recheck": "30 minutes"},
        "currency_limits": {"EUR": {"controller_above": "10000.00"}},
    }
    from_saved, from_human = merge(load_default(), saved), merge(load_default(), human)
    assert from_saved == from_human and from_saved.digest == from_human.digest
    assert from_saved.plans.controller_above_minor == 2_000_000
    assert from_saved.currency_limits["EUR"].controller_above_minor == 1_000_000


def test_human_form_reads_back_to_the_same_set() -> None:
    stored = load_default().model_dump(mode="json")
    human = human_form(stored)
    assert human["plans"]["controller_above"] == "50,000.00 USD"
    assert human["cash_app"]["short_pay_tolerance"] == "3%"
    assert human["sending"]["pause_recheck"] == "15 minutes"
    assert human["currency_limits"]["EUR"]["approval_limits"]["Collector"] == "10,000.00 EUR"
    assert stored_form(human, "USD") == stored


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("cash_app:\n  short_pay_tolerance: '3.5.%'\n", "line 2: cash_app.short_pay_tolerance:"),
        ("cash_app:\n  short_pay_tolerance: '-3%'\n", "outside 0% to 100%"),
        ("plans:\n  max_discount: 10\n", "line 2: plans.max_discount: 10 is not a percentage"),
        ("plans:\n  controller_above: '-5.00'\n", "is negative"),
        ("plans:\n  controller_above: '50000.001'\n", "has more than 2 decimals for USD"),
        ("plans:\n  controller_above: 50000\n", "write it quoted, like '50000.00'"),
        ("plans:\n  controller_above: '50000.00 EUR'\n", "is in EUR; write it in USD here"),
        ("credit_limits:\n  Collector: 10.5\n", "line 2: credit_limits.Collector: 10.5 is not a"),
        ("credit_limits:\n  Collector: '1,000.00 GBP'\n", "is in GBP; write it in USD here"),
        ("sending:\n  pause_recheck: 15\n", "is not a duration"),
        ("sending:\n  pause_recheck: '0 minutes'\n", "no time at all"),
        (
            "plans:\n  controller_above: '1.00'\n  controller_above_minor: 100\n",
            "plans.controller_above: given twice (also as controller_above_minor)",
        ),
        ("currency_limits:\n  JPY:\n    controller_above: '10.5'\n", "more than 0 decimals"),
    ],
)
def test_bad_human_values_are_refused_with_the_line_and_what_to_write(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "org.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as err:
        load_override(path)
    assert needle in str(err.value) and str(err.value).startswith(str(path))


def test_an_override_that_changes_the_currency_writes_amounts_in_the_new_one() -> None:
    with pytest.raises(PolicyError, match="more than 0 decimals for JPY"):
        merge(load_default(), {"currency": "JPY", "plans": {"controller_above": "5.50"}})
    jpy = merge(load_default(), {"currency": "JPY", "plans": {"controller_above": "5000000"}})
    assert jpy.plans.controller_above_minor == 5_000_000


def test_durations_read_and_write_in_words() -> None:
    assert parse_minutes("15 minutes") == 15 and parse_minutes("2 hours") == 120
    assert parse_minutes("1 min") == 1 and format_minutes(120) == "2 hours"
    assert format_minutes(1) == "1 minute" and format_minutes(90) == "90 minutes"
    for bad in ("15", "fifteen minutes", "1.5 hours", "-5 minutes"):
        with pytest.raises(UnitError):
            parse_minutes(bad)
