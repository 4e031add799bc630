"""`plixo policy apply`: human units validated, a diff, and a 90-day dry run on the demo
organisation that matches the decisions recomputed one by one through the production paths."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from api.cli.main import app
from memory.models import Draft, DraftKind, PaymentPlan, PolicySetVersion, User
from tools.admin import policy_apply as pa
from tools.admin.units import UnitError, parse_money, parse_percent, parse_window
from tools.commitments import plans as plan_tools
from tools.grounding.recheck import recheck_draft
from tools.ledger.users import own_limit

runner = CliRunner()

PROPOSAL = """
plans:
  controller_above: 20,000.00 USD
  max_discount: 5%
quiet_hours:
  window: "19:00-09:00"
approval_limits:
  Collector: 5,000.00 USD
cadence:
  max_touches: 1
"""


def test_human_units() -> None:
    assert parse_money("50,000.00 USD") == (5_000_000, "USD")
    assert parse_money("EUR 1'250.5") == (125_050, "EUR")
    assert parse_money("300", "JPY") == (300, "JPY")
    assert parse_percent("12.5%") == 1250
    assert parse_window("20:00-8:00") == ("20:00", "08:00")
    for bad, message in [
        (lambda: parse_percent("150%"), "outside 0% to 100%"),
        (lambda: parse_money("-5 USD"), "negative"),
        (lambda: parse_window("25:00-08:00"), "not a time of day"),
        (lambda: parse_money("1.001 USD"), "more than 2 decimals"),
        (lambda: parse_money("12,000"), "no currency"),
    ]:
        with pytest.raises(UnitError, match=message):
            bad()


def _recompute(
    sessions: sessionmaker[Session], org_id: int, since: datetime, until: datetime
) -> dict[int, set[str]]:
    """Every action of the window decided one by one by the production re-check paths."""
    fired: dict[int, set[str]] = {}
    with sessions() as s:
        for d in s.scalars(
            select(Draft).where(
                Draft.org_id == org_id, Draft.created_at >= since, Draft.created_at <= until
            )
        ):
            assert d.kind is not DraftKind.NUDGE  # the demo's window holds drafts and follow-ups
            fired[d.id] = set(
                r["rule_id"] for r in recheck_draft(s, d, d.created_at).decision["reasons"]
            )
        for p in s.scalars(
            select(PaymentPlan).where(
                PaymentPlan.org_id == org_id,
                PaymentPlan.created_at >= since,
                PaymentPlan.created_at <= until,
            )
        ):
            months = plan_tools.months_spanned(
                p.created_at.date(), max(i.due_date for i in p.installments)
            )
            facts = {
                "total_minor": p.total_minor + p.discount_minor,
                "currency": p.currency,
                "installments": len(p.installments),
                "months": months,
                "discount_minor": p.discount_minor,
                "non_standard_terms": p.non_standard_terms,
            }
            proposer = s.get(User, p.proposed_by_user_id) if p.proposed_by_user_id else None
            facts |= (
                {
                    "proposed_via": "staff",
                    "actor_role": proposer.role.value,
                    "actor_limit_minor": own_limit(proposer, p.currency),
                }
                if proposer
                else {"proposed_via": "portal"}
            )
            decision = plan_tools.decide(s, org_id, "offer_plan", facts)
            fired[-p.id] = {r["rule_id"] for r in decision["reasons"]}
    return fired


def test_dry_run_on_the_demo_matches_one_by_one_recomputation(
    data_dir: Path, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    built = runner.invoke(app, ["demo", "--json"])
    assert built.exit_code == 0, built.output
    file = tmp_path / "proposal.yaml"
    file.write_text(PROPOSAL)
    dry = runner.invoke(app, ["policy", "apply", str(file), "--json"])
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout)
    assert report["saved"] is False
    assert report["changes"]["plans.controller_above_minor"] == {"from": 5_000_000, "to": 2_000_000}
    assert report["changes"]["quiet_hours.start"] == {"from": "20:00", "to": "19:00"}
    run = report["dry_run"]
    assert run["replayed"]["send_draft"] > 50 and run["changed"] > 0
    since, until = datetime.fromisoformat(run["since"]), datetime.fromisoformat(run["until"])
    with sessions() as s:
        org_id = s.scalars(select(User.org_id).where(User.email.like("controller@%"))).one()
        assert (
            s.scalars(select(PolicySetVersion).where(PolicySetVersion.org_id == org_id)).all() == []
        )
    before = _recompute(sessions, org_id, since, until)
    saved = runner.invoke(
        app, ["policy", "apply", str(file), "--save", "--as", "controller@demo.plixo.example"]
    )
    assert saved.exit_code == 0, saved.output
    assert "Saved as policy version 1" in saved.output
    after = _recompute(sessions, org_id, since, until)
    assert before.keys() == after.keys()
    more, fewer = Counter[str](), Counter[str]()
    for key in before:
        more.update(after[key] - before[key])
        fewer.update(before[key] - after[key])
    expected = {r: (more[r], fewer[r]) for r in set(more) | set(fewer)}
    shown = {r["rule_id"]: (r["newly_fired"], r["no_longer_fired"]) for r in run["rules"]}
    assert shown == expected
    assert shown["plan.above_role_limit"][0] > 0  # the lower Collector limit catches past plans
    for rule in run["rules"]:
        assert 1 <= len(rule["examples"]) <= 3
        assert all(ex["subject"] and ex["before"] and ex["after"] for ex in rule["examples"])
    assert since > datetime.now(UTC) - timedelta(days=91)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("plans:\n  max_discount: 150%\n", "plans.max_discount: '150%' is outside 0% to 100%"),
        (
            "approval_limits:\n  Collector: -5 USD\n",
            "approval_limits.Collector: '-5 USD' is negative",
        ),
        ('quiet_hours:\n  start: "25:00"\n', "quiet_hours.start: '25:00' is not a time of day"),
        ("plans:\n  controller_above: 10 EUR\n", "write it in USD"),
        ("plans:\n  colour: red\n", "unknown key 'plans.colour'"),
    ],
)
def test_values_out_of_bounds_are_refused_and_nothing_saved(
    data_dir: Path, sessions: sessionmaker[Session], tmp_path: Path, body: str, message: str
) -> None:
    assert (
        runner.invoke(app, ["init", "--org", "Acme", "--admin-email", "a@acme.example"]).exit_code
        == 0
    )
    file = tmp_path / "bad.yaml"
    file.write_text(body)
    result = runner.invoke(app, ["policy", "apply", str(file), "--save", "--as", "a@acme.example"])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Nothing was saved" in result.output
    with sessions() as s:
        assert s.scalars(select(PolicySetVersion)).all() == []


def test_to_override_reports_every_problem() -> None:
    with pytest.raises(pa.PolicyInputError) as info:
        pa.to_override({"plans": {"max_discount": "150%"}, "credits": {"max_discount": "-1%"}})
    assert len(info.value.problems) == 2


def test_to_override_reads_amounts_per_currency_and_durations_in_words() -> None:
    stored = pa.to_override(
        {
            "cash_app": {"max_auto_apply": {"EUR": "3,000.00"}},
            "sending": {"pause_recheck": "1 hour"},
        },
        "USD",
    )
    assert stored == {
        "cash_app": {"max_auto_apply_minor": {"EUR": 300_000}},
        "sending": {"pause_recheck_minutes": 60},
    }
    with pytest.raises(pa.PolicyInputError) as info:
        pa.to_override(
            {"cash_app": {"max_auto_apply": {"JPY": "10.5"}}, "sending": {"pause_recheck": "soon"}}
        )
    assert len(info.value.problems) == 2
    assert (
        "cash_app.max_auto_apply: '10.5' has more than 0 decimals for JPY" in info.value.problems[0]
    )
