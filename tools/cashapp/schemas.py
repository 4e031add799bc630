"""Plain data passed between the parsers, the matcher and the service (no ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any


@dataclass(frozen=True)
class BankLine:
    """One incoming amount as the file states it (credit lines only; minor units).

    ``bank_ref`` is the bank's own identifier of the entry (CAMT AcctSvcrRef, MT940 bank
    reference, BAI2 bank reference) when the file has one; it makes the line's fingerprint.
    """

    line_no: int
    booked_on: date
    amount_minor: int
    currency: str
    reference: str = ""
    payer_name: str | None = None
    payer_iban: str | None = None
    bank_ref: str | None = None


@dataclass(frozen=True)
class LineError:
    """A line (or entry) that could not be read, and what to do about it."""

    line_no: int
    message: str


@dataclass
class ParsedFile:
    """What a parser read: the lines, the refused lines, and the statement's own identity."""

    kind: str
    lines: list[BankLine] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    statement_ref: str | None = None
    account: str | None = None
    skipped_debits: int = 0


@dataclass(frozen=True)
class Allocation:
    """Part of a line's amount put on one invoice (``invoice_id`` None: on account)."""

    invoice_id: int | None
    amount_minor: int
    adjustment_kind: str | None = None  # discount | bank_fee: the difference written off
    adjustment_minor: int = 0


#: A split the co-pilot read from the remittance text (``agent.remittance``): only ever applied
#: when a person accepts it (the policy set cannot list it among ``auto_apply_kinds``).
COPILOT_SPLIT = "copilot_split"


@dataclass
class Suggestion:
    """One way to apply a line: the allocations, its kind, a 0-100 score and the reasons."""

    customer_id: int
    # exact | one_to_many | short_pay | over_payment | installment | on_account | copilot_split
    kind: str
    score: int
    reasons: list[str]
    allocations: list[Allocation]
    difference_minor: int = 0  # short (>0) or over (<0) against the invoices' balances
    difference_kind: str | None = None  # discount | bank_fee | dispute | credit
    installment_id: int | None = None
    proposed_by: str | None = None  # a copilot_split's model and prompt version

    def as_dict(self) -> dict[str, Any]:
        """What :func:`dataclasses.asdict` gives, without its deep copy of every value (a bank
        file stores thousands of suggestions)."""
        out = {name: getattr(self, name) for name in _SUGGESTION_FIELDS}
        out["reasons"] = list(self.reasons)
        out["allocations"] = [
            {name: getattr(a, name) for name in _ALLOCATION_FIELDS} for a in self.allocations
        ]
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Suggestion:
        allocs = [Allocation(**a) for a in data.get("allocations", [])]
        return Suggestion(**{**data, "allocations": allocs})


_SUGGESTION_FIELDS = tuple(f.name for f in fields(Suggestion))
_ALLOCATION_FIELDS = tuple(f.name for f in fields(Allocation))
