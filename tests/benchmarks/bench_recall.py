"""Recall latency: top-5 of N notes with an organisation filter, on a persistent chromadb store
with the offline hashing embedding. Prints ONE JSON object.

Usage: ``python tests/benchmarks/bench_recall.py [--n 100000] [--orgs 10] [--queries 500]``.
Quick check: ``--n 10000 --queries 100``. Target (issue 4): p99 < 20 ms at 100,000 notes.
Query latency includes embedding the query text; indexing time is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from memory.recall import HashingEmbedding, Recall, RecallItem  # noqa: E402

PEOPLE = ("Dana", "Avery", "Jonas", "Chloé", "Diego", "Maya", "Priya", "Sam", "Lena", "Riley")
TEMPLATES = (
    "Spoke with {p} in AP: invoice INV-{n} is approved for the next payment run.",
    "{p} asked for a copy of the PO before paying INV-{n}.",
    "Customer disputes the quantity on INV-{n}; asked for a credit note of {a} USD.",
    "Payment runs are on {d} for this account; remittance to the new bank address.",
    "Renewal conversation going well; keep the collections tone friendly. {p} is the champion.",
    "We will pay INV-{n} on {d}, {p} confirmed by phone.",
    "Out of office until {d}; contact {p} for urgent payment questions.",
    "ERP migration this quarter; expect delays on INV-{n}. Escalate to {p} if past 60 days.",
    "Zahlung für Rechnung {n} erfolgt am {d}, laut {p}.",
    "Le paiement de la facture {n} est prévu pour {d} selon {p}.",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the 15th", "month end")
QUERIES = (
    "when is the payment run",
    "copy of the purchase order",
    "quantity dispute credit note",
    "promised to pay next week",
    "out of office",
    "renewal tone",
    "ERP migration delay",
    "INV-{n}",
)


def note(rng: random.Random, k: int) -> str:
    return rng.choice(TEMPLATES).format(
        p=rng.choice(PEOPLE), n=100_000 + rng.randrange(50_000), a=rng.randrange(50, 5_000),
        d=rng.choice(DAYS),
    ) + f" (ref {k})"  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--orgs", type=int, default=10)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--path", default=None, help="store location (default: a temp dir)")
    args = ap.parse_args()
    rng = random.Random(42)
    path = Path(args.path) if args.path else Path(tempfile.mkdtemp(prefix="plixo-recall-")) / "c"
    recall = Recall(path)
    emb = HashingEmbedding()
    texts = [note(rng, k) for k in range(args.n)]
    t0 = time.perf_counter()
    for t in texts[:2000]:
        emb.embed_one(t)
    embed_us = (time.perf_counter() - t0) / min(2000, args.n) * 1e6
    t0 = time.perf_counter()
    recall.add(
        RecallItem(
            doc_id=f"note:{k}",
            org_id=1 + k % args.orgs,
            customer_id=k % 997,
            kind="note",
            text=text,
            source="internal",
        )  # fmt: skip
        for k, text in enumerate(texts)
    )
    index_s = time.perf_counter() - t0
    latencies: list[float] = []
    hits = 0
    for i in range(args.queries + 20):
        q = rng.choice(QUERIES).format(n=100_000 + rng.randrange(50_000))
        org = 1 + rng.randrange(args.orgs)
        started = time.perf_counter()
        found = recall.query(org, q, k=args.k)
        dt = (time.perf_counter() - started) * 1000
        if i >= 20:  # warm-up excluded
            latencies.append(dt)
            hits += len(found)
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2)

    print(
        json.dumps(
            {
                "benchmark": "recall",
                "notes": args.n,
                "organisations": args.orgs,
                "notes_per_org": args.n // args.orgs,
                "k": args.k,
                "queries": len(latencies),
                "embedding": HashingEmbedding.name(),
                "dim": emb.dim,
                "embed_us_per_note": round(embed_us, 1),
                "index_s": round(index_s, 1),
                "index_notes_per_s": round(args.n / index_s) if index_s else None,
                "query_ms_p50": pct(0.50),
                "query_ms_p95": pct(0.95),
                "query_ms_p99": pct(0.99),
                "query_ms_mean": round(statistics.fmean(latencies), 2),
                "avg_hits": round(hits / max(1, len(latencies)), 2),
                "target_p99_ms": 20,
            }
        )
    )


if __name__ == "__main__":
    main()
