"""The co-pilot reads a messy remittance and proposes a split: a proposal like any other.

Why a model here: the matcher (``tools.cashapp.matching``) scores evidence it can parse (invoice
numbers, exact sums, payers); a remittance e-mail, PDF advice or long bank reference that lists
invoices with partial amounts, credit notes and deductions in free text defeats it. For a line
the matcher left without a confident suggestion, this agent reads the text and proposes how the
money divides: allocations (invoice number, amount as a decimal string, reason) and an
unexplained remainder kept on account with its reason.

What it may do is narrow, and checked:

- its tools (``RunContext[RemittanceDeps]``) read only the line's organisation's invoices;
- its ``@output_validator`` sends the answer back (``ModelRetry``) when an invoice does not
  exist, is not open, is another currency's or another customer's than the rest, an amount is
  above what is open, or the parts and the remainder do not add up to the line's amount exactly;
  a model that keeps failing makes no proposal;
- the remittance reaches the model fenced as data (``agent.safety``); text that looks like an
  injection is flagged on the proposal and lowers its score;
- the result is stored as a ``copilot_split`` suggestion on the line (``tools.cashapp.copilot``):
  the policy set cannot let plixo apply it alone, and applying refuses it for anyone but a
  person, so it changes nothing until a Collector accepts it (through the same apply path as any
  split, audited) or ignores it.

What the model cannot read is no proposal, with the reason; it is never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic_ai import Agent, ModelRetry, RunContext, ToolOutput
from pydantic_ai.models import Model
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agent.drafter import hold_reason_for, run_sync, usage_limits
from agent.models import ModelConfigError, build_model, model_name_of
from agent.safety import fence, injection_signals
from agent.schemas import SPLIT_TOOL, RemittanceCase, RemittanceSplit
from memory import clock
from memory.config import Settings
from memory.models import CashLine, CashLineStatus, Customer, Invoice, InvoiceStatus, User
from memory.money import MoneyError, format_money, parse_amount, to_decimal
from prompts.registry import load
from tools.cashapp.applying import get_line
from tools.cashapp.copilot import COPILOT_ACTOR, store_proposal
from tools.cashapp.matching import digit_key, normalise
from tools.cashapp.schemas import COPILOT_SPLIT, Allocation, Suggestion
from tools.ledger.policy_overrides import policy_set_for

PROMPT = "remittance"
MAX_TEXT_CHARS = 4_000
MAX_LOOKUPS = 30
BASE_SCORE = 50
#: An invoice-number-like token (letters, optional separator, at least three digits) and an
#: amount with decimals: both present is what makes a line's text worth reading.
_INVOICE_LIKE = re.compile(r"(?<![\w.,])[A-Za-z]{0,8}[-/#. ]?\d{3,}[\w-]*")
_AMOUNT_LIKE = re.compile(r"(?<![\w.,])\d{1,3}(?:[,.' ]?\d{3})*[.,]\d{2}(?![\d])")


@dataclass
class RemittanceDeps:
    """What one reading may see: the line and its organisation's invoices, nothing else."""

    session: Session
    org_id: int
    line_id: int
    amount_minor: int
    currency: str
    customer_ids: list[int] = field(default_factory=list)  # payers the matcher recognised
    checks: list[list[str]] = field(default_factory=list)  # the validator's findings per answer


REMITTANCE: Agent[RemittanceDeps, RemittanceSplit] = Agent(
    None,
    deps_type=RemittanceDeps,
    output_type=ToolOutput(
        RemittanceSplit,
        name=SPLIT_TOOL,
        description="Submit the split of the bank line (allocations and the remainder).",
    ),
    retries=1,
    name="plixo-remittance",
)


def _invoice_out(inv: Invoice, customers: dict[int, str]) -> dict[str, Any]:
    return {
        "number": inv.number,
        "status": inv.status.value if inv.balance_minor > 0 else "paid",
        "customer": customers.get(inv.customer_id, ""),
        "currency": inv.currency,
        "balance": str(to_decimal(inv.balance_minor, inv.currency)),
        "due_date": inv.due_date.isoformat(),
    }


def _customer_names(session: Session, org_id: int, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(
        select(Customer.id, Customer.name).where(Customer.org_id == org_id, Customer.id.in_(ids))
    )
    return {cid: name for cid, name in rows}


def resolve(session: Session, org_id: int, token: str) -> list[Invoice]:
    """The organisation's invoices ``token`` names: as written (any case), else by its digits
    without prefix and leading zeros (``4217`` for ``INV-0004217``); several when ambiguous."""
    token = token.strip()[:64]
    if not token:
        return []
    as_written = session.scalar(  # the (org_id, number) unique index: no scan
        select(Invoice).where(Invoice.org_id == org_id, Invoice.number == token)
    )
    if as_written is not None:
        return [as_written]
    exact = session.scalars(
        select(Invoice).where(Invoice.org_id == org_id, func.upper(Invoice.number) == token.upper())
    ).all()
    if exact:
        return list(exact)
    key = digit_key(token)
    if len(key) < 3:
        return []
    candidates = session.scalars(
        select(Invoice).where(Invoice.org_id == org_id, Invoice.number.like(f"%{key}%")).limit(50)
    ).all()
    same = [i for i in candidates if digit_key(i.number) == key]
    letters = re.sub(r"[^A-Z]", "", normalise(token))
    if letters and len(same) > 1:  # "INV 42" prefers INV-0042 to RE-42
        prefixed = [i for i in same if re.sub(r"[^A-Z]", "", normalise(i.number)) == letters]
        same = prefixed or same
    return same


@REMITTANCE.tool
async def find_invoices(
    ctx: RunContext[RemittanceDeps], numbers: list[str]
) -> list[dict[str, Any]]:
    """Look up invoice numbers as the remittance writes them (at most 30): for each, the
    organisation's invoice it names with its status, customer, currency and open balance, or
    ``not_found`` / ``ambiguous``. Use only the numbers this returns."""
    d = ctx.deps
    out: list[dict[str, Any]] = []
    found: list[tuple[str, list[Invoice]]] = [
        (n, resolve(d.session, d.org_id, n)) for n in dict.fromkeys(numbers[:MAX_LOOKUPS])
    ]
    names = _customer_names(d.session, d.org_id, {i.customer_id for _, invs in found for i in invs})
    for asked, invs in found:
        if not invs:
            out.append({"asked": asked, "status": "not_found"})
        elif len(invs) > 1:
            out.append({"asked": asked, "status": "ambiguous", "numbers": [i.number for i in invs]})
        else:
            out.append({"asked": asked, **_invoice_out(invs[0], names)})
    return out


@REMITTANCE.tool
async def payer_open_invoices(ctx: RunContext[RemittanceDeps]) -> list[dict[str, Any]]:
    """The open invoices, in the line's currency, of the customers the payer was recognised as
    (by IBAN or name; empty when none was), oldest first, at most 50."""
    d = ctx.deps
    if not d.customer_ids:
        return []
    invs = d.session.scalars(
        select(Invoice)
        .where(
            Invoice.org_id == d.org_id,
            Invoice.customer_id.in_(d.customer_ids),
            Invoice.currency == d.currency,
            Invoice.status == InvoiceStatus.OPEN,
            Invoice.balance_minor > 0,
        )
        .order_by(Invoice.due_date, Invoice.id)
        .limit(50)
    ).all()
    names = _customer_names(d.session, d.org_id, {i.customer_id for i in invs})
    return [_invoice_out(i, names) for i in invs]


@dataclass
class CheckedSplit:
    """A split the ledger backs: the invoices with their minor amounts, and the remainder."""

    customer_id: int
    parts: list[tuple[Invoice, int, str]]
    remainder_minor: int


def check_split(
    session: Session, org_id: int, amount_minor: int, currency: str, out: RemittanceSplit
) -> tuple[CheckedSplit | None, list[str]]:
    """Every problem with ``out`` against the ledger (empty: it holds), and the checked split."""
    problems: list[str] = []
    parts: list[tuple[Invoice, int, str]] = []
    seen: set[int] = set()
    for a in out.allocations:
        inv = session.scalar(
            select(Invoice).where(Invoice.org_id == org_id, Invoice.number == a.invoice_number)
        ) or session.scalar(
            select(Invoice).where(
                Invoice.org_id == org_id, func.upper(Invoice.number) == a.invoice_number.upper()
            )
        )
        if inv is None:
            problems.append(
                f"{a.invoice_number} is not an invoice of this organisation; use only numbers "
                "find_invoices returns, exactly as it writes them."
            )
            continue
        if inv.status != InvoiceStatus.OPEN or inv.balance_minor <= 0:
            problems.append(f"{inv.number} is not open (nothing is left to pay on it).")
            continue
        if inv.currency != currency:
            problems.append(f"{inv.number} is in {inv.currency}; the payment is in {currency}.")
            continue
        if inv.id in seen:
            problems.append(f"{inv.number} appears twice; give one allocation per invoice.")
            continue
        seen.add(inv.id)
        try:
            minor = parse_amount(a.amount, currency)
        except MoneyError as exc:
            problems.append(f"{inv.number}: {exc}.")
            continue
        if minor <= 0:
            problems.append(f"{inv.number}: an allocation is a positive amount.")
            continue
        if minor > inv.balance_minor:
            problems.append(
                f"{inv.number} has {format_money(inv.balance_minor, currency)} open, less than "
                f"{format_money(minor, currency)}; put the rest in the remainder."
            )
            continue
        parts.append((inv, minor, a.reason))
    customers = {inv.customer_id for inv, _, _ in parts}
    if len(customers) > 1:
        problems.append("The invoices belong to different customers; one payment pays one.")
    try:
        rest = parse_amount(out.remainder, currency)
    except MoneyError as exc:
        problems.append(f"remainder: {exc}.")
        rest = 0
    if rest and not out.remainder_reason.strip():
        problems.append("Say why the remainder is not explained (remainder_reason).")
    total = sum(m for _, m, _ in parts) + rest
    if not problems and total != amount_minor:
        problems.append(
            f"The allocations and the remainder add up to {format_money(total, currency)}, not "
            f"the payment's {format_money(amount_minor, currency)}; they must match exactly."
        )
    if problems or not parts:
        return None, problems
    return CheckedSplit(customers.pop(), parts, rest), problems


@REMITTANCE.output_validator
def _ledger_backed(ctx: RunContext[RemittanceDeps], out: RemittanceSplit) -> RemittanceSplit:
    """No allocation: nothing read (accepted as no proposal). Otherwise the ledger must back
    every part; the problems go back to the model (``ModelRetry``)."""
    if not out.allocations:
        return out
    d = ctx.deps
    _, problems = check_split(d.session, d.org_id, d.amount_minor, d.currency, out)
    d.checks.append(problems)
    if problems:
        raise ModelRetry(
            "The split does not hold against the ledger: "
            + " ".join(problems)
            + f" Fix it and call {SPLIT_TOOL} again (no allocation if the text cannot be read)."
        )
    return out


# --- the service ------------------------------------------------------------------------------


@dataclass
class SplitOutcome:
    """What asking the co-pilot about one line gave: a stored proposal, or why there is none."""

    line_id: int
    proposed: bool
    reason: str
    suggestion: dict[str, Any] | None = None
    injection_suspected: bool = False
    model_name: str = ""
    prompt_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "line_id": self.line_id,
            "proposed": self.proposed,
            "reason": self.reason,
            "suggestion": self.suggestion,
            "injection_suspected": self.injection_suspected,
            "model_name": self.model_name,
            "prompt_version": self.prompt_version,
        }


def has_remittance_text(text: str | None) -> bool:
    """Text that names invoices and amounts (a remittance's lines), not a bare reference."""
    if not text:
        return False
    return bool(_INVOICE_LIKE.search(text)) and bool(_AMOUNT_LIKE.search(text))


def _timeout(settings: Settings) -> float:
    return float(settings.model_timeout_s) * (max(0, int(settings.model_retries)) + 1) * 2 + 5


def propose_split(
    session: Session,
    org_id: int,
    line_id: int,
    settings: Settings,
    *,
    model: Model | None = None,
    actor: User | str = COPILOT_ACTOR,
    now: datetime | None = None,
) -> SplitOutcome:
    """Ask the co-pilot to read the line's remittance text; store its split as a proposal.

    Writes only the ``copilot_split`` suggestion on the line (flushed; the caller commits). A
    line that is not waiting, has no remittance text, or that the model cannot read or splits
    in a way the ledger does not back gets no proposal, and the outcome says why.
    """
    line = get_line(session, org_id, line_id)
    if line.status != CashLineStatus.EXCEPTION:
        return SplitOutcome(line_id, False, "Only a line waiting in the queue is read.")
    text = (line.reference or "").strip()
    if not text:
        return SplitOutcome(line_id, False, "The line carries no remittance text to read.")
    prompt_v = load(PROMPT)
    signals = injection_signals(text)
    try:
        model = model or build_model(settings)
    except ModelConfigError as exc:
        return SplitOutcome(
            line_id, False, f"No proposal: {exc}", injection_suspected=bool(signals)
        )
    base: dict[str, Any] = {
        "injection_suspected": bool(signals),
        "model_name": model_name_of(model),
        "prompt_version": prompt_v.version_id,
    }
    customers = sorted(
        {int(s["customer_id"]) for s in line.suggestions or [] if s.get("kind") != COPILOT_SPLIT}
    )
    deps = RemittanceDeps(
        session, org_id, line.id, line.amount_minor, line.currency, customer_ids=customers
    )
    case = RemittanceCase(
        line_id=line.id,
        booked_on=line.booked_on,
        amount=str(to_decimal(line.amount_minor, line.currency)),
        currency=line.currency,
        payer_name=line.payer_name,
    )
    prompt = (
        f"<case_file>\n{case.model_dump_json()}\n</case_file>\n\n"
        f"{fence(text[:MAX_TEXT_CHARS], source='remittance')}\n\n"
        f"Read this remittance and submit the split with {SPLIT_TOOL}."
    )
    try:
        result = run_sync(
            REMITTANCE.run(
                prompt,
                deps=deps,
                model=model,
                instructions=prompt_v.text,
                usage_limits=usage_limits(settings),
                timeout=_timeout(settings),
            )
        )
    except Exception as exc:
        return SplitOutcome(line_id, False, f"No proposal: {hold_reason_for(exc)}", **base)
    out = result.output
    if not out.allocations:
        return SplitOutcome(line_id, False, f"No proposal: {out.summary}", **base)
    checked, problems = check_split(session, org_id, line.amount_minor, line.currency, out)
    if checked is None:  # the validator passed it; the ledger moved since
        return SplitOutcome(line_id, False, "No proposal: " + " ".join(problems), **base)
    suggestion = _suggestion(
        line, checked, out, signals, f"{base['model_name']}, {prompt_v.version_id}"
    )
    store_proposal(session, org_id, line.id, suggestion, actor=actor, now=now or clock.now())
    return SplitOutcome(line_id, True, out.summary, suggestion=suggestion.as_dict(), **base)


def _suggestion(
    line: CashLine, checked: CheckedSplit, out: RemittanceSplit, signals: list[str], by: str
) -> Suggestion:
    cur = line.currency
    reasons = [f"the co-pilot read the remittance text: {out.summary}"]
    reasons += [f"{inv.number}: {format_money(m, cur)} ({why})" for inv, m, why in checked.parts]
    allocations = [Allocation(inv.id, m) for inv, m, _ in checked.parts]
    score = BASE_SCORE + (10 if not checked.remainder_minor else 0)
    if checked.remainder_minor:
        allocations.append(Allocation(None, checked.remainder_minor))
        reasons.append(
            f"{format_money(checked.remainder_minor, cur)} on account: {out.remainder_reason}"
        )
    if signals:
        score -= 25
        reasons.append(
            "the remittance contains text addressed to a model (" + ", ".join(signals) + "): "
            "read it yourself before accepting"
        )
    return Suggestion(
        checked.customer_id,
        COPILOT_SPLIT,
        max(0, score),
        reasons,
        allocations,
        difference_minor=-checked.remainder_minor,
        difference_kind="credit" if checked.remainder_minor else None,
        proposed_by=f"co-pilot ({by})",
    )


def propose_for_import(
    session: Session,
    org_id: int,
    import_id: int,
    settings: Settings,
    *,
    model: Model | None = None,
    now: datetime | None = None,
) -> list[SplitOutcome]:
    """After an import: read the lines it left waiting without a confident suggestion whose
    reference is remittance text, at most ``settings.cash_copilot_per_import`` of them."""
    limit = int(settings.cash_copilot_per_import)
    if limit <= 0:
        return []
    confident = policy_set_for(session, org_id).cash_app.min_confidence
    rows = session.scalars(
        select(CashLine)
        .where(
            CashLine.org_id == org_id,
            CashLine.import_id == import_id,
            CashLine.status == CashLineStatus.EXCEPTION,
            CashLine.best_score < confident,
        )
        .order_by(CashLine.id)
    )
    picked = [r.id for r in rows if has_remittance_text(r.reference)][:limit]
    if not picked:
        return []
    try:
        model = model or build_model(settings)
    except ModelConfigError as exc:
        return [SplitOutcome(i, False, f"No proposal: {exc}") for i in picked]
    return [propose_split(session, org_id, i, settings, model=model, now=now) for i in picked]
