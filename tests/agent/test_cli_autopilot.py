"""``plixo autopilot run``: JSON summary, Shadow Mode, re-runs, and clean errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.cli.main import app
from memory.config import get_settings
from memory.models import Draft
from tests.agent.factories import small_ledger

runner = CliRunner()
RUN = ["autopilot", "run", "--as-of", "2025-10-21"]


@pytest.fixture
def cli_ledger(session: Session, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("PLIXO_MODEL", "offline")
    get_settings.cache_clear()
    led = small_ledger(session)
    return led


def test_run_json_in_shadow_mode_then_again(session: Session, cli_ledger: object) -> None:
    first = runner.invoke(app, [*RUN, "--shadow", "--json"])
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert data["drafted"] == 1 and data["by_outcome"] == {"needs_approval": 1}
    assert data["offline_model"] is True and data["model_name"] == "plixo-offline-v1"
    assert data["shadow"] is True and data["grounding_mismatches"] == 0
    assert "built-in offline model" in first.stderr
    second = runner.invoke(app, [*RUN, "--shadow", "--json"])
    again = json.loads(second.stdout)
    assert again["drafted"] == 0 and again["skipped_existing"] == 1
    assert session.scalar(select(func.count()).select_from(Draft)) == 1


def test_human_summary(cli_ledger: object) -> None:
    result = runner.invoke(app, [*RUN, "--limit", "5"])
    assert result.exit_code == 0, result.output
    assert "Drafted 1 of 1 due items" in result.stdout and "shadow.review_required" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--segment", "Nope"], "No segment named 'Nope'"),
        (["--org", "missing"], "No organisation 'missing'"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    cli_ledger: object, args: list[str], message: str
) -> None:
    result = runner.invoke(app, [*RUN, *args])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output


def test_a_bad_date_exits_2(cli_ledger: object) -> None:
    result = runner.invoke(app, ["autopilot", "run", "--as-of", "21/10/2025"])
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.stderr


def test_a_missing_api_key_names_the_setting(
    cli_ledger: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLIXO_MODEL", "openai:gpt-4o-mini")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("PLIXO_MODEL_API_KEY", raising=False)
    get_settings.cache_clear()
    result = runner.invoke(app, RUN)
    assert result.exit_code == 2
    assert "PLIXO_MODEL_API_KEY" in result.stderr and "Traceback" not in result.output
