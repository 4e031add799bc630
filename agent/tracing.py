"""OpenTelemetry spans for each draft, off by default; any OTLP endpoint by setting.

Set ``PLIXO_OTEL_ENDPOINT`` (e.g. ``http://collector:4318/v1/traces``) and every draft is traced:
``plixo.draft`` with children for the case file, each model request (pydantic-ai's own
instrumentation), grounding, each guardrail rule that fired, and the decision. Logfire or any
other OTLP backend reads them.

What a span may carry: ids, counts, versions, rule ids, outcomes and token counts. Never message
content, a payer's e-mail address or a pay-link token: pydantic-ai's spans are configured with
``include_content=False``, and plixo's own spans only set the attributes below.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer, TracerProvider
from pydantic_ai import Agent
from pydantic_ai.models.instrumented import InstrumentationSettings

_STATE: dict[str, Any] = {"provider": None}


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Send plixo's and pydantic-ai's spans to ``provider`` (None: tracing off, the default)."""
    _STATE["provider"] = provider
    if provider is None:
        Agent.instrument_all(False)
    else:
        Agent.instrument_all(
            InstrumentationSettings(tracer_provider=provider, include_content=False)
        )


def configure_from_settings(settings: Any) -> bool:
    """Tracing to ``settings.otel_endpoint`` over OTLP/HTTP when it is set; True when on."""
    endpoint = getattr(settings, "otel_endpoint", None)
    if not endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:  # pragma: no cover - the extra is a declared dependency
        raise RuntimeError(
            "PLIXO_OTEL_ENDPOINT is set but the OTLP exporter is missing: "
            "pip install 'opentelemetry-exporter-otlp-proto-http'"
        ) from exc
    provider = SdkTracerProvider(resource=Resource.create({"service.name": "plixo"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    use_tracer_provider(provider)
    return True


def tracer() -> Tracer | None:
    provider = _STATE["provider"]
    return None if provider is None else provider.get_tracer("plixo")


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A plixo span (a no-op one when tracing is off); attributes must be ids, counts, names."""
    t = tracer()
    if t is None:
        yield trace.INVALID_SPAN
        return
    with t.start_as_current_span(name, attributes=_clean(attributes)) as s:
        yield s


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if isinstance(v, str | int | float | bool)}
