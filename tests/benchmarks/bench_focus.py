"""Today's Focus ranking time over many open invoices, printed as one JSON object.

    PLIXO_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
        python tests/benchmarks/bench_focus.py [--open 1000000] [--paid 300000] [--runs 5]

With a PostgreSQL URL (env or ``--database-url``) it creates a throwaway database beside the one
named, bulk-loads the ledger with COPY, ranks Today's Focus for a Collections Manager (every open
invoice in the organisation) and for a Collector (the accounts they own), and drops the database.
Without one it runs a smaller SQLite ledger (``--open 100000`` by default) loaded with executemany.
Target: the whole-organisation ranking of 1,000,000 open invoices under 1 s on PostgreSQL.

The risk model is a logistic model with fixed coefficients (close to the IBM file's backtest), so
the benchmark measures the ranking, not training. The customer risk snapshot (one row per customer,
refreshed daily and when the ledger changes) is built once before timing; its refresh time is
reported separately as ``snapshot_refresh_s``.
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
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import create_engine, insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from memory import migrate  # noqa: E402
from memory.db import make_engine, session_factory  # noqa: E402
from memory.models import (  # noqa: E402
    Customer,
    Invoice,
    Organisation,
    Persona,
    User,
)
from tools.insights.focus import todays_focus  # noqa: E402
from tools.insights.risk import FEATURES, Priors, RiskModel, ensure_snapshot  # noqa: E402

AS_OF = date(2026, 3, 2)
CUSTOMERS_PER_COLLECTOR = 500

# Coefficients and scaler of the IBM backtest at the default cut (see `plixo risk backtest`).
MODEL = RiskModel(
    kind="logistic",
    priors=Priors(late_rate=0.36, dispute_rate=0.22),
    mean=(2.6, 0.37, 4.1, 0.22, -0.05, 30.0, 0.5, 0.2, 0.22),
    scale=(0.8, 0.3, 5.0, 0.15, 0.4, 1.0, 0.5, 0.6, 0.41),
    coef=(-0.26, 1.39, 0.47, -0.52, -0.08, 0.0, -0.49, 0.19, 1.29),
    intercept=-1.1,
)
assert len(MODEL.coef) == len(FEATURES)


def _invoice_rows(
    org_id: int, customers: list[int], n_open: int, n_paid: int, seed: int
) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(n_open + n_paid):
        paid = i >= n_open
        issue = AS_OF - timedelta(days=rng.randint(1, 400 if not paid else 700))
        due = issue + timedelta(days=rng.choice((15, 30, 30, 45, 60)))
        amount = rng.randint(5_000, 5_000_000)
        settled = due + timedelta(days=rng.randint(-20, 40)) if paid else None
        if settled is not None and settled >= AS_OF:
            settled = AS_OF - timedelta(days=1)
        if settled is not None and settled < issue:
            settled = issue
        yield (
            org_id,
            customers[rng.randrange(len(customers))],
            f"BF-{i:08d}",
            "USD",
            amount,
            0 if paid else amount - rng.choice((0, 0, 0, amount // 2)),
            issue,
            due,
            "paid" if paid else "open",
            rng.random() < 0.05,
            rng.random() < 0.6,
            settled,
            "bench",
            now,
            now,
        )


INVOICE_COLUMNS = (
    "org_id",
    "customer_id",
    "number",
    "currency",
    "amount_minor",
    "balance_minor",
    "issue_date",
    "due_date",
    "status",
    "disputed",
    "paperless",
    "settled_date",
    "source",
    "created_at",
    "updated_at",
)


def _setup(url: str, n_customers: int, n_open: int, n_paid: int) -> dict[str, Any]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    t0 = time.perf_counter()
    with sessions() as s:
        org = Organisation(name="Bench Ltd", slug=f"bench-{uuid.uuid4().hex[:6]}")
        s.add(org)
        s.flush()
        n_collectors = max(1, n_customers // CUSTOMERS_PER_COLLECTOR)
        users = [
            User(
                org_id=org.id,
                email=f"c{i}@bench.example",
                name=f"Collector {i}",
                role=Persona.COLLECTOR,
            )
            for i in range(n_collectors)
        ]
        manager = User(
            org_id=org.id, email="m@bench.example", name="Manager", role=Persona.COLLECTIONS_MANAGER
        )
        s.add_all([*users, manager])
        s.flush()
        s.execute(
            insert(Customer),
            [
                {
                    "org_id": org.id,
                    "external_ref": f"BC-{i:06d}",
                    "name": f"Bench customer {i}",
                    "collector_user_id": users[i % n_collectors].id,
                    "timezone": "UTC",
                    "language": "en",
                    "created_at": datetime.now(UTC),
                }
                for i in range(n_customers)
            ],
        )
        s.commit()
        customers = list(
            s.scalars(text("SELECT id FROM customer WHERE org_id = :o ORDER BY id"), {"o": org.id})
        )
        org_id, manager_id, collector_id = org.id, manager.id, users[0].id
    rows = _invoice_rows(org_id, customers, n_open, n_paid, seed=7)
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            with cur.copy(f"COPY invoice ({', '.join(INVOICE_COLUMNS)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in rows:
                    copy.write_row(row)
            raw.commit()
            cur.execute("ANALYZE")
            raw.commit()
        finally:
            raw.close()
    else:
        with engine.begin() as conn:
            batch: list[dict[str, Any]] = []
            for row in rows:
                batch.append(dict(zip(INVOICE_COLUMNS, row, strict=True)))
                if len(batch) == 20_000:
                    conn.execute(insert(Invoice), batch)
                    batch = []
            if batch:
                conn.execute(insert(Invoice), batch)
            conn.exec_driver_sql("ANALYZE")
    load_s = time.perf_counter() - t0
    return {
        "engine": engine,
        "sessions": sessions,
        "manager_id": manager_id,
        "collector_id": collector_id,
        "org_id": org_id,
        "load_s": load_s,
    }


def _refresh(sessions: Any, org_id: int) -> float:
    """Time one full refresh of the customer risk snapshot (the daily / after-import job)."""
    with sessions() as s:
        t0 = time.perf_counter()
        ensure_snapshot(s, org_id, AS_OF, MODEL, force=True)
        s.commit()
        return time.perf_counter() - t0


def _time(sessions: Any, user_id: int, runs: int) -> tuple[list[float], int, int]:
    times = []
    n_items = 0
    first_id = 0
    with sessions() as s:
        user = s.get(User, user_id)
        todays_focus(s, user, as_of=AS_OF, model=MODEL)  # warm the cache and the plan
        s.commit()
        for _ in range(runs):
            t0 = time.perf_counter()
            result = todays_focus(s, user, as_of=AS_OF, model=MODEL, limit=50)
            times.append(time.perf_counter() - t0)
            n_items = len(result.items)
            first_id = result.items[0].invoice_id if result.items else 0
    return times, n_items, first_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", default=os.environ.get("PLIXO_BENCH_POSTGRES_URL"))
    ap.add_argument("--open", type=int, default=None, help="open invoices")
    ap.add_argument("--paid", type=int, default=None, help="paid invoices (history)")
    ap.add_argument("--customers", type=int, default=None)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    admin = None
    tmp = None
    if args.database_url:
        base = make_url(args.database_url)
        if base.drivername == "postgresql":
            base = base.set(drivername="postgresql+psycopg")
        name = f"plixo_bench_focus_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
        n_open = args.open or 1_000_000
    else:
        tmp = tempfile.TemporaryDirectory()
        url = f"sqlite:///{Path(tmp.name) / 'bench.db'}"
        n_open = args.open or 100_000
    n_paid = args.paid if args.paid is not None else n_open // 3
    n_customers = args.customers or max(100, n_open // 50)
    try:
        ctx = _setup(url, n_customers, n_open, n_paid)
        refresh_s = _refresh(ctx["sessions"], ctx["org_id"])
        manager_t, n_items, first = _time(ctx["sessions"], ctx["manager_id"], args.runs)
        collector_t, c_items, _ = _time(ctx["sessions"], ctx["collector_id"], args.runs)
        backend = ctx["engine"].dialect.name
        ctx["engine"].dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        if tmp is not None:
            tmp.cleanup()
    median = statistics.median(manager_t)
    print(
        json.dumps(
            {
                "benchmark": "todays_focus",
                "backend": backend,
                "open_invoices": n_open,
                "paid_invoices": n_paid,
                "customers": n_customers,
                "load_s": round(ctx["load_s"], 1),
                "snapshot_refresh_s": round(refresh_s, 3),
                "runs": args.runs,
                "org_wide_median_s": round(median, 3),
                "org_wide_max_s": round(max(manager_t), 3),
                "collector_median_s": round(statistics.median(collector_t), 3),
                "collector_scope_customers": CUSTOMERS_PER_COLLECTOR,
                "items_returned": n_items,
                "collector_items_returned": c_items,
                "top_invoice_id": first,
                "target_s": 1.0,
                "machine_load_avg_1m": round(os.getloadavg()[0], 2),
                "meets_target": bool(backend != "postgresql" or median < 1.0),
            }
        )
    )


if __name__ == "__main__":
    main()
