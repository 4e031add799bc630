"""A Stripe payout explained by its balance transactions, then its bank line cleared.

    python tests/benchmarks/bench_stripe_payouts.py [--charges 2000] [--database-url URL]

Seeds one organisation with ``--charges`` open invoices, each with the PaymentIntent plixo
created for it; half were posted by the ``payment_intent.succeeded`` webhook (through the real
handler), half were not. One payout carries every charge (Stripe's fee on each), a Radar fee and a
refund, read from API-shaped JSON through the SDK's own objects. Measured: importing the payout
(link or decide every charge, record the fees), the bank statement's payout line, and importing
both again; wall-clock and this process's CPU seconds, per 1,000 balance transactions, with the
load average (the machine is shared). Checked: nothing posted twice, the bank line cleared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

# run as a script from any directory: the repository root first (this file imports tests.*)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import func, select

from memory import migrate
from memory.db import make_engine, session_factory
from memory.models import Customer, Invoice, InvoiceStatus, Organisation, Payment, PaymentIntentLink
from tests.tools.cashapp_files import Entry, camt053
from tests.tools.stripe_payout_fixtures import (
    charge_txn,
    fee_txn,
    payout,
    payout_txn,
    refund_txn,
    sdk_payout,
    sdk_transactions,
)
from tools.cashapp import intake, service, stripe_payouts
from tools.payments import stripe_pay

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
PAID = NOW.date() - timedelta(days=4)
ARRIVAL = NOW.date() - timedelta(days=1)


def _timed(fn):  # type: ignore[no-untyped-def]
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def run(charges: int, url: str) -> dict[str, object]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as s:
        org = Organisation(name="Bench Payouts", slug=f"bench-{uuid.uuid4().hex[:6]}")
        s.add(org)
        s.flush()
        links: list[PaymentIntentLink] = []
        for i in range(charges):
            cust = Customer(org_id=org.id, external_ref=f"C{i:05d}", name=f"Payer {i} Ltd")
            s.add(cust)
            s.flush()
            inv = Invoice(
                org_id=org.id,
                customer_id=cust.id,
                number=f"INV-{900000 + i}",
                currency="USD",
                amount_minor=10_000 + i,
                balance_minor=10_000 + i,
                issue_date=PAID - timedelta(days=40),
                due_date=PAID - timedelta(days=10),
                status=InvoiceStatus.OPEN,
            )
            s.add(inv)
            s.flush()
            links.append(
                PaymentIntentLink(
                    org_id=org.id,
                    customer_id=cust.id,
                    invoice_id=inv.id,
                    intent_id=f"pi_bench{uuid.uuid4().hex[:16]}",
                    amount_minor=inv.balance_minor,
                    currency="USD",
                    status="requires_payment_method",
                )
            )
        s.add_all(links)
        s.commit()
        for link in links[::2]:  # half paid and posted by the webhook
            obj = {
                "id": link.intent_id,
                "object": "payment_intent",
                "amount": link.amount_minor,
                "amount_received": link.amount_minor,
                "currency": "usd",
                "metadata": {},
                "status": "succeeded",
            }
            ev = {
                "id": f"evt_{uuid.uuid4().hex}",
                "type": "payment_intent.succeeded",
                "data": {"object": obj},
            }
            stripe_pay.handle_event(s, ev, now=NOW)
        s.commit()
        txns = [
            charge_txn(
                link.amount_minor, 30 + link.amount_minor // 40, PAID, intent_id=link.intent_id
            )
            for link in links
        ]
        txns += [fee_txn(500, PAID), refund_txn(1_000, PAID, charge_id="ch_x", intent_id="pi_x")]
        net = sum(t["net"] for t in txns)
        po = payout(f"po_bench{uuid.uuid4().hex[:10]}", net, ARRIVAL)
        objects = (sdk_payout(po), sdk_transactions([*txns, payout_txn(po)]))
        data = stripe_payouts.payout_from_stripe(*objects)

        def do_import() -> stripe_payouts.PayoutReport:
            r = stripe_payouts.import_payouts(
                s, org.id, [data], actor="bench", filename="payout", now=NOW
            )
            s.commit()
            return r

        stmt = camt053(
            [Entry(ARRIVAL, f"{net // 100}.{net % 100:02d}", "USD", f"STRIPE PAYOUT {po['id']}")],
            msg_id=f"BENCH-{uuid.uuid4().hex[:6]}",
        )

        def do_bank() -> service.ImportReport:
            r = intake.import_cash_file(s, org.id, stmt, filename="s.xml", actor="bench", now=NOW)
            s.commit()
            return r

        first, imp_s, imp_cpu = _timed(do_import)
        bank, bank_s, bank_cpu = _timed(do_bank)
        again, re_s, re_cpu = _timed(lambda: (do_import(), do_bank()))
        payments = s.scalar(
            select(func.count()).select_from(Payment).where(Payment.org_id == org.id)
        )
    n = len(txns)
    per_k = 1000 / n
    return {
        "balance_transactions": n,
        "charges_linked": first.payouts[0]["charges_linked"],
        "charges_decided": first.payouts[0]["charges_to_decide"],
        "payments_after_all": payments,
        "payments_expected": len(links[::2]),
        "bank_line_cleared": bank.cleared == 1,
        "reimport_new_lines": again[0].lines_new + again[1].lines_new,
        "payout_import_per_1000_txn": {
            "wall_s": round(imp_s * per_k, 3),
            "cpu_s": round(imp_cpu * per_k, 3),
        },
        "bank_line_s": {"wall_s": round(bank_s, 3), "cpu_s": round(bank_cpu, 3)},
        "reimport_per_1000_txn": {
            "wall_s": round(re_s * per_k, 3),
            "cpu_s": round(re_cpu * per_k, 3),
        },
        "load_average": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--charges", type=int, default=2000)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        print(json.dumps(run(args.charges, url), indent=2))


if __name__ == "__main__":
    main()
