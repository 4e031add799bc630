"""`plixo demo --json`: the main job on embedded defaults, as a newcomer runs it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from api.cli.main import app

runner = CliRunner()


def test_demo_json_summary_and_rerun_is_idempotent(data_dir: Path) -> None:
    first = runner.invoke(app, ["demo", "--json", "--today", "2026-11-18"])
    assert first.exit_code == 0, first.output
    s = json.loads(first.stdout)
    assert s["customers"] > 100
    assert all(b["count"] > 0 for b in s["invoices"]["aging"].values())
    assert sum(s["promises"].values()) > 0 and sum(s["plans"].values()) > 0
    assert sum(s["disputes"].values()) > 0
    ap = s["autopilot"]
    assert ap["drafted"] > 0 and ap["model_name"] == "plixo-offline-v1"
    # Shadow Mode: every draft waits for a human; nothing is allowed to leave.
    assert set(ap["by_outcome"]) <= {"needs_approval", "defer", "block"}
    assert ap["by_outcome"].get("needs_approval", 0) == ap["drafted"]
    assert ap["grounding_mismatches"] == 0 and ap["held"] == 0
    assert s["queues"]["Collector"] >= ap["drafted"]
    assert s["queues"].get("Controller", 0) >= 1  # the plan above $50,000

    again = json.loads(runner.invoke(app, ["demo", "--json", "--today", "2026-11-18"]).stdout)
    assert again["built"] is False
    assert again["autopilot"]["drafted"] == 0
    # Cadence steps already drafted are skipped; a promise reminder, drafted once per promise,
    # is no longer due at all.
    reminders = ap["promise_reminders"]
    assert again["autopilot"]["skipped_existing"] == ap["drafted"] - reminders
    assert again["autopilot"]["promise_reminders"] == 0
    assert again["drafts"] == s["drafts"]


def test_demo_rejects_a_bad_date(data_dir: Path) -> None:
    result = runner.invoke(app, ["demo", "--today", "21/11/2026"])
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output


def test_demo_summary_tables_speak_in_words(data_dir: Path) -> None:
    """The printed summary names statuses, decisions, rules and exclusions as the panel does."""
    result = runner.invoke(app, ["demo", "--today", "2026-11-18"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Needs approval" in out and "Shadow Mode: a person reviews" in out
    assert "waiting for approval" in out  # a plan, not "pending_approval"
    for raw in ("pending_approval", "needs_approval", "escalated_legal", "shadow.", "_overdue"):
        assert raw not in out, raw
