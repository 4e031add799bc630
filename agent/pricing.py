"""What a model's tokens cost, from LiteLLM's price table (offline, no network).

Why read the table and not call ``litellm.cost_per_token``: importing litellm costs seconds and,
unless told otherwise, fetches a fresh table over the network. The table litellm ships
(``model_prices_and_context_window_backup.json``, what ``litellm.model_cost`` holds with
``LITELLM_LOCAL_MODEL_COST_MAP``) is read once from the installed package, without importing it.
Costs are exact decimals in US dollars, stored as integer micro-dollars (money is never a float).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any

PRICE_FILE = "model_prices_and_context_window_backup.json"
MICRO = Decimal(1_000_000)

#: pydantic-ai provider prefixes and the prefix litellm's table uses for the same provider.
_LITELLM_PREFIX = {
    "openai": "",
    "litellm": "",
    "anthropic": "anthropic/",
    "google-gla": "gemini/",
    "google-vertex": "vertex_ai/",
    "groq": "groq/",
    "mistral": "mistral/",
}


@dataclass(frozen=True)
class Price:
    """Per-token prices of one model in US dollars, and the table entry they come from."""

    priced_as: str
    input_per_token: Decimal
    output_per_token: Decimal

    def cost_micro_usd(self, input_tokens: int, output_tokens: int) -> int:
        usd = self.input_per_token * input_tokens + self.output_per_token * output_tokens
        return int((usd * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@cache
def price_table() -> dict[str, Any]:
    """LiteLLM's price table as shipped with the installed package ({} when it is absent)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / PRICE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _candidates(model_name: str) -> list[str]:
    name = model_name.strip()
    out = [name]
    if ":" in name:
        provider, _, bare = name.partition(":")
        out += [_LITELLM_PREFIX.get(provider, provider + "/") + bare, bare]
    if "/" in name:
        out.append(name.rsplit("/", 1)[1])
    return list(dict.fromkeys(c for c in out if c))


@cache
def price_for(model_name: str | None) -> Price | None:
    """The model's prices, or None when the table does not know it (the offline model, a local
    server): such drafts record their tokens and no cost."""
    if not model_name:
        return None
    table = price_table()
    for key in _candidates(model_name):
        entry = table.get(key)
        if not isinstance(entry, dict):
            continue
        i, o = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
        if isinstance(i, int | float) and isinstance(o, int | float):
            return Price(key, Decimal(str(i)), Decimal(str(o)))
    return None


def cost_micro_usd(model_name: str | None, input_tokens: int, output_tokens: int) -> int | None:
    """What these tokens cost on this model, in micro-dollars, or None when it is not priced."""
    price = price_for(model_name)
    return None if price is None else price.cost_micro_usd(input_tokens, output_tokens)


def per_100_usd(total_micro_usd: int, drafts: int) -> Decimal | None:
    """Cost per 100 drafts in dollars, to the cent's hundredth (None for no drafts)."""
    if drafts <= 0:
        return None
    return (Decimal(total_micro_usd) * 100 / drafts / MICRO).quantize(Decimal("0.0001"))
