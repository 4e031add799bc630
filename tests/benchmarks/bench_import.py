"""Import throughput: the IBM file and a generated 100,000-row file, printed as one JSON object.

    python tests/benchmarks/bench_import.py [--rows 100000] [--database-url URL]

Targets: the IBM file under 2 s, 100,000 rows under 30 s (fresh ledger each, the full
validation + upsert + settlement payments path, committed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from memory import migrate
from memory.db import make_engine, session_factory
from tools.imports.importer import ImportFileError, import_invoices, read_csv
from tools.ledger.orgs import get_or_create_org

IBM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ibm-accounts-receivable.csv"


def generate(path: Path, rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    start = date(2024, 1, 1)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("invoice_number,customer_ref,issue_date,due_date,amount,currency,amount_paid\n")
        for i in range(rows):
            issue = start + timedelta(days=rng.randint(0, 700))
            amount = rng.randint(500, 5_000_000)
            paid = amount if rng.random() < 0.6 else 0
            fh.write(
                f"B-{i:07d},CUST-{rng.randint(1, 2000):05d},{issue},{issue + timedelta(days=30)},"
                f"{amount // 100}.{amount % 100:02d},USD,{paid // 100}.{paid % 100:02d}\n"
            )


def run(path: Path, url: str) -> dict[str, float | int]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        org = get_or_create_org(session, f"bench-{time.time_ns()}")
        session.commit()
        t0 = time.perf_counter()
        report = import_invoices(session, org, path)
        session.commit()
        elapsed = time.perf_counter() - t0
    engine.dispose()
    assert report.committed and report.rejected == 0, report.errors[:3]
    return {
        "rows": report.rows,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(report.rows / elapsed),
    }


def wide_header(path: Path, target_bytes: int = 900_000) -> int:
    """A one-line file of repeated column names (about 0.9 MB): the duplicate-column check's worst
    case. Returns how many columns it has."""
    names = [f"column_{i % 5000:04d}" for i in range(target_bytes // 12)]
    path.write_text(",".join(names) + "\n" + ",".join("x" for _ in names) + "\n")
    return len(names)


def time_wide_header(path: Path) -> dict[str, float | int]:
    columns = wide_header(path)
    t0 = time.perf_counter()
    with contextlib.suppress(ImportFileError):  # refused for its repeated columns: what is
        read_csv(path)  # timed is reaching that answer
    return {
        "columns": columns,
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--database-url", default=None, help="default: a fresh SQLite file per run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:

        def url(name: str) -> str:
            return args.database_url or f"sqlite:///{Path(tmp) / name}.db"

        big = Path(tmp) / "generated.csv"
        generate(big, args.rows)
        result = {
            "benchmark": "import",
            "backend": "postgresql" if args.database_url else "sqlite",
            "ibm": run(IBM, url("ibm")) if IBM.exists() else None,
            "generated": run(big, url("big")),
            "wide_header": time_wide_header(Path(tmp) / "wide.csv"),
            "targets": {"ibm_seconds": 2, "generated_100k_seconds": 30, "wide_header_seconds": 1},
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
