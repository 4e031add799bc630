"""Autopilot killed half-way: a pass over N due invoices (10,000) is SIGKILLed once half of them
are drafted and started again; every invoice must be drafted exactly once.

Prints ONE JSON object: ``{invoices, killed_at_drafts, drafts, distinct, doubled, missing,
backend, seconds, ...}``. The pass is ``plixo autopilot run --json`` in a subprocess (embedded:
it enqueues its chunks and works them); the second run recovers the killed run's workflows once
its heartbeat is stale and enqueues the rest again (same workflow ids), and the ledger's unique
run key is the last word. The logic of ``tests/agent/test_autopilot_durable.py``, at scale.

Usage: ``python tests/benchmarks/bench_autopilot_kill.py [--n 10000] [--db-url URL]
[--kill-at 0.5]`` (default ledger: a fresh SQLite file).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from memory.models import Draft, Organisation  # noqa: E402
from tests.benchmarks.bench_autopilot import AS_OF, build_ledger  # noqa: E402


def _count(sessions: sessionmaker[Session], org_id: int) -> tuple[int, int]:
    with sessions() as s:
        mine = select(Draft.run_key).where(Draft.org_id == org_id)
        total = int(s.scalar(select(func.count()).select_from(mine.subquery())) or 0)
        keys = int(
            s.scalar(select(func.count(func.distinct(Draft.run_key))).where(Draft.org_id == org_id))
            or 0
        )
    return total, keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000, help="due invoices")
    ap.add_argument("--db-url", default=None, help="ledger URL (default: a fresh SQLite file)")
    ap.add_argument("--kill-at", type=float, default=0.5, help="share drafted when killed")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="plixo-bench-kill-"))
    url = args.db_url or f"sqlite:///{tmp / 'kill.db'}"
    org_id, built = build_ledger(url, args.n)
    sessions: sessionmaker[Session] = built  # type: ignore[assignment]
    with sessions() as s:
        slug = s.scalar(select(Organisation.slug).where(Organisation.id == org_id))
    env = dict(os.environ)
    env.update(
        PLIXO_DATABASE_URL=url,
        PLIXO_DATA_DIR=str(tmp / "data"),
        PLIXO_PUBLIC_BASE_URL="https://ar.bench.example",
        PLIXO_WORKER_STALE_S="2",
        PLIXO_DOMAIN_RECHECK_CRON="",
        PLIXO_NOTIFICATION_SWEEP_CRON="",
        PLIXO_MAILBOX_SYNC_CRON="",
        PYTHONPATH=str(REPO),
    )
    env.pop("PLIXO_DBOS_SYSTEM_DATABASE_URL", None)
    cmd = [sys.executable, "-c", "from api.cli.main import main; main()", "autopilot", "run",
           "--json", "--as-of", AS_OF.isoformat(), "--org", str(slug)]  # fmt: skip
    started = time.perf_counter()
    first = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    target = int(args.n * args.kill_at)
    deadline = time.monotonic() + 1800
    while _count(sessions, org_id)[0] < target:
        if first.poll() is not None:
            raise SystemExit(f"the first pass ended before the kill: {first.stderr.read()!r}")
        if time.monotonic() > deadline:
            first.kill()
            raise SystemExit("the first pass never reached the kill point")
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    killed_at, _ = _count(sessions, org_id)
    time.sleep(3)  # the killed run's heartbeat goes stale: the next run recovers its workflows
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=3600)
    seconds = time.perf_counter() - started
    if second.returncode != 0:
        raise SystemExit(second.stderr.decode()[-3000:])
    summary = json.loads(second.stdout)
    total, distinct = _count(sessions, org_id)
    print(
        json.dumps(
            {
                "benchmark": "autopilot_kill",
                "invoices": args.n,
                "killed_at_drafts": killed_at,
                "drafts": total,
                "distinct": distinct,
                "doubled": total - distinct,
                "missing": args.n - distinct,
                "backend": "postgresql" if "postgres" in url else "sqlite",
                "seconds": round(seconds, 1),
                "second_run": {
                    "drafted": summary.get("drafted"),
                    "skipped_existing": summary.get("skipped_existing"),
                    "errors": summary.get("errors"),
                    "elapsed_s": summary.get("elapsed_s"),
                },
                "load_avg_1m_after": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
