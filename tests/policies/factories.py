"""Clean facts for each action type, overridable per test.

``draft()`` is an Autopilot draft that every guardrail allows (Tuesday 11:00 in New York, nothing
disputed, grounded content, no earlier touches); a test changes the one fact it is about, so the
rule under test is the only reason the outcome moves.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from policies.engine import decide
from policies.types import Decision

# Tuesday 7 October 2025, 15:00 UTC = 11:00 EDT in New York.
NOW = datetime(2025, 10, 7, 15, 0, tzinfo=UTC)
LINK = "https://pay.example.com/t/abc"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def _outreach(now: datetime) -> dict[str, Any]:
    return {
        "now": iso(now),
        "channel": "email",
        "maintenance": False,
        "cron_paused": False,
        "contact": {
            "timezone": "America/New_York",
            "opted_out": False,
            "bounced": False,
            "consent": True,
        },
        "invoices": [{"number": "INV-1", "disputed": False}],
        "promises": [],
        "touches": [],
    }


def draft(**changes: Any) -> dict[str, Any]:
    base = _outreach(NOW) | {
        "segment": "SMB",
        "org_shadow_mode": False,
        "segment_shadow_mode": False,
        "autopilot_enabled": True,
        "data_ready_score": 90,
        "sending_domain_verified": True,
        "approved_by_roles": [],
        "content": {
            "body": "Invoice INV-1 for $1,240.00 was due on 2025-09-15. Pay here: " + LINK,
            "invoice_numbers": ["INV-1"],
            "amounts": [{"amount_minor": 124000, "currency": "USD"}],
            "dates": ["2025-09-15"],
            "pay_link": LINK,
        },
        "ledger": {
            "invoice_numbers": ["INV-1", "INV-2"],
            "amounts": [{"amount_minor": 124000, "currency": "USD"}],
            "dates": ["2025-09-15"],
            "pay_link": LINK,
        },
    }
    return deep_update(base, changes)


def nudge(**changes: Any) -> dict[str, Any]:
    base = _outreach(NOW) | {
        "actor_role": "Sales",
        "template_approved": True,
        "scheduled_autopilot_touches": [],
    }
    return deep_update(base, changes)


def plan(**changes: Any) -> dict[str, Any]:
    base = {
        "actor_role": "Collector",
        "total_minor": 500_000,
        "currency": "USD",
        "installments": 4,
        "months": 4,
        "discount_minor": 0,
        "non_standard_terms": False,
    }
    return deep_update(base, changes)


def credit(**changes: Any) -> dict[str, Any]:
    base = {
        "actor_role": "Collections Manager",
        "kind": "credit",
        "amount_minor": 10_000,
        "currency": "USD",
        "invoice_amount_minor": 1_000_000,
        "invoice_balance_minor": 1_000_000,
    }
    return deep_update(base, changes)


def ids(decision: Decision) -> set[str]:
    return set(decision.rule_ids)


def check(action: str, facts: dict[str, Any]) -> Decision:
    """Decide with the default policy set and sanity-check the decision's own invariants."""
    d = decide(action, facts)
    assert d.reasons, "a decision always says why"
    assert d.outcome.precedence == max(r.outcome.precedence for r in d.reasons)
    assert (d.not_before is not None) == (d.outcome.value == "defer")
    assert (d.approver_role is not None) == (d.outcome.value == "needs_approval")
    return d
