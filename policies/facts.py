"""Typed facts per action type: what the caller must tell the guardrails.

The caller (tools, agent, API) reads the ledger and passes facts; the engine never reads the
database. Models are strict where a silent coercion could loosen a guardrail: amounts are integers
in minor units (never floats or strings), flags are real booleans, datetimes carry a time zone, and
unknown keys are refused (a misspelt ``opted_out_email`` must not read as "not opted out"). Safety
facts have no defaults: forgetting to pass ``touches`` blocks the action instead of skipping the
cadence caps.

One JSON example per action type is in :data:`EXAMPLES` (and in ``policies/README.md``).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from policies.timewin import zone
from policies.types import ActionType

NonNegInt = Annotated[StrictInt, Field(ge=0)]
PosInt = Annotated[StrictInt, Field(ge=1)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=200)]
Currency = Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")]
Score = Annotated[StrictInt, Field(ge=0, le=100)]
Channel = Literal["email", "sms", "call", "slack", "portal"]
PromiseStatus = Literal["open", "kept", "missed", "cancelled"]
DisputeStatus = Literal[
    "open", "investigating", "awaiting_customer", "escalated_legal", "resolved_credit", "rejected"
]


class _Facts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Money(_Facts):
    amount_minor: StrictInt
    currency: Currency


class ContactFacts(_Facts):
    """The contact being reached, for the channel of this action (the caller maps e-mail/SMS)."""

    timezone: Name
    opted_out: StrictBool
    bounced: StrictBool
    consent: StrictBool
    country: StrictStr | None = Field(
        default=None,
        description=(
            'ISO 3166 country of the contact ("US", or with a subdivision "US-CA"): picks the '
            "public-holiday calendar when the policy names 'contact'. Unknown: none applies."
        ),
    )
    subdivision: StrictStr | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value


class InvoiceFacts(_Facts):
    """An invoice the outreach is about."""

    number: Name
    disputed: StrictBool


class PromiseFacts(_Facts):
    """A promise-to-pay on the customer's invoices (any status; the engine decides what pauses)."""

    promised_date: date
    status: PromiseStatus
    invoice_numbers: Annotated[list[Name], Field(min_length=1)]
    grace_days: NonNegInt | None = None


class StatedFacts(_Facts):
    """What the draft says (extracted by grounding): compared with :class:`LedgerFacts`."""

    body: StrictStr
    invoice_numbers: list[Name]
    amounts: list[Money]
    dates: list[date]
    pay_link: StrictStr | None


class LedgerFacts(_Facts):
    """What the ledger allows the draft to say: its invoice numbers, amounts, dates and pay link."""

    invoice_numbers: list[Name]
    amounts: list[Money]
    dates: list[date]
    pay_link: StrictStr | None
    concession_approved: StrictBool = Field(
        default=False,
        description="A discount, credit or waiver on these invoices was approved in the ledger.",
    )


class _OutreachFacts(_Facts):
    now: AwareDatetime
    business_date: date | None = Field(
        default=None,
        description=(
            "The organisation's date at ``now`` (its time zone): promise dates and their grace "
            "are judged on it. Left out, the contact's local date stands in."
        ),
    )
    channel: Channel
    maintenance: StrictBool
    cron_paused: StrictBool
    contact: ContactFacts
    invoices: list[InvoiceFacts]
    promises: list[PromiseFacts]
    touches: list[AwareDatetime] = Field(
        description="Every earlier outbound touch to this contact (any channel, any sender)."
    )


class SendDraftFacts(_OutreachFacts):
    """send_draft: an outbound outreach draft, sent by Autopilot or after human review.

    ``approved_by_roles`` lists the roles of the people who approved this version of the draft
    (empty before review). ``data_ready_score`` and ``sending_domain_verified`` are needed only when
    Autopilot would send without review; a missing one then blocks (fail closed).
    ``about_promise`` marks a reminder about one open promise-to-pay itself, so that promise does
    not pause it (``promise.open``); it must be one of ``promises``, open on these invoices and not
    past its grace, or the draft is blocked (fail closed). Its ``grace_days`` may be left out.
    ``dispute_correspondence`` marks a reply from the dispute panel (below).
    """

    segment: Name
    org_shadow_mode: StrictBool
    segment_shadow_mode: StrictBool
    step_shadow_mode: StrictBool = Field(
        default=False,
        description=(
            "The cadence step this draft is for is itself in Shadow Mode: a person reviews it "
            "whatever the segment says."
        ),
    )
    autopilot_enabled: StrictBool
    data_ready_score: Score | None = None
    sending_domain_verified: StrictBool | None = None
    approved_by_roles: list[Name] = Field(default_factory=list)
    content: StatedFacts
    ledger: LedgerFacts
    about_promise: PromiseFacts | None = None
    dispute_correspondence: StrictBool = Field(
        default=False,
        description=(
            "A reply a person writes to the payer from the dispute panel (acknowledgement, "
            "request for evidence, outcome): it may name a disputed invoice and needs no pay "
            "link, but must not ask for payment of a disputed invoice. Set only by the dispute "
            "reply path, never by Autopilot or the generic composer."
        ),
    )


class SendNudgeFacts(_OutreachFacts):
    """send_nudge: a Sales or CSM pre-approved reminder (never overrides Autopilot sequencing)."""

    actor_role: Name
    template_approved: StrictBool
    scheduled_autopilot_touches: list[AwareDatetime]


class _Actor(_Facts):
    actor_role: Name


class _PlanTerms(_Facts):
    actor_limit_minor: NonNegInt | None = Field(
        default=None, description="The user's own limit; it can only lower the role's limit."
    )
    total_minor: PosInt
    currency: Currency
    installments: PosInt
    months: PosInt
    discount_minor: NonNegInt = 0
    non_standard_terms: StrictBool
    legal_approved: StrictBool = False

    @model_validator(mode="after")
    def _discount_within_total(self) -> _PlanTerms:
        if self.discount_minor > self.total_minor:
            raise ValueError("discount_minor exceeds total_minor")
        return self


class OfferPlanFacts(_PlanTerms):
    """offer_plan: propose a payment plan (by staff, or by the payer in the mini-portal).

    A plan is visible to the customer only once the decision is ``allow`` (or a later approval).
    """

    proposed_via: Literal["staff", "portal"] = "staff"
    actor_role: Name | None = None

    @model_validator(mode="after")
    def _staff_has_role(self) -> OfferPlanFacts:
        if self.proposed_via == "staff" and self.actor_role is None:
            raise ValueError("actor_role is required when proposed_via is 'staff'")
        return self


class ApprovePlanFacts(_PlanTerms):
    """approve_plan: the approver's decision on a pending plan (``actor_role`` is the approver)."""

    actor_role: Name


class GrantCreditFacts(_Actor):
    """grant_credit: a discount or a credit/adjustment on one invoice."""

    actor_limit_minor: NonNegInt | None = None
    kind: Literal["discount", "credit"]
    amount_minor: PosInt
    currency: Currency
    invoice_amount_minor: PosInt
    invoice_balance_minor: NonNegInt


class EscalateDisputeFacts(_Actor):
    """escalate_dispute: send a dispute to Legal."""

    dispute_status: DisputeStatus


class ChangeFacts(_Actor):
    """change_cadence / change_segment / change_policy: ``target`` names what changes."""

    target: Name | None = None


class SetSendingModeFacts(_Actor):
    """set_sending_mode: flip Shadow Mode, the maintenance toggle or the cron pause."""

    switch: Literal["shadow_mode", "maintenance", "cron_pause"]
    value: StrictBool
    scope: Literal["org", "segment"]
    segment: Name | None = None

    @model_validator(mode="after")
    def _segment_scope(self) -> SetSendingModeFacts:
        if self.scope == "segment" and self.segment is None:
            raise ValueError("segment is required when scope is 'segment'")
        return self


class EnableAutopilotFacts(_Actor):
    """enable_autopilot: turn Autopilot on for a segment (gated by Data-Ready and the domain)."""

    segment: Name
    data_ready_score: Score
    sending_domain_verified: StrictBool
    # The segment's Shadow Mode record (tools/drafts/shadow_agreement.py): of its last drafts a
    # person
    # decided (at most the policy's window), how many were approved unchanged. Absent while the
    # policy requires a minimum: blocked (fail closed).
    shadow_decided: NonNegInt | None = None
    shadow_unchanged: NonNegInt | None = None

    @model_validator(mode="after")
    def _unchanged_within_decided(self) -> EnableAutopilotFacts:
        if (self.shadow_decided is None) != (self.shadow_unchanged is None):
            raise ValueError("give shadow_decided and shadow_unchanged together")
        if (self.shadow_unchanged or 0) > (self.shadow_decided or 0):
            raise ValueError("shadow_unchanged cannot exceed shadow_decided")
        return self


class ApplyCashFacts(_Facts):
    """apply_cash: put one bank line's money on invoices (Cash App Assist).

    ``actor_role`` is the person applying it; leave it out when plixo would apply the line by
    itself (auto-apply), which only the Controller's thresholds can allow. ``confidence`` is the
    match's score (0-100) and ``match_kind`` what kind of match it is.
    """

    actor_role: Name | None = None
    confidence: Score
    amount_minor: PosInt
    currency: Currency
    match_kind: Literal[
        "exact",
        "one_to_many",
        "short_pay",
        "over_payment",
        "installment",
        "on_account",
        "copilot_split",  # the co-pilot read a remittance: never in auto_apply_kinds
    ]
    # A difference written off with the line (a short-pay's discount taken or bank fee), and the
    # open balance of the invoices the line is put on, which the write-off is measured against.
    write_off_minor: NonNegInt = 0
    write_off_kind: Literal["discount", "bank_fee"] | None = None
    invoices_minor: PosInt | None = None
    # The part of the line kept as credit on account (an over-payment's surplus).
    on_account_minor: NonNegInt = 0

    @model_validator(mode="after")
    def _write_off_explained(self) -> ApplyCashFacts:
        if self.write_off_minor and (self.write_off_kind is None or self.invoices_minor is None):
            raise ValueError("a write_off_minor needs its write_off_kind and invoices_minor")
        if self.on_account_minor > self.amount_minor:
            raise ValueError("on_account_minor cannot exceed amount_minor")
        if self.match_kind == "over_payment" and self.on_account_minor and not self.invoices_minor:
            raise ValueError("an over_payment's on_account_minor needs invoices_minor")
        if not self.write_off_minor and self.write_off_kind is not None:
            raise ValueError("write_off_kind without a write_off_minor")
        if self.invoices_minor is not None and self.write_off_minor > self.invoices_minor:
            raise ValueError("write_off_minor cannot exceed invoices_minor")
        return self


FACT_MODELS: dict[ActionType, type[_Facts]] = {
    ActionType.SEND_DRAFT: SendDraftFacts,
    ActionType.SEND_NUDGE: SendNudgeFacts,
    ActionType.OFFER_PLAN: OfferPlanFacts,
    ActionType.APPROVE_PLAN: ApprovePlanFacts,
    ActionType.GRANT_CREDIT: GrantCreditFacts,
    ActionType.ESCALATE_DISPUTE: EscalateDisputeFacts,
    ActionType.CHANGE_CADENCE: ChangeFacts,
    ActionType.CHANGE_SEGMENT: ChangeFacts,
    ActionType.CHANGE_POLICY: ChangeFacts,
    ActionType.ENABLE_AUTOPILOT: EnableAutopilotFacts,
    ActionType.SET_SENDING_MODE: SetSendingModeFacts,
    ActionType.APPLY_CASH: ApplyCashFacts,
}

_CONTACT = {"timezone": "America/New_York", "opted_out": False, "bounced": False, "consent": True}

# One example per action type: the JSON shape of `plixo policy check` lines and of decide() facts.
EXAMPLES: dict[ActionType, dict[str, Any]] = {
    ActionType.SEND_DRAFT: {
        "now": "2025-10-07T15:00:00Z",
        "channel": "email",
        "segment": "Mid-market",
        "org_shadow_mode": True,
        "segment_shadow_mode": False,
        "autopilot_enabled": False,
        "data_ready_score": 86,
        "sending_domain_verified": True,
        "maintenance": False,
        "cron_paused": False,
        "approved_by_roles": ["Collector"],
        "contact": _CONTACT,
        "invoices": [{"number": "INV-1042", "disputed": False}],
        "promises": [],
        "touches": ["2025-09-29T14:00:00Z"],
        "content": {
            "body": "Hi Dana, invoice INV-1042 for $12,400.00 was due on 2025-09-15. "
            "You can pay here: https://pay.example.com/t/abc",
            "invoice_numbers": ["INV-1042"],
            "amounts": [{"amount_minor": 1240000, "currency": "USD"}],
            "dates": ["2025-09-15"],
            "pay_link": "https://pay.example.com/t/abc",
        },
        "ledger": {
            "invoice_numbers": ["INV-1042", "INV-1043"],
            "amounts": [{"amount_minor": 1240000, "currency": "USD"}],
            "dates": ["2025-09-15"],
            "pay_link": "https://pay.example.com/t/abc",
        },
    },
    ActionType.SEND_NUDGE: {
        "now": "2025-10-07T15:00:00Z",
        "channel": "email",
        "actor_role": "Sales",
        "template_approved": True,
        "maintenance": False,
        "cron_paused": False,
        "contact": _CONTACT,
        "invoices": [{"number": "INV-1042", "disputed": False}],
        "promises": [],
        "touches": ["2025-09-29T14:00:00Z"],
        "scheduled_autopilot_touches": ["2025-10-14T14:00:00Z"],
    },
    ActionType.OFFER_PLAN: {
        "proposed_via": "staff",
        "actor_role": "Collector",
        "total_minor": 850000,
        "currency": "USD",
        "installments": 4,
        "months": 4,
        "discount_minor": 0,
        "non_standard_terms": False,
    },
    ActionType.APPROVE_PLAN: {
        "actor_role": "Controller",
        "total_minor": 6000000,
        "currency": "USD",
        "installments": 12,
        "months": 12,
        "discount_minor": 0,
        "non_standard_terms": True,
        "legal_approved": True,
    },
    ActionType.GRANT_CREDIT: {
        "actor_role": "Collections Manager",
        "kind": "discount",
        "amount_minor": 50000,
        "currency": "USD",
        "invoice_amount_minor": 1240000,
        "invoice_balance_minor": 1240000,
    },
    ActionType.ESCALATE_DISPUTE: {"actor_role": "Collector", "dispute_status": "investigating"},
    ActionType.CHANGE_CADENCE: {"actor_role": "Collections Manager", "target": "Standard net-30"},
    ActionType.CHANGE_SEGMENT: {"actor_role": "Sales", "target": "Enterprise"},
    ActionType.CHANGE_POLICY: {"actor_role": "Controller", "target": "plans.max_installments"},
    ActionType.ENABLE_AUTOPILOT: {
        "actor_role": "Collections Manager",
        "segment": "SMB",
        "data_ready_score": 86,
        "sending_domain_verified": True,
        "shadow_decided": 200,
        "shadow_unchanged": 193,
    },
    ActionType.SET_SENDING_MODE: {
        "actor_role": "Controller",
        "switch": "maintenance",
        "value": True,
        "scope": "org",
    },
    ActionType.APPLY_CASH: {
        "confidence": 98,
        "amount_minor": 1240000,
        "currency": "USD",
        "match_kind": "exact",
    },
}
