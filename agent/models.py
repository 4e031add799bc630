"""``PLIXO_MODEL`` to a pydantic-ai model, built lazily, with timeouts, retries and a clear error.

Accepted values:

- ``offline`` (default): ``plixo-offline-v1``, deterministic, no network (``agent.offline``);
- ``openai:<name>``: OpenAI's API; needs ``PLIXO_MODEL_API_KEY`` (or ``OPENAI_API_KEY``); with
  ``PLIXO_MODEL_BASE_URL`` it talks to that OpenAI-compatible server instead;
- ``openai-compatible:<name>``: any server that speaks Chat Completions (vLLM, llama.cpp's server,
  Ollama) at ``PLIXO_MODEL_BASE_URL``; the key is optional;
- ``litellm:<name>``: through pydantic-ai's LiteLLM provider, i.e. a LiteLLM proxy at
  ``PLIXO_MODEL_BASE_URL`` (e.g. ``http://127.0.0.1:4000``);
- pydantic-ai's own providers ``anthropic:<name>``, ``google-gla:<name>``, ``groq:<name>`` and
  ``mistral:<name>``, each with its optional extra (``pip install 'pydantic-ai-slim[anthropic]'``)
  and its key in ``PLIXO_MODEL_API_KEY`` or the provider's own variable; each is imported only
  when named, and a missing extra or key fails with the command or variable to fix it.

Network models get the OpenAI client's own timeout (``PLIXO_MODEL_TIMEOUT_S``) and retries with
exponential backoff (``PLIXO_MODEL_RETRIES``), and a concurrency limit shared by every request
through this model (``PLIXO_MODEL_CONCURRENCY``). What happens when a model still fails (hold the
item for a human with the reason) is the callers' job: see ``agent.drafter``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from pydantic_ai.models import Model
from pydantic_ai.models.concurrency import ConcurrencyLimitedModel

from agent.offline import offline_model
from agent.schemas import OFFLINE_MODEL_NAME
from memory.config import Settings

_USAGE = (
    "use offline, openai:<name>, litellm:<name>, openai-compatible:<name> "
    "(with PLIXO_MODEL_BASE_URL), anthropic:<name>, google-gla:<name>, groq:<name> or "
    "mistral:<name>"
)


@dataclass(frozen=True)
class NativeProvider:
    """One of pydantic-ai's own providers: where its classes live, its extra, its key variables."""

    extra: str
    model_path: str  # module:Class
    provider_path: str  # module:Class
    key_vars: tuple[str, ...]


NATIVE: dict[str, NativeProvider] = {
    "anthropic": NativeProvider(
        "anthropic", "pydantic_ai.models.anthropic:AnthropicModel",
        "pydantic_ai.providers.anthropic:AnthropicProvider", ("ANTHROPIC_API_KEY",),
    ),
    "google-gla": NativeProvider(
        "google", "pydantic_ai.models.google:GoogleModel",
        "pydantic_ai.providers.google:GoogleProvider", ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    ),
    "groq": NativeProvider(
        "groq", "pydantic_ai.models.groq:GroqModel",
        "pydantic_ai.providers.groq:GroqProvider", ("GROQ_API_KEY",),
    ),
    "mistral": NativeProvider(
        "mistral", "pydantic_ai.models.mistral:MistralModel",
        "pydantic_ai.providers.mistral:MistralProvider", ("MISTRAL_API_KEY",),
    ),
}  # fmt: skip


class ModelConfigError(ValueError):
    """``PLIXO_MODEL`` and its settings do not describe a usable model; says which setting."""


@dataclass(frozen=True)
class ModelSpec:
    provider: str  # offline | openai | openai-compatible | litellm
    name: str

    @property
    def label(self) -> str:
        return OFFLINE_MODEL_NAME if self.provider == "offline" else f"{self.provider}:{self.name}"


def parse_model(value: str) -> ModelSpec:
    """``PLIXO_MODEL`` split into provider and model name (``ModelConfigError`` if malformed)."""
    raw = (value or "offline").strip()
    if raw in ("offline", OFFLINE_MODEL_NAME):
        return ModelSpec("offline", OFFLINE_MODEL_NAME)
    provider, sep, name = raw.partition(":")
    provider = provider.strip().lower()
    name = name.strip()
    known = ("openai", "openai-compatible", "litellm", *NATIVE)
    if not sep or not name or provider not in known:
        raise ModelConfigError(f"PLIXO_MODEL={raw!r} is not understood: {_USAGE}.")
    return ModelSpec(provider, name)


def model_label(settings: Settings) -> str:
    """The name stored on drafts and shown by the CLI (``plixo-offline-v1``, ``openai:gpt-4o``)."""
    return parse_model(settings.model).label


def is_offline(settings: Settings) -> bool:
    return parse_model(settings.model).provider == "offline"


def build_model(settings: Settings) -> Model:
    """The model ``settings.model`` names, ready for ``Agent.run(model=...)``.

    Raises ``ModelConfigError`` naming the missing setting (an API key, a base URL) instead of
    letting a provider fail later with a traceback. Builds no client until called.
    """
    spec = parse_model(settings.model)
    if spec.provider == "offline":
        return offline_model()
    if spec.provider in NATIVE:
        return _native(spec, settings)

    from openai import AsyncOpenAI
    from pydantic_ai.models.openai import OpenAIChatModel

    key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
    base = (settings.model_base_url or "").strip() or None
    timeout = max(1.0, float(settings.model_timeout_s))
    retries = max(0, int(settings.model_retries))
    if spec.provider == "openai" and base is None:
        key = key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise ModelConfigError(
                f"PLIXO_MODEL={settings.model} needs an API key: set PLIXO_MODEL_API_KEY "
                "(or OPENAI_API_KEY), or use PLIXO_MODEL=offline."
            )
    if spec.provider in ("openai-compatible", "litellm") and base is None:
        what = "your LiteLLM proxy" if spec.provider == "litellm" else "the server"
        raise ModelConfigError(
            f"PLIXO_MODEL={settings.model} needs PLIXO_MODEL_BASE_URL, the URL of {what} "
            "(e.g. http://127.0.0.1:4000/v1)."
        )
    client = AsyncOpenAI(
        api_key=key or "not-needed", base_url=base, timeout=timeout, max_retries=retries
    )
    model: Model
    if spec.provider == "litellm":
        from pydantic_ai.providers.litellm import LiteLLMProvider

        model = OpenAIChatModel(spec.name, provider=LiteLLMProvider(openai_client=client))
    else:
        from pydantic_ai.providers.openai import OpenAIProvider

        model = OpenAIChatModel(spec.name, provider=OpenAIProvider(openai_client=client))
    return ConcurrencyLimitedModel(model, max(1, int(settings.model_concurrency)))


def _load(path: str, spec: ModelSpec, native: NativeProvider) -> type:
    module, _, cls = path.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]
    except ImportError as exc:
        raise ModelConfigError(
            f"PLIXO_MODEL={spec.label} needs pydantic-ai's {native.extra!r} extra: "
            f"pip install 'pydantic-ai-slim[{native.extra}]' ({exc})."
        ) from None


def _native(spec: ModelSpec, settings: Settings) -> Model:
    """One of pydantic-ai's own providers, imported only now, with the key it needs."""
    native = NATIVE[spec.provider]
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
    key = key or next((os.environ[v] for v in native.key_vars if os.environ.get(v)), None)
    model_cls = _load(native.model_path, spec, native)
    provider_cls = _load(native.provider_path, spec, native)
    if not key:
        raise ModelConfigError(
            f"PLIXO_MODEL={spec.label} needs an API key: set PLIXO_MODEL_API_KEY (or "
            f"{' or '.join(native.key_vars)}), or use PLIXO_MODEL=offline."
        )
    model = model_cls(spec.name, provider=provider_cls(api_key=key))
    return ConcurrencyLimitedModel(model, max(1, int(settings.model_concurrency)))


def model_name_of(model: Model) -> str:
    """A stable label for a model instance (stored on drafts)."""
    name = getattr(model, "model_name", None) or type(model).__name__
    system = getattr(model, "system", None)
    if name == OFFLINE_MODEL_NAME or not system or system in ("function", "test"):
        return str(name)
    return f"{system}:{name}"
