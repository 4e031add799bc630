"""Delivery under fire: ``plixo worker`` processes SIGKILLed at random moments while a real SMTP
server (aiosmtpd on loopback) counts what it receives by Message-ID. Prints one JSON object:

    {"kills", "messages", "delivered", "doubled", "lost", "uncertain", "backend", ...}

    python tests/benchmarks/bench_delivery.py [--messages 300] [--kills 20] [--workers 2]
    PLIXO_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
        python tests/benchmarks/bench_delivery.py --backend postgresql

Each message is an approved e-mail in the outbox. ``--workers`` worker processes run; every
0.2-1.5 s (random) after a worker is up, one of them is killed with SIGKILL and started again,
``--kills`` times; then the survivors finish. The SMTP server answers each message after
``--smtp-delay`` seconds, so a kill often lands while a message is being handed over.

* ``delivered``: distinct Message-IDs the server received;
* ``doubled``: Message-IDs it received more than once (must be 0);
* ``lost``: messages it never received that are not shown as uncertain either (must be 0);
* ``uncertain``: messages a worker died handing over, shown as "delivery uncertain" for a person
  (at most one per kill); ``uncertain_received`` of them did reach the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from memory import migrate  # noqa: E402
from memory.db import make_engine, session_factory  # noqa: E402
from memory.models import Organisation, OutboxMessage, OutboxStatus  # noqa: E402
from tests.api.smtp_server import SmtpSink, start_smtp  # noqa: E402
from tools.delivery import outbox  # noqa: E402


class SlowSink(SmtpSink):
    """Answers DATA after a pause: the hand-off takes long enough for kills to land in it."""

    delay: float = 0.02

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def _postgres_db(base_url: str) -> tuple[str, Any]:
    base = make_url(base_url)
    if base.drivername == "postgresql":
        base = base.set(drivername="postgresql+psycopg")
    name = f"plixo_bench_delivery_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


def _seed(url: str, n: int) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as s:
        org = Organisation(name="Bench Ltd", slug="bench", sending_domain="bench.test")
        s.add(org)
        s.commit()
        for i in range(n):
            outbox.enqueue_email(
                s,
                org.id,
                to=f"payer{i}@bench.test",
                subject=f"Reminder {i}",
                body=f"Invoice B-{i} is due.",
                idempotency_key=f"bench:{i}",
            )
        s.commit()
    engine.dispose()


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli.worker"], cwd=REPO, env=env, stdout=out, stderr=out
        )


def _ready(url: str, pid: int, timeout: float = 120.0) -> None:
    """Wait until the worker with this pid has launched (its first heartbeat)."""
    from memory.models import WorkerHeartbeat

    engine = make_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.scalar(select(WorkerHeartbeat.pid).where(WorkerHeartbeat.pid == pid)):
                    return
            time.sleep(0.1)
    finally:
        engine.dispose()


def _open(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.status.in_((OutboxStatus.QUEUED, OutboxStatus.CLAIMED)))
        )
    engine.dispose()
    return int(n or 0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="plixo-bench-delivery-"))
    drop = None
    if args.backend == "postgresql":
        base = args.database_url or os.environ.get("PLIXO_BENCH_POSTGRES_URL")
        if not base:
            raise SystemExit(
                "--backend postgresql needs PLIXO_BENCH_POSTGRES_URL or --database-url"
            )
        url, drop = _postgres_db(base)
    else:
        url = f"sqlite:///{tmp / 'plixo.db'}"
    _seed(url, args.messages)
    sink = SlowSink()
    sink.delay = args.smtp_delay
    controller, _ = start_smtp(sink)
    env = dict(os.environ)
    env.update(
        PLIXO_DATABASE_URL=url,
        PLIXO_DATA_DIR=str(tmp / "data"),
        PLIXO_SMTP_HOST="127.0.0.1",
        PLIXO_SMTP_PORT=str(controller.port),
        PLIXO_SMTP_FROM="ar@bench.test",
        PLIXO_WORKER_POLL_S="0.1",
        PLIXO_WORKER_STALE_S=str(args.stale),
        PLIXO_WORKER_CONCURRENCY=str(args.worker_concurrency),
        PYTHONPATH=str(REPO),
    )
    env.pop("PLIXO_DBOS_SYSTEM_DATABASE_URL", None)
    rng = random.Random(args.seed)
    log = tmp / "workers.log"
    started = time.perf_counter()
    workers = [_start_worker(env, log) for _ in range(args.workers)]
    kills = 0
    try:
        while kills < args.kills:
            i = rng.randrange(len(workers))
            _ready(url, workers[i].pid)  # kill it at work, not while it is still starting
            time.sleep(rng.uniform(0.2, 1.5))
            os.kill(workers[i].pid, signal.SIGKILL)
            workers[i].wait(timeout=10)
            kills += 1
            workers[i] = _start_worker(env, log)
        deadline = time.monotonic() + args.timeout
        while _open(url) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        controller.stop()
    elapsed = time.perf_counter() - started
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(OutboxMessage.message_id, OutboxMessage.status)).all()
    engine.dispose()
    received = Counter(sink.message_ids())
    uncertain = {r.message_id for r in rows if r.status == OutboxStatus.UNCERTAIN}
    statuses = Counter(str(r.status.value) for r in rows)
    lost = [
        r.message_id for r in rows if r.message_id not in received and r.message_id not in uncertain
    ]
    result = {
        "kills": kills,
        "messages": len(rows),
        "delivered": len(received),
        "doubled": sum(1 for n in received.values() if n > 1),
        "lost": len(lost),
        "uncertain": len(uncertain),
        "uncertain_received": len(uncertain & set(received)),
        "backend": args.backend,
        "workers": args.workers,
        "worker_concurrency": args.worker_concurrency,
        "statuses": dict(statuses),
        "elapsed_s": round(elapsed, 1),
    }
    if drop is not None:
        drop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--smtp-delay", type=float, default=0.1)
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=1,
        help="hand-offs in flight per worker (one kill can leave at most this many uncertain)",
    )
    parser.add_argument("--stale", type=float, default=3.0, help="PLIXO_WORKER_STALE_S")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=7)
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
