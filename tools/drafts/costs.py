"""What drafting costs, per model: requests, tokens and dollars per 100 drafts.

Read from ``draft_cost`` rows (written with every stored draft by the drafter). Models that
LiteLLM's price table does not know (the offline model, a local server) show their tokens and no
cost, never a made-up one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from memory.models import DraftCost

MICRO = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelCost:
    """One model's drafting figures over the period."""

    model_name: str
    drafts: int
    priced_drafts: int
    requests_per_draft: Decimal
    tokens_per_draft: Decimal
    cost_per_100_drafts_usd: Decimal | None  # None: not in the price table

    def as_dict(self) -> dict[str, object]:
        return {
            "model_name": self.model_name,
            "drafts": self.drafts,
            "priced_drafts": self.priced_drafts,
            "requests_per_draft": str(self.requests_per_draft),
            "tokens_per_draft": str(self.tokens_per_draft),
            "cost_per_100_drafts_usd": None
            if self.cost_per_100_drafts_usd is None
            else str(self.cost_per_100_drafts_usd),
        }


def cost_per_100_drafts(
    session: Session, org_id: int, *, since: datetime | None = None
) -> list[ModelCost]:
    """Per model, most drafts first: requests and tokens per draft, dollars per 100 drafts."""
    q = select(
        DraftCost.model_name,
        func.count(),
        func.count(DraftCost.cost_micro_usd),
        func.coalesce(func.sum(DraftCost.requests), 0),
        func.coalesce(func.sum(DraftCost.input_tokens + DraftCost.output_tokens), 0),
        func.coalesce(func.sum(DraftCost.cost_micro_usd), 0),
    ).where(DraftCost.org_id == org_id)
    if since is not None:
        q = q.where(DraftCost.created_at >= since)
    rows = session.execute(q.group_by(DraftCost.model_name)).all()
    out = []
    for name, n, priced, requests, tokens, micro in rows:
        out.append(
            ModelCost(
                model_name=name,
                drafts=n,
                priced_drafts=priced,
                requests_per_draft=(Decimal(requests) / n).quantize(Decimal("0.01")),
                tokens_per_draft=(Decimal(tokens) / n).quantize(Decimal("0.1")),
                cost_per_100_drafts_usd=(Decimal(int(micro or 0)) * 100 / priced / MICRO).quantize(
                    Decimal("0.0001")
                )
                if priced
                else None,
            )
        )
    return sorted(out, key=lambda m: (-m.drafts, m.model_name))
