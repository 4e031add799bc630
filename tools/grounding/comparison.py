"""Comparing what a text states with the ledger's truth: each statement the ledger does not back
is a ``Mismatch``, and a text's verdict is a ``GroundingReport``.

Why apart: the verdict is pure (no database, no model) and has three readers: it is stored on
the draft, sent back to the model once as the error to fix (``GroundingReport.error_text``), and
handed to the guardrails as facts (``tools.grounding.guardrail_facts``).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from memory.money import MoneyError, exponent
from tools.grounding.extraction import (
    StatedAmount,
    StatedFacts,
    extract_facts,
    invoice_shapes,
    normalize_link,
)
from tools.grounding.truth import LedgerTruth
from tools.kit.formatting import format_amount, format_day

MismatchKind = Literal["amount", "date", "invoice_number", "link", "ambiguous", "declared"]


class Mismatch(BaseModel):
    kind: MismatchKind
    stated: str
    message: str


class DeclaredFacts(BaseModel):
    """What the drafter says its text states (its typed output); compared with the text itself."""

    invoice_numbers: list[str] = Field(default_factory=list)
    amounts: list[tuple[int, str]] = Field(default_factory=list, description="(minor, currency)")
    dates: list[date] = Field(default_factory=list)
    pay_link: str | None = None


class GroundingReport(BaseModel):
    """The verdict on one text: what it states, and every statement the ledger does not back."""

    ok: bool
    stated: StatedFacts
    mismatches: list[Mismatch] = Field(default_factory=list)
    has_invoice_reference: bool = False
    has_pay_link: bool = False

    def error_text(self) -> str:
        """The mismatches as one message for the model to fix (and for the hold/block reason)."""
        return "; ".join(m.message for m in self.mismatches)

    def as_dict(self) -> dict[str, object]:
        return self.model_dump(mode="json")


def _minor_of(value: Decimal, currency: str) -> int | None:
    try:
        places = exponent(currency)
    except MoneyError:
        return None
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        return None
    return int(scaled)


def stated_minor(amount: StatedAmount, truth: LedgerTruth) -> tuple[int, str] | None:
    """The (minor, currency) the ledger backs for a stated amount, or None."""
    value = Decimal(amount.value)
    candidates = amount.currencies or truth.currencies
    for cur in candidates:
        allowed = truth.amounts.get(cur)
        if not allowed:  # e.g. "$": five currencies, usually one in the ledger
            continue
        minor = _minor_of(value, cur)
        if minor is not None and minor in allowed:
            return minor, cur
    return None


def check(
    stated: StatedFacts, truth: LedgerTruth, declared: DeclaredFacts | None = None
) -> GroundingReport:
    """Compare what a text states with the ledger (and with what the drafter declared)."""
    truth = truth.with_named_totals(stated.invoice_numbers)
    mism: list[Mismatch] = []
    loc = truth.locale
    for amt in stated.amounts:
        if stated_minor(amt, truth) is None:
            cur_note = "" if amt.currencies else " (and it has no currency)"
            mism.append(
                Mismatch(
                    kind="amount",
                    stated=amt.text,
                    message=(
                        f"the amount {amt.text!r}{cur_note} is not in the ledger for this "
                        f"customer; amounts you may state: {truth.describe_amounts()}"
                    ),
                )
            )
    allowed_dates = set(truth.dates)
    for d in stated.dates:
        if d not in allowed_dates:
            mism.append(
                Mismatch(
                    kind="date",
                    stated=d.isoformat(),
                    message=(
                        f"the date {format_day(d, loc)} is not a due, promise, installment or "
                        "payment date in the ledger"
                    ),
                )
            )
    for text in stated.ambiguous:
        mism.append(
            Mismatch(
                kind="ambiguous",
                stated=text,
                message=f"{text!r} is an ambiguous date: write the month's name",
            )
        )
    known = set(truth.invoice_numbers)
    known_lower = {n.lower(): n for n in known}
    for num in stated.invoice_numbers:
        if num not in known and num.lower() not in known_lower:
            mism.append(
                Mismatch(
                    kind="invoice_number",
                    stated=num,
                    message=f"invoice {num} is not an invoice of this customer",
                )
            )
    allowed_links = set(truth.links)
    for link in stated.links:
        if link not in allowed_links:
            mism.append(
                Mismatch(
                    kind="link",
                    stated=link,
                    message=f"the link {link} is not this customer's pay link",
                )
            )
    if declared is not None:
        mism.extend(_declared_mismatches(stated, truth, declared))
    return GroundingReport(
        ok=not mism,
        stated=stated,
        mismatches=mism,
        has_invoice_reference=any(
            n in known or n.lower() in known_lower for n in stated.invoice_numbers
        ),
        has_pay_link=any(link in allowed_links for link in stated.links),
    )


def _declared_mismatches(
    stated: StatedFacts, truth: LedgerTruth, declared: DeclaredFacts
) -> list[Mismatch]:
    out: list[Mismatch] = []
    in_text = {n.lower() for n in stated.invoice_numbers}
    for num in declared.invoice_numbers:
        if num.lower() not in in_text:
            out.append(
                Mismatch(
                    kind="declared",
                    stated=num,
                    message=f"you declared invoice {num} but the text does not state it",
                )
            )
    declared_nums = {n.lower() for n in declared.invoice_numbers}
    for num in stated.invoice_numbers:
        if num.lower() not in declared_nums:
            out.append(
                Mismatch(
                    kind="declared",
                    stated=num,
                    message=f"the text states invoice {num} but you did not declare it",
                )
            )
    text_amounts = {m for a in stated.amounts if (m := stated_minor(a, truth)) is not None}
    for minor, cur in declared.amounts:
        if (minor, cur) not in text_amounts:
            out.append(
                Mismatch(
                    kind="declared",
                    stated=f"{minor} {cur}",
                    message=(
                        f"you declared {format_amount(minor, cur, truth.locale)} but the text "
                        "does not state it"
                    ),
                )
            )
    text_dates = set(stated.dates)
    for d in declared.dates:
        if d not in text_dates:
            out.append(
                Mismatch(
                    kind="declared",
                    stated=d.isoformat(),
                    message=f"you declared the date {d.isoformat()} but the text does not state it",
                )
            )
    if declared.pay_link and normalize_link(declared.pay_link) not in set(stated.links):
        out.append(
            Mismatch(
                kind="declared",
                stated=declared.pay_link,
                message="you declared a pay link but the text does not contain it",
            )
        )
    return out


def ground_text(
    text: str,
    truth: LedgerTruth,
    *,
    language: str = "en",
    as_of: date | None = None,
    declared: DeclaredFacts | None = None,
) -> GroundingReport:
    """Extract the facts of ``text`` and check them against ``truth`` in one call."""
    stated = extract_facts(
        text,
        language=language,
        as_of=as_of,
        known_invoice_numbers=truth.invoice_numbers,
        shapes=invoice_shapes(truth.invoice_numbers),
        locale=truth.locale if truth.locale.split("_")[0] == language else None,
    )
    return check(stated, truth, declared)
