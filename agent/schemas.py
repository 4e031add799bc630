"""Typed inputs and outputs of the co-pilot's agents, with bounded fields.

The model's outputs (``DraftOutput``, ``RevisionOutput``, ``InspectorOutput``, ``TriageOutput``)
are validated by pydantic-ai before plixo sees them; a model that returns something outside these
bounds gets the validation error back (and is held for a human when it keeps failing). The
results returned to callers (``DraftResult``, ``Recommendation``, ``TriageResult``) add what plixo
itself decided: grounding, the guardrails' decision, the stored draft.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from memory.models import Channel, DraftPersona, DraftStatus

#: The offline model's name (``agent.offline``, built by the model factory ``agent.models``).
OFFLINE_MODEL_NAME = "plixo-offline-v1"

#: The output tools each agent offers; a model submits its typed answer by calling one.
DRAFT_TOOL = "submit_draft"
REVISION_TOOL = "submit_revision"
INSPECTOR_TOOL = "submit_recommendation"
TRIAGE_TOOL = "submit_triage"

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
InvoiceNumber = Annotated[str, Field(min_length=1, max_length=64)]
Language = Annotated[str, Field(pattern=r"^[a-z]{2}$")]
Tone = Annotated[str, Field(min_length=1, max_length=32)]


class MoneyOut(BaseModel):
    """An amount as integer minor units (cents) and an ISO currency code. Never a float."""

    model_config = ConfigDict(extra="forbid")

    amount_minor: int = Field(ge=0, le=10**15)
    currency: Currency


class DraftOutput(BaseModel):
    """What the drafter submits: the message, and the facts it says the message states."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel
    recipient: str = Field(min_length=1, max_length=254)
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=5000)
    invoice_numbers: list[InvoiceNumber] = Field(default_factory=list, max_length=50)
    amounts: list[MoneyOut] = Field(default_factory=list, max_length=50)
    dates: list[date] = Field(default_factory=list, max_length=20)
    pay_link: str | None = Field(default=None, max_length=500)
    language: Language
    tone: Tone


class RevisionOutput(DraftOutput):
    """A rewrite at an operator's request, with a one-line note on what was (not) done."""

    note: str = Field(default="", max_length=300)


Action = Literal["send_reminder", "call", "log_promise", "propose_plan", "escalate_dispute", "hold"]
Priority = Literal["low", "normal", "high", "urgent"]


class InspectorOutput(BaseModel):
    """The inspector's next best action for one queue item."""

    model_config = ConfigDict(extra="forbid")

    action: Action
    rationale: str = Field(min_length=1, max_length=600)
    priority: Priority
    confidence: float = Field(ge=0.0, le=1.0)
    invoice_numbers: list[InvoiceNumber] = Field(default_factory=list, max_length=20)


ReplyClass = Literal["promise", "dispute", "paid_claim", "question", "out_of_office", "other"]
ChangeKind = Literal[
    "log_promise", "open_dispute", "verify_payment", "pause_outreach", "answer_question"
]


class ProposedChange(BaseModel):
    """A ledger change the reply suggests; a human or a rule must accept it. Never applied here."""

    model_config = ConfigDict(extra="forbid")

    kind: ChangeKind
    invoice_numbers: list[InvoiceNumber] = Field(default_factory=list, max_length=20)
    amount: MoneyOut | None = None
    on_date: date | None = None
    reason: str | None = Field(default=None, max_length=200)
    detail: str = Field(default="", max_length=300)


class TriageOutput(BaseModel):
    """The triage model's reading of one payer reply."""

    model_config = ConfigDict(extra="forbid")

    classification: ReplyClass
    summary: str = Field(min_length=1, max_length=400)
    invoice_numbers: list[InvoiceNumber] = Field(default_factory=list, max_length=20)
    promise_amount: MoneyOut | None = None
    promise_date: date | None = None
    dispute_reason: str | None = Field(default=None, max_length=200)
    return_date: date | None = None
    injection_suspected: bool = False
    proposed_changes: list[ProposedChange] = Field(default_factory=list, max_length=5)


# --- results returned to callers -------------------------------------------------------------


class Usage(BaseModel):
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class DraftResult(BaseModel):
    """One drafted outreach as stored: the message, its facts, and what plixo decided about it.

    The message fields are empty when the model failed and the item was held for a human
    (``status == held``, ``hold_reason`` says why).
    """

    draft_id: int | None
    run_key: str | None
    status: DraftStatus
    decision_outcome: str | None
    hold_reason: str | None = None
    channel: Channel
    recipient: str | None
    subject: str = ""
    body: str = ""
    invoice_numbers: list[str] = Field(default_factory=list)
    amounts: list[MoneyOut] = Field(default_factory=list)
    dates: list[date] = Field(default_factory=list)
    pay_link: str | None = None
    language: str = "en"
    tone: str = "friendly"
    persona: DraftPersona = DraftPersona.AUTOPILOT
    template: str = ""
    grounding: dict[str, Any] = Field(default_factory=dict)
    decision: dict[str, Any] = Field(default_factory=dict)
    grounding_attempts: int = 0
    first_attempt_mismatches: int = 0
    model_name: str = ""
    prompt_version: str = ""
    usage: Usage = Field(default_factory=Usage)
    latency_ms: int = 0


class Recommendation(BaseModel):
    """The inspector's recommendation, as the review panel shows it."""

    action: Action
    rationale: str = Field(max_length=600)
    priority: Priority
    confidence: float = Field(ge=0.0, le=1.0)
    invoice_numbers: list[str] = Field(default_factory=list)
    draft_id: int | None = None
    invoice_id: int | None = None
    customer_id: int
    model_name: str
    prompt_version: str
    held: bool = Field(default=False, description="The model failed; this is the safe default.")


class TriageResult(BaseModel):
    """A classified payer reply and the ledger changes it proposes (none is applied)."""

    customer_id: int
    classification: ReplyClass
    summary: str
    invoice_numbers: list[str] = Field(default_factory=list)
    promise_amount: MoneyOut | None = None
    promise_date: date | None = None
    dispute_reason: str | None = None
    return_date: date | None = None
    injection_suspected: bool = False
    ignored_invoice_numbers: list[str] = Field(
        default_factory=list, description="Numbers in the reply that are not this customer's."
    )
    proposed_changes: list[ProposedChange] = Field(default_factory=list)
    requires_acceptance: Literal[True] = True
    model_name: str
    prompt_version: str
    held: bool = False
    hold_reason: str | None = None


# --- case files of the inspector and of triage ------------------------------------------------


class InspectCase(BaseModel):
    """What the inspector is asked about: one queue item (a draft or an invoice) of a customer."""

    as_of: date
    customer_id: int
    invoice_numbers: list[str] = Field(default_factory=list, max_length=20)
    draft_id: int | None = None
    draft_status: str | None = None
    decision_outcome: str | None = None
    decision_rule_ids: list[str] = Field(default_factory=list, max_length=40)
    grounding_ok: bool | None = None


class TriageInvoice(BaseModel):
    number: str
    currency: str
    balance_minor: int
    due_date: date
    disputed: bool = Field(default=False, description="In dispute: a promise names it or not.")


class TriageCase(BaseModel):
    """What triage knows besides the reply: the customer's open invoices and its language."""

    as_of: date
    customer_id: int
    language: str = "en"
    currencies: list[str] = Field(default_factory=list)
    invoices: list[TriageInvoice] = Field(default_factory=list, max_length=50)


# --- the co-pilot's remittance split (agent.remittance) ---------------------------------------

SPLIT_TOOL = "submit_split"

#: A positive decimal amount as written in the line's currency ("1200.50"); never a float.
DecimalAmount = Annotated[str, Field(pattern=r"^\d{1,13}(\.\d{1,4})?$")]


class SplitAllocation(BaseModel):
    """Part of a bank line's amount that the remittance says pays one invoice."""

    model_config = ConfigDict(extra="forbid")

    invoice_number: InvoiceNumber
    amount: DecimalAmount
    reason: str = Field(min_length=1, max_length=200)


class RemittanceSplit(BaseModel):
    """The co-pilot's reading of a remittance: allocations plus what stays unexplained.

    ``allocations`` and ``remainder`` add up to the line's amount exactly; the remainder is kept
    on account with ``remainder_reason``. No allocation at all means the text could not be read
    (``summary`` says why): no proposal is made.
    """

    model_config = ConfigDict(extra="forbid")

    allocations: list[SplitAllocation] = Field(default_factory=list, max_length=20)
    remainder: DecimalAmount = "0"
    remainder_reason: str = Field(default="", max_length=200)
    summary: str = Field(min_length=1, max_length=300)


class RemittanceCase(BaseModel):
    """What the co-pilot is told about the bank line besides its remittance text."""

    line_id: int
    booked_on: date
    amount: str  # decimal, in the currency's precision
    currency: Currency
    payer_name: str | None = None
