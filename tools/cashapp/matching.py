"""Candidate invoices for each incoming amount, ranked by a score with the reasons kept.

Why a score and not a rule: a bank line is evidence, not an instruction. The evidence adds up:

* **the reference** names invoices: exactly (65), after dropping prefixes and leading zeros (60:
  ``4217`` or ``RE 0004217`` for ``INV-0004217``), or one typo away (55: a digit swapped,
  dropped, added or changed; ``rapidfuzz``'s optimal string alignment distance checks every
  candidate; only for a token that names no invoice as written);
* **the amount** equals the invoices' open balance (+30), is short within the policy's tolerance
  (+15, the difference explained as a discount, a bank fee or the open dispute) or over it (+5,
  the rest kept as credit);
* **the payer**: an IBAN (checked by ``schwifty``) known for the customer (+10), or a name equal
  to the customer's or a contact's once case, punctuation and legal forms are set aside (+10) or
  close to it (+5, ``rapidfuzz`` token-sort ratio of 80 or more); an IBAN known for *another*
  customer costs 50, a name that is another customer's 10.

Without a usable reference the payer alone can carry a match: one open invoice (or one plan
installment, or one open promise) of that customer for exactly the amount (55), several open
invoices summing to it (45, one-to-many), or nothing but the customer (on account, 30). When the
two best suggestions point to different invoices and sit within 10 points, both lose 15: a close
call is for a person. Scores are capped at 100; the policy engine decides what is enough.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from itertools import combinations

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA
from sqlalchemy import select
from sqlalchemy.orm import Session

from memory.models import (
    Contact,
    Customer,
    CustomerBankAccount,
    InstallmentStatus,
    Invoice,
    InvoiceStatus,
    PaymentPlan,
    PlanInstallment,
    PlanStatus,
    PromiseStatus,
    PromiseToPay,
)
from memory.money import format_money
from policies.policy_set import CashAppPolicy
from tools.cashapp.schemas import Allocation, BankLine, Suggestion

TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-/_.#]*")
SPLIT = re.compile(r"[/.#]+")
MAX_SUBSET_INVOICES = 14
MAX_SUBSET_SIZE = 4
CLOSE_CALL = 10
CLOSE_REASON = "another candidate is close: a person should choose"


@dataclass(frozen=True)
class OpenInvoice:
    id: int
    number: str
    customer_id: int
    currency: str
    balance_minor: int
    amount_minor: int
    due_date: date
    disputed: bool


@dataclass
class Found:
    """Invoices the reference names, each with how it was recognised."""

    how: dict[int, tuple[int, str]] = field(default_factory=dict)  # invoice id -> (points, why)

    def add(self, inv: OpenInvoice, points: int, why: str) -> None:
        if inv.id not in self.how or self.how[inv.id][0] < points:
            self.how[inv.id] = (points, why)


_NOT_ALNUM = re.compile(r"[^A-Z0-9]")
_NOT_DIGIT = re.compile(r"\D")
DIGITS = "0123456789"


def normalise(text: str) -> str:
    return _NOT_ALNUM.sub("", text.upper())


def digit_key(text: str) -> str:
    """The invoice number's digits without leading zeros: ``INV-0042`` and ``42`` share ``42``."""
    return _NOT_DIGIT.sub("", text).lstrip("0")


def normal_iban(raw: str | None) -> str | None:
    """The IBAN in electronic form, or None when it is not a valid IBAN (checksum, length)."""
    if not raw:
        return None
    from schwifty import IBAN
    from schwifty.exceptions import SchwiftyException

    try:
        return str(IBAN(raw).compact)
    except (SchwiftyException, ValueError):
        return None


class Matcher:
    """The organisation's open receivables, indexed once, matched against many lines."""

    def __init__(self, session: Session, org_id: int, policy: CashAppPolicy) -> None:
        self.policy = policy
        self.invoices: dict[int, OpenInvoice] = {}
        self.by_number: dict[str, list[OpenInvoice]] = defaultdict(list)
        self.by_digits: dict[str, list[OpenInvoice]] = defaultdict(list)
        self.by_customer: dict[tuple[int, str], list[OpenInvoice]] = defaultdict(list)
        self._load_invoices(session, org_id)
        self._load_parties(session, org_id)
        self._load_commitments(session, org_id)
        self._name_cache: dict[str, tuple[int, int] | None] = {}

    # --- loading ------------------------------------------------------------------------------

    def _load_invoices(self, session: Session, org_id: int) -> None:
        rows = session.execute(
            select(
                Invoice.id,
                Invoice.number,
                Invoice.customer_id,
                Invoice.currency,
                Invoice.balance_minor,
                Invoice.amount_minor,
                Invoice.due_date,
                Invoice.disputed,
            ).where(
                Invoice.org_id == org_id,
                Invoice.status == InvoiceStatus.OPEN,
                Invoice.balance_minor > 0,
            )
        ).all()
        for row in rows:
            inv = OpenInvoice(*row)
            self.add_invoice(inv)
        for invs in self.by_customer.values():
            invs.sort(key=lambda i: (i.due_date, i.id))

    def add_invoice(self, inv: OpenInvoice) -> None:
        self.invoices[inv.id] = inv
        self.by_number[normalise(inv.number)].append(inv)
        key = digit_key(inv.number)
        if len(key) >= 3:
            self.by_digits[key].append(inv)
        rows = self.by_customer[(inv.customer_id, inv.currency)]
        rows.append(inv)
        if len(rows) > 1 and (rows[-2].due_date, rows[-2].id) > (inv.due_date, inv.id):
            rows.sort(key=lambda i: (i.due_date, i.id))

    def remove_invoice(self, inv: OpenInvoice) -> None:
        """Forget ``inv`` (paid, or about to be re-added with its new balance)."""
        self.invoices.pop(inv.id, None)
        lists = [
            self.by_number.get(normalise(inv.number)),
            self.by_digits.get(digit_key(inv.number)),
            self.by_customer.get((inv.customer_id, inv.currency)),
        ]
        for rows in lists:
            if rows is not None:
                rows[:] = [r for r in rows if r.id != inv.id]

    def _load_parties(self, session: Session, org_id: int) -> None:
        self.customer_names: dict[int, str] = dict(
            session.execute(
                select(Customer.id, Customer.name).where(Customer.org_id == org_id)
            ).all()
        )
        names: list[tuple[int, str]] = list(self.customer_names.items())
        names += list(
            session.execute(
                select(Contact.customer_id, Contact.name).where(Contact.org_id == org_id)
            ).all()
        )
        self.name_owner = [cid for cid, _ in names]
        self.name_list = [_name_processor(n) for _, n in names]
        self.name_exact = {n: cid for cid, n in zip(self.name_owner, self.name_list, strict=True)}
        self.iban_owner: dict[str, int] = dict(
            session.execute(
                select(CustomerBankAccount.iban, CustomerBankAccount.customer_id).where(
                    CustomerBankAccount.org_id == org_id
                )
            ).all()
        )

    def _load_commitments(self, session: Session, org_id: int) -> None:
        self.installments: dict[tuple[int, str, int], list[tuple[int, date]]] = defaultdict(list)
        rows = session.execute(
            select(
                PaymentPlan.customer_id,
                PaymentPlan.currency,
                PlanInstallment.id,
                PlanInstallment.amount_minor - PlanInstallment.paid_minor,
                PlanInstallment.due_date,
            )
            .join(PlanInstallment, PlanInstallment.plan_id == PaymentPlan.id)
            .where(
                PaymentPlan.org_id == org_id,
                PaymentPlan.status.in_([PlanStatus.ACTIVE, PlanStatus.DEFAULTED]),
                PlanInstallment.status != InstallmentStatus.PAID,
                PlanInstallment.paid_minor < PlanInstallment.amount_minor,
            )
        ).all()
        for cust, cur, inst_id, due_minor, due in rows:
            self.installments[(cust, cur, int(due_minor))].append((inst_id, due))
        self.promises: dict[tuple[int, str, int], date] = {}
        for cust, cur, amount, promised in session.execute(
            select(
                PromiseToPay.customer_id,
                PromiseToPay.currency,
                PromiseToPay.amount_minor,
                PromiseToPay.promised_date,
            ).where(PromiseToPay.org_id == org_id, PromiseToPay.status == PromiseStatus.OPEN)
        ).all():
            self.promises[(cust, cur, int(amount))] = promised

    # --- evidence -----------------------------------------------------------------------------

    def referenced(self, reference: str) -> Found:
        """Invoices the remittance text names, exactly, without prefix/zeros, or one typo away."""
        found = Found()
        tokens = TOKEN.findall(reference)
        tokens += [p for t in tokens if SPLIT.search(t) for p in SPLIT.split(t) if p]
        for token in tokens:
            if not any(ch.isdigit() for ch in token):
                continue
            direct = False
            for inv in self.by_number.get(normalise(token), ()):
                found.add(inv, 65, f"reference names invoice {inv.number}")
                direct = True
            key = digit_key(token)
            if len(key) < 3:
                continue
            for inv in self.by_digits.get(key, ()):
                found.add(inv, 60, f"reference '{token}' is invoice {inv.number} (prefix/zeros)")
                direct = True
            if direct:
                continue  # a reference that names an invoice is not also read as a typo
            for near in self._near_keys(key):
                for inv in self.by_digits[near]:
                    found.add(inv, 55, f"reference '{token}' is one typo from {inv.number}")
        return found

    def _near_keys(self, key: str) -> set[str]:
        """Invoice digit keys one edit (or one swap) from ``key``: every such string of digits,
        looked up (a key of n digits has about 20 n of them; no index of variants to build)."""
        n = len(key)
        variants = {key[:i] + key[i + 1 :] for i in range(n)}
        variants.update(key[:i] + key[i + 1] + key[i] + key[i + 2 :] for i in range(n - 1))
        for i in range(n + 1):
            head, tail = key[:i], key[i:]
            variants.update(head + d + tail for d in DIGITS)  # one added
            if i < n:
                variants.update(head + d + tail[1:] for d in DIGITS)  # one changed
        variants.discard(key)
        return {v for v in variants if v in self.by_digits and OSA.distance(v, key) == 1}

    def payer(self, line: BankLine) -> tuple[int | None, int, list[str], int | None]:
        """(customer by IBAN, name customer, reasons, name score) for the line's payer."""
        reasons: list[str] = []
        iban = normal_iban(line.payer_iban)
        by_iban = self.iban_owner.get(iban) if iban else None
        if line.payer_iban and iban is None:
            reasons.append("payer IBAN is not a valid IBAN")
        name_hit = self._name(line.payer_name) if line.payer_name else None
        name_cust, name_score = name_hit if name_hit else (None, 0)
        return by_iban, name_cust or 0, reasons, name_score

    def _name(self, name: str) -> tuple[int, int] | None:
        if name not in self._name_cache:
            clean = _name_processor(name)
            if clean in self.name_exact:
                self._name_cache[name] = (self.name_exact[clean], 100)
                return self._name_cache[name]
            hit = process.extractOne(
                clean,
                self.name_list,
                scorer=fuzz.token_sort_ratio,
                processor=None,
                score_cutoff=80,
            )
            self._name_cache[name] = (self.name_owner[hit[2]], int(hit[1])) if hit else None
        return self._name_cache[name]

    # --- suggestions --------------------------------------------------------------------------

    def suggest(self, line: BankLine) -> list[Suggestion]:
        """Every plausible way to apply ``line``, best first (empty: nothing recognisable)."""
        found = self.referenced(line.reference)
        by_iban, by_name, payer_notes, name_score = self.payer(line)
        out: list[Suggestion] = []
        named = [self.invoices[i] for i in found.how]
        refs = [i for i in named if i.currency == line.currency]
        foreign = [i for i in named if i.currency != line.currency]
        out += self._from_references(line, refs, found)
        if max((s.score for s in out), default=0) < 90:
            customers = {i.customer_id for i in refs} | {c for c in (by_iban, by_name) if c}
            named_ids = {i.id for i in refs}
            for cust in sorted(customers):
                for s in self._from_customer(line, cust):
                    if named_ids and not named_ids & {a.invoice_id for a in s.allocations}:
                        s.score -= 20
                        s.reasons.append("the reference names other invoices")
                    out.append(s)
        for s in out:
            self._payer_points(s, by_iban, by_name, name_score)
            s.reasons += payer_notes
        if not out and foreign:
            cur = ", ".join(sorted({i.currency for i in foreign}))
            why = f"the invoices named are in {cur}"
            out.append(self._note_only(line, foreign[0].customer_id, why))
        out = _best_per_target(out)
        _close_calls(out)
        out.sort(key=lambda s: -s.score)
        return out[:5]

    def _from_references(
        self, line: BankLine, refs: list[OpenInvoice], found: Found
    ) -> list[Suggestion]:
        if not refs:
            return []
        out: list[Suggestion] = []
        by_cust: dict[int, list[OpenInvoice]] = defaultdict(list)
        for inv in refs:
            by_cust[inv.customer_id].append(inv)
        for cust, invs in by_cust.items():
            invs.sort(key=lambda i: (i.due_date, i.id))
            points = min(found.how[i.id][0] for i in invs)
            why = [found.how[i.id][1] for i in invs]
            for subset in _subsets(invs, MAX_SUBSET_SIZE):
                sugg = self._fit(line, cust, list(subset), points, why)
                if sugg is not None:
                    out.append(sugg)
        return out

    def _from_customer(self, line: BankLine, cust: int) -> list[Suggestion]:
        """Without a usable reference: the customer's invoices, installments and promises."""
        invs = self.by_customer.get((cust, line.currency), [])
        out: list[Suggestion] = []
        exact = [i for i in invs if i.balance_minor == line.amount_minor]
        if len(exact) == 1:
            out.append(self._exact(line, exact[0], 55, ["amount equals one open invoice"]))
        elif len(exact) > 1:
            for inv in exact:
                out.append(
                    self._exact(line, inv, 35, ["amount equals several open invoices (ambiguous)"])
                )
        inst = self.installments.get((cust, line.currency, line.amount_minor), [])
        if inst:
            inst_id, due = sorted(inst, key=lambda x: x[1])[0]
            reasons = [f"amount equals the plan installment due {due.isoformat()}"]
            out.append(Suggestion(cust, "installment", 55, reasons, [], installment_id=inst_id))
        if not exact and len(invs) > 1:
            combo = _sum_subset(invs[:MAX_SUBSET_INVOICES], line.amount_minor)
            if combo:
                nums = ", ".join(i.number for i in combo)
                out.append(
                    Suggestion(
                        cust,
                        "one_to_many",
                        45,
                        [f"amount equals the sum of {nums}"],
                        [Allocation(i.id, i.balance_minor) for i in combo],
                    )
                )
        promised = self.promises.get((cust, line.currency, line.amount_minor))
        for s in out:
            if promised:
                s.reasons.append(f"matches the open promise-to-pay for {promised.isoformat()}")
                s.score += 5
        if not out:
            out.append(self._note_only(line, cust, "no open invoice of this amount"))
        return out

    def _note_only(self, line: BankLine, cust: int, why: str) -> Suggestion:
        money = format_money(line.amount_minor, line.currency)
        return Suggestion(
            cust,
            "on_account",
            30,
            [f"{why}: {money} on account as credit"],
            [Allocation(None, line.amount_minor)],
        )

    def _exact(self, line: BankLine, inv: OpenInvoice, base: int, why: list[str]) -> Suggestion:
        return Suggestion(
            inv.customer_id,
            "exact",
            base + 30,
            [*why, f"amount equals the open balance of {inv.number}"],
            [Allocation(inv.id, line.amount_minor)],
        )

    def _fit(
        self, line: BankLine, cust: int, invs: list[OpenInvoice], points: int, why: list[str]
    ) -> Suggestion | None:
        """How ``line`` fits these referenced invoices: equal, short, over or partial."""
        total = sum(i.balance_minor for i in invs)
        amount = line.amount_minor
        kind = "exact" if len(invs) == 1 else "one_to_many"
        names = ", ".join(i.number for i in invs)
        if amount == total:
            allocs = [Allocation(i.id, i.balance_minor) for i in invs]
            why = [*why, f"amount equals the open balance of {names}"]
            return Suggestion(cust, kind, points + 30, why, allocs)
        if amount > total:
            extra = amount - total
            allocs = [Allocation(i.id, i.balance_minor) for i in invs]
            allocs.append(Allocation(None, extra))
            money = format_money(extra, line.currency)
            return Suggestion(
                cust,
                "over_payment",
                points + 5,
                [*why, f"pays {money} more than {names}: kept as credit"],
                allocs,
                difference_minor=-extra,
                difference_kind="credit",
            )
        short = total - amount
        if len(invs) > 1 and short > max(i.balance_minor for i in invs):
            return None  # short by more than a whole invoice: the subset without it fits better
        pol = self.policy
        tolerance = min(pol.short_pay_max_minor, total * pol.short_pay_tolerance_bps // 10_000)
        allocs = _oldest_first(invs, amount)
        money = format_money(short, line.currency)
        if short <= tolerance:
            reason_kind = _explain_short(invs, short, total)
            return Suggestion(
                cust,
                "short_pay",
                points + 15,
                [*why, f"short by {money} ({_SHORT_WORDS[reason_kind]})"],
                _with_adjustment(allocs, invs, short, reason_kind),
                difference_minor=short,
                difference_kind=reason_kind,
            )
        return Suggestion(
            cust,
            "short_pay",
            points - 10,
            [*why, f"pays {money} less than {names}: the rest stays open"],
            allocs,
            difference_minor=short,
            difference_kind="open",
        )

    def _payer_points(
        self, s: Suggestion, by_iban: int | None, by_name: int, name_score: int | None
    ) -> None:
        if by_iban is not None:
            if by_iban == s.customer_id:
                s.score += 10
                s.reasons.append("payer IBAN is known for this customer")
            else:
                s.score -= 50
                s.reasons.append("payer IBAN belongs to another customer")
        elif by_name:
            if by_name == s.customer_id:
                s.score += 10 if name_score == 100 else 5
                s.reasons.append(f"payer name matches the customer ({name_score}%)")
            else:
                s.score -= 10
                s.reasons.append("payer name is another customer's")
        s.score = max(0, min(100, s.score))


_SHORT_WORDS = {
    "discount": "looks like an early-payment discount taken",
    "bank_fee": "looks like a bank fee",
    "dispute": "the invoice is in dispute",
}


def _explain_short(invs: list[OpenInvoice], short: int, total: int) -> str:
    """Why the payment is short: the dispute, a round early-payment discount, or a bank fee."""
    if any(i.disputed for i in invs):
        return "dispute"
    for pct in (1, 2, 3):
        if abs(total * pct - short * 100) <= 100:  # within one minor unit of 1, 2 or 3 %
            return "discount"
    return "bank_fee"


def _with_adjustment(
    allocs: list[Allocation], invs: list[OpenInvoice], short: int, kind: str
) -> list[Allocation]:
    """Put the written-off difference on the last invoice (discount or bank fee, not dispute)."""
    if kind not in ("discount", "bank_fee"):
        return allocs
    last = invs[-1].id
    out: list[Allocation] = []
    for a in allocs:
        if a.invoice_id == last:
            out.append(Allocation(a.invoice_id, a.amount_minor, kind, short))
        else:
            out.append(a)
    if not any(a.invoice_id == last for a in allocs):
        out.append(Allocation(last, 0, kind, short))
    return out


def _oldest_first(invs: list[OpenInvoice], amount: int) -> list[Allocation]:
    out: list[Allocation] = []
    left = amount
    for inv in invs:
        take = min(left, inv.balance_minor)
        if take > 0:
            out.append(Allocation(inv.id, take))
        left -= take
    return out


def _subsets(invs: list[OpenInvoice], max_size: int) -> list[tuple[OpenInvoice, ...]]:
    """All the invoices, then every smaller group of up to ``max_size`` (at most 64 in all)."""
    out: list[tuple[OpenInvoice, ...]] = [tuple(invs)]
    for size in range(min(len(invs) - 1, max_size), 0, -1):
        out.extend(combinations(invs, size))
    return out[:64]


def _sum_subset(invs: list[OpenInvoice], target: int) -> list[OpenInvoice] | None:
    """The smallest, oldest-first group (2..MAX_SUBSET_SIZE = 4 invoices) summing exactly to
    ``target``: the last invoice of each group is looked up by its balance, and the last two of
    a group of four by the sum of their balances, not enumerated."""
    bal = [i.balance_minor for i in invs]
    where: dict[int, list[int]] = defaultdict(list)
    for idx, b in enumerate(bal):
        where[b].append(idx)
    n = len(bal)
    for i in range(n):  # two
        for last in where.get(target - bal[i], ()):
            if last > i:
                return [invs[i], invs[last]]
    for i in range(n):  # three
        rest_i = target - bal[i]
        for j in range(i + 1, n):
            for last in where.get(rest_i - bal[j], ()):
                if last > j:
                    return [invs[i], invs[j], invs[last]]
    pairs: dict[int, list[tuple[int, int]]] = defaultdict(list)  # in (k, m) order
    for k, m in combinations(range(len(bal)), 2):
        pairs[bal[k] + bal[m]].append((k, m))
    for i, j in combinations(range(len(bal)), 2):  # the first (i, j) with a (k, m) after it
        for k, m in pairs.get(target - bal[i] - bal[j], ()):
            if k > j:
                return [invs[i], invs[j], invs[k], invs[m]]
    return None


def _close_calls(out: list[Suggestion]) -> None:
    """Two different answers within CLOSE_CALL points of each other: a person decides."""
    if len(out) < 2:
        return
    ranked = sorted(out, key=lambda s: -s.score)
    top = ranked[0]
    for other in ranked[1:]:
        if _targets(other) != _targets(top) and top.score - other.score < CLOSE_CALL:
            for s in (top, other):
                if CLOSE_REASON not in s.reasons:
                    s.score = max(0, s.score - 15)
                    s.reasons.append(CLOSE_REASON)


def _targets(s: Suggestion) -> tuple[object, ...]:
    return (s.customer_id, s.installment_id, *sorted(str(a.invoice_id) for a in s.allocations))


def _best_per_target(out: list[Suggestion]) -> list[Suggestion]:
    """One suggestion per set of targets: the best-scoring way to reach them."""
    best: dict[tuple[object, ...], Suggestion] = {}
    for s in out:
        key = _targets(s)
        if key not in best or s.score > best[key].score:
            best[key] = s
    return list(best.values())


_LEGAL = re.compile(r"\b(gmbh|inc|llc|ltd|plc|corp|co|sa|ag|bv|srl|sarl|the)\b\.?")


def _name_processor(name: str) -> str:
    return " ".join(_LEGAL.sub(" ", re.sub(r"[^\w\s]", " ", name.casefold())).split())
