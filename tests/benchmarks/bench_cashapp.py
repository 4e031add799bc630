"""Cash App Assist on a seeded organisation and a bank file with realistic perturbations.

    python tests/benchmarks/bench_cashapp.py [--lines 10000] [--seed 7] [--database-url URL]

No public data set exists for cash application, so this one is generated: 2,000 customers (names
with legal forms, most paying from an IBAN plixo learned earlier), 24,000 open invoices numbered
in sequence (so a typo in a reference usually *is* another real invoice), and a CAMT.053
statement of ``--lines`` credits: clean references, bundled payments, typos, missing zeros and
prefixes, missing references, early-payment discounts, bank fees, over- and partial payments,
foreign-currency payers and unrelated lines. The truth (which invoices each line pays) is kept
aside and never shown to plixo. The file is imported once with auto-apply on at the seed
thresholds (confidence 95, exact / one-to-many / installment matches) and a large amount limit,
and the Controller's write-off rule on (short-pays explained as a discount or a bank fee, at
most $500 and 3 % of the invoices; ``--no-write-off-rule`` leaves it off) and its over-payment
rule (the surplus kept on account, the same $500 and 3 %; ``--no-over-payment-rule``). The
JSON's ``policy`` is the organisation's cash_app policy as the run had it.

Printed JSON: line- and amount-level match rate of the top suggestion, precision of the
auto-applied lines (target 100 %), straight-through rate (target >= 85 %), and seconds per
10,000 lines (target < 10 s) for reading + matching, for the batched posting alone
(``service.apply_lines``: every auto-applied line through tools/payments/posting.py, a chunk at a
time),
and for the whole import, in wall-clock and in this process's CPU seconds (the machine is
shared: the load average is printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

# run as a script from any directory: the repository root first (this file imports tests.*)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from schwifty import IBAN
from sqlalchemy import insert, select

from memory import migrate
from memory.db import make_engine, session_factory
from memory.models import (
    CashLine,
    CashLineStatus,
    Customer,
    CustomerBankAccount,
    Invoice,
    InvoiceStatus,
    Persona,
    User,
)
from tests.tools.cashapp_files import Entry, camt053
from tools.cashapp import parsers, service
from tools.cashapp.intake import import_cash_file
from tools.cashapp.matching import Matcher
from tools.cashapp.schemas import Suggestion
from tools.ledger import policy_overrides as policy_admin
from tools.ledger.orgs import get_or_create_org

BOOKED = date(2026, 11, 27)
FIRST = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Massive",
    "Vandelay",
    "Pied Piper",
    "Dunder",
    "Oscorp",
    "Gringotts",
    "Nakatomi",
    "Aperture",
    "Black Mesa",
    "Monarch",
    "Virtucon",
    "Prestige",
    "Sterling",
]
SECOND = [
    "Industries",
    "Logistics",
    "Foods",
    "Systems",
    "Health",
    "Retail",
    "Energy",
    "Labs",
    "Partners",
    "Holdings",
    "Analytics",
    "Supply",
    "Media",
    "Works",
    "Capital",
    "Motors",
]
FORMS = ["Inc", "LLC", "Ltd", "GmbH", "plc", "Corp", "SA", "BV"]
# The mix of the statement (shares of lines); each kind's truth is built below.
MIX = {
    "clean": 0.52,
    "bundle": 0.10,
    "typo": 0.07,
    "zeros_prefix": 0.07,
    "no_reference": 0.06,
    "discount": 0.03,
    "bank_fee": 0.03,
    "over": 0.02,
    "partial": 0.02,
    "foreign_currency": 0.03,
    "unrelated": 0.05,
}


@dataclass
class World:
    customers: list[tuple[int, str, str | None]] = field(default_factory=list)  # id, name, iban
    open_by_customer: dict[int, list[tuple[int, str, int, str]]] = field(default_factory=dict)


def _name(rng: random.Random, n: int) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(SECOND)} {n} {rng.choice(FORMS)}"


def seed_org(session, org_id: int, rng: random.Random, customers: int, per: int) -> World:  # type: ignore[no-untyped-def]
    world = World()
    rows = []
    for n in range(customers):
        rows.append({"org_id": org_id, "external_ref": f"C{n:05d}", "name": _name(rng, n)})
    session.execute(insert(Customer), rows)
    ids = session.execute(
        select(Customer.id, Customer.name).where(Customer.org_id == org_id).order_by(Customer.id)
    ).all()
    banks = []
    for cid, name in ids:
        iban = None
        if rng.random() < 0.6:
            iban = str(
                IBAN.generate("DE", bank_code="37040044", account_code=f"{cid:010d}").compact
            )
            banks.append({"org_id": org_id, "customer_id": cid, "iban": iban})
        world.customers.append((cid, name, iban))
    session.execute(insert(CustomerBankAccount), banks)
    inv_rows = []
    number = 100_000
    for cid, _, _ in world.customers:
        for _ in range(per):
            number += 1
            amount = rng.choice([rng.randint(5_000, 200_000), rng.randint(200_000, 2_000_000)])
            due = BOOKED - timedelta(days=rng.randint(-20, 90))
            cur = "EUR" if cid % 10 == 0 else "USD"
            inv_rows.append(
                {
                    "org_id": org_id,
                    "customer_id": cid,
                    "number": f"INV-{number:07d}",
                    "currency": cur,
                    "amount_minor": amount,
                    "balance_minor": amount,
                    "issue_date": due - timedelta(days=30),
                    "due_date": due,
                    "status": InvoiceStatus.OPEN,
                    "source": "bench",
                }
            )
    session.execute(insert(Invoice), inv_rows)
    for iid, cid, num, amt, cur in session.execute(
        select(
            Invoice.id, Invoice.customer_id, Invoice.number, Invoice.balance_minor, Invoice.currency
        ).where(Invoice.org_id == org_id)
    ):
        world.open_by_customer.setdefault(cid, []).append((iid, num, amt, cur))
    session.commit()
    return world


def _money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def _payer_name(rng: random.Random, name: str) -> str:
    """How banks pass the payer's name on: upper case, no legal form, truncated."""
    choice = rng.random()
    if choice < 0.4:
        return name.upper()
    if choice < 0.7:
        return name.rsplit(" ", 1)[0]
    return name[:30]


def _typo(rng: random.Random, digits: str) -> str:
    i = rng.randrange(1, len(digits) - 1)
    kind = rng.random()
    if kind < 0.4:
        return digits[:i] + rng.choice("0123456789".replace(digits[i], "")) + digits[i + 1 :]
    if kind < 0.7:
        return digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]
    return digits[:i] + digits[i + 1 :]


def make_statement(world: World, rng: random.Random, lines: int) -> tuple[list[Entry], list]:  # type: ignore[type-arg]
    """The statement entries and, aside, the truth: frozenset of invoice ids per line (or None)."""
    kinds = list(MIX)
    weights = [MIX[k] for k in kinds]
    used: set[int] = set()
    entries: list[Entry] = []
    truth: list[tuple[str, frozenset[int] | None, int]] = []
    while len(entries) < lines:
        kind = rng.choices(kinds, weights)[0]
        made = _one(world, rng, kind, used, len(entries))
        if made is None:
            continue
        entry, targets = made
        entries.append(entry)
        truth.append((kind, targets, int(entry.amount.replace(".", ""))))
    return entries, truth


def _pick(world: World, rng: random.Random, used: set[int], n: int, cur: str = "USD"):  # type: ignore[no-untyped-def]
    cid, name, iban = rng.choice(world.customers)
    invs = [i for i in world.open_by_customer.get(cid, []) if i[0] not in used and i[3] == cur]
    if len(invs) < n:
        return None
    chosen = rng.sample(invs, n)
    for i in chosen:
        used.add(i[0])
    return cid, name, iban, chosen


def _one(world: World, rng: random.Random, kind: str, used: set[int], no: int):  # type: ignore[no-untyped-def]
    ref = f"B{no:07d}"
    if kind == "unrelated":
        text = rng.choice(
            ["Interest credit", "Refund card fee", "Transfer from savings", "Tax refund"]
        )
        amount = rng.randint(100, 500_000)
        return Entry(
            BOOKED,
            _money(amount),
            "USD",
            text,
            rng.choice(["Tax Office", "Own account", ""]),
            bank_ref=ref,
        ), None
    size = rng.randint(2, 4) if kind == "bundle" else 1
    picked = _pick(world, rng, used, size)
    if picked is None:
        return None
    cid, name, iban, invs = picked
    payer = _payer_name(rng, name)
    payer_iban = iban if rng.random() < 0.8 else ""
    total = sum(i[2] for i in invs)
    numbers = [i[1] for i in invs]
    targets = frozenset(i[0] for i in invs)
    style = rng.choice(["{n}", "Invoice {n}", "Payment {n} thank you", "{n} / PO 44812"])
    reference = style.format(n=" ".join(numbers))
    amount, currency = total, "USD"
    if kind == "typo":
        digits = numbers[0].split("-")[1]
        reference = style.format(n="INV-" + _typo(rng, digits))
    elif kind == "zeros_prefix":
        reference = rng.choice(["RE {d}", "{d}", "Rechnung {d}", "inv{d}"]).format(
            d=numbers[0].split("-")[1].lstrip("0")
        )
    elif kind == "no_reference":
        reference = rng.choice(["", "Payment", "Monthly settlement"])
    elif kind == "discount":
        amount = total - total * 2 // 100
    elif kind == "bank_fee":
        amount = total - rng.choice([1_000, 1_500, 2_500])
    elif kind == "over":
        amount = total + rng.randint(1_000, 50_000)
    elif kind == "partial":
        amount = total // 2
    elif kind == "foreign_currency":
        currency = rng.choice(["GBP", "CHF", "CAD"])
        amount = total * 9 // 10
    if amount <= 0:
        return None
    return Entry(
        BOOKED, _money(amount), currency, reference, payer, payer_iban, bank_ref=ref
    ), targets


def _targets(s: Suggestion) -> frozenset[int]:
    return frozenset(a.invoice_id for a in s.allocations if a.invoice_id is not None)


def evaluate(session, org_id: int, truth: list) -> dict:  # type: ignore[no-untyped-def, type-arg]
    rows = session.scalars(
        select(CashLine).where(CashLine.org_id == org_id).order_by(CashLine.line_no)
    ).all()
    assert len(rows) == len(truth), (len(rows), len(truth))
    matchable = hits = auto = auto_ok = 0
    amount_all = amount_hit = 0
    by_kind: Counter[str] = Counter()
    auto_kind: Counter[str] = Counter()
    wrong: list[dict] = []  # type: ignore[type-arg]
    offs: list[tuple[str, str, int]] = []  # written off alone: (as explained, truth, minor)
    for row, (kind, targets, amount) in zip(rows, truth, strict=True):
        top = Suggestion.from_dict(row.suggestions[0]) if row.suggestions else None
        got = _targets(top) if top else frozenset()
        if targets is not None and kind != "foreign_currency":
            matchable += 1
            amount_all += amount
            if got == targets:
                hits += 1
                amount_hit += amount
                by_kind[kind] += 1
        if row.status == CashLineStatus.APPLIED:
            auto += 1
            auto_kind[kind] += 1
            if top is not None and top.difference_kind in ("discount", "bank_fee"):
                offs.append((top.difference_kind, kind, top.difference_minor))
            if targets is not None and got == targets:
                auto_ok += 1
            elif len(wrong) < 5:
                wrong.append(
                    {
                        "kind": kind,
                        "reference": row.reference,
                        "reasons": top.reasons if top else [],
                    }
                )
    n = len(rows)
    return {
        "lines": n,
        "matchable_lines": matchable,
        "line_match_rate": round(hits / matchable, 4),
        "amount_match_rate": round(amount_hit / amount_all, 4),
        "auto_applied": auto,
        "auto_applied_precision": round(auto_ok / auto, 4) if auto else None,
        "straight_through_rate": round(auto / n, 4),
        "straight_through_rate_of_matchable": round(auto / matchable, 4),
        # unrelated and foreign-currency lines pay no invoice in their currency: never auto
        "unmatchable_by_design_lines": n - matchable,
        "straight_through_ceiling": round(matchable / n, 4),
        "auto_written_off": {
            "lines": len(offs),
            "written_off_minor": sum(m for _, _, m in offs),
            # the matcher's explanation (discount / bank fee) against the generator's truth
            "explained_as_truth": sum(1 for got, want, _ in offs if got == want),
        },
        "match_rate_by_kind": {
            k: round(by_kind[k] / max(1, c), 3) for k, c in _kind_counts(truth).items()
        },
        "auto_applied_by_kind": dict(auto_kind),
        "wrong_auto_applied_examples": wrong,
    }


def _kind_counts(truth: list) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(k for k, _, _ in truth)


class _PostingClock:
    """Time spent in the batched posting of auto-applied lines (``service.apply_lines``)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.calls = 0
        self.inner = service.apply_lines

    def timed(self, fn):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - t0
                self.cpu += time.process_time() - c0
                self.calls += 1

        return wrapper


def bench_policy(write_off_rule: bool, over_payment_rule: bool) -> dict:  # type: ignore[type-arg]
    """The Controller's cash_app settings for the run: auto-apply on at the seed thresholds
    with a large amount limit, and (unless turned off) the write-off and over-payment rules with
    caps equal to the short-pay tolerance the seed policy already explains short-pays within
    ($500, 3 %): a payment difference tolerated the same way in both directions."""
    cash: dict = {"auto_apply": True, "max_auto_apply_minor": {"USD": 100_000_000}}  # type: ignore[type-arg]
    if write_off_rule:
        cash.update(
            {
                "auto_write_off": True,
                "auto_write_off_max_minor": {"USD": 50_000},
                "auto_write_off_max_bps": 300,
            }
        )
    if over_payment_rule:
        cash.update(
            {
                "auto_over_payment": True,
                "auto_over_payment_max_minor": {"USD": 50_000},
                "auto_over_payment_max_bps": 300,
            }
        )
    return {"cash_app": cash}


def run(  # type: ignore[type-arg]
    url: str, lines: int, seed: int, write_off_rule: bool = True, over_payment_rule: bool = True
) -> dict:
    rng = random.Random(seed)
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        org = get_or_create_org(session, f"bench-cash-{time.time_ns()}")
        controller = User(
            org_id=org.id, email="c@bench", name="Bench Controller", role=Persona.CONTROLLER
        )
        session.add(controller)
        session.commit()
        policy_admin.update_policy(
            session,
            org.id,
            controller,
            bench_policy(write_off_rule, over_payment_rule),
        )
        session.commit()
        applied_policy = policy_admin.policy_set_for(session, org.id).cash_app
        t0 = time.perf_counter()
        world = seed_org(session, org.id, rng, customers=2_000, per=12)
        seed_s = time.perf_counter() - t0
        entries, truth = make_statement(world, rng, lines)
        data = camt053(entries, msg_id=f"BENCH-{seed}")
        t0, c0 = time.perf_counter(), time.process_time()
        parsed = parsers.parse(data)
        policy = policy_admin.policy_set_for(session, org.id)
        matcher = Matcher(session, org.id, policy.cash_app)
        for line in parsed.lines:
            matcher.suggest(line)
        match_s, match_cpu = time.perf_counter() - t0, time.process_time() - c0
        posting = _PostingClock()
        service.apply_lines = posting.timed(service.apply_lines)  # type: ignore[method-assign]
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            report = import_cash_file(session, org.id, data, filename="bench.xml", actor="bench")
        finally:
            service.apply_lines = posting.inner  # type: ignore[method-assign]
        session.commit()
        import_s, import_cpu = time.perf_counter() - t0, time.process_time() - c0
        result = evaluate(session, org.id, truth)
        t0 = time.perf_counter()
        again = import_cash_file(session, org.id, data, filename="bench.xml", actor="bench")
        session.commit()
        reimport_s = time.perf_counter() - t0
    engine.dispose()
    per10k = 10_000 / lines
    result.update(
        {
            "seed_seconds": round(seed_s, 2),
            "read_match_seconds_per_10k_lines": round(match_s * per10k, 2),
            "read_match_cpu_seconds_per_10k_lines": round(match_cpu * per10k, 2),
            "import_with_auto_apply_seconds_per_10k_lines": round(import_s * per10k, 2),
            "import_with_auto_apply_cpu_seconds_per_10k_lines": round(import_cpu * per10k, 2),
            "posting_seconds_per_10k_lines": round(posting.wall * per10k, 2),
            "posting_cpu_seconds_per_10k_lines": round(posting.cpu * per10k, 2),
            "posting_cpu_ms_per_applied_line": round(
                1000 * posting.cpu / max(1, result["auto_applied"]), 3
            ),
            "posting_batches": posting.calls,
            "load_average_1min": round(os.getloadavg()[0], 1),
            "reimport_seconds_per_10k_lines": round(reimport_s * per10k, 2),
            "reimport_new_lines": again.lines_new,
            "reimport_auto_applied": again.auto_applied,
            "report_errors": len(report.errors),
            "policy": {
                k: v
                for k, v in applied_policy.model_dump(mode="json").items()
                if k.startswith("auto_") or k in ("min_confidence", "max_auto_apply_minor")
            },
        }
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    ap.add_argument(
        "--no-write-off-rule",
        action="store_true",
        help="leave the Controller's write-off rule (cash_app.auto_write_off) off",
    )
    ap.add_argument(
        "--no-over-payment-rule",
        action="store_true",
        help="leave the Controller's over-payment rule (cash_app.auto_over_payment) off",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'cash.db'}"
        result = {
            "benchmark": "cashapp",
            "backend": "postgresql" if args.database_url else "sqlite",
            "seed": args.seed,
            "mix": MIX,
            **run(
                url,
                args.lines,
                args.seed,
                write_off_rule=not args.no_write_off_rule,
                over_payment_rule=not args.no_over_payment_rule,
            ),
            "targets": {
                "auto_applied_precision": 1.0,
                "straight_through_rate": 0.85,
                "seconds_per_10k_lines": 10,
            },
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
