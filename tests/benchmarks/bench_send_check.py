"""Cost of the send-time check: ``recheck_before_send`` on every draft of the demo organisation.

Builds the demo (SQLite in a temporary directory, offline model, one Autopilot pass) and times the
check on each written draft: grounding against the ledger on the business date, the open-invoice
and promise checks, and the date wording. Prints ONE JSON object.

Usage: ``python tests/benchmarks/bench_send_check.py [--today 2026-11-18] [--repeat 3]``.
It runs once per delivered message, beside an SMTP conversation of tens of milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from datetime import time as wall
from pathlib import Path

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("PLIXO_MODEL", "offline")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--today", default="2026-11-18", help="The demo's business date.")
    ap.add_argument("--repeat", type=int, default=3, help="Checks per draft.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PLIXO_DATA_DIR"] = tmp
        from sqlalchemy import select

        from agent.autopilot import run_autopilot
        from memory.config import get_settings
        from memory.db import make_engine, session_factory
        from memory.migrate import upgrade
        from memory.models import Draft
        from tools.delivery.send_check import recheck_before_send
        from tools.demo.builder import build_demo

        settings = get_settings()
        url = f"sqlite:///{tmp}/plixo.db"
        engine = make_engine(url)
        upgrade(engine)
        sessions = session_factory(engine)
        today = date.fromisoformat(args.today)
        with sessions() as session:
            org = build_demo(session, today=today).org
            session.commit()
            org_id = org.id
        run_autopilot(sessions, org_id, as_of=today, shadow=True, settings=settings)
        at = datetime.combine(today, wall(15, 0), tzinfo=UTC)
        times: list[float] = []
        held = 0
        with sessions() as session:
            drafts = session.scalars(
                select(Draft).where(Draft.org_id == org_id, Draft.body != "")
            ).all()
            for draft in drafts:
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    check = recheck_before_send(session, draft, at, settings=settings)
                    times.append((time.perf_counter() - started) * 1000)
                held += not check.ok
        engine.dispose()
    times.sort()
    print(
        json.dumps(
            {
                "benchmark": "send_check",
                "drafts": len(drafts),
                "checks": len(times),
                "held_on_the_day_written": held,
                "p50_ms": round(statistics.median(times), 2),
                "p99_ms": round(times[int(len(times) * 0.99) - 1], 2),
                "max_ms": round(times[-1], 2),
                "load_average_1m": round(os.getloadavg()[0], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
