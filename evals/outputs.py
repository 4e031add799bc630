"""What a task hands to the evaluators: plain data, independent of the agent's own types.

The evaluators never import the agent. The thin task functions (``evals/task.py``) translate the
agent's typed results into these models, so an evaluator can be tested with a hand-written draft and
a model change cannot quietly change what is being measured.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, Field

from evals.fixtures import ScenarioTruth


class DraftView(BaseModel):
    """An outreach draft as the payer would read it, plus what the drafter declared about it."""

    channel: str = "email"
    recipient: str | None = None
    subject: str = ""
    body: str = ""
    invoice_numbers: list[str] = Field(default_factory=list)
    amounts: list[tuple[int, str]] = Field(default_factory=list, description="(minor, currency)")
    dates: list[date] = Field(default_factory=list)
    pay_link: str | None = None
    language: str | None = None
    tone: str | None = None
    held: bool = Field(default=False, description="The drafter held the item for a human.")
    hold_reason: str | None = None
    decision: dict[str, Any] | None = Field(
        default=None, description="The agent's own policy decision, when it reports one."
    )

    @property
    def text(self) -> str:
        return f"{self.subject}\n\n{self.body}" if self.subject else self.body

    @property
    def has_text(self) -> bool:
        return bool(self.body.strip())


class ProposalView(BaseModel):
    """A proposed ledger change from reply triage (a human or a rule must accept it)."""

    kind: str
    amount_minor: int | None = None
    currency: str | None = None
    on_date: date | None = None
    invoice_numbers: list[str] = Field(default_factory=list)
    detail: str = ""


class TriageView(BaseModel):
    classification: str
    proposals: list[ProposalView] = Field(default_factory=list)
    reply_text: str | None = Field(default=None, description="A suggested answer, if any.")
    rationale: str = ""
    injection_suspected: bool = False


class CaseResult(BaseModel):
    """The output of one case: the truth of its scenario and what the agent produced."""

    truth: ScenarioTruth
    draft: DraftView | None = None
    triage: TriageView | None = None
    ledger_changes: list[str] = Field(
        default_factory=list, description="What the task changed in the ledger (must be nothing)."
    )
    model_name: str | None = None
    prompt_version: str | None = None
    latency_ms: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
