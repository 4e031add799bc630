"""FunctionModels for the agent tests: the offline model with one thing changed.

``tampering(...)`` wraps the offline model and rewrites the first N ``submit_draft`` calls (a wrong
amount, a foreign link, another language...), so tests can prove each check catches its fault.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agent.offline import offline_function

Args = dict[str, Any]


def tampering(
    change: Callable[[Args], Args], *, times: int = 1, tool: str = "submit_draft"
) -> tuple[FunctionModel, list[list[ModelMessage]]]:
    """The offline model whose first ``times`` submissions that ``change`` alters are sent
    altered (one it leaves alone does not count: with drafts running concurrently, which one's
    submission comes next is not fixed); also returns the conversations it saw (to check what
    the model was told)."""
    seen: list[list[ModelMessage]] = []
    count = {"n": 0}

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(list(messages))
        resp = await offline_function(messages, info)
        parts = []
        for part in resp.parts:
            if isinstance(part, ToolCallPart) and part.tool_name == tool and count["n"] < times:
                before = dict(part.args_as_dict())
                args = change(dict(before))
                if args != before:  # only a submission ``change`` altered counts
                    count["n"] += 1
                    part = ToolCallPart(tool, args, tool_call_id=part.tool_call_id)
            parts.append(part)
        return ModelResponse(parts=parts, usage=resp.usage)

    return FunctionModel(fn, model_name="tampering"), seen


def scripted(
    responses: list[Callable[[list[ModelMessage], AgentInfo], ModelResponse]],
) -> FunctionModel:
    """A model answering request k with ``responses[k]`` (the last one repeats)."""
    calls = {"n": 0}

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        k = min(calls["n"], len(responses) - 1)
        calls["n"] += 1
        return responses[k](messages, info)

    return FunctionModel(fn, model_name="scripted")


def sleeping(seconds: float) -> FunctionModel:
    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await asyncio.sleep(seconds)
        return await offline_function(messages, info)

    return FunctionModel(fn, model_name="sleepy")


def failing(exc: BaseException) -> FunctionModel:
    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise exc

    return FunctionModel(fn, model_name="failing")
