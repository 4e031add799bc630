"""The co-pilot's remittance splits (offline model) on generated messy remittance lines.

    python tests/benchmarks/bench_cash_copilot.py [--lines 200] [--seed 7] [--database-url URL]

No public data set of remittance advices exists, so the lines are generated: 40 customers with
15 open invoices each, and bank lines whose reference is remittance text in one of seven shapes
(a table with a Gross / Deduction / Paid header, a bank reference listing invoices with a credit
note subtracted, German amounts with Skonto deducted, rows with "gross ... paid ..." labels, a
list whose amounts leave part of the payment unexplained, amounts written before the invoices,
and one amount for invoices listed together that is not their balances: the right answer there
is no proposal). The truth (amount per invoice and
the remainder) is kept aside. The file is imported with auto-apply off, then the co-pilot reads
every line the matcher left below the confidence threshold.

Printed JSON: lines read, proposals made, proposals exactly right (every invoice and amount and
the remainder), wrong proposals (target 0: a wrong proposal costs a person's time, never money,
since none is applied alone), no proposal, and CPU and wall-clock milliseconds per line read (the
machine is shared: the load average is printed too).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from agent.remittance import propose_for_import
from memory import migrate
from memory.config import Settings
from memory.db import make_engine, session_factory
from memory.models import CashLine, Customer, Invoice
from tools.cashapp import intake
from tools.ledger.orgs import get_or_create_org

BOOKED = date(2026, 11, 27)


def _money(minor: int, german: bool = False) -> str:
    text = f"{Decimal(minor).scaleb(-2):,.2f}"
    return text.replace(",", "X").replace(".", ",").replace("X", ".") if german else text


def _line(rng: random.Random, invs: list[Invoice]) -> tuple[str, dict[str, int], int]:
    """(reference text, truth: invoice number -> minor paid, remainder)"""
    picked = rng.sample(invs, rng.randint(1, 3))
    shape = rng.randrange(7)
    truth: dict[str, int] = {}
    parts: list[str] = []
    rest = 0
    if shape == 0:
        parts.append("Remittance advice. Invoice Date Gross Deduction Paid")
        for inv in picked:
            cut = rng.choice([0, 0, rng.randint(1, inv.balance_minor // 10)])
            paid = inv.balance_minor - cut
            truth[inv.number] = paid
            row = f"{inv.number} {inv.due_date.isoformat()} {_money(inv.balance_minor)}"
            row += f" {_money(cut)} {_money(paid)}" if cut else f" {_money(paid)}"
            parts.append(row)
    elif shape == 1:
        for inv in picked:
            cut = rng.choice([0, rng.randint(1, inv.balance_minor // 5)])
            truth[inv.number] = inv.balance_minor - cut
            parts.append(f"{inv.number} {_money(inv.balance_minor)}")
            if cut:
                parts.append(f"CN-{rng.randint(1000, 9999)} -{_money(cut)}")
    elif shape == 2:
        for inv in picked:
            cut = inv.balance_minor * 2 // 100
            truth[inv.number] = inv.balance_minor - cut
            digits = inv.number.split("-")[1]
            parts.append(
                f"Rechnung RE-{digits} {_money(inv.balance_minor, True)} EUR abzgl. Skonto "
                f"{_money(cut, True)} EUR"
            )
    elif shape == 3:
        for inv in picked:
            paid = rng.randint(inv.balance_minor // 2, inv.balance_minor)
            truth[inv.number] = paid
            parts.append(
                f"Inv {inv.number}: gross {_money(inv.balance_minor)}, paid {_money(paid)};"
            )
    elif shape == 4:
        for inv in picked:
            truth[inv.number] = inv.balance_minor
            parts.append(f"{inv.number} {_money(inv.balance_minor)}")
        rest = rng.randint(100, 5_000)
        parts.append("see separate advice for the rest")
    elif shape == 5:  # amounts written before the invoices
        parts.append("We paid")
        for k, inv in enumerate(picked):
            paid = rng.randint(inv.balance_minor // 2, inv.balance_minor)
            truth[inv.number] = paid
            parts.append(f"{'and ' if k else ''}{_money(paid)} for {inv.number}")
    else:  # one amount for invoices listed together, not their balances: nothing to read
        picked = picked if len(picked) > 1 else rng.sample(invs, 2)
        rest = sum(inv.balance_minor for inv in picked) - rng.randint(100, 1_000)
        parts.append("Payment for " + " and ".join(inv.number for inv in picked))
        parts.append(f"{_money(rest)} as agreed with your colleague on the phone")
    return " ".join(parts), truth, rest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="bench-copilot-")
    url = args.database_url or f"sqlite:///{Path(tmp) / 'ledger.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        org = get_or_create_org(session, f"Bench copilot {args.seed} {time.time_ns()}")
        invoices: list[list[Invoice]] = []
        number = 7_000_000
        for c in range(40):
            cust = Customer(org_id=org.id, external_ref=f"BC-{c}", name=f"Customer {c} Ltd")
            session.add(cust)
            session.flush()
            mine = []
            for _ in range(15):
                number += 1
                amount = rng.randint(5_000, 900_000)
                inv = Invoice(
                    org_id=org.id, customer_id=cust.id, number=f"INV-{number}", currency="USD",
                    amount_minor=amount, balance_minor=amount,
                    issue_date=BOOKED - timedelta(days=60), due_date=BOOKED - timedelta(days=20),
                )  # fmt: skip
                session.add(inv)
                mine.append(inv)
            invoices.append(mine)
        session.flush()
        truth: dict[str, tuple[dict[str, int], int]] = {}
        buf = io.StringIO()
        out = csv.writer(buf)
        out.writerow(["date", "amount", "currency", "payer", "iban", "reference", "bank_ref"])
        used: set[int] = set()
        for i in range(args.lines):
            c = rng.randrange(40)
            free = [inv for inv in invoices[c] if inv.id not in used]
            if len(free) < 3:
                continue
            text, paid, rest = _line(rng, free)
            used |= {inv.id for inv in free if inv.number in paid}
            total = sum(paid.values()) + rest
            ref = f"B-{i}"
            truth[ref] = (paid, rest)
            out.writerow(
                [BOOKED.isoformat(), _money(total).replace(",", ""), "USD", "", "", text, ref]
            )
        session.commit()
        report = intake.import_cash_file(
            session, org.id, buf.getvalue().encode(), filename="bench.csv", actor="bench"
        )
        session.commit()
        numbers = {inv.id: inv.number for row in invoices for inv in row}
        settings = Settings(data_dir=Path(tmp), model="offline", cash_copilot_per_import=10**6)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        outcomes = propose_for_import(session, org.id, report.import_id, settings)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        session.commit()
        refs = dict(session.execute(select(CashLine.id, CashLine.bank_ref)).all())
        right = wrong = 0
        wrong_examples: list[str] = []
        missed: list[str] = []
        for o in outcomes:
            paid, rest = truth[refs[o.line_id]]
            if not o.proposed or o.suggestion is None:
                if paid:  # something was there to read
                    missed.append(refs[o.line_id])
                continue
            got = {
                numbers[a["invoice_id"]]: a["amount_minor"]
                for a in o.suggestion["allocations"]
                if a["invoice_id"]
            }
            got_rest = sum(
                a["amount_minor"] for a in o.suggestion["allocations"] if not a["invoice_id"]
            )
            if got == paid and got_rest == rest:
                right += 1
            else:
                wrong += 1
                wrong_examples.append(refs[o.line_id])
        read = len(outcomes)
        print(
            json.dumps(
                {
                    "lines_imported": report.lines_new,
                    "lines_read": read,
                    "proposals": right + wrong,
                    "exactly_right": right,
                    "wrong": wrong,
                    "wrong_examples": wrong_examples[:5],
                    "no_proposal": read - right - wrong,
                    "no_proposal_where_one_was_readable": len(missed),
                    "cpu_ms_per_line": round(1000 * cpu / max(1, read), 2),
                    "wall_ms_per_line": round(1000 * wall / max(1, read), 2),
                    "load_average": os.getloadavg(),
                },
                indent=2,
            )
        )
    engine.dispose()


if __name__ == "__main__":
    main()
