"""The vocabulary of a guardrail decision: action types, outcomes, reasons and the decision itself.

Everything here is plain data (StrEnums and pydantic models) so a decision can be stored with the
draft, shown in the review panel and replayed by the CLI exactly as the engine produced it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PolicyError(ValueError):
    """A policy file or override is malformed; the message names the file, line or rule to fix."""


class ActionType(StrEnum):
    """Everything the agent or a person may ask the guardrails about."""

    SEND_DRAFT = "send_draft"
    SEND_NUDGE = "send_nudge"
    OFFER_PLAN = "offer_plan"
    APPROVE_PLAN = "approve_plan"
    GRANT_CREDIT = "grant_credit"
    ESCALATE_DISPUTE = "escalate_dispute"
    CHANGE_CADENCE = "change_cadence"
    CHANGE_SEGMENT = "change_segment"
    CHANGE_POLICY = "change_policy"
    ENABLE_AUTOPILOT = "enable_autopilot"
    SET_SENDING_MODE = "set_sending_mode"
    APPLY_CASH = "apply_cash"


OUTREACH_ACTIONS = frozenset({ActionType.SEND_DRAFT, ActionType.SEND_NUDGE})


class Outcome(StrEnum):
    """What may happen; when several rules fire: block > needs_approval > defer > allow."""

    ALLOW = "allow"
    DEFER = "defer"
    NEEDS_APPROVAL = "needs_approval"
    BLOCK = "block"

    @property
    def precedence(self) -> int:
        return PRECEDENCE[self]

    @classmethod
    def strongest(cls, outcomes: list[Outcome]) -> Outcome:
        """The outcome that wins among ``outcomes`` (allow when there are none)."""
        best = cls.ALLOW
        for outcome in outcomes:
            if PRECEDENCE[outcome] > PRECEDENCE[best]:
                best = outcome
        return best


#: How strong each outcome is (block wins).
PRECEDENCE = {Outcome.ALLOW: 0, Outcome.DEFER: 1, Outcome.NEEDS_APPROVAL: 2, Outcome.BLOCK: 3}


class Reason(BaseModel):
    """One rule that fired, with a sentence a Controller can read without knowing the engine."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    outcome: Outcome
    message: str
    not_before: datetime | None = None
    approver_role: str | None = None


class Decision(BaseModel):
    """The guardrails' answer for one action, with every rule that fired.

    ``not_before`` is set for ``defer`` (the next moment every deferring rule allows, in UTC);
    ``approver_role`` for ``needs_approval`` (the most senior role asked for; ``approver_roles``
    lists all of them, e.g. Controller and Legal). ``notify`` lists who must be told (the A/R team
    for every nudge, Legal for an escalation) whatever the outcome.
    """

    action: str
    outcome: Outcome
    reasons: list[Reason] = Field(default_factory=list)
    not_before: datetime | None = None
    approver_role: str | None = None
    approver_roles: list[str] = Field(default_factory=list)
    notify: list[str] = Field(default_factory=list)
    policy_digest: str = ""

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    @property
    def rule_ids(self) -> list[str]:
        return [r.rule_id for r in self.reasons]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the ledger (``Draft.decision``) and the CLI."""
        return self.model_dump(mode="json")

    def summary(self) -> str:
        """One line for logs and the CLI: the outcome and the deciding sentences."""
        deciding = [r.message for r in self.reasons if r.outcome is self.outcome]
        return f"{self.outcome.value}: " + "; ".join(deciding)
