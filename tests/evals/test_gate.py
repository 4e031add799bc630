"""The suite end to end: a correct drafter passes the gate, broken ones are caught by the matching
evaluator, and a missed threshold, a partial run or an unreachable model fail loudly."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import api.cli.eval as cli_eval
from evals.loader import LoadedDataset, load_datasets
from evals.outputs import DraftView
from evals.runner import (
    AgentAnswer,
    CaseContext,
    CaseNotRun,
    FunctionAgent,
    ModelUnavailable,
    RunSummary,
    run_suite,
)
from memory.config import Settings, get_settings
from tests.evals.reference import broken, reference_agent

ALL = load_datasets()
REMINDERS = load_datasets(["reminders"])


def suite(
    agent_fn: Callable[[CaseContext], Any], datasets: list[LoadedDataset] = REMINDERS
) -> RunSummary:
    agent = FunctionAgent(agent_fn, model="reference")
    return asyncio.run(run_suite(datasets, agent, Settings(), concurrency=4)).summary


def gate(summary: RunSummary, name: str) -> bool:
    return next(g.ok for g in summary.gates if g.name == name)


@pytest.fixture
def isolated_env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (
        "PLIXO_JUDGE_MODEL",
        "PLIXO_MODEL_BASE_URL",
        "PLIXO_MODEL_API_KEY",
        "OPENAI_API_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PLIXO_MODEL", "offline")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_reference_drafter_passes_every_gate_on_the_whole_suite() -> None:
    summary = suite(reference_agent, ALL)
    failing = {c.name: c.gated_failed for c in summary.cases if c.gated_failed}
    assert summary.passed, (failing, summary.not_run)
    assert summary.cases_run == summary.cases_total >= 40
    assert all(g.ok for g in summary.gates)
    for g in summary.gates:  # the whole suite measures every threshold
        stats = summary.stats(g.name)
        assert stats is not None and stats.cases >= 5, g.name


def _wrong_amount(d: DraftView, ctx: CaseContext) -> DraftView:
    # $12,400.00 -> $12,400.10: ten cents off, still a plausible amount.
    body = re.sub(r"(\d[.,])00\b", r"\g<1>10", d.body, count=1)
    assert body != d.body
    return d.model_copy(update={"body": body})


def _no_pay_link(d: DraftView, ctx: CaseContext) -> DraftView:
    body = re.sub(r"https?://\S+", "our website", d.body)
    return d.model_copy(update={"body": body, "pay_link": None})


def _threat(d: DraftView, ctx: CaseContext) -> DraftView:
    threat = (
        "If we do not receive payment within 48 hours, we will take legal action and report "
        "you to the credit bureaus."
    )
    if "\n\n" not in d.body:  # an SMS
        return d.model_copy(update={"body": f"{d.body} {threat}"})
    return d.model_copy(update={"body": d.body.replace("\n\n", f"\n\n{threat}\n\n", 1)})


def _invented_invoice(d: DraftView, ctx: CaseContext) -> DraftView:
    return d.model_copy(update={"body": d.body + "\n\nInvoice INV-99999 is also still open."})


def _english_only(d: DraftView, ctx: CaseContext) -> DraftView:
    truth = ctx.prepared.truth
    body = (
        "Hi there,\n\nThis is a reminder that your invoice is still open and we would be glad "
        f"if you could pay it soon. Please use this link to pay: {truth.pay_link}\n\n"
        "Thank you for your help."
    )
    return d.model_copy(update={"body": body, "language": "en"})


@pytest.mark.parametrize(
    ("defect", "evaluation", "gate_name"),
    [
        (_wrong_amount, "fact_accuracy", "fact_accuracy"),
        (_no_pay_link, "call_to_action", "call_to_action"),
        (_threat, "tone_safety", "tone_safety"),
        (_invented_invoice, "hallucination", "hallucination"),
    ],
    ids=["wrong-amount", "missing-pay-link", "threatening-phrase", "invented-invoice"],
)
def test_a_broken_drafter_is_caught_by_the_matching_evaluator(
    defect: Callable[[DraftView, CaseContext], DraftView], evaluation: str, gate_name: str
) -> None:
    summary = suite(broken(defect))
    stats = summary.stats(evaluation)
    assert stats is not None and stats.cases > 0
    if evaluation == "hallucination":
        assert stats.total is not None and stats.total >= stats.cases
    else:
        assert stats.passed == 0, stats.failures
    assert not gate(summary, gate_name)
    assert not summary.passed


def test_wrong_language_is_caught() -> None:
    summary = suite(broken(_english_only), load_datasets(["languages"]))
    stats = summary.stats("language_match")
    assert stats is not None and stats.rate == 0.0


def test_a_drafter_that_holds_everything_fails_the_gate() -> None:
    def hold_all(ctx: CaseContext) -> AgentAnswer:
        return AgentAnswer(draft=DraftView(held=True, hold_reason="not sure"))

    summary = suite(hold_all)
    for name in ("fact_accuracy", "call_to_action", "policy_compliance"):
        assert not gate(summary, name), name


def test_a_partial_run_lists_the_cases_that_did_not_run() -> None:
    def flaky(ctx: CaseContext) -> AgentAnswer:
        if ctx.case == "final-notice-gbp":
            raise CaseNotRun("The model timed out: ReadTimeout")
        return reference_agent(ctx)

    summary = suite(flaky)
    assert [n.case for n in summary.not_run] == ["final-notice-gbp"]
    assert "timed out" in summary.not_run[0].error
    assert summary.cases_run == summary.cases_total - 1
    assert not summary.passed
    assert not gate(summary, "cases_run")


def test_no_case_running_says_the_model_is_unreachable() -> None:
    def down(ctx: CaseContext) -> AgentAnswer:
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    with pytest.raises(ModelUnavailable, match="looks unreachable"):
        suite(down)


# --- the CLI --------------------------------------------------------------------------------------


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(cli_eval.eval_app, name="eval")
    return app


def test_cli_exits_non_zero_when_a_threshold_is_missed(
    isolated_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        cli_eval, "_agent", lambda label, settings: FunctionAgent(broken(_threat), model="broken")
    )
    result = CliRunner().invoke(
        _app(), ["eval", "run", "--json", "-d", "reminders", "--baseline", str(tmp_path / "b.json")]
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is False
    failed = {g["name"] for g in data["gates"] if not g["ok"]}
    # The threat is also legal-threat language: the guardrails want Legal, so policy fails too.
    assert failed == {"tone_safety", "policy_compliance"}
    tone = next(e for e in data["evaluators"] if e["name"] == "tone_safety")
    assert tone["rate"] == 0.0


def test_cli_passes_and_stores_a_baseline_then_reports_regressions(
    isolated_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    baseline = tmp_path / "baseline.json"
    monkeypatch.setattr(
        cli_eval,
        "_agent",
        lambda label, settings: FunctionAgent(reference_agent, model="reference"),
    )
    args = ["eval", "run", "-d", "reminders", "--baseline", str(baseline)]
    ok = CliRunner().invoke(
        _app(), [*args, "--update-baseline", "--html", str(tmp_path / "r.html")]
    )
    assert ok.exit_code == 0, ok.output
    assert "All thresholds met" in ok.stdout
    stored = json.loads(baseline.read_text())
    assert stored["runs"]["reference"]["evaluators"]["fact_accuracy"] == 1.0
    assert (tmp_path / "r.html").read_text().count('class="chart"') >= 9

    monkeypatch.setattr(
        cli_eval,
        "_agent",
        lambda label, settings: FunctionAgent(broken(_no_pay_link), model="reference"),
    )
    worse = CliRunner().invoke(_app(), [*args, "--json", "--fail-on-regression"])
    assert worse.exit_code == 1
    data = json.loads(worse.stdout)
    regressions = data["baseline"]["regressions"]
    assert {r["evaluation"] for r in regressions} >= {"call_to_action"}
    delta = next(d for d in data["baseline"]["evaluators"] if d["name"] == "call_to_action")
    assert delta["worse"] is True and delta["delta"] == -1.0


def test_cli_bad_dataset_is_a_clear_error_without_traceback(
    isolated_env: None, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ncases:\n  - name: x\n    metadata: {category: c}\n"
        "    inputs: {as_of: 2025-10-07}\n"
        "    expected_output: {}\n    evaluators: [NoSuchEvaluator]\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(_app(), ["eval", "run", "-d", str(bad)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "inputs.customer" in result.output
    assert "Traceback" not in result.output


def test_cli_unreachable_model_is_a_clear_error(
    isolated_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PLIXO_MODEL_BASE_URL", f"http://127.0.0.1:{port}/v1")
    get_settings.cache_clear()
    result = CliRunner().invoke(
        _app(), ["eval", "run", "-d", "reminders", "--model", "openai-compatible:tiny"]
    )
    assert result.exit_code == 2
    assert "unreachable" in result.output and "PLIXO_MODEL_BASE_URL" in result.output


def test_cli_missing_api_key_names_the_setting(isolated_env: None) -> None:
    result = CliRunner().invoke(
        _app(), ["eval", "run", "-d", "reminders", "--model", "openai:gpt-4o-mini"]
    )
    assert result.exit_code == 2
    assert "PLIXO_MODEL_API_KEY" in result.output


def test_cli_compare_shows_two_runs_side_by_side(
    isolated_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    agents = {"good": reference_agent, "bad": broken(_threat)}
    monkeypatch.setattr(
        cli_eval, "_agent", lambda label, settings: FunctionAgent(agents[label], model=label)
    )
    result = CliRunner().invoke(
        _app(), ["eval", "compare", "good", "bad", "-d", "reminders", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    tone = next(r for r in data["evaluators"] if r["evaluator"] == "tone_safety")
    assert tone["a"] == 1.0 and tone["b"] == 0.0 and tone["delta"] == -1.0
    assert {d["evaluation"] for d in data["case_differences"]} >= {"tone_safety"}
    # A saved `run --json` works as one side.
    saved = tmp_path / "good.json"
    run = CliRunner().invoke(
        _app(),
        [
            "eval",
            "run",
            "--json",
            "--full",
            "-d",
            "reminders",
            "--model",
            "good",
            "--baseline",
            str(tmp_path / "b.json"),
        ],
    )
    saved.write_text(run.stdout, encoding="utf-8")
    table = CliRunner().invoke(_app(), ["eval", "compare", str(saved), "bad", "-d", "reminders"])
    assert table.exit_code == 0, table.output
    assert "tone_safety" in table.stdout and "Cases that differ" in table.stdout
