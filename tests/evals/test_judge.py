"""The LLMJudge rubric runs only when a judge model is configured, and reads the draft's text."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from evals.loader import load_datasets
from evals.runner import FunctionAgent, JudgeInfo, ModelUnavailable, resolve_judge, run_suite
from memory.config import Settings
from tests.evals.reference import reference_agent


def test_no_judge_model_means_a_note_not_a_call() -> None:
    model, info = resolve_judge(Settings(judge_model=None))
    assert model is None and not info.enabled
    assert "PLIXO_JUDGE_MODEL" in info.note


def test_the_offline_model_cannot_judge() -> None:
    with pytest.raises(ModelUnavailable, match="cannot judge"):
        resolve_judge(Settings(judge_model="offline"))


def test_a_misconfigured_judge_names_the_setting() -> None:
    with pytest.raises(ModelUnavailable, match="PLIXO_JUDGE_MODEL=openai-compatible:x"):
        resolve_judge(Settings(judge_model="openai-compatible:x", model_base_url=None))


def test_judge_scores_clarity_and_relationship_safety_on_the_draft_text() -> None:
    prompts: list[str] = []

    def judge(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        for m in messages:
            for part in getattr(m, "parts", []):
                if isinstance(part, UserPromptPart):
                    prompts.append(str(part.content))
        verdict: dict[str, Any] = {"reason": "Clear and courteous.", "pass": True, "score": 0.9}
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, verdict)])

    datasets = load_datasets(["reminders"])
    summary = asyncio.run(
        run_suite(
            datasets,
            FunctionAgent(reference_agent, model="reference"),
            Settings(),
            judge_model=FunctionModel(judge),
            judge=JudgeInfo(enabled=True, model="function", note="test judge"),
        )
    ).summary
    for name in ("judge_clarity", "judge_relationship_safety"):
        stats = summary.stats(name)
        assert stats is not None and stats.cases == summary.cases_run and stats.rate == 1.0
    score = summary.stats("judge_clarity_score")
    assert score is not None and score.mean == pytest.approx(0.9)
    assert prompts, "the judge was never asked"
    joined = "\n".join(prompts)
    assert "<Output>" in joined and "Invoice INV-1042" in joined  # the draft's own text
    assert "ScenarioTruth" not in joined and "allowed_links" not in joined  # not our bookkeeping
