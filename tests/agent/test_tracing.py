"""Traces: a draft's spans exist (case file, model requests, grounding, rules, decision) and
carry no payer e-mail address and no pay-link token."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.orm import Session

from agent import tracing
from agent.deps import AgentDeps
from agent.drafter import draft_outreach
from tests.agent.factories import Ledger


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.use_tracer_provider(provider)
    yield memory
    tracing.use_tracer_provider(None)


def test_a_draft_is_traced_from_case_file_to_decision_without_personal_data(
    session: Session, ledger: Ledger, deps: AgentDeps, exporter: InMemorySpanExporter
) -> None:
    result = draft_outreach(deps, invoice_id=ledger.invoice.id)
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    for wanted in ("plixo.draft", "plixo.case_file", "plixo.grounding", "plixo.rule",
                   "plixo.decision"):  # fmt: skip
        assert wanted in names, names
    assert any(n.startswith("chat ") for n in names), names  # pydantic-ai's model request span
    draft = next(s for s in spans if s.name == "plixo.draft")
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == draft.context.span_id
    ]
    assert {"plixo.case_file", "plixo.decision"} <= {s.name for s in children}
    rules = {s.attributes["rule_id"] for s in spans if s.name == "plixo.rule"}  # type: ignore[index]
    assert rules == {r["rule_id"] for r in result.decision["reasons"]}
    decision = next(s for s in spans if s.name == "plixo.decision")
    assert decision.attributes["outcome"] == result.decision_outcome  # type: ignore[index]

    email = ledger.contact.email
    token = (result.pay_link or "").rstrip("/").rsplit("/", 1)[-1]
    assert email and token
    for s in spans:
        dumped = repr(dict(s.attributes or {})) + repr([e.attributes for e in s.events])
        assert email not in dumped, s.name
        assert token not in dumped, s.name
        assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", dumped), (s.name, dumped[:300])


def test_tracing_is_off_by_default(session: Session, ledger: Ledger, deps: AgentDeps) -> None:
    assert tracing.tracer() is None
    with tracing.span("plixo.draft") as s:
        assert not s.is_recording()
