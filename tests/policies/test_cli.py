"""``plixo policy check | explain | show | validate`` through typer's CliRunner."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.cli.policy import policy_app
from policies.facts import EXAMPLES
from policies.policy_set import load, load_default, load_override
from tests.policies.factories import draft, plan

runner = CliRunner()


def flat(text: str) -> str:
    """Rich wraps long error lines to the terminal width; compare with whitespace collapsed."""
    return " ".join(text.split())


def jsonl(tmp_path: Path, rows: list[object | str]) -> Path:
    path = tmp_path / "actions.jsonl"
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    return path


def test_check_prints_one_json_decision_per_line(tmp_path: Path) -> None:
    rows: list[object | str] = [
        {"action": {"type": a.value, "id": f"ex-{a.value}"}, "facts": f}
        for a, f in EXAMPLES.items()
    ]
    rows.append({"action": "offer_plan", "facts": plan(actor_role="Admin", total_minor=5_000_001)})
    result = runner.invoke(policy_app, ["check", str(jsonl(tmp_path, rows))])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(rows)
    decisions = [json.loads(line) for line in lines]
    assert [d["line"] for d in decisions] == list(range(1, len(rows) + 1))
    assert decisions[0]["id"] == "ex-send_draft" and decisions[0]["outcome"] == "allow"
    last = decisions[-1]
    assert last["outcome"] == "needs_approval" and last["approver_role"] == "Controller"
    assert "Plan exceeds $50,000: Controller approval required" in [
        r["message"] for r in last["reasons"]
    ]


def test_check_fails_closed_per_line_and_reports_unreadable_lines(tmp_path: Path) -> None:
    rows: list[object | str] = [
        {"action": "teleport", "facts": {}},
        "{not json",
        {"facts": {}},
        {"action": "send_draft", "facts": {**draft(), "touches": "yesterday"}},
        "",
        {"action": "send_draft", "facts": draft(), "extra": 1},
        [1, 2],
    ]
    result = runner.invoke(policy_app, ["check", str(jsonl(tmp_path, rows))])
    assert result.exit_code == 2
    decided = [json.loads(x) for x in result.stdout.strip().splitlines()]
    assert [(d["line"], d["outcome"]) for d in decided] == [(1, "block"), (4, "block")]
    assert decided[0]["reasons"][0]["rule_id"] == "action.unknown"
    assert decided[1]["reasons"][0]["rule_id"] == "facts.invalid"
    err = flat(result.stderr)
    assert "line 2: not valid JSON" in err
    assert "line 3: missing 'action'" in err
    assert "line 6: unknown keys ['extra']" in err
    assert "line 7: expected an object" in err
    assert "4 line(s) could not be read" in err
    assert "Traceback" not in result.output


def test_check_reads_stdin(tmp_path: Path) -> None:
    line = json.dumps({"action": "change_policy", "facts": {"actor_role": "Sales"}})
    result = runner.invoke(policy_app, ["check", "-"], input=line + "\n")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["outcome"] == "block"


def test_check_with_an_override(tmp_path: Path) -> None:
    override = tmp_path / "strict.yaml"
    override.write_text("plans:\n  controller_above_minor: 100\n", encoding="utf-8")
    path = jsonl(tmp_path, [{"action": "offer_plan", "facts": plan(total_minor=101)}])
    result = runner.invoke(policy_app, ["check", str(path), "--override", str(override)])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["approver_role"] == "Controller"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["check", "missing.jsonl"], "Cannot read missing.jsonl"),
        (["check", "x.jsonl", "--policy", "nope.yaml"], "cannot read the policy file"),
        (["explain", "--action", "dance"], "Unknown action type 'dance'"),
    ],
)
def test_bad_invocations_exit_2_without_a_traceback(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = runner.invoke(policy_app, args)
    assert result.exit_code == 2
    assert needle in flat(result.stderr)
    assert "Traceback" not in result.output


def test_a_broken_override_names_its_line(tmp_path: Path) -> None:
    override = tmp_path / "bad.yaml"
    override.write_text("# stricter\ncadence:\n  max_touches: lots\n", encoding="utf-8")
    result = runner.invoke(policy_app, ["explain", "--override", str(override)])
    assert result.exit_code == 2
    assert "bad.yaml: line 3: cadence.max_touches: Input should be a valid integer" in flat(
        result.stderr
    )
    override.write_text("cadence:\n  max_touchez: 2\n", encoding="utf-8")
    result = runner.invoke(policy_app, ["validate", "--override", str(override)])
    assert "bad.yaml: line 2: unknown key 'cadence.max_touchez'" in flat(result.stderr)


def test_explain_prints_every_rule_as_a_sentence() -> None:
    result = runner.invoke(policy_app, ["explain"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    for action in ("send_draft", "send_nudge", "offer_plan", "change_policy"):
        assert action in out
    assert "Plans above $50,000 always need the Controller." in out
    assert "No outreach between 20:00 and 08:00 on the contact's own clock" in out
    assert "(shadow.review_required)" in out


def test_explain_json_for_one_action() -> None:
    result = runner.invoke(policy_app, ["explain", "--action", "offer_plan", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert list(data["rules"]) == ["offer_plan"]
    assert data["digest"] == load_default().digest
    ids = {r["rule_id"] for r in data["rules"]["offer_plan"]}
    assert {
        "plan.above_controller_threshold",
        "plan.non_standard_terms",
        "plan.max_installments",
    } <= ids


def test_validate_accepts_good_files_and_names_the_line_of_bad_ones(tmp_path: Path) -> None:
    full = tmp_path / "full.yaml"
    full.write_text(yaml.safe_dump(load_default().model_dump(mode="json")), encoding="utf-8")
    ok = runner.invoke(policy_app, ["validate", str(full)])
    assert ok.exit_code == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nquiet_hours:\n  start: 20:00\n", encoding="utf-8")
    result = runner.invoke(policy_app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "line 3: quiet_hours.start" in flat(result.stderr)
    override = tmp_path / "o.yaml"
    override.write_text("cadence:\n  max_touches: 2\n", encoding="utf-8")
    assert runner.invoke(policy_app, ["validate", str(override), "--override"]).exit_code == 0


def test_check_with_an_organisations_stored_policy(
    data_dir: Path, session: Session, tmp_path: Path
) -> None:
    from memory.models import Organisation, Persona, User
    from tools.ledger.policy_overrides import update_policy

    org = Organisation(name="Acme", slug=f"acme-{uuid.uuid4().hex[:6]}")
    session.add(org)
    session.commit()
    admin = User(org_id=org.id, email="a@example.com", name="A", role=Persona.ADMIN)
    session.add(admin)
    session.commit()
    update_policy(session, org.id, admin, {"plans": {"controller_above_minor": 100}})
    session.commit()
    path = jsonl(tmp_path, [{"action": "offer_plan", "facts": plan(total_minor=101)}])
    result = runner.invoke(policy_app, ["check", str(path), "--org", str(org.id)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["approver_role"] == "Controller"
    missing = runner.invoke(policy_app, ["check", str(path), "--org", "999"])
    assert missing.exit_code == 2 and "No organisation with id 999" in flat(missing.stderr)


def test_show_prints_the_set_in_human_units_that_read_back_to_it(tmp_path: Path) -> None:
    override = tmp_path / "org.yaml"
    override.write_text('plans:\n  controller_above: "20,000.00"\n', encoding="utf-8")
    result = runner.invoke(policy_app, ["show", "--override", str(override)])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["plans"]["controller_above"] == "20,000.00 USD"
    assert shown["plans"]["max_discount"] == "10%"
    assert shown["sending"]["pause_recheck"] == "15 minutes"
    assert "controller_above_minor" not in result.stdout and "_bps" not in result.stdout
    full = tmp_path / "full.yaml"
    full.write_text(result.stdout, encoding="utf-8")
    check = runner.invoke(policy_app, ["validate", str(full)])
    assert check.exit_code == 0, check.output
    assert load(full) == load_override(override)  # the same set, digest and all
    assert load(full).plans.controller_above_minor == 2_000_000
