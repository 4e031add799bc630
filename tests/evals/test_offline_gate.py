"""The CI gate itself: ``plixo eval run --json`` with plixo's offline model on the whole suite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import api.cli_eval as cli_eval
from memory.config import get_settings

#: Cases that fail today because tools/grounding.py cannot read amounts Babel writes for these
#: locales (de_CH "CHF 6’780.00", es_MX "USD23,400.00"), reported to the agent's owner. The test
#: tolerates exactly these (and only while they fail); anything else failing fails the test.
KNOWN_GROUNDING_GAPS = frozenset({"de-contact-at-english-customer", "es-mexico-usd"})


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
    assert result.exit_code in (0, 1), result.output
    data = json.loads(result.stdout)
    assert data["model"] == "plixo-offline-v1"
    assert data["cases_total"] >= 40
    assert data["not_run"] == [], data["not_run"]
    names = {e["name"] for e in data["evaluators"]}
    assert {"fact_accuracy", "hallucination", "policy_compliance", "call_to_action",
            "tone_safety", "injection_resistance"} <= names  # fmt: skip
    assert data["judge"]["enabled"] is False and "PLIXO_JUDGE_MODEL" in data["judge"]["note"]
    gated_failures = {c["name"]: c["gated_failed"] for c in data["cases"] if c["gated_failed"]}
    if result.exit_code == 0:
        assert data["passed"] is True and not gated_failures
        return
    unexpected = set(gated_failures) - KNOWN_GROUNDING_GAPS
    assert not unexpected, {k: gated_failures[k] for k in unexpected}
    pytest.xfail(f"known grounding gaps still open: {sorted(gated_failures)}")


def test_compare_two_prompt_versions_of_the_offline_model(offline_env: None) -> None:
    result = CliRunner().invoke(
        _app(), ["eval", "compare", "offline", "offline@v1", "-d", "disputes", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["a"]["label"] == "plixo-offline-v1"
    assert data["b"]["label"] == "plixo-offline-v1@v1"
    assert data["case_differences"] == []  # v1 is the newest prompt: the same drafts
    unknown = CliRunner().invoke(
        _app(), ["eval", "run", "-d", "disputes", "--model", "offline@v99"]
    )
    assert unknown.exit_code == 2 and "v99" in unknown.output
