"""Every stored draft records its requests and tokens and, for a priced model, its cost."""

from __future__ import annotations

from decimal import Decimal

from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, FunctionModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.deps import AgentDeps
from agent.drafter import draft_outreach
from agent.offline import offline_function
from agent.pricing import price_for, price_table
from memory.config import Settings
from memory.models import DraftCost
from tests.agent.factories import NOW, Ledger
from tools.drafts.costs import cost_per_100_drafts


def _named(name: str) -> FunctionModel:
    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return await offline_function(messages, info)

    return FunctionModel(fn, model_name=name)


def test_a_priced_model_records_the_exact_cost_and_the_offline_model_none(
    session: Session, ledger: Ledger, deps: AgentDeps
) -> None:
    priced = draft_outreach(deps, invoice_id=ledger.invoice.id, model=_named("gpt-4o-mini"))
    offline = draft_outreach(deps, invoice_id=ledger.invoice.id, run_key="again")
    session.commit()
    rows = {r.draft_id: r for r in session.scalars(select(DraftCost))}
    paid, free = rows[priced.draft_id], rows[offline.draft_id]
    assert paid.requests == 1 and paid.input_tokens > 0 and paid.output_tokens > 0
    entry = price_table()["gpt-4o-mini"]
    usd = (
        Decimal(str(entry["input_cost_per_token"])) * paid.input_tokens
        + Decimal(str(entry["output_cost_per_token"])) * paid.output_tokens
    )
    assert paid.cost_micro_usd == int((usd * 1_000_000).to_integral_value())
    assert paid.priced_as == "gpt-4o-mini"
    assert free.model_name == "plixo-offline-v1" and free.cost_micro_usd is None
    assert free.input_tokens > 0  # tokens are recorded even when there is no price

    by_model = {m.model_name: m for m in cost_per_100_drafts(session, ledger.org.id)}
    assert by_model["plixo-offline-v1"].cost_per_100_drafts_usd is None
    per_100 = by_model["gpt-4o-mini"].cost_per_100_drafts_usd
    assert per_100 == (Decimal(paid.cost_micro_usd) * 100 / 1_000_000).quantize(Decimal("0.0001"))
    assert by_model["gpt-4o-mini"].requests_per_draft == Decimal("1.00")


def test_provider_prefixed_names_find_their_price() -> None:
    assert price_for("openai:gpt-4o-mini") is not None
    assert price_for("plixo-offline-v1") is None and price_for(None) is None
    mistral = price_for("mistral:mistral-small-latest")
    assert mistral is not None and mistral.priced_as == "mistral/mistral-small-latest"


def test_a_revision_adds_its_requests_tokens_and_cost_to_the_drafts_record(
    session: Session, ledger: Ledger, deps: AgentDeps, settings: Settings
) -> None:
    from agent.service import revise_draft
    from memory.models import Draft

    priced = draft_outreach(deps, invoice_id=ledger.invoice.id, model=_named("gpt-4o-mini"))
    session.commit()
    row = session.get(DraftCost, priced.draft_id)
    assert row is not None
    before = (row.requests, row.input_tokens, row.output_tokens, row.cost_micro_usd)
    assert before[3] is not None and before[3] > 0

    revise_draft(
        session, ledger.org.id, priced.draft_id, "shorter", ledger.collector, settings,
        model=_named("gpt-4o-mini"), now=NOW,
    )  # fmt: skip
    session.commit()
    session.expire_all()
    row = session.get(DraftCost, priced.draft_id)
    draft = session.get(Draft, priced.draft_id)
    assert row is not None and draft is not None
    added_in, added_out = row.input_tokens - before[1], row.output_tokens - before[2]
    assert row.requests > before[0] and added_in > 0 and added_out > 0
    # the draft's own counters and its cost record agree
    assert (draft.input_tokens, draft.output_tokens) == (row.input_tokens, row.output_tokens)
    price = price_for("gpt-4o-mini")
    assert price is not None
    assert row.cost_micro_usd == before[3] + price.cost_micro_usd(added_in, added_out)
    per_100 = {m.model_name: m for m in cost_per_100_drafts(session, ledger.org.id)}
    assert per_100["gpt-4o-mini"].requests_per_draft == Decimal(row.requests).quantize(
        Decimal("0.01")
    )
    requests = row.requests

    # a revision by a model without a price leaves the total unknown, not a partial sum
    revise_draft(
        session, ledger.org.id, priced.draft_id, "more formal please", ledger.collector,
        settings, now=NOW,
    )  # fmt: skip
    session.commit()
    session.expire_all()
    row = session.get(DraftCost, priced.draft_id)
    assert row is not None and row.requests > requests
    assert row.cost_micro_usd is None and row.priced_as is None
