"""The review-queue endpoint under 100 concurrent clients on loopback, printed as one JSON object.

    python tests/benchmarks/bench_api.py [--clients 100] [--duration 10] [--drafts 2000]
        [--workers 1] [--write-rate 20] [--database-url URL]

It builds a throwaway ledger (SQLite in a temp folder by default; with ``--database-url`` or
``PLIXO_BENCH_POSTGRES_URL`` a throwaway PostgreSQL database beside the one named) with one
organisation in Shadow Mode and ``--drafts`` drafts pending review, starts the server as
``plixo serve`` does (uvicorn, ``api.app:serve_app``) in a subprocess, and runs ``--clients``
concurrent keep-alive clients (aiohttp, one process) that request ``GET /api/queue?limit=50`` with
a bearer token, in four phases:

* ``paced`` (open loop): each client sends a request every ``--interval`` seconds (default 1 s,
  100 requests/s offered: an operator's queue refreshing every second is already generous).
  Latency counts from the scheduled send time, so falling behind is charged.
* ``closed_loop`` (saturation): each client sends its next request the moment the last returns;
  throughput is the server's maximum and latency is mostly queueing behind the other 99 clients.
  The queue does not change, so pages come from the cache (``api/queue_cache.py``).
* ``closed_loop_with_writes``: the same while a thread changes a draft ``--write-rate`` times a
  second, each change invalidating the cached page.
* ``closed_loop_uncached``: every request asks for a different page, so none is cached: the cost
  of the full path (FastAPI routing and validation, the queue query, serialization).

Latency is per request at the client: p50, p90, p99 and max in milliseconds. Target: p99 < 50 ms.
The CPU the server and the client used is printed per closed-loop phase (cores busy), with the
machine's load average, because the figures depend on what else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from sqlalchemy import create_engine, insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from memory import migrate  # noqa: E402
from memory.db import make_engine, session_factory  # noqa: E402
from memory.models import (  # noqa: E402
    Contact,
    Customer,
    Draft,
    Invoice,
    Organisation,
    Persona,
    Segment,
    User,
)
from tools.ledger.users import issue_api_token  # noqa: E402

ENDPOINT = "/api/queue?limit=50"
DECISION = {
    "action": "send_draft",
    "outcome": "needs_approval",
    "reasons": [
        {
            "rule_id": "shadow.review_required",
            "outcome": "needs_approval",
            "message": "Shadow Mode is on for the organisation: a Collector or above must review "
            "this draft",
            "not_before": None,
            "approver_role": "Collector",
        }
    ],
    "not_before": None,
    "approver_role": "Collector",
    "approver_roles": ["Collector"],
    "notify": [],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres_db(base_url: str) -> tuple[str, Any]:
    base = make_url(base_url)
    if base.drivername == "postgresql":
        base = base.set(drivername="postgresql+psycopg")
    name = f"plixo_bench_api_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


def seed(url: str, n_drafts: int) -> str:
    """The ledger for the run; returns a Collector's bearer token."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    today = date(2025, 10, 7)
    with sessions() as s:
        org = Organisation(name="Bench Org", slug=f"bench-{uuid.uuid4().hex[:6]}")
        s.add(org)
        s.flush()
        segment = Segment(org_id=org.id, name="Mid-market")
        user = User(
            org_id=org.id,
            email="collector@bench.test",
            name="Bench Collector",
            role=Persona.COLLECTOR,
        )
        s.add_all([segment, user])
        s.flush()
        token = issue_api_token(s, user)
        n_customers = max(1, n_drafts // 2)
        s.execute(
            insert(Customer),
            [
                {
                    "org_id": org.id,
                    "external_ref": f"C{i:06d}",
                    "name": f"Customer {i:06d} Ltd",
                    "segment_id": segment.id,
                    "collector_user_id": user.id,
                    "timezone": "America/New_York",
                }
                for i in range(n_customers)
            ],
        )
        customer_ids = [
            r[0]
            for r in s.execute(
                text("SELECT id FROM customer WHERE org_id = :o ORDER BY id"), {"o": org.id}
            )
        ]
        s.execute(
            insert(Contact),
            [
                {"org_id": org.id, "customer_id": cid, "name": "AP", "email": f"ap{cid}@x.test"}
                for cid in customer_ids
            ],
        )
        s.execute(
            insert(Invoice),
            [
                {
                    "org_id": org.id,
                    "customer_id": customer_ids[i % n_customers],
                    "number": f"INV-{i:07d}",
                    "currency": "USD",
                    "amount_minor": 10_000 + i,
                    "balance_minor": 10_000 + i,
                    "issue_date": today - timedelta(days=40),
                    "due_date": today - timedelta(days=10 + i % 60),
                }
                for i in range(n_drafts)
            ],
        )
        invoice_ids = [
            r[0]
            for r in s.execute(
                text("SELECT id FROM invoice WHERE org_id = :o ORDER BY id"), {"o": org.id}
            )
        ]
        now = datetime.now(UTC)
        s.execute(
            insert(Draft),
            [
                {
                    "org_id": org.id,
                    "customer_id": customer_ids[i % n_customers],
                    "invoice_id": invoice_ids[i],
                    "segment_id": segment.id,
                    "run_key": f"bench:{i}",
                    "recipient": f"ap{customer_ids[i % n_customers]}@x.test",
                    "subject": f"Invoice INV-{i:07d} is past due",
                    "body": f"Hello, invoice INV-{i:07d} is past due. Pay here: https://x.test",
                    "decision": DECISION,
                    "decision_outcome": "needs_approval",
                    "status": "pending_review",
                    "version": 1,
                    "created_at": now - timedelta(seconds=n_drafts - i),
                    "updated_at": now,
                }
                for i in range(n_drafts)
            ],
        )
        s.commit()
    engine.dispose()
    return token


def start_server(url: str, data_dir: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(PLIXO_DATABASE_URL=url, PLIXO_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO))
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "api.app:serve_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    return subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)


async def wait_ready(base: str, headers: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(base + ENDPOINT, headers=headers) as r:
                    if r.status == 200:
                        await r.read()
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            await asyncio.sleep(0.2)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (uvicorn's workers), from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _summary(latencies: list[float], errors: int, duration: float) -> dict[str, Any]:
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 2)

    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / duration, 1),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
    }


async def paced(
    base: str,
    headers: dict[str, str],
    clients: int,
    interval: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """Open loop: each client sends one request every ``interval`` seconds (phases spread), like
    operators whose queue refreshes. Latency counts from the *scheduled* send time, so a server
    that falls behind is charged for the wait (no coordinated omission)."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients)
    start = time.perf_counter() + 0.1
    measure_from, stop_at = start + warmup, start + warmup + duration

    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(i: int) -> None:
            nonlocal errors
            due = start + interval * i / clients
            while due < stop_at:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    async with session.get(base + ENDPOINT, headers=headers) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                done = time.perf_counter()
                if due >= measure_from:
                    if ok:
                        latencies.append((done - due) * 1000)
                    else:
                        errors += 1
                due += interval

        await asyncio.gather(*(client(i) for i in range(clients)))
    return {
        "mode": f"open loop: each client every {interval:g} s, latency from the scheduled time",
        "offered_rps": round(clients / interval, 1),
        **_summary(latencies, errors, duration),
    }


class Writer(threading.Thread):
    """Changes the queue ``rate`` times a second, as reviewers approving drafts do: each commit
    bumps the organisation's queue version, so the next read of every cached page rebuilds it."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.rate = url, rate
        self.stop = threading.Event()
        self.writes = 0

    def run(self) -> None:
        engine = make_engine(self.url)
        sessions = session_factory(engine)
        with engine.connect() as conn:
            ids = [r[0] for r in conn.execute(text("SELECT id FROM draft ORDER BY id"))]
        due = time.perf_counter()
        while not self.stop.is_set():
            with sessions() as s:
                draft = s.get(Draft, ids[self.writes % len(ids)])
                assert draft is not None
                draft.subject = f"{draft.subject.split(' #')[0]} #{self.writes}"
                s.commit()
            self.writes += 1
            due += 1 / self.rate
            self.stop.wait(max(0.0, due - time.perf_counter()))
        engine.dispose()


async def load(
    base: str,
    headers: dict[str, str],
    clients: int,
    warmup: float,
    duration: float,
    server_pid: int,
    path: Callable[[int], str] = lambda _: ENDPOINT,
) -> dict[str, Any]:
    """Closed loop: every client sends its next request as soon as the last one returns.

    Clients join one by one over the first half of the warm-up (as operators do, not in the same
    millisecond), so with several workers each new connection is accepted by whichever worker is
    least busy. Only requests sent after the warm-up count; CPU is measured over the same window.
    ``path(n)`` is the n-th request's path (the same page for all, by default).
    """
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    cpu: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration
    ramp = warmup / 2

    async def meter() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        server0, client0, t0 = _cpu_seconds(server_pid), _own_cpu_seconds(), time.perf_counter()
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        wall = time.perf_counter() - t0
        cpu["server_cores"] = round((_cpu_seconds(server_pid) - server0) / wall, 2)
        cpu["client_cores"] = round((_own_cpu_seconds() - client0) / wall, 2)

    async with aiohttp.ClientSession(connector=connector) as session:
        sent = 0

        async def client(i: int) -> None:
            nonlocal errors, sent
            await asyncio.sleep(ramp * i / clients)
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                sent += 1
                try:
                    async with session.get(base + path(sent), headers=headers) as r:
                        await r.read()
                        status = r.status
                except aiohttp.ClientError:
                    status = -1
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append((t1 - t0) * 1000)
                    else:
                        errors += 1

        await asyncio.gather(meter(), *(client(i) for i in range(clients)))
    return {
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        **_summary(latencies, errors, duration),
        "cpu": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--drafts", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="Seconds between a paced client's requests."
    )
    parser.add_argument(
        "--write-rate",
        type=float,
        default=20.0,
        help="Queue changes per second during the closed_loop_with_writes phase.",
    )
    parser.add_argument("--database-url", default=os.environ.get("PLIXO_BENCH_POSTGRES_URL"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="plixo-bench-api-"))
    drop = None
    if args.database_url:
        url, drop = _postgres_db(args.database_url)
        backend = "postgresql"
    else:
        url, backend = f"sqlite:///{tmp / 'bench.db'}", "sqlite"
    proc = None
    try:
        t0 = time.perf_counter()
        token = seed(url, args.drafts)
        seed_s = time.perf_counter() - t0
        port = _free_port()
        proc = start_server(url, tmp, port, args.workers)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        asyncio.run(wait_ready(base, headers))
        open_loop = asyncio.run(
            paced(base, headers, args.clients, args.interval, args.warmup, args.duration)
        )
        # The client is Python too: keep its own collector from pausing it mid-measurement.
        gc.collect()
        gc.freeze()

        def closed_loop(**kw: Any) -> dict[str, Any]:
            return asyncio.run(
                load(base, headers, args.clients, args.warmup, args.duration, proc.pid, **kw)
            )

        closed = {
            "mode": "closed loop: keep-alive, no think time (saturation); the queue unchanged",
            **closed_loop(),
        }
        writer = Writer(url, args.write_rate)
        writer.start()
        try:
            with_writes = closed_loop()
        finally:
            writer.stop.set()
            writer.join()
        with_writes = {
            "mode": f"closed loop while the queue changes {args.write_rate:g} times a second "
            "(each change rebuilds the page on its next read)",
            "writes": writer.writes,
            **with_writes,
        }
        # 1,500 different pages (offsets) against a 512-page cache: every request builds its page.
        uncached = {
            "mode": "closed loop, every request a different page: no cache hits (the full path)",
            **closed_loop(path=lambda n: f"{ENDPOINT}&offset={n % 1500}"),
        }
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if drop is not None:
            drop()
    load1, load5, _ = os.getloadavg()
    print(
        json.dumps(
            {
                "benchmark": "review_queue_api",
                "endpoint": f"GET {ENDPOINT}",
                "database": backend,
                "drafts_pending": args.drafts,
                "clients": args.clients,
                "server": f"uvicorn (api.app:serve_app), {args.workers} worker(s), subprocess",
                "cpu_count": os.cpu_count(),
                "load_average_1m_5m": [round(load1, 2), round(load5, 2)],
                "warmup_s": args.warmup,
                "duration_s": args.duration,
                "seed_s": round(seed_s, 2),
                "paced": open_loop,
                "closed_loop": closed,
                "closed_loop_with_writes": with_writes,
                "closed_loop_uncached": uncached,
                "target_p99_ms": 50,
                "target_met": {
                    name: phase["p99_ms"] is not None and phase["p99_ms"] < 50
                    for name, phase in (
                        ("paced", open_loop),
                        ("closed_loop", closed),
                        ("closed_loop_with_writes", with_writes),
                        ("closed_loop_uncached", uncached),
                    )
                },
            }
        )
    )


if __name__ == "__main__":
    main()
