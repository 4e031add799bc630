"""``PLIXO_MODEL`` to a model: built lazily, and a clear error naming the setting when one is
missing (never a provider traceback)."""

from __future__ import annotations

import pytest
from pydantic_ai.models.concurrency import ConcurrencyLimitedModel
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel

from agent.models import ModelConfigError, build_model, is_offline, model_label, parse_model
from tests.agent.factories import settings_for


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def test_offline_is_the_default() -> None:
    settings = settings_for()
    model = build_model(settings)
    assert isinstance(model, FunctionModel) and model.model_name == "plixo-offline-v1"
    assert is_offline(settings) and model_label(settings) == "plixo-offline-v1"


def test_openai_needs_a_key_and_says_which_setting() -> None:
    with pytest.raises(ModelConfigError, match="PLIXO_MODEL_API_KEY"):
        build_model(settings_for(model="openai:gpt-4o-mini"))


def test_openai_with_a_key_is_limited_and_named() -> None:
    settings = settings_for(
        model="openai:gpt-4o-mini", model_api_key="sk-test", model_concurrency=3
    )
    model = build_model(settings)
    assert isinstance(model, ConcurrencyLimitedModel)
    assert isinstance(model.wrapped, OpenAIChatModel)
    assert model_label(settings) == "openai:gpt-4o-mini" and not is_offline(settings)
    client = model.wrapped.client
    assert (
        client.max_retries == settings.model_retries and client.timeout == settings.model_timeout_s
    )


def test_openai_environment_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert build_model(settings_for(model="openai:gpt-4o-mini")) is not None


@pytest.mark.parametrize("spec", ["openai-compatible:llama3", "litellm:anthropic/claude-3-5"])
def test_servers_need_a_base_url(spec: str) -> None:
    with pytest.raises(ModelConfigError, match="PLIXO_MODEL_BASE_URL"):
        build_model(settings_for(model=spec))
    model = build_model(settings_for(model=spec, model_base_url="http://127.0.0.1:4000/v1"))
    assert isinstance(model, ConcurrencyLimitedModel)
    provider = spec.split(":")[0]
    assert model.wrapped.system == ("litellm" if provider == "litellm" else "openai")


@pytest.mark.parametrize("spec", ["gpt-4o", "claude:opus", "openai:", "offline-v2"])
def test_unknown_values_list_the_choices(spec: str) -> None:
    with pytest.raises(ModelConfigError, match="offline, openai:<name>, litellm:<name>"):
        parse_model(spec)


@pytest.mark.parametrize("name", ["anthropic", "google-gla", "groq", "mistral"])
def test_pydantic_ai_provider_prefixes_are_understood_and_built_lazily(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.models import NATIVE, ModelConfigError, build_model, parse_model

    assert parse_model(f"{name}:some-model").provider == name
    for var in NATIVE[name].key_vars:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ModelConfigError) as err:
        build_model(settings_for(model=f"{name}:some-model"))
    message = str(err.value)
    # Without the extra installed: the pip command; with it: the key variables to set.
    assert f"pydantic-ai-slim[{NATIVE[name].extra}]" in message or "PLIXO_MODEL_API_KEY" in message


def test_a_native_provider_without_its_key_says_which_variable_and_with_it_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent import models

    # The OpenAI classes are installed: stand in for a provider whose extra is present.
    stand_in = models.NativeProvider(
        "openai", "pydantic_ai.models.openai:OpenAIChatModel",
        "pydantic_ai.providers.openai:OpenAIProvider", ("PLIXO_TEST_NATIVE_KEY",),
    )  # fmt: skip
    monkeypatch.setitem(models.NATIVE, "groq", stand_in)
    monkeypatch.delenv("PLIXO_TEST_NATIVE_KEY", raising=False)
    with pytest.raises(models.ModelConfigError, match="PLIXO_TEST_NATIVE_KEY"):
        models.build_model(settings_for(model="groq:llama-test"))
    monkeypatch.setenv("PLIXO_TEST_NATIVE_KEY", "k-test")
    built = models.build_model(settings_for(model="groq:llama-test"))
    assert models.model_name_of(built)
