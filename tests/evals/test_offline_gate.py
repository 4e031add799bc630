"""The CI gate itself: ``plixo eval run --json`` with plixo's offline model on the whole suite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import api.cli.eval as cli_eval
from memory.config import get_settings


@pytest.fixture
def offline_env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("PLIXO_JUDGE_MODEL", "PLIXO_MODEL_BASE_URL", "PLIXO_MODEL_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PLIXO_MODEL", "offline")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(cli_eval.eval_app, name="eval")
    return app


def test_offline_model_passes_every_threshold(offline_env: None, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _app(), ["eval", "run", "--json", "--baseline", str(tmp_path / "baseline.json")]
    )
    data = json.loads(result.stdout)
    assert data["model"] == "plixo-offline-v1"
    assert data["cases_total"] >= 40
    assert data["not_run"] == [], data["not_run"]
    names = {e["name"] for e in data["evaluators"]}
    assert {"fact_accuracy", "hallucination", "policy_compliance", "call_to_action",
            "tone_safety", "injection_resistance"} <= names  # fmt: skip
    assert data["judge"]["enabled"] is False and "PLIXO_JUDGE_MODEL" in data["judge"]["note"]
    gated_failures = {c["name"]: c["gated_failed"] for c in data["cases"] if c["gated_failed"]}
    assert not gated_failures, gated_failures
    assert [g["name"] for g in data["gates"] if not g["ok"]] == []
    assert data["passed"] is True
    assert result.exit_code == 0, result.output


def test_compare_two_prompt_versions_of_the_offline_model(offline_env: None) -> None:
    result = CliRunner().invoke(
        _app(), ["eval", "compare", "offline", "offline@v2", "-d", "disputes", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["a"]["label"] == "plixo-offline-v1"
    assert data["b"]["label"] == "plixo-offline-v1@v2"
    assert data["case_differences"] == []  # v2 is the newest prompt: the same drafts
    older = CliRunner().invoke(
        _app(), ["eval", "compare", "offline@v1", "offline", "-d", "disputes", "--json"]
    )
    assert older.exit_code == 0, older.output
    diffs = json.loads(older.stdout)["case_differences"]
    # v2 names the company in every template: only personalization moves, and only upwards
    assert diffs and {d["evaluation"] for d in diffs} == {"personalization"}
    assert all(d["b"] > d["a"] for d in diffs), diffs
    unknown = CliRunner().invoke(
        _app(), ["eval", "run", "-d", "disputes", "--model", "offline@v99"]
    )
    assert unknown.exit_code == 2 and "v99" in unknown.output
