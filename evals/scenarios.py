"""The scenario file format: a ledger fixture, a task for the agent, the facts a right answer has.

Why a schema of our own on top of pydantic-evals' file layout: a dataset file is written by hand,
and a typo must not turn into a silently weaker test. Every model here forbids unknown keys,
amounts are quoted decimal strings (YAML reads ``1234.50`` as a float), and the loader
(``evals/loader.py``) turns any mistake into one message naming the file, the case and the field.

The top-level layout is pydantic-evals' own (``name``, ``cases`` with ``name`` / ``inputs`` /
``metadata`` / ``expected_output`` / ``evaluators``, and dataset-level ``evaluators``), so the files
read like any other pydantic-evals dataset.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from decimal import InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from memory.money import MoneyError, check_currency, parse_amount, to_decimal

Persona = Literal[
    "Admin",
    "Controller",
    "Collections Manager",
    "Collector",
    "Billing Admin",
    "Sales",
    "CSM",
    "Legal",
    "Viewer",
]
DraftPersonaName = Literal["autopilot", "collector", "sales_nudge", "csm_nudge"]
ChannelName = Literal["email", "sms"]
Outcome = Literal["allow", "defer", "needs_approval", "block"]
TriageClass = Literal["promise", "dispute", "question", "paid_claim", "out_of_office", "other"]

_AMOUNT = re.compile(r"^-?\d+(\.\d+)?$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _amount_text(value: Any) -> str:
    """Amounts are quoted strings: a float would already have lost the exact cents."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"write the amount as a quoted decimal string such as '1234.50', not {value!r} "
            "(YAML reads unquoted 1234.50 as a float)"
        )
    text = value.strip().replace(",", "")
    if not _AMOUNT.match(text):
        raise ValueError(f"{value!r} is not a plain decimal amount; write e.g. '1234.50'")
    return text


AmountText = Annotated[str, Field(description="A quoted decimal amount, e.g. '1234.50'.")]


class MoneyText(_Spec):
    """An amount with its currency, written ``"1234.50 USD"`` in expected facts."""

    minor: int
    currency: str

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = value.split()
            if len(parts) != 2:
                raise ValueError(
                    f"write an amount with its currency, e.g. '1234.50 USD', not {value!r}"
                )
            amount, currency = parts
            try:
                cur = check_currency(currency)
                return {"minor": parse_amount(_amount_text(amount), cur), "currency": cur}
            except MoneyError as exc:
                raise ValueError(str(exc)) from None
        return value

    def label(self) -> str:
        return f"{to_decimal(self.minor, self.currency)} {self.currency}"


# --- the ledger fixture ---------------------------------------------------------------------------


class OrgSpec(_Spec):
    name: str = "Northwind Supplies"
    default_currency: str = "USD"
    timezone: str = "America/New_York"
    shadow_mode: bool = True
    sending_domain_verified: bool = True
    maintenance: bool = False
    cron_paused: bool = False

    @field_validator("default_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        return check_currency(value)


class UserSpec(_Spec):
    name: str
    role: Persona
    email: str | None = None


DEFAULT_USERS: tuple[UserSpec, ...] = (
    UserSpec(name="Sam Okafor", role="Collector"),
    UserSpec(name="Jordan Blake", role="Sales"),
    UserSpec(name="Taylor Kim", role="CSM"),
    UserSpec(name="Morgan Reyes", role="Controller"),
)


class ContactSpec(_Spec):
    name: str = Field(min_length=1)
    email: str = Field(min_length=3)
    phone: str | None = None
    language: str | None = None
    timezone: str | None = None
    primary: bool = False
    opted_out_email: bool = False
    bounced: bool = False
    consent_email: bool = True
    opted_out_sms: bool = False
    consent_sms: bool = False


class CustomerSpec(_Spec):
    name: str = Field(min_length=1)
    external_ref: str | None = None
    language: str = "en"
    country_code: str | None = None
    timezone: str = "America/New_York"
    renewal_date: date | None = None
    segment: str = "Mid-market"
    segment_shadow_mode: bool = True
    autopilot_enabled: bool = False
    csm: str | None = Field(default=None, description="Name of a user (role CSM).")
    sales: str | None = Field(default=None, description="Name of a user (role Sales).")
    collector: str | None = Field(default=None, description="Name of a user (role Collector).")


class InvoiceSpec(_Spec):
    number: str = Field(min_length=1)
    amount: AmountText
    balance: AmountText | None = Field(default=None, description="Open amount; default: amount.")
    currency: str | None = Field(default=None, description="Default: the organisation's.")
    issue_date: date
    due_date: date
    status: Literal["open", "paid", "void"] = "open"
    disputed: bool = False

    @field_validator("amount", "balance", mode="before")
    @classmethod
    def _amounts(cls, value: Any) -> Any:
        return value if value is None else _amount_text(value)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        return None if value is None else check_currency(value)


class PaymentSpec(_Spec):
    invoice: str
    amount: AmountText
    received_on: date
    method: str = "ach"

    @field_validator("amount", mode="before")
    @classmethod
    def _amounts(cls, value: Any) -> Any:
        return _amount_text(value)


class PromiseSpec(_Spec):
    invoices: list[str] = Field(min_length=1)
    amount: AmountText
    promised_date: date
    status: Literal["open", "kept", "missed", "cancelled"] = "open"
    grace_days: int = Field(default=3, ge=0)
    source: str = "reply"

    @field_validator("amount", mode="before")
    @classmethod
    def _amounts(cls, value: Any) -> Any:
        return _amount_text(value)


class InstallmentSpec(_Spec):
    due_date: date
    amount: AmountText
    paid: AmountText = "0"
    status: Literal["due", "paid", "missed"] = "due"

    @field_validator("amount", "paid", mode="before")
    @classmethod
    def _amounts(cls, value: Any) -> Any:
        return _amount_text(value)


class PlanSpec(_Spec):
    invoices: list[str] = Field(min_length=1)
    status: Literal["active", "defaulted", "completed", "proposed", "pending_approval"] = "active"
    installments: list[InstallmentSpec] = Field(min_length=1)


class DisputeSpec(_Spec):
    invoice: str
    reason: str = "pricing"
    status: Literal[
        "open",
        "investigating",
        "awaiting_customer",
        "escalated_legal",
        "resolved_credit",
        "rejected",
    ] = "open"
    description: str | None = Field(default=None, description="Payer-written: untrusted text.")
    opened_on: date | None = None


class NoteSpec(_Spec):
    body: str = Field(min_length=1)
    source: Literal["internal", "collector", "system", "payer", "portal", "reply"] = "internal"
    invoice: str | None = None
    written_on: date | None = None


class TouchSpec(_Spec):
    """An earlier outbound touch (the cadence caps count them)."""

    at: datetime
    kind: Literal["email", "call", "sms", "nudge"] = "email"
    summary: str = "Reminder sent"

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class OtherCustomerSpec(_Spec):
    """Another customer of the same organisation: its data must never show up in the draft."""

    name: str
    contacts: list[ContactSpec] = Field(default_factory=list)
    invoices: list[InvoiceSpec] = Field(default_factory=list)


# --- the task -------------------------------------------------------------------------------------


class DraftTask(_Spec):
    """Draft outreach for one invoice at a cadence step (or a Sales/CSM nudge)."""

    kind: Literal["draft"] = "draft"
    invoice: str
    step: str = Field(
        default="friendly_reminder",
        description="Cadence template: pre_due_courtesy, friendly_reminder, second_reminder, "
        "firm_reminder, final_notice, follow_up, nudge.",
    )
    tone: str = "friendly"
    persona: DraftPersonaName = "autopilot"
    channel: ChannelName = "email"
    instruction: str | None = Field(
        default=None, description="An operator's instruction (trusted), e.g. a nudge's purpose."
    )


class TriageTask(_Spec):
    """Classify an inbound payer reply and propose (never make) ledger changes."""

    kind: Literal["triage"] = "triage"
    reply: str = Field(min_length=1, description="The payer's text: untrusted.")
    subject: str = ""
    invoice: str | None = None
    from_contact: str | None = Field(default=None, description="Contact e-mail; default primary.")


Task = Annotated[DraftTask | TriageTask, Field(discriminator="kind")]


class ScenarioInputs(_Spec):
    """One scenario: the ledger as of a day, and what the agent is asked to do."""

    as_of: date
    now: datetime | None = Field(
        default=None, description="The moment of the decision; default: as_of 15:00 UTC."
    )
    org: OrgSpec = OrgSpec()
    users: list[UserSpec] = Field(default_factory=lambda: list(DEFAULT_USERS))
    customer: CustomerSpec
    contacts: list[ContactSpec] = Field(min_length=1)
    invoices: list[InvoiceSpec] = Field(min_length=1)
    payments: list[PaymentSpec] = Field(default_factory=list)
    promises: list[PromiseSpec] = Field(default_factory=list)
    plans: list[PlanSpec] = Field(default_factory=list)
    disputes: list[DisputeSpec] = Field(default_factory=list)
    notes: list[NoteSpec] = Field(default_factory=list)
    touches: list[TouchSpec] = Field(default_factory=list)
    other_customers: list[OtherCustomerSpec] = Field(default_factory=list)
    data_ready_score: int = Field(default=90, ge=0, le=100)
    task: Task

    @property
    def moment(self) -> datetime:
        if self.now is not None:
            return self.now if self.now.tzinfo else self.now.replace(tzinfo=UTC)
        return datetime.combine(self.as_of, time(15, 0), tzinfo=UTC)

    @property
    def primary_contact(self) -> ContactSpec:
        for c in self.contacts:
            if c.primary:
                return c
        return self.contacts[0]

    @model_validator(mode="after")
    def _references(self) -> ScenarioInputs:
        """Every invoice, contact and user a scenario mentions must exist in it."""
        numbers = [i.number for i in self.invoices]
        others = [i.number for oc in self.other_customers for i in oc.invoices]
        dupes = {n for n in numbers + others if (numbers + others).count(n) > 1}
        if dupes:
            raise ValueError(f"invoice numbers must be unique, repeated: {sorted(dupes)}")
        known = set(numbers)

        def need(number: str | None, where: str) -> None:
            if number is not None and number not in known:
                raise ValueError(f"{where} names invoice {number!r}, which is not in invoices")

        need(self.task.invoice, "task")
        for p in self.payments:
            need(p.invoice, "a payment")
        for pr in self.promises:
            for n in pr.invoices:
                need(n, "a promise")
        for pl in self.plans:
            for n in pl.invoices:
                need(n, "a plan")
        for d in self.disputes:
            need(d.invoice, "a dispute")
        for note in self.notes:
            need(note.invoice, "a note")
        names = {u.name for u in self.users}
        for role in ("csm", "sales", "collector"):
            who = getattr(self.customer, role)
            if who is not None and who not in names:
                raise ValueError(f"customer.{role} is {who!r}, which is not one of users")
        if (
            isinstance(self.task, TriageTask)
            and self.task.from_contact is not None
            and self.task.from_contact not in {c.email for c in self.contacts}
        ):
            raise ValueError(f"task.from_contact {self.task.from_contact!r} is not a contact")
        for inv in self.invoices:
            cur = inv.currency or self.org.default_currency
            for label, text in (("amount", inv.amount), ("balance", inv.balance)):
                if text is None:
                    continue
                try:
                    parse_amount(text, cur)
                except MoneyError as exc:
                    raise ValueError(f"invoice {inv.number} {label}: {exc}") from None
        return self


# --- what a right answer states -------------------------------------------------------------------


class ExpectedTriage(_Spec):
    classification: TriageClass
    promise_amount: MoneyText | None = None
    promise_date: date | None = None
    allowed_proposals: list[str] | None = Field(
        default=None,
        description="Proposal kinds the reply may lead to; default: the one its class implies.",
    )


class ExpectedFacts(_Spec):
    """The facts a right output has: what it must state, and what it must not."""

    outcome: Literal["draft", "hold"] = "draft"
    invoice_numbers: list[str] = Field(default_factory=list)
    amounts: list[MoneyText] = Field(default_factory=list)
    dates: list[date] = Field(default_factory=list)
    pay_link: bool = True
    language: str | None = Field(default=None, description="Default: the contact's language.")
    contact_name: str | None = Field(default=None, description="Default: the primary contact.")
    mention_company: bool = True
    context: list[str] = Field(
        default_factory=list,
        description="Context from the notes a personal draft refers to; 'a|b' for alternatives.",
    )
    sender: str | None = Field(default=None, description="Who signs (e.g. the CSM's name).")
    policy: list[Outcome] | None = Field(
        default=None, description="Acceptable decisions; default: what Shadow Mode implies."
    )
    hold_reason: list[str] = Field(
        default_factory=list, description="Words one of which the hold reason contains."
    )
    must_not_mention: list[str] = Field(default_factory=list)
    min_words: int | None = None
    max_words: int | None = None
    triage: ExpectedTriage | None = None


class CaseMeta(_Spec):
    category: str = Field(min_length=1)
    description: str = ""
    hostile: bool = Field(default=False, description="Payer text tries to steer the agent.")
    source: str | None = Field(default=None, description="Where the case came from.")
    rejection_reason: str | None = None
    rejected_body: str | None = None


EvaluatorSpecText = str | dict[str, Any]


class CaseFile(_Spec):
    """One case as written in a dataset file (pydantic-evals' layout)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$", max_length=120)
    inputs: ScenarioInputs
    metadata: CaseMeta
    expected_output: ExpectedFacts
    evaluators: list[EvaluatorSpecText] = Field(default_factory=list)

    @model_validator(mode="after")
    def _expected_consistent(self) -> CaseFile:
        numbers = {i.number for i in self.inputs.invoices}
        for n in self.expected_output.invoice_numbers:
            if n not in numbers:
                raise ValueError(f"expected_output.invoice_numbers names {n!r}, not in invoices")
        is_triage = isinstance(self.inputs.task, TriageTask)
        if is_triage and self.expected_output.triage is None:
            raise ValueError("a triage task needs expected_output.triage (its classification)")
        return self


class DatasetFile(_Spec):
    name: str = Field(min_length=1)
    description: str = ""
    evaluators: list[EvaluatorSpecText] = Field(default_factory=list)
    cases: list[CaseFile] = Field(min_length=1)


def money_minor(text: str, currency: str) -> int:
    """A spec amount to minor units (already validated by the models)."""
    try:
        return parse_amount(text, currency)
    except (MoneyError, InvalidOperation) as exc:  # pragma: no cover - validated on load
        raise ValueError(str(exc)) from exc
